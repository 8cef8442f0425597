"""deploy_lock and release_log, run as Ansible runs a module (a process reading its arguments), on a temp dir."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ansible_collections.pliers.deploy.plugins.modules import deploy_lock

# Wherever the collection is imported from (this checkout, or the tree ansible-test units builds).
MODULES = Path(deploy_lock.__file__).parent
COLLECTIONS = MODULES.parents[4]


def environment() -> dict[str, str]:
    """This process's environment, with the collection first on the module's import path (ansible-test units
    finds ansible itself through PYTHONPATH too)."""
    paths = [str(COLLECTIONS), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def run(module: str, tmp_path, check_mode: bool = False, **args) -> dict:
    params = dict(args, _ansible_check_mode=check_mode)
    args_file = tmp_path / f"{module}-args.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": params}))
    result = subprocess.run(
        [sys.executable, str(MODULES / f"{module}.py"), str(args_file)],
        capture_output=True, text=True, env=environment(), check=False,
    )  # fmt: skip
    return json.loads(result.stdout)


@pytest.fixture
def lock(tmp_path):
    return str(tmp_path / "state" / "deploy.lock")


def test_a_held_lock_refuses_a_second_run_naming_the_holder(tmp_path, lock):
    first = run("deploy_lock", tmp_path, path=lock, holder={"user": "alice", "controller": "ops-1", "release": "1.1.0"})
    assert not first.get("failed") and first["changed"] is False and first["token"]
    assert "token" not in first["holder"]
    second = run("deploy_lock", tmp_path, path=lock, holder={"user": "bob"})
    assert second["failed"]
    assert "alice@ops-1" in second["msg"] and "1.1.0" in second["msg"] and "since" in second["msg"]
    assert "pliers_deploy_lock_break=true" in second["msg"]


def test_release_frees_the_lock_only_for_its_holder(tmp_path, lock):
    first = run("deploy_lock", tmp_path, path=lock, holder={"user": "alice"})
    stranger = run("deploy_lock", tmp_path, path=lock, state="absent", token="not-the-token")  # noqa: S106 - not a secret
    assert "warnings" in stranger and (tmp_path / "state" / "deploy.lock").exists()
    released = run("deploy_lock", tmp_path, path=lock, state="absent", token=first["token"])
    assert not released.get("failed") and not (tmp_path / "state" / "deploy.lock").exists()
    again = run("deploy_lock", tmp_path, path=lock, holder={"user": "bob"})
    assert not again.get("failed")


def test_a_stale_lock_is_broken_only_when_asked(tmp_path, lock):
    run("deploy_lock", tmp_path, path=lock, holder={"user": "alice"})
    assert run("deploy_lock", tmp_path, path=lock, holder={"user": "bob"})["failed"]
    broken = run("deploy_lock", tmp_path, path=lock, holder={"user": "bob"}, break_lock=True)
    assert not broken.get("failed") and broken["broken"]["user"] == "alice" and broken["holder"]["user"] == "bob"


def test_check_mode_takes_no_lock(tmp_path, lock):
    result = run("deploy_lock", tmp_path, check_mode=True, path=lock, holder={"user": "alice"})
    assert not result.get("failed") and not (tmp_path / "state" / "deploy.lock").exists()


def record(tmp_path, history, release, result="ok", **extra):
    versions = {"api": release, "ai-service": release, "web": release}
    entry = {"user": "alice", "controller": "ops-1", "playbook": "deploy", "release": release, "versions": versions,
             "result": result, **extra}  # fmt: skip
    return run("release_log", tmp_path, path=history, record=entry)


def test_the_history_records_each_attempt_with_where_it_came_from(tmp_path):
    history = str(tmp_path / "state" / "releases.log")
    record(tmp_path, history, "1.0.0", started="2026-01-01T00:00:00+00:00")
    second = record(tmp_path, history, "1.1.0")
    assert second["changed"] is False
    assert second["recorded"]["id"] == 2 and second["recorded"]["from"]["api"] == "1.0.0"
    record(tmp_path, history, "broken", result="failed", message="service api: unhealthy")
    read = run("release_log", tmp_path, path=history)
    assert [entry["release"] for entry in read["entries"]] == ["1.0.0", "1.1.0", "broken"]
    assert read["current"]["release"] == "1.1.0", "a failed attempt is never the current release"
    assert read["entries"][0]["seconds"] > 0
    assert "api 1.1.0->broken" in read["lines"][2] and "service api: unhealthy" in read["lines"][2]


def test_a_rollback_goes_to_the_previous_good_release_or_a_named_one(tmp_path):
    history = str(tmp_path / "releases.log")
    for release, result in (("1.0.0", "ok"), ("1.1.0", "ok"), ("broken", "failed"), ("1.1.0", "ok")):
        record(tmp_path, history, release, result=result)
    assert run("release_log", tmp_path, path=history, rollback_to="previous")["target"]["release"] == "1.0.0"
    assert run("release_log", tmp_path, path=history, rollback_to="2")["target"]["id"] == 2
    unknown = run("release_log", tmp_path, path=history, rollback_to="broken")
    assert unknown["failed"] and "no successful release 'broken'" in unknown["msg"] and "1 (1.0.0)" in unknown["msg"]


def test_a_rollback_with_no_history_says_so(tmp_path):
    result = run("release_log", tmp_path, path=str(tmp_path / "none.log"), rollback_to="previous")
    assert result["failed"] and "nothing to roll back to" in result["msg"]


def test_check_mode_records_nothing(tmp_path):
    history = tmp_path / "releases.log"
    entry = {"release": "1.0.0", "versions": {}, "result": "ok"}
    result = run("release_log", tmp_path, check_mode=True, path=str(history), record=entry)
    assert not result.get("failed") and not history.exists()


def test_a_record_with_an_unknown_result_is_refused(tmp_path):
    result = run("release_log", tmp_path, path=str(tmp_path / "r.log"), record={"release": "x", "result": "maybe"})
    assert result["failed"] and "record.result must be one of ok, failed" in result["msg"]
