"""Releases on the real lab, in both modes, under a probe of about 20 requests/second through the edge:
an upgrade (1.0.0 -> 1.1.0) and a rollback fail no request, a broken release fails the play naming the
api while the old release keeps serving, a concurrent deploy is refused (on the Compose stack: the lock is the
same in both modes), and the history records each attempt (each test checks the entries its own attempts added).

The tests of a mode run on its Molecule scenario's lab (compose: one host; swarm: four nodes), each from whatever
the tests before it left: a test that needs a release to start from deploys it first when it does not run. Each
rollout's duration and the probe's counts are written to .lab/reports/releases-<mode>.json."""

from __future__ import annotations

import os
import re
import signal
import subprocess

import pytest

from lab import hosts as lab_hosts
from lab.common import ROOT

from .support import output, wait_for


def history(target, last: int = 20) -> list[tuple[int, str, str, str]]:
    """The newest `last` attempts of the release history, as releases.yml prints them: (id, playbook, release,
    result), oldest first."""
    result = target.play("releases.yml", "-e", f"pliers_releases_last={last}")
    assert result.returncode == 0, output(result)
    lines = [line.strip().strip('",') for line in result.stdout.splitlines() if line.strip().startswith('"#')]
    # "#7 <time> <user>@<controller> deploy 1.1.0: ok 42.1s (api 1.0.0->1.1.0, ...)"
    return [
        (int(fields[0].lstrip("#")), fields[3], fields[4].rstrip(":"), fields[5]) for fields in map(str.split, lines)
    ]


def last_attempt(target) -> int:
    """The id of the newest attempt in the history (0 when there is none)."""
    newest = history(target, last=1)
    return newest[-1][0] if newest else 0


def recorded_since(target, attempt: int) -> list[tuple[str, str, str]]:
    """(playbook, release, result) of each attempt recorded after attempt `attempt`, oldest first."""
    return [entry[1:] for entry in history(target) if entry[0] > attempt]


def at_release(target, release: str) -> None:
    """The stack serving `release` (deployed first when it does not), to start a test from."""
    if target.version() != release:
        result = target.play("deploy.yml", "-e", f"pliers_release={release}")
        assert result.returncode == 0, output(result)
        assert target.version() == release


def test_an_upgrade_drops_no_request_and_migrates_once(deployed):
    at_release(deployed, "1.0.0")
    before = last_attempt(deployed)
    result, probe = deployed.release("deploy.yml", "-e", "pliers_release=1.1.0", name="upgrade 1.0.0 -> 1.1.0")
    assert result.returncode == 0, output(result)
    assert not probe.failures, probe.summary()
    assert probe.sent > 100, probe.summary()
    assert deployed.version() == "1.1.0"
    assert deployed.sql("SELECT count(*) FROM schema_migrations WHERE version = '0002_item_tags'") == "1"
    assert recorded_since(deployed, before) == [("deploy", "1.1.0", "ok")]


def test_a_broken_release_fails_naming_the_api_and_the_old_one_keeps_serving(deployed):
    running = deployed.version()
    before = last_attempt(deployed)
    result, probe = deployed.release("deploy.yml", "-e", "pliers_release=broken", name="broken release")
    assert result.returncode != 0, output(result)
    failure = [line for line in result.stdout.splitlines() if line.startswith("fatal:")][-1]
    assert re.search(r"\bapi: ", failure), failure  # compose: "service api: ...", swarm: "update of api: ..."
    assert not probe.failures, probe.summary()
    assert deployed.version() == running
    assert recorded_since(deployed, before) == [("deploy", "broken", "failed")]


def test_a_rollback_returns_to_the_previous_release_without_dropping_a_request(deployed):
    # The previous release is the last successful one whose versions differ from the running one's: 1.0.0, the
    # first deploy's, once 1.1.0 runs.
    at_release(deployed, "1.1.0")
    before = last_attempt(deployed)
    result, probe = deployed.release("rollback.yml", name="rollback 1.1.0 -> 1.0.0")
    assert result.returncode == 0, output(result)
    assert not probe.failures, probe.summary()
    assert deployed.version() == "1.0.0"
    assert recorded_since(deployed, before) == [("rollback", "1.0.0", "ok")]


@pytest.mark.parametrize("deployed", ["compose"], indirect=True)  # the same lock in both modes
def test_a_concurrent_deploy_is_refused_while_the_first_completes(deployed):
    before = last_attempt(deployed)
    first = subprocess.Popen(
        deployed.command("deploy.yml", "-e", "pliers_release=1.1.0"),
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    lock = "test -e /var/lib/pliers/local/deploy.lock"
    wait_for(lambda: lab_hosts.ssh(deployed.deployer, lock, check=False).returncode == 0, timeout=300,
             what="the first deploy to take the lock")  # fmt: skip
    # The first deploy is paused while it holds the lock (alive, as a slow one is), so that the second meets it
    # however fast the first would have finished.
    os.killpg(first.pid, signal.SIGSTOP)
    try:
        second = deployed.play("deploy.yml", "-e", "pliers_release=1.1.0")
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    first_output, _ = first.communicate(timeout=900)
    assert second.returncode != 0, output(second)
    assert "another deploy holds the lock" in second.stdout and "since" in second.stdout, output(second)
    assert first.returncode == 0, first_output[-5000:]
    assert deployed.version() == "1.1.0"
    # The deploy that went through is recorded; the one refused at the lock is not an attempt.
    assert recorded_since(deployed, before) == [("deploy", "1.1.0", "ok")]


def test_the_history_begins_with_the_first_deploy(deployed):
    # The whole history, oldest first: its first entry is the Molecule scenario's converge, at 1.0.0.
    entries = history(deployed, last=100_000)
    assert entries and entries[0][1:] == ("deploy", "1.0.0", "ok"), entries[:3]
