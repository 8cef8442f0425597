"""Two lab hosts form a Swarm; a dnsrr service spread over both answers across an overlay network
and through host-mode published ports. (This kernel has no IPVS: virtual IPs and the ingress
routing mesh cannot work here, see ../shared/LAB.md, so they are not what this proves.)"""

from __future__ import annotations

import pytest

from lab.hosts import ssh
from lab.registry import credentials

from .support import wait_for, wait_http
from .test_registry import trust_lab_ca

# Every task serves its /etc, so GET /hostname names the node it runs on.
SERVICE = "whoami"
PORT = 8000
RESOLVE_AND_ASK_EVERY_TASK = f"""
import socket, urllib.request
addresses = sorted({{info[4][0] for info in socket.getaddrinfo("{SERVICE}", {PORT}, type=socket.SOCK_STREAM)}})
for address in addresses:
    print(address, urllib.request.urlopen(f"http://{{address}}:{PORT}/hostname", timeout=5).read().decode().strip())
"""


@pytest.fixture
def swarm(test_lab, docker_hosts):
    manager, worker = docker_hosts
    user, password = credentials(test_lab)
    for host in docker_hosts:
        trust_lab_ca(host, test_lab.registry)
    ssh(manager, f"docker login {test_lab.registry} -u {user} --password-stdin", input=password)
    ssh(manager, f"docker swarm init --advertise-addr {manager.address}")
    token = ssh(manager, "docker swarm join-token -q worker").stdout.strip()
    ssh(worker, f"docker swarm join --token {token} {manager.address}:2377")
    yield manager, worker
    ssh(manager, f"docker service rm {SERVICE}", check=False)
    for host in (worker, manager):
        ssh(host, "docker swarm leave --force", check=False)
    ssh(manager, f"docker logout {test_lab.registry}", check=False)


def test_dnsrr_service_answers_across_the_overlay_and_on_host_mode_ports(test_lab, swarm):
    manager, worker = swarm
    nodes = ssh(manager, "docker node ls --format '{{.Hostname}} {{.Status}}'").stdout.splitlines()
    assert sorted(nodes) == [f"{manager.name} Ready", f"{worker.name} Ready"]

    ssh(manager, "docker network create --driver overlay --attachable lab-overlay")
    ssh(
        manager,
        f"docker service create --detach --with-registry-auth --name {SERVICE} --mode global "
        f"--endpoint-mode dnsrr --network lab-overlay --hostname '{{{{.Node.Hostname}}}}' "
        f"--publish mode=host,target={PORT},published={PORT} "
        f"{test_lab.registry}/pliers/api:1.0.0 python3 -m http.server {PORT} --directory /etc",
    )

    def running_tasks() -> list[str]:
        listing = ssh(
            manager,
            f"docker service ps {SERVICE} --filter desired-state=running "
            "--format '{{.Node}} {{.CurrentState}}'",
        ).stdout.splitlines()
        running = sorted(line.split()[0] for line in listing if " Running " in f"{line} ")
        return running if running == sorted([manager.name, worker.name]) else []

    wait_for(running_tasks, timeout=120, what="a running whoami task on each node")

    # Host-mode publishing: each node's own port answers, from its own task.
    for host in swarm:
        assert wait_http(f"http://{host.address}:{PORT}/hostname").strip() == host.name

    # dnsrr over the overlay: from the task on the manager, the service name resolves to both
    # tasks, and the one on the other node answers.
    task = ssh(manager, f"docker ps -q --filter label=com.docker.swarm.service.name={SERVICE}").stdout.strip()
    answers = ssh(manager, f"docker exec -i {task} python3 -", input=RESOLVE_AND_ASK_EVERY_TASK).stdout.splitlines()
    assert len(answers) == 2, answers
    assert sorted(line.split()[1] for line in answers) == sorted([manager.name, worker.name])
