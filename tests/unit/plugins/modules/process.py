"""Run a module as Ansible runs it: a process reading its arguments from a file, answering JSON on stdout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ansible_collections.pliers.deploy.plugins.modules import deploy_lock

# Wherever the collection is imported from (this checkout, or the tree ansible-test units builds).
MODULES = Path(deploy_lock.__file__).parent
COLLECTIONS = MODULES.parents[4]


def environment() -> dict[str, str]:
    """This process's environment, with the collection first on the module's import path (ansible-test units
    finds ansible itself through PYTHONPATH too)."""
    paths = [str(COLLECTIONS), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def run(module: str, tmp_path, check_mode: bool = False, diff: bool = False, **args) -> dict:
    params = dict(args, _ansible_check_mode=check_mode, _ansible_diff=diff)
    args_file = tmp_path / f"{module}-args.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": params}))
    result = subprocess.run(
        [sys.executable, str(MODULES / f"{module}.py"), str(args_file)],
        capture_output=True, text=True, env=environment(), check=False,
    )  # fmt: skip
    return json.loads(result.stdout)
