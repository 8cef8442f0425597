"""Every module and filter documents itself: ansible-doc renders each one, examples and return values included."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from ..paths import ROOT

MODULES = sorted(p.stem for p in (ROOT / "plugins" / "modules").glob("*.py"))
FILTERS = sorted(p.stem for p in (ROOT / "plugins" / "filter").glob("*.yml"))
LOOKUPS = sorted(p.stem for p in (ROOT / "plugins" / "lookup").glob("*.py"))


def ansible_doc(*args: str) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).parent / "ansible-doc"), *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True)


@pytest.mark.parametrize(
    ("kind", "name"),
    [("module", m) for m in MODULES] + [("filter", f) for f in FILTERS] + [("lookup", x) for x in LOOKUPS],
)
def test_documentation_renders(kind, name):
    result = ansible_doc("-t", kind, f"pliers.deploy.{name}")
    assert result.returncode == 0 and "ERROR" not in result.stderr, result.stderr
    assert "EXAMPLES" in result.stdout and "RETURN" in result.stdout


def exported_filters() -> set[str]:
    """The filters the collection's filter plugins export: each plugin's FilterModule().filters()."""
    names: set[str] = set()
    for path in (ROOT / "plugins" / "filter").glob("*.py"):
        plugin = importlib.import_module(f"ansible_collections.pliers.deploy.plugins.filter.{path.stem}")
        names |= set(plugin.FilterModule().filters())
    return names


def test_every_filter_is_documented_and_every_documented_filter_exists():
    # A filter's documentation is a file of its own (a plugin file may export several filters).
    assert exported_filters() == set(FILTERS)
