"""Build the stack's model on this machine, and write its files into a scratch project directory, as a deploy
does on a host (the stack role's model entry point, then the files its plan lists, written by stack_files).

For what cannot run here (Traefik, Grafana, Loki, Alloy) and for the checks that only need files
(promtool, amtool): the roles render their real files, and the tests read them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from .paths import ROOT

# The vault values the inventories name (each may be overridden), shaped as the roles' checks want them.
SECRET = "a-test-secret-0123456789"
VAULT = {
    **{name: SECRET for name in ("postgres_password", "postgres_owner_password", "postgres_app_password",
                                 "postgres_monitor_password", "redis_password", "redis_api_password",
                                 "redis_ai_service_password", "redis_monitor_password", "redis_backup_password",
                                 "openai_api_key", "anthropic_api_key",
                                 "grafana_admin_password", "registry_username", "registry_password")},
    "alert_webhook_url": "https://hooks.example.net/T0KEN",
    "tls_certificate": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    "tls_key": "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n",
}  # fmt: skip


def render_stack(project: Path, inventory: str, overrides: dict) -> dict:
    """The stack of inventories/<inventory> (overrides above its variables), its files written into project.

    Returns the stack's model (pliers_stack_services), file contents included.
    """
    model = project / "services.json"
    playbook = project / "render.yml"
    playbook.write_text(yaml.safe_dump([{
        "hosts": "localhost", "connection": "local", "gather_facts": False,
        "vars_files": [str(ROOT / "inventories" / inventory / "group_vars/all/main.yml")],
        "tasks": [
            {"name": "model", "ansible.builtin.include_role": {"name": "pliers.deploy.stack", "tasks_from": "model"}},
            {"name": "files",
             "vars": {"stack": "{{ pliers_stack_services | pliers.deploy.stack_files(pliers_project_dir) }}"},
             "pliers.deploy.stack_files": {"directories": "{{ stack.directories }}", "files": "{{ stack.files }}"}},
            {"name": "keep the service model",
             "ansible.builtin.copy": {"content": "{{ pliers_stack_services | to_json }}", "dest": str(model),
                                      "mode": "0600"}},
        ],
    }]))  # fmt: skip
    # Extra vars: they outrank the inventory file's values (the project directory above all).
    extra = project / "overrides.yml"
    secrets = {f"vault_{name}": value for name, value in VAULT.items()}
    extra.write_text(yaml.safe_dump({"ansible_python_interpreter": sys.executable, "pliers_project_dir": str(project),
                                     "pliers_lab_registry": "registry.test:5000", **secrets, **overrides}))  # fmt: skip
    ansible = Path(sys.executable).parent / "ansible-playbook"
    result = subprocess.run(
        [str(ansible), str(playbook), "-i", "localhost,", "-e", f"@{extra}"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    return json.loads(model.read_text())
