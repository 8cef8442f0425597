# Copyright (c) pliers.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""secret_problem: what is wrong with a secret's value, in words, or '' when nothing is.
content_version: the short name of a content's version (secrets, configs, their labels)."""

from __future__ import annotations

import hashlib

# Values the example vaults ship, and the usual stand-ins people forget to replace.
PLACEHOLDERS = ("change_me", "changeme", "change-me", "placeholder", "example", "replace_me", "todo", "xxxx")
STRICT_ENVIRONMENTS = ("staging", "production")


def secret_problem(value, name: str, environment: str = "", min_length: int = 16) -> str:
    """'' when value is usable as the secret called name; otherwise a sentence naming it and why.

    The sentence never contains the value itself.
    """
    text = "" if value is None else str(value)
    if not text.strip():
        return f"{name} is empty or missing (set it in the inventory's vault)"
    lowered = text.lower()
    if any(marker in lowered for marker in PLACEHOLDERS):
        return f"{name} still holds a placeholder value (replace it in the inventory's vault)"
    if environment in STRICT_ENVIRONMENTS and len(text) < min_length:
        return f"{name} must be at least {min_length} characters in {environment}"
    return ""


def content_version(content) -> str:
    """The first 12 hex digits of the SHA-256 of content (text, or a list of texts joined by newlines)."""
    text = "\n".join(str(part) for part in content) if isinstance(content, (list, tuple)) else str(content)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class FilterModule:
    def filters(self):
        return {"secret_problem": secret_problem, "content_version": content_version}
