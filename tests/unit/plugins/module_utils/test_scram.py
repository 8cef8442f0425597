"""SCRAM-SHA-256 verifiers as PostgreSQL makes them: each stored verifier below was made by PostgreSQL 15 from its
password (CREATE ROLE ... PASSWORD), so a password is checked without logging in, quotes, newlines and non-ASCII
text (SASLprep'd as PostgreSQL does) included."""

from __future__ import annotations

import pytest
from ansible_collections.pliers.deploy.plugins.module_utils import _scram

MADE_BY_POSTGRESQL = {
    "plain-Password_1": "SCRAM-SHA-256$4096:mCuKhAkVxi3bbtw3d81awg==$d72Q5VMLww7MzKViLePE6KNWex5oX45VSc/h7KFJa3w=:"
    "30GMRhR8h0nUsZtXgnCUTUEQv8gOGxFXrKAnwcpAPJ0=",
    'with\nnewline $ " \\': "SCRAM-SHA-256$4096:NEvu37O+sJ6Gh7FDO3TNog==$OSRnxV/AWEGZFKMkBtWC2QBVTXmEYGQndnbs0VLKXjA=:"
    "q8TZO6YnT6bI9/yHr1Z/k/CFoDJltJmCVjqoB6otYfE=",
    "pässwörd": "SCRAM-SHA-256$4096:52HNVVtJEMsBtzlL5NDbgw==$Zfac1fXdGDsKlzE5ngO/592yw3RftqirtkkP1+SrosI=:"
    "PT6LY8j9UYCryYsFeQY0k0l0ZrVkXVZe/KOKB/NIAPU=",
    # Full-width letters: SASLprep's NFKC makes them "full".
    "ｆｕｌｌ": "SCRAM-SHA-256$4096:wAp3pREg6q9RWH/nrd2Aaw==$nJLvw3NOZLHHfdSIyIukNWkvR8553l93CeyX9xlXePU=:"
    "3+IfrjnKwUe9t39/DvKSLe3Ly4ykOn1Y2ACv40NVkVA=",
}


@pytest.mark.parametrize("password", sorted(MADE_BY_POSTGRESQL))
def test_a_password_matches_the_verifier_postgresql_made_from_it(password):
    stored = MADE_BY_POSTGRESQL[password]
    assert _scram.matches(password, stored)
    assert not _scram.matches(password + "x", stored)


def test_the_same_salt_gives_postgresqls_verifier():
    stored = MADE_BY_POSTGRESQL["plain-Password_1"]
    salt = __import__("base64").b64decode(stored.split("$")[1].split(":")[1])
    assert _scram.verifier("plain-Password_1", salt=salt) == stored


def test_a_new_verifier_has_a_new_salt_and_matches():
    first, second = _scram.verifier("secret-password"), _scram.verifier("secret-password")
    assert first != second and _scram.matches("secret-password", first) and _scram.matches("secret-password", second)


@pytest.mark.parametrize(
    "stored", [None, "", "md5a3556571e93b0d20722ba62be61e8c2d", "SCRAM-SHA-256$x", "SCRAM-SHA-256$4096:%%$a:b"]
)
def test_no_verifier_or_another_kind_never_matches(stored):
    assert not _scram.matches("anything", stored)


@pytest.mark.parametrize(
    "password",
    [
        "a\u0340",  # a prohibited character (C.8) that normalisation would compose away
        "\uff21\U0001f600",  # an unassigned code point (A.1 in RFC 3454's Unicode 3.2)
        "\u00ad",  # maps to nothing
    ],
)
def test_what_saslprep_refuses_is_hashed_as_its_raw_bytes_as_postgresql_does(password):
    assert _scram._saslprep(password) == password.encode()


def test_what_saslprep_accepts_is_normalised():
    assert _scram._saslprep("\uff46\uff55\uff4c\uff4c") == b"full"
    assert _scram._saslprep("pa\u00a0ss") == b"pa ss"  # a non-ASCII space is a space
