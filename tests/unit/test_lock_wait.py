"""pliers_deploy_lock_wait, for real: the deploy_lock module and its action plugin run by ansible on this machine (a
local connection) against a lock file another controller's live run holds. A run that waits takes the lock once that
run releases it; one whose wait runs out is refused, saying it waited and naming the holder."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from ..paths import ROOT

ANSIBLE = Path(sys.executable).parent / "ansible"


def held_by_another_controller(lock: Path) -> None:
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    holder = {"user": "alice", "controller": "ci-7", "controller_host": "ci-7", "pid": 4242, "playbook": "deploy",
              "release": "1.1.0", "since": stamp, "renewed": stamp, "lease": 1800, "token": "theirs"}  # fmt: skip
    lock.parent.mkdir(exist_ok=True)
    lock.write_text(json.dumps(holder))


def take(lock: Path, wait: int) -> tuple[dict, float]:
    """One run of the module (with its action plugin) taking the lock: its result (failed said as ansible says it,
    on the line), and how long it took."""
    args = json.dumps({"path": str(lock), "holder": {"user": "bob", "playbook": "deploy"}, "wait": wait})
    command = [str(ANSIBLE), "localhost", "-c", "local", "-e", f"ansible_python_interpreter={sys.executable}",
               "-m", "pliers.deploy.deploy_lock", "-a", args, "--one-line"]  # fmt: skip
    started = time.monotonic()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    answer = result.stdout.strip().splitlines()[-1]
    said, _, outcome = answer.partition(" => ")
    return {**json.loads(outcome), "failed": "FAILED!" in said}, time.monotonic() - started


def test_a_run_that_waits_takes_the_lock_once_the_other_run_releases_it(tmp_path):
    lock = tmp_path / "state" / "deploy.lock"
    held_by_another_controller(lock)
    # The other run releases its lock once this one asked for it (its first attempt leaves the guard file) and was
    # refused: however long ansible takes to start.
    guard = lock.parent / f".{lock.name}.guard"

    def release_after_the_first_attempt() -> None:
        deadline = time.monotonic() + 50
        while not guard.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1)
        lock.unlink()

    releasing = threading.Thread(target=release_after_the_first_attempt, daemon=True)
    releasing.start()
    result, _seconds = take(lock, wait=60)
    releasing.join()
    assert not result["failed"], result
    assert result["token"] and result["holder"]["user"] == "bob"
    # Refused once, then taken at the next attempt (every 5 s).
    assert 5 <= result["waited"] < 60, result
    assert json.loads(lock.read_text())["token"] == result["token"]


def test_a_run_whose_wait_runs_out_is_refused_naming_the_holder_and_the_lock_is_left_alone(tmp_path):
    lock = tmp_path / "state" / "deploy.lock"
    held_by_another_controller(lock)
    before = lock.read_text()
    result, seconds = take(lock, wait=6)
    assert result["failed"] and result["held"], result
    assert re.match(r"after waiting \d+ s for it, another deploy holds the lock", result["msg"]), result["msg"]
    assert result["waited"] >= 6
    assert "alice@ci-7 (deploy 1.1.0)" in result["msg"]
    assert seconds >= 6 and lock.read_text() == before
