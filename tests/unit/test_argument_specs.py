"""Every role documents its inputs in meta/argument_specs.yml: the same keys as its defaults (plus the
collection-wide pliers_* inputs it reads), for every entry point, with no Jinja (specs are templated
when validated, before any fact exists)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ..paths import ROOT

ROLES = sorted(p.name for p in (ROOT / "roles").iterdir() if (p / "tasks" / "main.yml").exists())


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def test_every_role_of_the_design_exists():
    for role in ("docker_host", "postgres", "redis", "api", "ai_service", "web", "traefik", "monitoring", "backup"):
        assert role in ROLES


@pytest.mark.parametrize("role", ROLES)
def test_spec_keys_equal_defaults_keys(role):
    defaults = set(load(ROOT / "roles" / role / "defaults" / "main.yml"))
    specs = load(ROOT / "roles" / role / "meta" / "argument_specs.yml")["argument_specs"]
    assert "main" in specs and "preflight" in specs
    for entry, spec in specs.items():
        options = set(spec["options"])
        assert defaults <= options, f"{role}:{entry} does not document {sorted(defaults - options)}"
        extra = options - defaults
        assert all(name.startswith("pliers_") for name in extra), f"{role}:{entry} documents unknown {sorted(extra)}"
        assert all(name.startswith(f"{role}_") for name in defaults), f"{role}: defaults must be prefixed {role}_"


@pytest.mark.parametrize("role", ROLES)
def test_specs_hold_no_jinja(role):
    assert "{{" not in (ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text()


@pytest.mark.parametrize("role", ROLES)
def test_secret_options_are_no_log(role):
    specs = load(ROOT / "roles" / role / "meta" / "argument_specs.yml")["argument_specs"]
    for name, option in specs["main"]["options"].items():
        if any(word in name for word in ("password", "_key", "certificate")):
            assert option.get("no_log") is True, f"{role}: {name} must be no_log"


def test_role_readmes_are_generated_from_the_specs():
    """The role documentation is written once, in the spec: each README.md is tools/role_docs.py's output."""
    result = subprocess.run([sys.executable, "tools/role_docs.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    for role in ROLES:
        readme = (ROOT / "roles" / role / "README.md").read_text()
        options = load(ROOT / "roles" / role / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"]
        assert all(f"| `{name}` |" in readme for name in options), role
