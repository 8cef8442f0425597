"""An engine someone else manages (docker_host_manage_engine: false): what the role refuses it for, from what the
probe found on a host, as the role's own variables render it (a real ansible-playbook run on this machine)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from ..paths import ROOT

ROLE = ROOT / "roles" / "docker_host"
# What the probe finds on a Debian 13 host with docker.io, docker-compose and python3-docker.
READY = {"engine": True, "enabled": True, "version": "26.1.5+dfsg1", "compose": "2.26.1", "sdk": True,
         "stack_tools": True, "nft": True, "swarm": "inactive", "daemon_json": {}}  # fmt: skip

CASES = {
    "ready": ({}, "compose", []),
    "ready_swarm": ({"swarm": "active"}, "swarm", []),
    # Not enabled at boot is the owner's choice (socket activation, say): the role neither enables nor refuses it.
    "not_enabled": ({"enabled": False}, "compose", []),
    "stopped": ({"engine": False, "version": "", "swarm": ""}, "compose",
                ["the Docker engine does not answer (docker info)"]),
    # Not run by systemd's docker.service (snap's, say), but answering: fine.
    "other_unit": ({"engine": False}, "compose", []),
    "swarm_live_restore": ({"daemon_json": {"live-restore": True}}, "swarm",
                           ["its daemon.json sets live-restore, which a Swarm refuses"]),
    "old_engine": ({"version": "24.0.7"}, "compose",
                   ["Docker Engine 24.0.7 is older than 25.0 (docker_host_engine_min_version)"]),
    "debian12_engine": ({"version": "20.10.24+dfsg1", "compose": ""}, "compose",
                        ["Docker Engine 20.10.24+dfsg1 is older than 25.0 (docker_host_engine_min_version)",
                         "Compose v2 is missing (docker compose version)"]),
    "old_compose": ({"compose": "2.12.2"}, "compose",
                    ["Compose 2.12.2 is older than 2.18.0 (docker_host_compose_min_version)"]),
    "no_sdk": ({"sdk": False}, "compose", ["the Docker SDK for Python is missing (python3-docker)"]),
    "swarm_bare_manager": ({"stack_tools": False, "nft": False}, "swarm",
                           ["the stack tools a manager needs are missing (python3-jsondiff, python3-yaml)",
                            "nft, which loads the firewall of the Swarm, is missing (nftables; or "
                            "docker_host_swarm_firewall: false)"]),
    "swarm_error": ({"swarm": "error"}, "swarm", ["the engine cannot run a Swarm (docker info: Swarm state error)"]),
}  # fmt: skip


def rendered(tmp_path: Path) -> dict:
    hosts = {
        name: {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
               "probe": {**READY, **changes}, "pliers_mode": mode}
        for name, (changes, mode, _) in CASES.items()
    }  # fmt: skip
    managers = {"hosts": {"ready_swarm": {}, "swarm_bare_manager": {}, "swarm_live_restore": {}}}
    inventory = {"all": {"hosts": hosts, "children": {"swarm_managers": managers}}}
    out = tmp_path / "problems"
    play = [{
        "hosts": "all", "gather_facts": False,
        "vars": {"pliers_registry": "registry.example.com", "__docker_host_probe": {"stdout": "{{ probe | to_json }}"}},
        "tasks": [
            {"ansible.builtin.include_vars": {"file": str(ROLE / "defaults" / "main.yml")}},
            {"ansible.builtin.include_vars": {"file": str(ROLE / "vars" / "main.yml")}},
            {"ansible.builtin.copy": {"content": "{{ _docker_host_unmanaged_problems | to_json }}",
                                      "dest": f"{out}-{{{{ inventory_hostname }}}}.json", "mode": "0644"}},
        ],
    }]  # fmt: skip
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play))
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inventory))
    command = [str(Path(sys.executable).parent / "ansible-playbook"), str(tmp_path / "play.yml"),
               "-i", str(tmp_path / "hosts.yml")]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return {name: json.loads(Path(f"{out}-{name}.json").read_text()) for name in CASES}


def test_an_engine_someone_else_manages_is_refused_for_exactly_what_it_lacks(tmp_path):
    problems = rendered(tmp_path)
    assert problems == {name: expected for name, (_, _, expected) in CASES.items()}
