# Copyright (c) pliers.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PostgreSQL's SCRAM-SHA-256 password verifiers (RFC 5802/7677, as PostgreSQL stores them), private to this
collection: a password is set as its verifier, never as text a log could show, and checked against the stored one
without logging in."""

from __future__ import annotations

__all__ = ["matches", "verifier"]

import base64
import hashlib
import hmac
import os
import stringprep
import unicodedata

ITERATIONS = 4096  # PostgreSQL's default (scram_iterations)


def _saslprep(password: str) -> bytes:
    """The password as PostgreSQL hashes it (pg_saslprep): ASCII as it is; otherwise SASLprep'd (RFC 4013), or its
    raw bytes when that fails - a prohibited or unassigned character before or after normalisation, malformed
    bidirectional text, or nothing left once mapped."""
    if password.isascii():
        return password.encode()
    mapped = "".join(" " if stringprep.in_table_c12(c) else c for c in password if not stringprep.in_table_b1(c))
    normalized = unicodedata.normalize("NFKC", mapped)
    prohibited = (
        stringprep.in_table_a1,
        stringprep.in_table_c12,
        stringprep.in_table_c21_c22,
        stringprep.in_table_c3,
        stringprep.in_table_c4,
        stringprep.in_table_c5,
        stringprep.in_table_c6,
        stringprep.in_table_c7,
        stringprep.in_table_c8,
        stringprep.in_table_c9,
    )
    if not normalized or any(check(c) for c in mapped + normalized for check in prohibited):
        return password.encode()
    bidi = [stringprep.in_table_d1(c) for c in normalized]
    if any(bidi) and (not (bidi[0] and bidi[-1]) or any(stringprep.in_table_d2(c) for c in normalized)):
        return password.encode()
    return normalized.encode()


def _keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    salted = hashlib.pbkdf2_hmac("sha256", _saslprep(password), salt, iterations)
    stored = hashlib.sha256(hmac.new(salted, b"Client Key", hashlib.sha256).digest()).digest()
    server = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return stored, server


def verifier(password: str, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    """The verifier PostgreSQL would store for password (a new random salt unless one is given)."""
    salt = os.urandom(16) if salt is None else salt
    stored, server = _keys(password, salt, iterations)
    b64 = base64.b64encode
    return f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}${b64(stored).decode()}:{b64(server).decode()}"


def matches(password: str, stored_verifier: str | None) -> bool:
    """Whether password is the one stored_verifier was made from (False for none, MD5 or a malformed one)."""
    try:
        scheme, rest = str(stored_verifier or "").split("$", 1)
        iterations_salt, keys = rest.split("$", 1)
        iterations, salt = iterations_salt.split(":", 1)
        stored, server = keys.split(":", 1)
        if scheme != "SCRAM-SHA-256":
            return False
        expected = _keys(password, base64.b64decode(salt), int(iterations))
        return hmac.compare_digest(expected[0], base64.b64decode(stored)) and hmac.compare_digest(
            expected[1], base64.b64decode(server)
        )
    except ValueError:
        return False
