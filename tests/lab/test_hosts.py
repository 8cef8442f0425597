"""Bare hosts: reachable by Ansible over SSH, freshly installed Debian 13, no Docker, all labelled."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from lab.common import docker_lines
from lab.hosts import ssh


def test_ansible_ping_answers_from_every_host(test_lab):
    ansible = Path(sys.executable).parent / "ansible"
    result = subprocess.run(
        [str(ansible), "all", "-i", str(test_lab.inventory), "-m", "ansible.builtin.ping", "-o"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    answered = sorted(line.split(" | ")[0] for line in result.stdout.splitlines() if "| SUCCESS" in line)
    assert answered == ["pliers-test-1", "pliers-test-2", "pliers-test-3"]


def test_hosts_are_freshly_installed_debian_13_servers(hosts):
    addresses = {host.address for host in hosts}
    assert len(addresses) == len(hosts) == 3
    for host in hosts:
        facts = ssh(
            host,
            "cat /etc/debian_version; ps -o comm= -p 1; hostname; python3 -V; "
            "findmnt -n -o TARGET /var/lib/docker; command -v docker || echo no-docker",
        ).stdout.split("\n")
        assert facts[0].startswith("13"), facts
        assert facts[1] == "systemd", facts
        assert facts[2] == host.name, facts
        assert facts[3].startswith("Python 3."), facts
        assert facts[4] == "/var/lib/docker", "each host needs its own /var/lib/docker storage"
        assert facts[5] == "no-docker", "installing Docker is the docker_host role's job"


def test_every_container_volume_and_network_of_the_lab_is_labelled(test_lab):
    def unlabelled(kind: str) -> list[str]:
        names = (
            docker_lines(kind, "ls", "--format", "{{.Name}}")
            if kind != "container"
            else docker_lines("ps", "-a", "--format", "{{.Names}}")
        )
        ours = [name for name in names if name.startswith(test_lab.name)]
        assert ours, f"no {kind} of {test_lab.name} found"
        labels = {
            name: json.loads(
                docker_lines(
                    "inspect",
                    "--format",
                    "{{json .Labels}}" if kind != "container" else "{{json .Config.Labels}}",
                    name,
                )[0]
            )
            for name in ours
        }
        return [name for name, label in labels.items() if (label or {}).get("pliers.lab") != test_lab.name]

    for kind in ("container", "volume", "network"):
        assert unlabelled(kind) == [], f"{kind}s without the pliers.lab label"
