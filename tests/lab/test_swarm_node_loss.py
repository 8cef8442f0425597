"""Node loss on the deployed Swarm (three managers, one worker), the last tests of the swarm lane since they stop
nodes for good: with the worker lost (the fault suite's last case stops it during a release), every service runs
its desired replicas on the other nodes and the edge keeps answering; with the first manager (the one that created
the Swarm and led every deploy) stopped too, a deploy (an upgrade) still succeeds, led by the next manager. Then
the lost worker leaves the inventory: it is only reported, until the guard variable allows its removal."""

from __future__ import annotations

import json

import pytest

from lab import hosts as lab_hosts
from lab.common import docker

from .support import MODES, STACK, http, output, wait_for

SWARM = MODES["swarm"]
FIRST_MANAGER = SWARM["deployer"]
NEXT_MANAGER = SWARM["edge"]  # the second of swarm_managers
WORKER = SWARM["worker"]


@pytest.fixture
def swarm(deployed):
    if deployed.mode != "swarm":
        pytest.skip("a swarm case")
    return deployed


def manager(target) -> lab_hosts.Host:
    """A manager that stays up through these tests."""
    return lab_hosts.lab_host(target.lab, NEXT_MANAGER)


def services(target) -> dict[str, tuple[str, int, int, set[str]]]:
    """Each service's (mode, running, desired, nodes running it), as a manager sees them.

    Running counts the tasks Swarm wants running that run: `docker service ls` also counts a replaced task on a
    node that went down, whose last known state stays "running" (api 4/3 while one of its 3 tasks was lost).
    """
    host = manager(target)
    listing = lab_hosts.ssh(host, "docker service ls --format '{{json .}}'").stdout.splitlines()
    state = {}
    for row in map(json.loads, listing):
        desired = int(row["Replicas"].split()[0].split("/")[1])
        tasks = lab_hosts.ssh(host, f"docker service ps {row['Name']} --filter desired-state=running "
                                    "--format '{{.Node}} {{.CurrentState}}'").stdout.splitlines()  # fmt: skip
        running = [line.split()[0] for line in tasks if " Running " in f"{line} "]
        state[row["Name"].removeprefix(f"{STACK}_")] = (row["Mode"], len(running), desired, set(running))
    return state


def recovered_without(target, lost: str) -> bool:
    """Every replicated service at its replicas, none on the lost node; every global one (node exporter, one per
    node) on every other node. (A global task on a lost node stays listed until the node is removed: Swarm cannot
    reschedule it elsewhere.)"""
    others = {name for name in lab_hosts.running_hosts(target.lab) if name != lost}
    for mode, running, desired, nodes in services(target).values():
        if mode == "global":
            if not others <= nodes:
                return False
        elif running != desired or lost in nodes:
            return False
    return True


def node_state(target, node: str, field: str = "{{.Status.State}}") -> str:
    return lab_hosts.ssh(manager(target), f"docker node inspect {node} --format '{field}'").stdout.strip()


def history(target, node: str) -> str:
    """The release history on a node (where the deploys it led recorded themselves)."""
    read = "cat /var/lib/pliers/local/releases.log 2>/dev/null || true"
    return lab_hosts.ssh(lab_hosts.lab_host(target.lab, node), read).stdout


def edge(target, path: str = "/api/health") -> tuple[int, str]:
    return http(f"{target.edge}{path}", timeout=15)


def test_the_stack_survives_a_lost_worker_and_deploys_with_its_first_manager_lost(swarm):
    if docker("inspect", "--format", "{{.State.Running}}", WORKER).stdout.strip() == "true":
        docker("stop", WORKER)  # run alone: the fault suite did not stop it
    answers = []

    def recovered() -> bool:
        answers.append(edge(swarm)[0])
        return recovered_without(swarm, WORKER)

    wait_for(recovered, timeout=240, interval=3, what=f"every service back at its replicas without {WORKER}")
    assert answers and all(status == 200 for status in answers), f"the edge failed while {WORKER} was lost: {answers}"
    wait_for(lambda: node_state(swarm, WORKER) == "down", timeout=60, what=f"the managers to see {WORKER} down")

    # The first manager created the Swarm and led every deploy so far: the release history is on it.
    running = swarm.version()
    assert f'"release": "{running}"' in history(swarm, FIRST_MANAGER), "the first manager did not lead the deploys"
    docker("stop", FIRST_MANAGER)
    # Two managers of three keep the quorum.
    wait_for(lambda: node_state(swarm, FIRST_MANAGER, "{{.ManagerStatus.Reachability}}") == "unreachable",
             timeout=60, what=f"the other managers to see {FIRST_MANAGER} unreachable")  # fmt: skip
    release = "1.0.0" if running == "1.1.0" else "1.1.0"
    upgrade = swarm.play("deploy.yml", "--limit", f"all:!{FIRST_MANAGER}:!{WORKER}", "-e", f"pliers_release={release}")
    assert upgrade.returncode == 0, output(upgrade)
    status, body = edge(swarm)
    assert status == 200 and json.loads(body)["version"] == release
    assert f'"release": "{release}"' in history(swarm, NEXT_MANAGER), "the next manager did not lead the deploy"


def test_a_node_that_left_the_inventory_is_removed_only_when_asked(swarm):
    # After the test above: the first manager and the worker are stopped. The worker leaves the inventory.
    hosts = swarm.inventory / "hosts.yml"
    hosts.write_text(hosts.read_text().replace(f"        {WORKER}:\n          docker_host_node_labels: {{}}\n", ""))
    assert WORKER not in hosts.read_text()
    live = ("--limit", f"all:!{FIRST_MANAGER}", "-e", f"pliers_release={swarm.version()}")

    reported = swarm.play("deploy.yml", *live)
    assert reported.returncode == 0, output(reported)
    assert f"In the Swarm but not in the inventory: {WORKER}" in reported.stdout
    nodes = "docker node ls --format '{{.Hostname}}'"
    assert WORKER in lab_hosts.ssh(manager(swarm), nodes).stdout.split(), "removed without being asked"

    removed = swarm.play("deploy.yml", *live, "-e", "docker_host_swarm_remove_absent_nodes=true")
    assert removed.returncode == 0, output(removed)
    remaining = lab_hosts.ssh(manager(swarm), nodes).stdout.split()
    assert WORKER not in remaining and FIRST_MANAGER in remaining
