"""The Swarm's ports answer its nodes only (docker_host's nftables table), on the deployed Swarm stack: from this
machine, which is no node of it, 2377 and 7946 get no answer on any node, while SSH and the edge's published port
still do; from a node, every manager's 2377 answers, and every node is Ready."""

from __future__ import annotations

import socket

import pytest

from lab import hosts as lab_hosts


def answers(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=2):
            return True
    except OSError:
        return False


@pytest.mark.parametrize("deployed", ["swarm"], indirect=True)
def test_the_swarm_ports_answer_the_swarms_nodes_only(deployed):
    nodes = [lab_hosts.lab_host(deployed.lab, name) for name in lab_hosts.running_hosts(deployed.lab)]
    assert len(nodes) >= 3
    for node in nodes:
        assert answers(node.address, 22), f"SSH on {node.name} no longer answers"
        for port in (2377, 7946):
            assert not answers(node.address, port), f"{node.name}:{port} answers a host that is no node of the Swarm"
    assert answers(deployed.edge_host.address, 443), "the edge's published port no longer answers"

    managers = lab_hosts.ssh(deployed.deployer, "docker node ls --filter role=manager -q | wc -l").stdout.strip()
    reached = lab_hosts.ssh(
        nodes[-1],
        "for a in " + " ".join(node.address for node in nodes) + "; do "
        'timeout 3 bash -c "</dev/tcp/$a/2377" 2>/dev/null && echo $a; done',
        check=False,
    ).stdout.split()
    assert len(reached) == int(managers), f"{nodes[-1].name} reaches 2377 on {reached}; {managers} managers"
    ready = lab_hosts.ssh(deployed.deployer, "docker node ls --format '{{.Status}}'").stdout.split()
    assert ready == ["Ready"] * len(nodes), ready
