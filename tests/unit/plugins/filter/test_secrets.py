"""secret_problem names the variable and the problem, never the value."""

from __future__ import annotations

import re

import pytest
from ansible_collections.pliers.deploy.plugins.filter.secrets import content_version, rotating_login, secret_problem


@pytest.mark.parametrize(
    ("value", "environment", "expected"),
    [
        ("", "local", "postgres_password is empty or missing"),
        (None, "production", "postgres_password is empty or missing"),
        ("CHANGE_ME", "local", "postgres_password still holds a placeholder"),
        ("my-example-password-123", "staging", "still holds a placeholder"),
        ("short-but-real", "production", "at least 16 characters in production"),
    ],
)
def test_problems_are_named(value, environment, expected):
    problem = secret_problem(value, "postgres_password", environment)
    assert expected in problem
    if value:
        assert value not in problem


@pytest.mark.parametrize(("value", "environment"), [("short-but-real", "local"), ("a" * 8 + "Zq93-kLm2", "production")])
def test_usable_values_have_no_problem(value, environment):
    assert secret_problem(value, "x", environment) == ""


@pytest.mark.parametrize("value", ["a-real-looking-secret-0123\n", " a-real-looking-secret-01", "a-real-secret-0123\t"])
def test_a_login_password_with_white_space_at_either_end_is_refused_and_inside_is_kept(value):
    problem = secret_problem(value, "api_redis_password", "production", login=True)
    assert problem.startswith("api_redis_password begins or ends with white space") and value.strip() not in problem
    # Not a login (a PEM key ends with a line break), or white space inside: as it is.
    assert secret_problem(value, "pliers_tls_key", "production") == ""
    assert secret_problem("a real\nlooking $'\\ secret", "x", "production", login=True) == ""


def test_content_version_is_short_stable_and_follows_the_content():
    assert content_version("a") == content_version("a") and len(content_version("a")) == 12
    assert content_version("a") != content_version("b")
    assert content_version(["x", "y"]) == content_version("x\ny")
    assert content_version(["x", "y"]) != content_version(["x", "z"])


PEM_PLACEHOLDER = "-----BEGIN CERTIFICATE-----\nCHANGE_ME\n-----END CERTIFICATE-----\n"


@pytest.mark.parametrize(
    "value",
    [
        PEM_PLACEHOLDER,
        "-----BEGIN PRIVATE KEY-----\n  CHANGE_ME\n-----END PRIVATE KEY-----\n",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nCHANGEME\n-----END OPENSSH PRIVATE KEY-----\n",
        "-----BEGIN CERTIFICATE-----\nMIIBxTCCAWug\n<paste the certificate here: todo>\n-----END CERTIFICATE-----\n",
        "https://hooks.example.com/CHANGE_ME",
        "https://hooks.slack.test/services/xxxx",
        "https://change_me@hooks.slack.test/x",
    ],
)
def test_placeholders_in_certificates_keys_and_urls_are_refused(value):
    assert secret_problem(value, "pliers_tls_key", "production") == (
        "pliers_tls_key still holds a placeholder value (replace it in the inventory's vault)"
    )


@pytest.mark.parametrize(
    "value",
    [
        # A marker by chance inside the base64 of a key or certificate is none.
        "-----BEGIN CERTIFICATE-----\nMIIBtodoXXXXexampleQ0hBTkdF\nTodo==\n-----END CERTIFICATE-----\n",
        # A webhook on a test's example.net still holds a real-looking token.
        "https://hooks.example.net/T0KEN-abcdef",
    ],
)
def test_markers_that_are_no_placeholder_are_not_refused(value):
    assert secret_problem(value, "x", "production") == ""


def test_the_example_vaults_certificate_and_key_are_refused():
    assert "placeholder" in secret_problem(PEM_PLACEHOLDER, "pliers_tls_certificate", "staging")


def test_a_login_is_named_after_its_password_and_role():
    first = rotating_login("pliers_app", "app-password-1")
    assert re.fullmatch(r"pliers_app_[0-9a-f]{8}", first)
    assert rotating_login("pliers_app", "app-password-1") == first
    assert rotating_login("pliers_app", "app-password-2") != first
    assert rotating_login("other_app", "app-password-1")[-8:] != first[-8:]
