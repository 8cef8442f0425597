"""Releases on the real lab, in both modes, under a probe of about 20 requests/second through the edge:
an upgrade (1.0.0 -> 1.1.0) and a rollback fail no request, a broken release fails the play naming the
api while the old release keeps serving, a concurrent deploy is refused, and the history records it all.

The tests of a mode run in order on one lab (compose: one host; swarm: three nodes). Each rollout's
duration and the probe's counts are written to .lab/reports/releases-<mode>.json."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab import hosts as lab_hosts
from lab.common import ROOT
from lab.topology import Lab

from .support import Probe, http, lab_cli, wait_for

PLAYBOOK_BIN = Path(sys.executable).parent / "ansible-playbook"
VAULT = "inventories/local/vault-password-dev-only.txt"
STACK = "pliers-local"  # both local inventories deploy the environment "local"
MODES = {
    "compose": {
        "lab": Lab("pliers-rel"),
        "hosts": 1,
        "inventory": "local",
        "layout": "pliers_hosts:\n  hosts:\n    pliers-rel-1:\n",
    },
    "swarm": {
        "lab": Lab("pliers-relsw"),
        "hosts": 3,
        "inventory": "local-swarm",
        "layout": """\
pliers_hosts:
  children:
    swarm_managers:
      hosts:
        pliers-relsw-1: {docker_host_node_labels: {edge: "true"}}
    swarm_workers:
      hosts:
        pliers-relsw-2: {docker_host_node_labels: {db: "true"}}
        pliers-relsw-3: {docker_host_node_labels: {}}
""",
    },
}
FIGURES: dict[str, dict] = {}


class Target:
    """One mode's lab, its inventory, and the ways to deploy to it and look at it."""

    def __init__(self, mode: str, inventory: Path) -> None:
        self.mode = mode
        self.lab: Lab = MODES[mode]["lab"]
        self.inventory = inventory
        self.deployer = lab_hosts.Host(f"{self.lab.name}-1", lab_hosts.host_address(self.lab, f"{self.lab.name}-1"))
        self.edge = f"http://{self.deployer.address}:80"

    def command(self, playbook: str, *extra: str) -> list[str]:
        return [
            str(PLAYBOOK_BIN), f"playbooks/{playbook}", "-i", str(self.inventory), "-i", str(self.lab.inventory),
            "--vault-password-file", VAULT, *extra,
        ]  # fmt: skip

    def play(self, playbook: str, *extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(playbook, *extra), cwd=ROOT, capture_output=True, text=True)

    def version(self) -> str:
        status, body = http(f"{self.edge}/api/health")
        assert status == 200, f"the api does not answer through the edge: {status} {body}"
        return json.loads(body)["version"]

    def sql(self, query: str) -> str:
        """One value from PostgreSQL, on the node that runs it (a Compose container or a Swarm task)."""
        find = (
            "docker ps -q --filter label=com.docker.compose.service=postgres; "
            f"docker ps -q --filter label=com.docker.swarm.service.name={STACK}_postgres"
        )
        for host in lab_hosts.running_hosts(self.lab):
            node = lab_hosts.Host(host, lab_hosts.host_address(self.lab, host))
            containers = lab_hosts.ssh(node, find).stdout.split()
            if containers:
                command = f'docker exec {containers[0]} psql -U pliers -d pliers -tAc "{query}"'
                return lab_hosts.ssh(node, command).stdout.strip()
        raise AssertionError("no node runs PostgreSQL")

    def release(self, playbook: str, *extra: str, name: str) -> tuple[subprocess.CompletedProcess, Probe]:
        """Run a playbook under the probe; keep its duration and the probe's counts."""
        with Probe(self.edge) as probe:
            time.sleep(1)
            started = time.monotonic()
            result = self.play(playbook, *extra)
            seconds = round(time.monotonic() - started, 1)
            time.sleep(1)
        FIGURES.setdefault(self.mode, {})[name] = {
            "rc": result.returncode, "seconds": seconds, "requests": probe.sent, "failed": len(probe.failures),
        }  # fmt: skip
        report = ROOT / ".lab" / "reports" / f"releases-{self.mode}.json"
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(FIGURES[self.mode], indent=2) + "\n")
        return result, probe


def output(result: subprocess.CompletedProcess) -> str:
    return result.stdout[-5000:] + result.stderr[-2000:]


@pytest.fixture(scope="module", params=list(MODES))
def target(request, tmp_path_factory):
    mode = request.param
    spec = MODES[mode]
    lab_cli("down", name=spec["lab"].name)
    lab_cli("up", "--hosts", str(spec["hosts"]), name=spec["lab"].name)
    inventory = tmp_path_factory.mktemp(f"inventory-{mode}")
    shutil.copytree(ROOT / "inventories" / spec["inventory"] / "group_vars", inventory / "group_vars")
    shutil.copy(ROOT / "molecule/default/inventory/group_vars/pliers_hosts.yml", inventory / "group_vars")
    (inventory / "hosts.yml").write_text(spec["layout"])
    target = Target(mode, inventory)
    first = target.play("deploy.yml", "-e", "pliers_release=1.0.0")
    assert first.returncode == 0, output(first)
    assert target.version() == "1.0.0"
    yield target
    lab_cli("down", name=spec["lab"].name)


def test_an_upgrade_drops_no_request_and_migrates_once(target):
    result, probe = target.release("deploy.yml", "-e", "pliers_release=1.1.0", name="upgrade 1.0.0 -> 1.1.0")
    assert result.returncode == 0, output(result)
    assert not probe.failures, probe.summary()
    assert probe.sent > 100, probe.summary()
    assert target.version() == "1.1.0"
    assert target.sql("SELECT count(*) FROM schema_migrations WHERE version = '0002_item_tags'") == "1"


def test_a_broken_release_fails_naming_the_api_and_the_old_one_keeps_serving(target):
    result, probe = target.release("deploy.yml", "-e", "pliers_release=broken", name="broken release")
    assert result.returncode != 0, output(result)
    failure = [line for line in result.stdout.splitlines() if line.startswith("fatal:")][-1]
    assert re.search(r"\bapi: ", failure), failure  # compose: "service api: ...", swarm: "update of api: ..."
    assert not probe.failures, probe.summary()
    assert target.version() == "1.1.0"


def test_a_rollback_returns_to_the_previous_release_without_dropping_a_request(target):
    result, probe = target.release("rollback.yml", name="rollback 1.1.0 -> 1.0.0")
    assert result.returncode == 0, output(result)
    assert not probe.failures, probe.summary()
    assert target.version() == "1.0.0"


def test_a_concurrent_deploy_is_refused_while_the_first_completes(target):
    first = subprocess.Popen(
        target.command("deploy.yml", "-e", "pliers_release=1.1.0"),
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lock = "test -e /var/lib/pliers/local/deploy.lock"
    wait_for(lambda: lab_hosts.ssh(target.deployer, lock, check=False).returncode == 0, timeout=300,
             what="the first deploy to take the lock")  # fmt: skip
    second = target.play("deploy.yml", "-e", "pliers_release=1.1.0")
    first_output, _ = first.communicate(timeout=900)
    assert second.returncode != 0, output(second)
    assert "another deploy holds the lock" in second.stdout and "since" in second.stdout, output(second)
    assert first.returncode == 0, first_output[-5000:]
    assert target.version() == "1.1.0"


def test_the_history_records_every_attempt(target):
    result = target.play("releases.yml")
    assert result.returncode == 0, output(result)
    lines = [line.strip().strip('",') for line in result.stdout.splitlines() if line.strip().startswith('"#')]
    outcomes = [(line.split()[3], line.split()[4].rstrip(":"), line.split()[5]) for line in lines]
    assert outcomes == [
        ("deploy", "1.0.0", "ok"),
        ("deploy", "1.1.0", "ok"),
        ("deploy", "broken", "failed"),
        ("rollback", "1.0.0", "ok"),
        ("deploy", "1.1.0", "ok"),
    ], result.stdout[-3000:]
