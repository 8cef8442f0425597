"""Every module and filter documents itself: ansible-doc renders each one, examples and return values included."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ..paths import ROOT

MODULES = sorted(p.stem for p in (ROOT / "plugins" / "modules").glob("*.py"))
FILTERS = sorted(p.stem for p in (ROOT / "plugins" / "filter").glob("*.yml"))


def ansible_doc(*args: str) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).parent / "ansible-doc"), *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True)


@pytest.mark.parametrize(("kind", "name"), [("module", m) for m in MODULES] + [("filter", f) for f in FILTERS])
def test_documentation_renders(kind, name):
    result = ansible_doc("-t", kind, f"pliers.deploy.{name}")
    assert result.returncode == 0 and "ERROR" not in result.stderr, result.stderr
    assert "EXAMPLES" in result.stdout and "RETURN" in result.stdout


def test_every_filter_is_documented():
    assert set(FILTERS) == {"compose_project", "swarm_stack", "secret_problem", "labelled_nodes", "content_version"}
    assert set(MODULES) == {
        "health_check",
        "migrate",
        "stack_rollout",
        "compose_rollout",
        "deploy_lock",
        "release_log",
        "stack_files",
    }
