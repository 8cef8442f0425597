"""Node loss on the deployed Swarm (three managers, one worker), the last tests of the swarm lane since they stop
nodes for good: with the worker lost (the fault suite's last case stops it during a release), every service runs
its desired replicas on the other nodes and the edge keeps answering; with the first manager (the one that created
the Swarm and led every deploy) stopped too, a deploy (an upgrade) still succeeds, led by the next manager. Then
the lost worker leaves the inventory: it is only reported, until the guard variable allows its removal; and the
first manager, started again, rejoins the Swarm."""

from __future__ import annotations

import json

import pytest

from lab import hosts as lab_hosts
from lab.common import docker

from .support import MODES, STACK, http, output, wait_for

SWARM = MODES["swarm"]
FIRST_MANAGER = SWARM["deployer"]
NEXT_MANAGER = SWARM["next_manager"]
WORKER = SWARM["worker"]
REACHABILITY = "{{.ManagerStatus.Reachability}}"


@pytest.fixture
def swarm(deployed):
    if deployed.mode != "swarm":
        pytest.skip("a swarm case")
    return deployed


def manager(target) -> lab_hosts.Host:
    """A manager that stays up through these tests."""
    return lab_hosts.lab_host(target.lab, NEXT_MANAGER)


def services(target) -> dict[str, tuple[str, int, int, set[str], set[str]]]:
    """Each service's (mode, running, desired, nodes running it, nodes it ever ran on), as a manager sees them.

    Running counts the tasks Swarm wants running that run: `docker service ls` also counts a replaced task on a
    node that went down, whose last known state stays "running" (api 4/3 while one of its 3 tasks was lost).
    """
    host = manager(target)
    listing = lab_hosts.ssh(host, "docker service ls --format '{{json .}}'").stdout.splitlines()
    state = {}
    for row in map(json.loads, listing):
        desired = int(row["Replicas"].split()[0].split("/")[1])
        tasks = lab_hosts.ssh(host, f"docker service ps {row['Name']} "
                                    "--format '{{.Node}} {{.DesiredState}} {{.CurrentState}}'").stdout  # fmt: skip
        tasks = [line.split() for line in tasks.splitlines() if line.strip()]
        running = [task[0] for task in tasks if task[1:3] == ["Running", "Running"]]
        ever = {task[0] for task in tasks}
        state[row["Name"].removeprefix(f"{STACK}_")] = (row["Mode"], len(running), desired, set(running), ever)
    return state


def not_recovered_without(target, lost: str) -> list[str]:
    """What is not yet back without the lost node: a replicated service below its replicas or with a task on the
    lost node; a global one missing from a node it ran on, other than the lost one (the node exporter on every
    other node, the nginx edge on the edge-labelled ones; whether Swarm still lists the lost node's global task
    as wanted varies, so it is not counted)."""
    lagging = []
    for service, (mode, running, desired, nodes, ever) in services(target).items():
        if mode == "global" and not ever - {lost} <= nodes:
            lagging.append(f"{service} (global) not on {', '.join(sorted(ever - {lost} - nodes))}")
        elif mode != "global" and (running != desired or lost in nodes):
            lagging.append(f"{service} {running}/{desired} running, on {', '.join(sorted(nodes)) or 'no node'}")
    return lagging


def wait_recovered_without(target, lost: str, *, timeout: float, also=None) -> None:
    """Wait until every service is back without the lost node (calling also() at each poll); fail naming what
    was not."""
    lagging: list[str] = []

    def recovered() -> bool:
        if also:
            also()
        lagging[:] = not_recovered_without(target, lost)
        return not lagging

    try:
        wait_for(recovered, timeout=timeout, interval=3, what=f"every service back at its replicas without {lost}")
    except AssertionError as error:
        raise AssertionError(f"{error}; still: {'; '.join(lagging)}") from None


def node_state(target, node: str, field: str = "{{.Status.State}}") -> str:
    """What the managers say of a node; "" while they cannot say (the moments a lost manager's peers elect a new
    leader, the Swarm's API answers "context deadline exceeded"): the callers wait for a state."""
    result = lab_hosts.ssh(manager(target), f"docker node inspect {node} --format '{field}'", check=False)
    return result.stdout.strip() if result.returncode == 0 else ""


def last_release(target, node: str) -> str | None:
    """The release of the last deploy a node led (each leader records its deploys in its own history)."""
    read = "tail -n 1 /var/lib/pliers/local/releases.log 2>/dev/null || true"
    last = lab_hosts.ssh(lab_hosts.lab_host(target.lab, node), read).stdout.strip()
    return json.loads(last)["release"] if last else None


def edge(target, path: str = "/api/health") -> tuple[int, str]:
    return http(f"{target.edge}{path}", timeout=15)


def host_running(node: str) -> bool:
    return docker("inspect", "--format", "{{.State.Running}}", node).stdout.strip() == "true"


def worker_lost(target) -> list[int]:
    """The worker stopped (unless a test before has stopped it), every service back at its replicas without it and
    the managers seeing it down; the edge's answers while the services came back. (With the first manager up: the
    services could not all come back without it too.)"""
    if host_running(WORKER):
        docker("stop", WORKER)
    answers: list[int] = []
    wait_recovered_without(target, WORKER, timeout=240, also=lambda: answers.append(edge(target)[0]))
    wait_for(lambda: node_state(target, WORKER) == "down", timeout=60, what=f"the managers to see {WORKER} down")
    return answers


def first_manager_lost(target) -> None:
    """The first manager stopped (unless a test before has stopped it), and unreachable for the two others, which
    keep the quorum."""
    if host_running(FIRST_MANAGER):
        docker("stop", FIRST_MANAGER)
    wait_for(lambda: node_state(target, FIRST_MANAGER, REACHABILITY) == "unreachable",
             timeout=60, what=f"the other managers to see {FIRST_MANAGER} unreachable")  # fmt: skip


def test_the_stack_survives_a_lost_worker_and_deploys_with_its_first_manager_lost(swarm):
    # The fault suite's node case stopped the worker, its client measured the edge meanwhile (What survives
    # what); run alone, this test stops it and watches the edge until the services are back.
    answers = worker_lost(swarm)
    assert answers and all(status == 200 for status in answers), f"the edge failed while {WORKER} was lost: {answers}"

    # The first manager created the Swarm and led every deploy so far: the release history is on it.
    running = swarm.version()
    assert last_release(swarm, FIRST_MANAGER) == running, "the first manager did not lead the last deploy"
    first_manager_lost(swarm)
    release = "1.0.0" if running == "1.1.0" else "1.1.0"
    upgrade = swarm.play("deploy.yml", "--limit", f"all:!{FIRST_MANAGER}:!{WORKER}", "-e", f"pliers_release={release}")
    assert upgrade.returncode == 0, output(upgrade)
    status, body = edge(swarm)
    assert status == 200 and json.loads(body)["version"] == release
    assert last_release(swarm, NEXT_MANAGER) == release, "the next manager did not lead the deploy"


def test_a_node_that_left_the_inventory_is_removed_only_when_asked(swarm):
    # The worker and the first manager lost, as the test above leaves them. Run alone, this test loses them the same
    # way: the worker first, until the services are back without it, then the first manager.
    if host_running(FIRST_MANAGER):
        worker_lost(swarm)
    first_manager_lost(swarm)
    # The worker leaves the inventory.
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

    # The first manager comes back: the runs above left it out, but its peers' firewalls kept its address (the
    # Swarm knows it), so it rejoins as a manager, with no deploy.
    docker("start", FIRST_MANAGER)
    wait_for(lambda: (node_state(swarm, FIRST_MANAGER), node_state(swarm, FIRST_MANAGER, REACHABILITY))
             == ("ready", "reachable"), timeout=180, what=f"{FIRST_MANAGER} back in the Swarm")  # fmt: skip
