"""deploy_lock and release_log, run as Ansible runs a module (a process reading its arguments), on a temp dir."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from .process import MODULES, environment, run


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


# The token of a hold another run left: a lock token only identifies a hold, it is no secret.
ALICES = "alices"


def ago(seconds: int) -> str:
    return datetime.fromtimestamp(time.time() - seconds, timezone.utc).isoformat(timespec="seconds")


def write_lock(lock: str, **record) -> None:
    """A lock file as another run (or an older version of the module) left it."""
    os.makedirs(os.path.dirname(lock), exist_ok=True)
    Path(lock).write_text(json.dumps(record))


def warnings(result: dict) -> list[str]:
    """The warnings' texts (a plain string each, or an event, by the version of ansible-core)."""
    return [w["event"]["msg"] if isinstance(w, dict) else w for w in result.get("warnings", [])]


def lock_file(lock: str) -> dict:
    return json.loads(Path(lock).read_text())


def test_a_lock_records_its_lease_and_when_it_was_renewed(tmp_path, lock):
    taken = run("deploy_lock", tmp_path, path=lock, holder={"user": "alice"}, lease=600)
    assert not taken.get("failed") and taken["taken_over"] == {}
    assert taken["holder"]["lease"] == 600 and taken["holder"]["renewed"] == taken["holder"]["since"]
    recorded = lock_file(lock)
    assert recorded["token"] == taken["token"] and recorded["lease"] == 600
    assert datetime.fromisoformat(recorded["renewed"]).utcoffset().total_seconds() == 0
    guard = tmp_path / "state" / ".deploy.lock.guard"
    assert guard.exists() and guard.stat().st_mode & 0o777 == 0o600


def test_a_renewal_keeps_the_lock_and_updates_renewed(tmp_path, lock):
    taken = run("deploy_lock", tmp_path, path=lock, holder={"user": "alice", "release": "1.1.0"})
    since = ago(300)
    write_lock(lock, **dict(lock_file(lock), since=since, renewed=since))
    renewed = run("deploy_lock", tmp_path, path=lock, token=taken["token"])
    assert not renewed.get("failed") and renewed["changed"] is False and renewed["token"] == taken["token"]
    after = lock_file(lock)
    assert after["token"] == taken["token"] and after["user"] == "alice" and after["release"] == "1.1.0"
    assert after["since"] == since and after["lease"] == 900
    assert time.time() - datetime.fromisoformat(after["renewed"]).timestamp() < 60
    assert "token" not in renewed["holder"] and renewed["holder"]["renewed"] == after["renewed"]


def test_a_run_whose_lock_was_taken_over_stops_at_its_next_renewal(tmp_path, lock):
    first = run("deploy_lock", tmp_path, path=lock, holder={"user": "alice"})
    write_lock(lock, **dict(lock_file(lock), renewed=ago(1000)))
    second = run("deploy_lock", tmp_path, path=lock, holder={"user": "bob"})
    assert not second.get("failed") and second["taken_over"]["user"] == "alice"
    renewal = run("deploy_lock", tmp_path, path=lock, token=first["token"])
    assert renewal["failed"] and "is no longer this run's" in renewal["msg"] and "bob@" in renewal["msg"]
    assert "this run stops here" in renewal["msg"]
    assert lock_file(lock)["token"] == second["token"], "a failed renewal leaves the new holder's lock alone"
    # The old holder's release leaves the lock to the run that took it over.
    released = run("deploy_lock", tmp_path, path=lock, state="absent", token=first["token"])
    assert "warnings" in released and lock_file(lock)["token"] == second["token"]


def test_a_renewal_of_a_released_lock_fails(tmp_path, lock):
    first = run("deploy_lock", tmp_path, path=lock, holder={"user": "alice"})
    run("deploy_lock", tmp_path, path=lock, state="absent", token=first["token"])
    renewal = run("deploy_lock", tmp_path, path=lock, token=first["token"])
    assert renewal["failed"] and "no longer this run's (now free)" in renewal["msg"]
    assert not Path(lock).exists()


def test_a_lock_whose_lease_expired_is_taken_over_with_a_warning(tmp_path, lock):
    write_lock(lock, user="alice", controller="ops-1", playbook="deploy", release="1.0.0", token=ALICES,
               since=ago(3600), renewed=ago(900 + 600), lease=900, pid=4242, controller_host="ops-1")  # fmt: skip
    taken = run("deploy_lock", tmp_path, path=lock, holder={"user": "bob"}, lease=60)
    assert not taken.get("failed") and taken["holder"]["user"] == "bob" and taken["token"] != ALICES
    assert taken["taken_over"]["user"] == "alice" and "token" not in taken["taken_over"]
    assert "lease expired 10 minutes ago" in taken["taken_over"]["reason"]
    assert taken["broken"] == {}, "broken is break_lock's"
    (warning,) = warnings(taken)
    assert "alice@ops-1" in warning and "pid 4242 on ops-1" in warning and "lease expired 10 minutes ago" in warning
    assert lock_file(lock)["token"] == taken["token"] and lock_file(lock)["lease"] == 60


def test_the_lease_the_lock_file_records_is_the_one_that_counts(tmp_path, lock):
    # Recorded 2 hours, renewed an hour ago: still held, though the caller's lease is a minute.
    write_lock(lock, user="alice", token=ALICES, since=ago(3600), renewed=ago(3600), lease=7200,
               pid=4242, pid_started="123", controller_host="ops-1")  # fmt: skip
    refused = run("deploy_lock", tmp_path, path=lock, holder={"user": "bob"}, lease=60)
    assert refused["failed"] and refused["held"] is True and refused["holder_token"] == ALICES
    assert refused["holder"]["user"] == "alice" and "token" not in refused["holder"]
    assert "another deploy holds the lock" in refused["msg"] and "since" in refused["msg"]
    assert "pid 4242 on ops-1" in refused["msg"] and "pliers_deploy_lock_break=true" in refused["msg"]
    assert lock_file(lock)["token"] == ALICES


def test_an_old_format_lock_is_judged_by_since(tmp_path, lock):
    write_lock(lock, user="alice", controller="ops-1", token=ALICES, since=ago(120))
    refused = run("deploy_lock", tmp_path, path=lock, holder={"user": "bob"})
    assert refused["failed"] and refused["held"] is True and refused["holder_token"] == ALICES
    taken = run("deploy_lock", tmp_path, path=lock, holder={"user": "bob"}, lease=60)
    assert not taken.get("failed") and taken["taken_over"]["user"] == "alice"
    assert "lease expired 1 minute ago" in warnings(taken)[0]


def test_take_over_needs_the_token_the_lock_file_still_holds(tmp_path, lock):
    since = ago(10)
    write_lock(lock, user="alice", token=ALICES, since=since, renewed=since, lease=900)
    wrong = run("deploy_lock", tmp_path, path=lock, holder={"user": "bob"}, take_over="not-alices")
    assert wrong["failed"] and wrong["held"] is True and wrong["holder_token"] == ALICES
    assert "another deploy holds the lock" in wrong["msg"] and lock_file(lock)["token"] == ALICES
    reason = "its deploy process (pid 4242 on ops-1) is gone"
    taken = run("deploy_lock", tmp_path, path=lock, holder={"user": "bob"}, take_over=ALICES, take_over_reason=reason)
    assert not taken.get("failed") and taken["taken_over"] == {"user": "alice", "since": since, "renewed": since,
                                                               "lease": 900, "reason": reason}  # fmt: skip
    assert reason in warnings(taken)[0] and lock_file(lock)["token"] == taken["token"]
    # The token taken over is gone: a second run taking over the same dead holder is refused.
    late = run("deploy_lock", tmp_path, path=lock, holder={"user": "carol"}, take_over=ALICES)
    assert late["failed"] and late["holder_token"] == taken["token"]


def test_break_lock_reports_broken_and_taken_over(tmp_path, lock):
    write_lock(lock, user="alice", token=ALICES, since=ago(10), renewed=ago(10), lease=900)
    broken = run("deploy_lock", tmp_path, path=lock, holder={"user": "bob"}, break_lock=True)
    assert not broken.get("failed") and broken["broken"]["user"] == "alice" and "token" not in broken["broken"]
    assert broken["taken_over"] == dict(broken["broken"], reason="broken on request (break_lock)")


def test_check_mode_takes_over_nothing(tmp_path, lock):
    write_lock(lock, user="alice", token=ALICES, since=ago(2000), renewed=ago(2000), lease=900)
    result = run("deploy_lock", tmp_path, check_mode=True, path=lock, holder={"user": "bob"})
    assert not result.get("failed") and result["token"] == "" and result["taken_over"]["user"] == "alice"
    assert lock_file(lock)["token"] == ALICES


def test_of_many_runs_taking_the_same_stale_lock_exactly_one_wins(tmp_path, lock):
    write_lock(lock, user="alice", token=ALICES, since=ago(2000), renewed=ago(2000), lease=900)
    processes = []
    for number in range(8):
        args_file = tmp_path / f"racer-{number}.json"
        params = {"path": lock, "holder": {"user": f"racer-{number}"}, "_ansible_check_mode": False}
        args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": params}))
        processes.append(
            subprocess.Popen(
                [sys.executable, str(MODULES / "deploy_lock.py"), str(args_file)],
                stdout=subprocess.PIPE,
                text=True,
                env=environment(),
            )  # fmt: skip
        )
    results = [json.loads(process.communicate()[0]) for process in processes]
    winners = [result for result in results if not result.get("failed")]
    assert len(winners) == 1 and winners[0]["taken_over"]["user"] == "alice"
    assert all(result["held"] and result["holder_token"] == winners[0]["token"] for result in results
               if result.get("failed"))  # fmt: skip
    assert lock_file(lock)["token"] == winners[0]["token"]
    assert not [name for name in os.listdir(os.path.dirname(lock)) if name.endswith(".tmp")]


def test_the_history_accepts_an_interrupted_run(tmp_path):
    history = str(tmp_path / "releases.log")
    record(tmp_path, history, "1.0.0")
    interrupted = record(tmp_path, history, "1.1.0", result="interrupted", message="its deploy lock was taken over")
    assert not interrupted.get("failed") and interrupted["recorded"]["result"] == "interrupted"
    assert interrupted["current"]["release"] == "1.0.0", "an interrupted run is never the current release"


def test_a_hold_on_the_callers_own_controller_is_judged_by_its_process_not_its_lease(tmp_path, lock):
    # A live deploy that runs longer than its lease: its controller's action plugin sees the process alive.
    same = {"controller_host": "ops-1", "boot_id": "b1", "pid_ns": "pid:[4026531836]"}
    write_lock(lock, user="alice", pid=4242, since=ago(3600), renewed=ago(3600), lease=60, token="t1", **same)  # noqa: S106 - a lock token
    refused = run("deploy_lock", tmp_path, path=lock, holder={"user": "bob", **same})
    assert refused["failed"] and refused["held"] and refused["holder_token"] == "t1"
    elsewhere = {"user": "carol", "controller_host": "ops-2", "boot_id": "b2", "pid_ns": "pid:[4026531836]"}
    other = run("deploy_lock", tmp_path, path=lock, holder=elsewhere)
    assert not other.get("failed") and other["taken_over"]["user"] == "alice"


def mode(path: str) -> int:
    return os.stat(path).st_mode & 0o7777


def test_the_lock_file_stays_0600_whatever_it_replaces(tmp_path, lock):
    taken = run("deploy_lock", tmp_path, path=lock, holder={"user": "alice"})
    assert mode(lock) == 0o600
    run("deploy_lock", tmp_path, path=lock, token=taken["token"])
    assert mode(lock) == 0o600, "a renewal keeps the mode"
    # A stale lock another run or a hand left world-readable: the lock taken over in its place is 0600.
    write_lock(lock, user="alice", token=ALICES, since=ago(2000), renewed=ago(2000), lease=900)
    os.chmod(lock, 0o644)
    assert not run("deploy_lock", tmp_path, path=lock, holder={"user": "bob"}).get("failed")
    assert mode(lock) == 0o600
    assert not [name for name in os.listdir(os.path.dirname(lock)) if name.endswith(".tmp")]


def test_without_hard_links_a_free_lock_is_still_taken_0600(tmp_path, lock):
    # A filesystem without hard links (os.link fails): the lock file is moved into place, and under a umask
    # of 022 is still 0600, not the 0644 a new file would get.
    wrapper = tmp_path / "no_links.py"
    wrapper.write_text(
        "import errno, os, runpy, sys\n"
        "def link(*args, **kwargs):\n"
        "    raise OSError(errno.EPERM, 'no hard links here')\n"
        "os.link = link\n"
        "os.umask(0o022)\n"
        f"runpy.run_path({str(MODULES / 'deploy_lock.py')!r}, run_name='__main__')\n"
    )
    args_file = tmp_path / "no-links-args.json"
    params = {"path": lock, "holder": {"user": "alice"}, "_ansible_check_mode": False}
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": params}))
    result = subprocess.run(
        [sys.executable, str(wrapper), str(args_file)], capture_output=True, text=True, env=environment(), check=False
    )
    taken = json.loads(result.stdout)
    assert not taken.get("failed") and lock_file(lock)["token"] == taken["token"]
    assert mode(lock) == 0o600
    assert not [name for name in os.listdir(os.path.dirname(lock)) if name.endswith(".tmp")]


@pytest.mark.parametrize(("playbook", "name"), [("restore", "backup 20261201T000000Z"), ("maintenance", "1.1.0")])
def test_a_restore_or_maintenance_is_recorded_but_is_never_a_release_to_roll_back_to(tmp_path, playbook, name):
    history = str(tmp_path / "releases.log")
    for release in ("1.0.0", "1.1.0"):
        record(tmp_path, history, release)
    other = {"user": "alice", "playbook": playbook, "release": name, "versions": {}, "result": "ok"}
    assert not run("release_log", tmp_path, path=history, record=other).get("failed")
    read = run("release_log", tmp_path, path=history)
    assert read["current"]["release"] == "1.1.0" and f"{playbook} {name}: ok" in read["lines"][-1]
    assert run("release_log", tmp_path, path=history, rollback_to="previous")["target"]["release"] == "1.0.0"


def test_taking_the_lock_with_the_history_says_the_last_good_releases_versions(tmp_path, lock):
    history = str(tmp_path / "releases.log")
    first = run("deploy_lock", tmp_path, path=lock, holder={"user": "alice"}, history=history)
    assert first["previous_versions"] == {}, "no history: no previous release"
    run("deploy_lock", tmp_path, path=lock, state="absent", token=first["token"])
    record(tmp_path, history, "1.0.0")
    record(tmp_path, history, "broken", result="failed")
    run("release_log", tmp_path, path=history, record={"playbook": "maintenance", "versions": {}, "result": "ok"})
    taken = run("deploy_lock", tmp_path, path=lock, holder={"user": "alice"}, history=history)
    assert taken["previous_versions"]["api"] == "1.0.0", "a failed attempt or a maintenance switch is no release"
    checked = run("deploy_lock", tmp_path, check_mode=True, path=lock, holder={"user": "bob"}, history=history,
                  break_lock=True)  # fmt: skip
    assert checked["previous_versions"]["api"] == "1.0.0"


def test_a_renewal_with_the_history_records_the_attempt_and_keeps_the_lock(tmp_path, lock):
    history = str(tmp_path / "releases.log")
    record(tmp_path, history, "1.0.0")
    taken = run("deploy_lock", tmp_path, path=lock, holder={"user": "alice"}, history=history)
    attempt = {"user": "alice", "playbook": "deploy", "release": "1.1.0", "versions": {"api": "1.1.0"}, "result": "ok"}
    kept = run("deploy_lock", tmp_path, path=lock, token=taken["token"], history=history, record=attempt)
    assert not kept.get("failed") and kept["token"] == taken["token"] and lock_file(lock)["token"] == taken["token"]
    assert kept["recorded"]["from"] == taken["previous_versions"] and "api 1.0.0->1.1.0" in kept["recorded_line"]
    assert [entry["release"] for entry in run("release_log", tmp_path, path=history)["entries"]] == ["1.0.0", "1.1.0"]
    # The lock file says the attempt is recorded: a run taking it over (this one died pruning) knows it finished.
    assert lock_file(lock)["recorded"] == kept["recorded"]["id"] == 2
    released = run("deploy_lock", tmp_path, path=lock, state="absent", token=taken["token"])
    assert not released.get("failed") and released["recorded"] == {} and not Path(lock).exists()
    # A lock another run holds by now is not kept, with a warning; the attempt is still recorded (it happened).
    other = run("deploy_lock", tmp_path, path=lock, holder={"user": "bob"})
    late = run("deploy_lock", tmp_path, path=lock, token=taken["token"], history=history, record=attempt)
    assert not late.get("failed") and late["token"] == "" and late["recorded"]["id"] == 3
    assert any("no longer this run's (now bob@" in warning for warning in warnings(late))
    assert lock_file(lock)["token"] == other["token"]


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        ({"state": "absent", "token": ALICES, "history": "h.log"}, "history needs record"),
        ({"token": ALICES, "history": "h.log"}, "history needs record"),
        ({"holder": {"user": "bob"}, "history": "h.log", "record": {"result": "ok"}}, "not as it is taken"),
    ],
)
def test_a_record_goes_with_a_release_or_a_renewal_only(tmp_path, lock, args, problem):
    refused = run("deploy_lock", tmp_path, path=lock, **{**args, "history": str(tmp_path / args["history"])})
    assert refused["failed"] and problem in refused["msg"]
    assert not (tmp_path / "h.log").exists() and not Path(lock).exists()
