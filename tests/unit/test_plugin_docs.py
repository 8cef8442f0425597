"""Every module and filter documents itself: ansible-doc renders each one, examples and return values included, and
says the release that first shipped it."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

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
def test_documentation_renders_and_says_the_release_that_first_shipped_it(kind, name):
    result = ansible_doc("--json", "-t", kind, f"pliers.deploy.{name}")
    assert result.returncode == 0 and "ERROR" not in result.stderr, result.stderr
    rendered = json.loads(result.stdout)[f"pliers.deploy.{name}"]
    assert rendered["examples"] and rendered["return"]
    assert rendered["doc"]["version_added"] == first_shipped(kind, name)


def first_shipped(kind: str, name: str) -> str:
    """The release whose changelog lists the plugin as new, or the version under way (galaxy.yml) for one no release
    shipped yet."""
    releases = yaml.safe_load((ROOT / "changelogs" / "changelog.yaml").read_text())["releases"]
    for version, release in sorted(releases.items(), key=lambda item: tuple(map(int, item[0].split(".")))):
        listed = release.get("modules", []) if kind == "module" else release.get("plugins", {}).get(kind, [])
        if name in {entry["name"] for entry in listed}:
            return version
    return yaml.safe_load((ROOT / "galaxy.yml").read_text())["version"]


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
