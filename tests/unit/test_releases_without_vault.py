"""releases.yml prints the history without the vault password when the inventory keeps its secrets as inline-vaulted
values (`ansible-vault encrypt_string`): it decrypts none of them. Run for real, on this machine as the deployer (a
local connection), from the development inventory with its secrets re-encrypted value by value."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from ..paths import ROOT

BIN = Path(sys.executable).parent
DEVELOPMENT = ROOT / "inventories" / "development"
PASSWORD = DEVELOPMENT / "vault-password-dev-only.txt"


def vault(*args: str) -> str:
    command = [str(BIN / "ansible-vault"), *args, "--vault-password-file", str(PASSWORD)]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


def inline_vaulted_inventory(tmp_path: Path) -> Path:
    """The development inventory, this machine its only host, each secret of its vault file encrypted on its own."""
    inventory = tmp_path / "inventory"
    shutil.copytree(DEVELOPMENT / "group_vars", inventory / "group_vars")
    secrets = yaml.safe_load(vault("view", str(DEVELOPMENT / "group_vars" / "all" / "vault.yml")))
    lines = ["---"]
    for name, value in secrets.items():
        # An empty value cannot be encrypted (and is no secret).
        lines.append(vault("encrypt_string", "--name", name, str(value)).strip() if value else f'{name}: ""')
    (inventory / "group_vars" / "all" / "vault.yml").write_text("\n".join(lines) + "\n")
    host = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    (inventory / "hosts.yml").write_text(yaml.safe_dump({"pliers_hosts": {"hosts": {"deployer": host}}}))
    return inventory


def play(playbook: str, inventory: Path, state: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [str(BIN / "ansible-playbook"), f"playbooks/{playbook}", "-i", str(inventory),
               "-e", f"pliers_state_dir={state}", *extra]  # fmt: skip
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)


def test_releases_prints_the_history_without_the_vault_password(tmp_path):
    inventory = inline_vaulted_inventory(tmp_path)
    state = tmp_path / "state"
    state.mkdir()
    entry = {"id": 3, "time": "2026-12-05T10:00:00+00:00", "user": "ops", "controller": "laptop",
             "playbook": "deploy", "release": "1.1.0", "result": "ok", "seconds": 42.0,
             "versions": {"api": "1.1.0"}, "from": {"api": "1.0.0"}}  # fmt: skip
    (state / "releases.log").write_text(json.dumps(entry) + "\n")
    result = play("releases.yml", inventory, state)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "#3 2026-12-05T10:00:00+00:00 ops@laptop deploy 1.1.0: ok 42.0s (api 1.0.0->1.1.0)" in result.stdout


def test_a_playbook_that_reads_a_secret_still_needs_the_vault_password(tmp_path):
    # The inventory's secrets are really vaulted: a deploy, which reads them, stops without the password (in check
    # mode: were it to go on, it would change nothing on this machine).
    result = play("deploy.yml", inline_vaulted_inventory(tmp_path), tmp_path, "--check")
    assert result.returncode != 0
    assert "no vault secrets" in result.stdout + result.stderr, result.stdout[-3000:]
