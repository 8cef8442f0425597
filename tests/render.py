"""Run a role's tasks on this machine, into a scratch project directory, as a deploy would on a host.

For what cannot run here (Traefik, Grafana, Loki, Alloy) and for the checks that only need files
(promtool, amtool): the role renders its real files, and the tests read them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from lab.common import ROOT


def render_role(
    project: Path,
    role: str,
    inventory: str,
    overrides: dict,
    services: dict | None = None,
    tasks_from: str = "configure",
) -> dict:
    """Run role's tasks_from with inventories/<inventory>'s variables (overrides above them) into project.

    services: the stack's service model as the roles before this one left it. Returns it as this role leaves it.
    """
    model = project / "services.json"
    playbook = project / "render.yml"
    playbook.write_text(yaml.safe_dump([{
        "hosts": "localhost", "connection": "local", "gather_facts": False,
        "vars": {"pliers_stack_services": services or {}},
        "vars_files": [str(ROOT / "inventories" / inventory / "group_vars/all/main.yml"),
                       str(ROOT / "playbooks/vars/pliers.yml")],
        "tasks": [
            {"name": "render",
             "ansible.builtin.include_role": {"name": f"pliers.deploy.{role}", "tasks_from": tasks_from}},
            # As deploy.yml runs them: the files, and the role's contribution to the stack.
            *([{"name": "contribute",
                "ansible.builtin.include_role": {"name": f"pliers.deploy.{role}", "tasks_from": "contribute"}}]
              if tasks_from == "configure" else []),
            {"name": "keep the service model",
             "ansible.builtin.copy": {"content": "{{ pliers_stack_services | default({}) | to_json }}",
                                      "dest": str(model), "mode": "0644"}},
        ],
    }]))  # fmt: skip
    # Extra vars: they outrank the inventory file's values (the project directory above all).
    extra = project / "overrides.yml"
    extra.write_text(yaml.safe_dump({"ansible_python_interpreter": sys.executable, "pliers_project_dir": str(project),
                                     **overrides}))  # fmt: skip
    ansible = Path(sys.executable).parent / "ansible-playbook"
    result = subprocess.run(
        [str(ansible), str(playbook), "-i", "localhost,", "-e", f"@{extra}"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    return json.loads(model.read_text())
