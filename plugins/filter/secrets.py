# Copyright (c) pliers.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""secret_problem: what is wrong with a secret's value, in words, or '' when nothing is.
content_version: the short name of a content's version (secrets, configs, their labels).
rotating_login: a database login named after its password (a rotation without a failed request)."""

from __future__ import annotations

import functools
import hashlib
import re
from urllib.parse import urlsplit

# Values the example vaults ship, and the usual stand-ins people forget to replace.
PLACEHOLDERS = ("change_me", "changeme", "change-me", "placeholder", "example", "replace_me", "todo", "xxxx")
STRICT_ENVIRONMENTS = ("staging", "production")
PEM_BOUNDARY = re.compile(r"-----(BEGIN|END) [A-Z0-9 ]+-----")
BASE64_LINE = re.compile(r"[A-Za-z0-9+/=]+")
URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def _is_placeholder(text: str) -> bool:
    """Whether text holds a placeholder: one of PLACEHOLDERS anywhere in it, but in a PEM block (a certificate, a
    key) only outside its base64 lines or as a whole line, where no chance run of letters (todo) is one; and in a URL
    (a webhook's, holding its token) only after its host, which may well be a test's example.net."""
    lowered = text.lower()
    if PEM_BOUNDARY.search(text):
        lines = [line.strip().lower() for line in text.splitlines()]
        return any(
            line in PLACEHOLDERS
            or (not PEM_BOUNDARY.fullmatch(line.upper()) and not BASE64_LINE.fullmatch(line)
                and any(marker in line for marker in PLACEHOLDERS))
            for line in lines
        )  # fmt: skip
    if URL.match(text):
        try:
            parts = urlsplit(text)
            lowered = " ".join((parts.username or "", parts.password or "", parts.path, parts.query, parts.fragment))
            lowered = lowered.lower()
        except ValueError:
            pass
    return any(marker in lowered for marker in PLACEHOLDERS)


def secret_problem(value, name: str, environment: str = "", min_length: int = 16, login: bool = False) -> str:
    """'' when value is usable as the secret called name (a password, a token, an API key, a URL that holds one, a PEM
    key or certificate); otherwise a sentence naming it and why. A login password (login=True) may not begin or end
    with white space: the services read their password files stripped of it, and the store is given it whole.

    The sentence never contains the value itself.
    """
    text = "" if value is None else str(value)
    if not text.strip():
        return f"{name} is empty or missing (set it in the inventory's vault)"
    if login and text != text.strip():
        return (
            f"{name} begins or ends with white space (a space, a line break): the services read their password "
            "without it, and could not log in"
        )
    if _is_placeholder(text):
        return f"{name} still holds a placeholder value (replace it in the inventory's vault)"
    if environment in STRICT_ENVIRONMENTS and len(text) < min_length:
        return f"{name} must be at least {min_length} characters in {environment}"
    return ""


def content_version(content) -> str:
    """The first 12 hex digits of the SHA-256 of content (text, or a list of texts joined by newlines)."""
    text = "\n".join(str(part) for part in content) if isinstance(content, (list, tuple)) else str(content)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# Rounds of the slow hash a login's name is made with: a guess of the password costs this much to check against it.
LOGIN_ROUNDS = 200_000


@functools.lru_cache(maxsize=64)
def rotating_login(role: str, password) -> str:
    """<role>_<8 hex digits of a slow hash (PBKDF2-HMAC-SHA-256) of the password, salted with the role>: a new
    password is a new login, which lives beside the old one until the services that use the old one are replaced."""
    digest = hashlib.pbkdf2_hmac("sha256", str(password).encode(), f"pliers-login:{role}".encode(), LOGIN_ROUNDS)
    return f"{role}_{digest.hex()[:8]}"


class FilterModule:
    def filters(self):
        return {"secret_problem": secret_problem, "content_version": content_version, "rotating_login": rotating_login}
