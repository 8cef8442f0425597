"""The migration commands' one-off container: its last line must be a JSON object."""

from __future__ import annotations

import pytest
from ansible_collections.pliers.deploy.plugins.module_utils import _migrations
from ansible_collections.pliers.deploy.plugins.module_utils._migrations import MigrationError, run_json

SECRET = {"file": "/opt/p/secrets/api_database_password", "target": "database_password"}


@pytest.fixture
def one_off(monkeypatch):
    """run_one_off as the command would end: `ended` is (status, stdout, stderr); each call's arguments recorded."""
    calls = []

    def run_one_off(module, client, timeout, **create):
        calls.append(create)
        return one_off.ended

    one_off = type("OneOff", (), {"calls": calls, "ended": (0, "", "")})
    monkeypatch.setattr(_migrations, "run_one_off", run_one_off)
    return one_off


def run(command=("pliers", "migrate", "status")):
    return run_json(None, None, list(command), image="api:1.1.0", network="p_backend", env={"PORT": 3000},
                    secrets=[SECRET], timeout=30)  # fmt: skip


def test_the_last_line_is_the_document_and_the_secrets_are_mounted_read_only(one_off):
    one_off.ended = (0, 'connecting\n{"pending": ["0002_tags"], "applied": ["0001_items"]}', "")
    assert run() == {"pending": ["0002_tags"], "applied": ["0001_items"]}
    (create,) = one_off.calls
    assert create["volumes"] == {SECRET["file"]: {"bind": "/run/secrets/database_password", "mode": "ro"}}
    assert (create["environment"], create["network"], create["image"]) == ({"PORT": "3000"}, "p_backend", "api:1.1.0")


@pytest.mark.parametrize("stdout", ['"ok"', "[]", "not json", ""])
def test_anything_but_a_json_object_on_the_last_line_is_refused(one_off, stdout):
    one_off.ended = (0, stdout, "")
    with pytest.raises(MigrationError, match="'pliers migrate status' printed no JSON object as its last line"):
        run()


def test_a_failed_command_is_named_with_what_it_said(one_off):
    one_off.ended = (1, "", "error: password authentication failed for user pliers_api_owner")
    with pytest.raises(MigrationError) as error:
        run(("pliers", "migrate", "up"))
    assert str(error.value) == (
        "'pliers migrate up' in api:1.1.0 failed (exit 1): "
        "error: password authentication failed for user pliers_api_owner"
    )
