"""secret_problem names the variable and the problem, never the value."""

from __future__ import annotations

import pytest
from ansible_collections.pliers.deploy.plugins.filter.secrets import content_version, secret_problem


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


def test_content_version_is_short_stable_and_follows_the_content():
    assert content_version("a") == content_version("a") and len(content_version("a")) == 12
    assert content_version("a") != content_version("b")
    assert content_version(["x", "y"]) == content_version("x\ny")
    assert content_version(["x", "y"]) != content_version(["x", "z"])
