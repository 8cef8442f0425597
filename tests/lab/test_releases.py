"""Releases on the real lab, in both modes, under a probe of about 20 requests/second through the edge:
an upgrade (1.0.0 -> 1.1.0) and a rollback fail no request, a broken release fails the play naming the
api while the old release keeps serving, a concurrent deploy is refused (on the Compose stack: the lock is the
same in both modes), and the history records it all.

The tests of a mode run in order on its Molecule scenario's lab (compose: one host; swarm: four nodes). Each rollout's
duration and the probe's counts are written to .lab/reports/releases-<mode>.json."""

from __future__ import annotations

import re
import subprocess

import pytest

from lab import hosts as lab_hosts
from lab.common import ROOT

from .support import output, wait_for


def test_an_upgrade_drops_no_request_and_migrates_once(deployed):
    result, probe = deployed.release("deploy.yml", "-e", "pliers_release=1.1.0", name="upgrade 1.0.0 -> 1.1.0")
    assert result.returncode == 0, output(result)
    assert not probe.failures, probe.summary()
    assert probe.sent > 100, probe.summary()
    assert deployed.version() == "1.1.0"
    assert deployed.sql("SELECT count(*) FROM schema_migrations WHERE version = '0002_item_tags'") == "1"


def test_a_broken_release_fails_naming_the_api_and_the_old_one_keeps_serving(deployed):
    result, probe = deployed.release("deploy.yml", "-e", "pliers_release=broken", name="broken release")
    assert result.returncode != 0, output(result)
    failure = [line for line in result.stdout.splitlines() if line.startswith("fatal:")][-1]
    assert re.search(r"\bapi: ", failure), failure  # compose: "service api: ...", swarm: "update of api: ..."
    assert not probe.failures, probe.summary()
    assert deployed.version() == "1.1.0"


def test_a_rollback_returns_to_the_previous_release_without_dropping_a_request(deployed):
    result, probe = deployed.release("rollback.yml", name="rollback 1.1.0 -> 1.0.0")
    assert result.returncode == 0, output(result)
    assert not probe.failures, probe.summary()
    assert deployed.version() == "1.0.0"


@pytest.mark.parametrize("deployed", ["compose"], indirect=True)  # the same lock in both modes
def test_a_concurrent_deploy_is_refused_while_the_first_completes(deployed):
    first = subprocess.Popen(
        deployed.command("deploy.yml", "-e", "pliers_release=1.1.0"),
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lock = "test -e /var/lib/pliers/local/deploy.lock"
    wait_for(lambda: lab_hosts.ssh(deployed.deployer, lock, check=False).returncode == 0, timeout=300,
             what="the first deploy to take the lock")  # fmt: skip
    second = deployed.play("deploy.yml", "-e", "pliers_release=1.1.0")
    first_output, _ = first.communicate(timeout=900)
    assert second.returncode != 0, output(second)
    assert "another deploy holds the lock" in second.stdout and "since" in second.stdout, output(second)
    assert first.returncode == 0, first_output[-5000:]
    assert deployed.version() == "1.1.0"


def test_the_history_records_every_attempt(deployed):
    result = deployed.play("releases.yml")
    assert result.returncode == 0, output(result)
    lines = [line.strip().strip('",') for line in result.stdout.splitlines() if line.strip().startswith('"#')]
    outcomes = [(line.split()[3], line.split()[4].rstrip(":"), line.split()[5]) for line in lines]
    # The first deploy (the fixture's), then whatever the backup tests deployed, then this module's releases.
    assert outcomes[0] == ("deploy", "1.0.0", "ok"), result.stdout[-3000:]
    releases = [("deploy", "1.1.0", "ok"), ("deploy", "broken", "failed"), ("rollback", "1.0.0", "ok")]
    if deployed.mode == "compose":  # the concurrent deploy's
        releases.append(("deploy", "1.1.0", "ok"))
    assert outcomes[-len(releases) :] == releases, result.stdout[-3000:]
