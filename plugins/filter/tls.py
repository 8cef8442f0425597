# Copyright (c) pliers.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""certificate_problems: what is wrong with a TLS certificate chain and its key, in words, before any host is contacted.

Reads PEM text (from the inventory's vault) on the controller with the ``cryptography`` library, which ansible-core
depends on. No sentence it returns ever contains key material, nor a parser's message that could.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
from collections.abc import Mapping, Sequence, Set
from datetime import datetime, timezone

from ansible.errors import AnsibleFilterError

try:
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.oid import NameOID
except ImportError as error:  # pragma: no cover - ansible-core requires cryptography
    x509 = None
    CRYPTOGRAPHY_IMPORT_ERROR = error
else:
    CRYPTOGRAPHY_IMPORT_ERROR = None

# The collection's code also runs on Python 3.9 and 3.10, which have no datetime.UTC.
UTC = timezone.utc  # noqa: UP017
# The stand-ins example vaults ship (vault.yml.example: a PEM armour around CHANGE_ME), in any case.
PLACEHOLDER_MARKERS = ("change_me", "changeme", "change-me", "replace_me", "replace-me", "placeholder")
# A PEM body line that is one of these (after trimming, in any case) is example text, not base64 of a real object.
PLACEHOLDER_LINES = ("...", "\u2026", "example", "todo", "xxxx", "<certificate>", "<key>", "<private key>")
# A PEM block: its BEGIN line, the label, and everything up to the next BEGIN line (or the end of the text).
BEGIN = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----")
# The longest list of covered names a problem spells out.
MAX_LISTED_NAMES = 10


def _text(value, name: str) -> str:
    """The PEM text a variable holds ('' when it holds nothing); AnsibleFilterError when it holds no text at all."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, str):
        return str(value)
    if isinstance(value, Mapping):
        kind = "a mapping"
    elif isinstance(value, (list, tuple, Set)):
        kind = "a list"
    elif isinstance(value, (bool, int, float)):
        kind = f"a number ({type(value).__name__})"
    else:
        # Anything else that is text in disguise (e.g. an older ansible-core's vault-encrypted string).
        return str(value)
    raise AnsibleFilterError(f"certificate_problems: {name} must be PEM text (a string), got {kind}")


def _names(names) -> list[str]:
    """The host names to check, in order and without repeats; AnsibleFilterError unless names is a list of strings."""
    if names is None:
        return []
    if isinstance(names, (str, bytes)):
        raise AnsibleFilterError(
            f"certificate_problems: names must be a list of host names (e.g. ['{names!s}']), got a string"
        )
    if isinstance(names, Mapping) or not isinstance(names, (Sequence, Set)):
        raise AnsibleFilterError(
            f"certificate_problems: names must be a list of host names, got {type(names).__name__}"
        )
    result: list[str] = []
    for position, name in enumerate(names, start=1):
        if not isinstance(name, str):
            raise AnsibleFilterError(
                f"certificate_problems: names must be a list of host names; item {position} is {type(name).__name__}"
            )
        if name.strip() and name.strip() not in result:
            result.append(name.strip())
    return result


def _blocks(text: str) -> list[tuple[str, str]]:
    """Each PEM block of text as (label, the block's text from its BEGIN line); a block without its END line keeps
    what follows its BEGIN line, so that it fails to parse rather than vanish."""
    starts = list(BEGIN.finditer(text))
    blocks = []
    for index, start in enumerate(starts):
        stop = starts[index + 1].start() if index + 1 < len(starts) else len(text)
        blocks.append((start.group(1), text[start.start() : stop]))
    return blocks


def _is_placeholder(text: str) -> bool:
    """Whether text is a stand-in (CHANGE_ME and the like, or example text inside a PEM armour)."""
    lowered = text.lower()
    if any(marker in lowered for marker in PLACEHOLDER_MARKERS):
        return True
    return any(line.strip().lower() in PLACEHOLDER_LINES for line in text.splitlines())


def _load_certificate(label: str, block: str):
    """The certificate in one PEM block, or None when it does not parse."""
    if label != "CERTIFICATE":
        return None
    try:
        return x509.load_pem_x509_certificate(block.encode())
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return None


def _certificates(text: str, name: str) -> tuple[list, list[str]]:
    """The certificates of a chain (None for one that does not parse) and the problems of reading them."""
    blocks = _blocks(text)
    if not blocks:
        return [None], [f"{name} does not parse as a PEM certificate (it has no -----BEGIN CERTIFICATE----- line)"]
    problems: list[str] = []
    chain = []
    for position, (label, block) in enumerate(blocks, start=1):
        certificate = _load_certificate(label, block)
        chain.append(certificate)
        if certificate is not None:
            continue
        what = "" if label == "CERTIFICATE" else f" (it is a {label} block)"
        if position == 1:
            problems.append(f"{name} does not parse as a PEM certificate{what}")
        else:
            problems.append(f"{name}: certificate {position} of the chain does not parse as a PEM certificate{what}")
    return chain, problems


def _key(text: str, name: str):
    """The private key text holds and the problem of reading it (never its bytes, nor the parser's words)."""
    blocks = _blocks(text)
    keys = [(label, block) for label, block in blocks if label.endswith("PRIVATE KEY")]
    if not keys:
        found = f" (it holds a {blocks[0][0]} block)" if blocks else ""
        return None, f"{name} does not parse as a PEM private key{found}"
    label, block = keys[0]
    encrypted = f"{name} is encrypted with a passphrase, which the edge cannot read (decrypt it before vaulting it)"
    if label == "ENCRYPTED PRIVATE KEY" or re.search(r"^Proc-Type:\s*4,\s*ENCRYPTED", block, re.MULTILINE):
        return None, encrypted
    try:
        return serialization.load_pem_private_key(block.encode(), password=None), ""
    except TypeError:
        # "Password was not given but private key is encrypted".
        return None, encrypted
    except (ValueError, UnsupportedAlgorithm):
        return None, f"{name} does not parse as a PEM private key"


def _public_key(key) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _utc(certificate, field: str) -> datetime:
    """not_valid_before / not_valid_after as an aware UTC datetime, on any cryptography release."""
    value = getattr(certificate, f"{field}_utc", None)
    if value is None:
        value = getattr(certificate, field).replace(tzinfo=UTC)
    return value


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _dns(name: str) -> str:
    """A DNS name as certificates spell it: lower case, no trailing dot, A-labels for an internationalised name."""
    name = name.strip().rstrip(".").lower()
    if not name.isascii():
        with contextlib.suppress(UnicodeError):
            name = name.encode("idna").decode("ascii")
    return name


def _ip(name: str):
    """The IP address name spells (IPv6 possibly in brackets), or None when it is a DNS name."""
    try:
        return ipaddress.ip_address(name.strip().strip("[]"))
    except ValueError:
        return None


def _dns_covers(pattern: str, name: str) -> bool:
    """RFC 6125: equal names, or a wildcard left-most label standing for exactly one non-empty label."""
    pattern = _dns(pattern)
    if pattern == name:
        return True
    if not pattern.startswith("*."):
        return False
    label, rest = name.split(".", 1) if "." in name else (name, "")
    return bool(label) and label != "*" and rest == pattern[2:]


def _covered(certificate) -> tuple[list[str], list, str]:
    """What the certificate vouches for: its DNS names, its IP addresses, and how a problem spells them.

    From the subjectAltName; without one, from the subject's common names (as DNS names only)."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        common_names = [str(a.value) for a in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        if not common_names:
            return [], [], "it has neither a subjectAltName nor a subject CN"
        return common_names, [], f"it has no subjectAltName; its subject CN is {', '.join(common_names)}"
    dns_names = san.get_values_for_type(x509.DNSName)
    addresses = san.get_values_for_type(x509.IPAddress)
    spelled = [*dns_names, *(str(address) for address in addresses)]
    if not spelled:
        return [], [], "its subjectAltName names no host"
    if len(spelled) > MAX_LISTED_NAMES:
        listed = f"{', '.join(spelled[:MAX_LISTED_NAMES])} and {len(spelled) - MAX_LISTED_NAMES} more"
    else:
        listed = ", ".join(spelled)
    return dns_names, addresses, f"it covers {listed}"


def _coverage_problems(certificate, names: list[str], name: str) -> list[str]:
    """One problem for each of names (host names or IP addresses) the certificate does not cover."""
    dns_names, addresses, covers = _covered(certificate)
    problems = []
    for host in names:
        address = _ip(host)
        if address is not None:
            covered = address in addresses
        else:
            covered = any(_dns_covers(pattern, _dns(host)) for pattern in dns_names)
        if not covered:
            problems.append(f"{name} does not cover {host} ({covers})")
    return problems


def certificate_problems(
    certificate,
    key,
    names,
    certificate_name: str = "pliers_tls_certificate",
    key_name: str = "pliers_tls_key",
) -> list[str]:
    """The problems of a PEM certificate chain and its private key as sentences naming the variable; [] when none.

    In this order: the certificate's text (empty, placeholder, unparseable leaf or chain certificate), the key's
    (empty, placeholder, encrypted, unparseable), whether they match, the leaf's validity period, then each name of
    names the leaf does not cover.
    """
    if CRYPTOGRAPHY_IMPORT_ERROR is not None:  # pragma: no cover - ansible-core requires cryptography
        raise AnsibleFilterError(f"certificate_problems needs the cryptography library: {CRYPTOGRAPHY_IMPORT_ERROR}")
    certificate_text = _text(certificate, certificate_name)
    key_text = _text(key, key_name)
    hosts = _names(names)
    problems: list[str] = []

    chain: list = []
    if not certificate_text.strip():
        problems.append(f"{certificate_name} is empty or missing (set it in the inventory's vault)")
    elif _is_placeholder(certificate_text):
        problems.append(f"{certificate_name} still holds a placeholder value (replace it in the inventory's vault)")
    else:
        chain, chain_problems = _certificates(certificate_text, certificate_name)
        problems += chain_problems
    leaf = chain[0] if chain else None

    private_key = None
    if not key_text.strip():
        problems.append(f"{key_name} is empty or missing (set it in the inventory's vault)")
    elif _is_placeholder(key_text):
        problems.append(f"{key_name} still holds a placeholder value (replace it in the inventory's vault)")
    else:
        private_key, key_problem = _key(key_text, key_name)
        if key_problem:
            problems.append(key_problem)

    if leaf is not None and private_key is not None:
        public_key = _public_key(private_key)
        if _public_key(leaf) != public_key:
            others = [n for n, c in enumerate(chain[1:], start=2) if c is not None and _public_key(c) == public_key]
            hint = (
                f" (it matches certificate {others[0]} of the chain: put the server's certificate first)"
                if others
                else ""
            )
            problems.append(f"{key_name} does not match {certificate_name}{hint}")

    if leaf is not None:
        now = datetime.now(UTC)
        not_before, not_after = _utc(leaf, "not_valid_before"), _utc(leaf, "not_valid_after")
        if not_before > now:
            problems.append(f"{certificate_name} is not valid before {_iso(not_before)}")
        if not_after <= now:
            problems.append(f"{certificate_name} expired on {_iso(not_after)}")
        problems += _coverage_problems(leaf, hosts, certificate_name)
    return problems


class FilterModule:
    def filters(self):
        return {"certificate_problems": certificate_problems}
