"""A converged Swarm: every node Ready, three managers in quorum, every service at its desired replicas, the api
spread over nodes, PostgreSQL on the db node, the edge on the edge node, secrets only as Swarm secrets (never in
an environment), and the database network out of the edge's reach."""

from __future__ import annotations

import json
import os

import pytest
import testinfra

STACK = "pliers-local"
INVENTORY = os.path.join(os.environ["MOLECULE_PROJECT_DIRECTORY"], ".lab/labs/pliers-mswarm/inventory.yml")
NODES = ("pliers-mswarm-1", "pliers-mswarm-2", "pliers-mswarm-3", "pliers-mswarm-4")
MANAGERS = NODES[:3]
EDGE_NODE = "pliers-mswarm-2"
DB_NODE = "pliers-mswarm-3"


def node(name: str):
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={INVENTORY}")


def running_tasks(host, service: str) -> list[str]:
    columns = "'{{.Node}} {{.CurrentState}}'"
    listing = host.check_output(
        f"docker service ps {STACK}_{service} --filter desired-state=running --format {columns}"
    )
    return [line.split()[0] for line in listing.splitlines() if " Running " in f"{line} "]


def container_of(service: str) -> tuple[object, str]:
    """A node running a task of the service, and that task's container id there."""
    for name in NODES:
        host = node(name)
        found = host.check_output(f"docker ps -q --filter label=com.docker.swarm.service.name={STACK}_{service}")
        if found:
            return host, found.split()[0]
    raise AssertionError(f"no running container of {service}")


def test_every_node_is_ready_and_the_managers_are_in_quorum(host):
    nodes = host.check_output("docker node ls --format '{{.Hostname}} {{.Status}} {{.Availability}}'").splitlines()
    assert sorted(nodes) == [f"{name} Ready Active" for name in NODES]
    managers = host.check_output("docker node ls --filter role=manager --format '{{.Hostname}} {{.ManagerStatus}}'")
    assert sorted(line.split()[0] for line in managers.splitlines()) == list(MANAGERS)
    assert all(line.split()[1] in ("Leader", "Reachable") for line in managers.splitlines()), managers


@pytest.mark.parametrize(
    ("service", "replicas"),
    [("api", 3), ("ai-service", 2), ("postgres", 1), ("redis", 1), ("web", 2), ("edge", 1), ("prometheus", 1),
     ("prometheus-agent", 1), ("alertmanager", 1), ("node-exporter", 4), ("postgres-exporter", 1),
     ("redis-exporter", 1), ("edge-exporter", 1), ("prometheus-docker-api", 1)],
)  # fmt: skip
def test_every_service_runs_its_desired_replicas(host, service, replicas):
    assert len(running_tasks(host, service)) == replicas


def test_prometheus_lives_on_the_first_manager_and_publishes_nothing(host):
    assert running_tasks(host, "prometheus") == ["pliers-mswarm-1"]
    # Its Docker API proxy beside it, the one place its discovery reads the API.
    assert running_tasks(host, "prometheus-docker-api") == ["pliers-mswarm-1"]
    ports = host.check_output(f"docker service inspect --format '{{{{json .Endpoint.Ports}}}}' {STACK}_prometheus")
    assert ports in ("null", "[]")


@pytest.mark.parametrize("service", ["api", "web"])
def test_routed_replicas_are_spread_over_nodes(host, service):
    assert len(set(running_tasks(host, service))) >= 2


def test_postgres_and_redis_run_on_the_db_node(host):
    assert running_tasks(host, "postgres") == [DB_NODE]
    assert running_tasks(host, "redis") == [DB_NODE]


def test_the_edge_routes_through_the_edge_node(host):
    assert running_tasks(host, "edge") == [EDGE_NODE]
    edge = node(EDGE_NODE)
    name = host.ansible.get_variables()["pliers_lab_domain"]
    curl = f"curl -fsSk --resolve {name}:443:127.0.0.1 https://{name}"
    assert '"version": "1.0.0"' in edge.check_output(f"{curl}/api/health")
    assert '"service": "ai-service"' in edge.check_output(f"{curl}/ai/health")


def test_secrets_are_swarm_secrets_never_in_the_environment(host):
    values = [host.file(path).content_string.strip() for path in host.check_output(
        "find /opt/pliers/local/secrets -type f ! -name redis.conf").split()]  # fmt: skip
    values = [value for value in values if value]
    assert host.check_output("docker secret ls --format '{{.Name}}'").count(f"{STACK}_api_database_password_") == 1
    for name in NODES:
        peer = node(name)
        for container in peer.check_output(f"docker ps -q --filter label=com.docker.stack.namespace={STACK}").split():
            environment = json.loads(
                peer.check_output(f"docker inspect --format '{{{{json .Config.Env}}}}' {container}")
            )
            assert not [value for value in values if any(value in variable for variable in environment)], (
                f"a secret is in the environment of {container} on {name}"
            )


def test_the_database_network_is_out_of_the_edges_reach():
    # Checked by attachment and name resolution only: a packet to an overlay address the container is not
    # attached to would leave through its default route, out of the lab, so none is sent.
    edge_host, edge = container_of("edge")
    networks = json.loads(
        edge_host.check_output(f"docker inspect --format '{{{{json .NetworkSettings.Networks}}}}' {edge}")
    )
    assert f"{STACK}_database" not in networks and f"{STACK}_backend" in networks
    assert edge_host.run(f"docker exec {edge} getent hosts postgres").rc != 0, "the edge must not resolve postgres"
    api_host, api = container_of("api")
    assert api_host.run(f"docker exec {api} getent hosts postgres").rc == 0, "the api must (the check can fail)"
