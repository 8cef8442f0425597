"""Node loss on a real four-node Swarm (three managers, one worker): when the worker stops, every
service returns to its desired replicas on the other nodes and the edge keeps answering; with the
first manager of the inventory (the one that created the Swarm and led every deploy) stopped too, a
deploy (an upgrade to 1.1.0) still succeeds, led by the next manager. Then the lost worker leaves the
inventory: it is only reported, until the guard variable allows its removal."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lab import hosts as lab_hosts
from lab.common import ROOT, docker
from lab.topology import Lab

from .support import http, lab_cli, wait_for

LAB = Lab("pliers-loss")
STACK = "pliers-local"
HOSTS = """\
pliers_hosts:
  children:
    swarm_managers:
      hosts:
        pliers-loss-3: {docker_host_node_labels: {}}
        pliers-loss-1: {docker_host_node_labels: {edge: "true"}}
        pliers-loss-2: {docker_host_node_labels: {db: "true"}}
    swarm_workers:
      hosts:
        pliers-loss-4: {docker_host_node_labels: {}}
"""


@pytest.fixture(scope="module")
def swarm(tmp_path_factory):
    lab_cli("down", name=LAB.name)
    lab_cli("up", "--hosts", "4", name=LAB.name)
    inventory = tmp_path_factory.mktemp("inventory")
    shutil.copytree(ROOT / "inventories" / "local-swarm" / "group_vars", inventory / "group_vars")
    shutil.copy(ROOT / "molecule/default/inventory/group_vars/pliers_hosts.yml", inventory / "group_vars")
    (inventory / "hosts.yml").write_text(HOSTS)
    yield inventory
    lab_cli("down", name=LAB.name)


def deploy(inventory: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [
        str(Path(sys.executable).parent / "ansible-playbook"), "playbooks/deploy.yml", "-i", str(inventory),
        "-i", str(LAB.inventory), "--vault-password-file", "inventories/local/vault-password-dev-only.txt", *extra,
    ]  # fmt: skip
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True)


def manager() -> lab_hosts.Host:
    return lab_hosts.lab_host(LAB, "pliers-loss-1")


def services() -> dict[str, tuple[str, int, int, set[str]]]:
    """Each service's (mode, running, desired, nodes running it), as the first manager sees them.

    Running counts the tasks Swarm wants running that run: `docker service ls` also counts a replaced task on a
    node that went down, whose last known state stays "running" (api 4/3 while one of its 3 tasks was lost).
    """
    listing = lab_hosts.ssh(manager(), "docker service ls --format '{{json .}}'").stdout.splitlines()
    state = {}
    for row in map(json.loads, listing):
        desired = int(row["Replicas"].split()[0].split("/")[1])
        tasks = lab_hosts.ssh(manager(), f"docker service ps {row['Name']} --filter desired-state=running "
                                         "--format '{{.Node}} {{.CurrentState}}'").stdout.splitlines()  # fmt: skip
        running = [line.split()[0] for line in tasks if " Running " in f"{line} "]
        state[row["Name"].removeprefix(f"{STACK}_")] = (row["Mode"], len(running), desired, set(running))
    return state


def recovered_without(lost: str, before: dict) -> bool:
    """Every replicated service at its replicas, none on the lost node; every global one (node exporter,
    one per node) still on every other node it ran on. (A global task on a lost node stays listed until
    the node is removed: Swarm cannot reschedule it elsewhere.)"""
    for name, (mode, running, desired, nodes) in services().items():
        if mode == "global":
            if not (before[name][3] - {lost}) <= nodes:
                return False
        elif running != desired or lost in nodes:
            return False
    return True


def history(node: str) -> str:
    """The release history on a node (where the deploys it led recorded themselves)."""
    read = "cat /var/lib/pliers/local/releases.log 2>/dev/null || true"
    return lab_hosts.ssh(lab_hosts.lab_host(LAB, node), read).stdout


def edge(path: str = "/api/health") -> tuple[int, str]:
    return http(f"http://{manager().address}:80{path}", timeout=15)


def test_the_stack_survives_a_lost_worker_and_deploys_with_its_first_manager_lost(swarm):
    first = deploy(swarm)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    assert edge()[0] == 200
    before = services()
    assert any("pliers-loss-4" in nodes for _, _, _, nodes in before.values()), "the worker should run some tasks"

    docker("stop", "pliers-loss-4")
    answers = []

    def recovered() -> bool:
        answers.append(edge()[0])
        return recovered_without("pliers-loss-4", before)

    wait_for(recovered, timeout=240, interval=3, what="every service back at its replicas without pliers-loss-4")
    assert answers and all(status == 200 for status in answers), f"the edge failed while the worker was lost: {answers}"
    status = lab_hosts.ssh(manager(), "docker node inspect pliers-loss-4 --format '{{.Status.State}}'").stdout.strip()
    assert status == "down"

    # The first manager created the Swarm and led the deploy above: the release history is on it.
    assert '"release": "1.0.0"' in history("pliers-loss-3"), "the first manager did not lead the deploy"
    docker("stop", "pliers-loss-3")

    def manager_lost() -> bool:
        reachability = "docker node inspect pliers-loss-3 --format '{{.ManagerStatus.Reachability}}'"
        return lab_hosts.ssh(manager(), reachability).stdout.strip() == "unreachable"

    wait_for(manager_lost, timeout=60, what="the other managers to see pliers-loss-3 unreachable")  # 2 of 3 keep quorum
    upgrade = deploy(swarm, "--limit", "all:!pliers-loss-3:!pliers-loss-4", "-e", "pliers_release=1.1.0")
    assert upgrade.returncode == 0, upgrade.stdout[-4000:] + upgrade.stderr[-2000:]
    status, body = edge()
    assert status == 200 and json.loads(body)["version"] == "1.1.0"
    assert '"release": "1.1.0"' in history("pliers-loss-1"), "the next manager did not lead the upgrade"


def test_a_node_that_left_the_inventory_is_removed_only_when_asked(swarm):
    # After the test above: pliers-loss-3 and -4 are stopped. Drop -4 from the inventory.
    (swarm / "hosts.yml").write_text(HOSTS.replace("        pliers-loss-4: {docker_host_node_labels: {}}\n", ""))
    live = ("--limit", "all:!pliers-loss-3", "-e", "pliers_release=1.1.0")

    reported = deploy(swarm, *live)
    assert reported.returncode == 0, reported.stdout[-4000:] + reported.stderr[-2000:]
    assert "In the Swarm but not in the inventory: pliers-loss-4" in reported.stdout
    nodes = "docker node ls --format '{{.Hostname}}'"
    assert "pliers-loss-4" in lab_hosts.ssh(manager(), nodes).stdout.split(), "removed without being asked"

    removed = deploy(swarm, *live, "-e", "docker_host_swarm_remove_absent_nodes=true")
    assert removed.returncode == 0, removed.stdout[-4000:] + removed.stderr[-2000:]
    remaining = lab_hosts.ssh(manager(), nodes).stdout.split()
    assert "pliers-loss-4" not in remaining and "pliers-loss-3" in remaining
