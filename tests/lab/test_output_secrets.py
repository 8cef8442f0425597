"""A verbose Swarm deploy prints no join token and no secret value: AWX keeps every job event, and -vvv prints every
task's arguments and results. On the deployed Swarm stack (after the release tests), with autolock on and a manager
locked by an engine restart: a -vvv deploy given the unlock key unlocks it, and its output holds none of the Swarm's
join tokens, its unlock key, the inventory's vault values or the registry's password. (The next deploy, without
autolock, turns it off again.)"""

from __future__ import annotations

import pytest
import yaml

from lab import hosts as lab_hosts

from .support import output, vault_values


@pytest.mark.parametrize("deployed", ["swarm"], indirect=True)
def test_a_verbose_swarm_deploy_prints_no_secret_and_unlocks_an_autolocked_manager(deployed):
    secrets = vault_values()
    secrets["vault_registry_password"] = yaml.safe_load(deployed.lab.credentials.read_text())["vault_registry_password"]
    for role in ("worker", "manager"):
        token = lab_hosts.ssh(deployed.deployer, f"docker swarm join-token -q {role}").stdout.strip()
        secrets[f"the {role} join token"] = token
    # Autolock on (as docker_host_swarm_autolock turns it on), then a manager restarts its engine: locked. (The
    # database's manager: not the deployer, which the node-loss tests stop later.)
    lab_hosts.ssh(deployed.deployer, "docker swarm update --autolock=true")
    secrets["the unlock key"] = lab_hosts.ssh(deployed.deployer, "docker swarm unlock-key -q").stdout.strip()
    assert len(secrets) >= 6 and all(len(value) >= 16 for value in secrets.values()), sorted(secrets)
    state = "docker info --format '{{.Swarm.LocalNodeState}}'"
    lab_hosts.ssh(deployed.db, "systemctl restart docker")
    assert lab_hosts.ssh(deployed.db, state).stdout.strip() == "locked"

    run = deployed.play("deploy.yml", "-vvv", "-e", "docker_host_swarm_autolock=true",
                        "-e", f"docker_host_swarm_unlock_key={secrets['the unlock key']}")  # fmt: skip
    assert run.returncode == 0, output(run)
    assert lab_hosts.ssh(deployed.db, state).stdout.strip() == "active"
    printed = run.stdout + run.stderr
    # The run did print its tasks' arguments and results (a quiet run would prove nothing).
    assert printed.count("task path:") > 50 and '"ansible_facts"' in printed
    leaked = sorted(name for name, value in secrets.items() if value in printed)
    assert not leaked, f"the -vvv output of the deploy holds {', '.join(leaked)}"
