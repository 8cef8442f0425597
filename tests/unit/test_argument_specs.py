"""Every role documents its inputs in meta/argument_specs.yml: the same keys as its defaults, for every entry point,
with no Jinja (specs are templated when validated, before any fact exists). The collection-wide pliers_* inputs have
one spec, the stack role's, whose defaults they are."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ..paths import ROOT

ROLES = sorted(p.name for p in (ROOT / "roles").iterdir() if (p / "tasks" / "main.yml").exists())


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


STACK_DEFAULTS = load(ROOT / "roles" / "stack" / "defaults" / "main.yml") if (ROOT / "roles/stack").is_dir() else {}


def role_names(task: dict, name: str) -> list[str]:
    """The roles a task's include_role or import_role names: `name`, or each item of the task's loop when `name`
    holds the loop variable. A loop over the stack's roles (_stack_roles) runs the stack's pliers_service_roles, and
    any role a loop's expression names. From a loop of nothing known, the template itself: no role is named that,
    so the test below names it."""
    variable = (task.get("loop_control") or {}).get("loop_var", "item")
    template = re.compile(r"\{\{\s*" + re.escape(variable) + r"\s*\}\}")
    loop = task.get("loop")
    if not template.search(name):
        return [name]
    if isinstance(loop, str):
        loop = re.findall(r"pliers\.deploy\.[a-z_]+", loop) + (
            STACK_DEFAULTS.get("pliers_service_roles", []) if "_stack_roles" in loop else []
        )
    return [template.sub(str(item), name) for item in loop] if loop else [name]


def included_roles() -> set[str]:
    """The roles the playbooks and the roles run: include_role, import_role, a play's roles."""
    named: set[str] = set()

    def walk(node) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key.removeprefix("ansible.builtin.") in ("include_role", "import_role"):
                    named.update(role_names(node, value["name"]))
                elif key == "roles" and isinstance(value, list):
                    named.update(role if isinstance(role, str) else role["role"] for role in value)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    for path in [*(ROOT / "playbooks").rglob("*.yml"), *(ROOT / "roles").glob("*/tasks/*.yml")]:
        walk(load(path))
    return {name.removeprefix("pliers.deploy.") for name in named}


def test_the_playbooks_run_every_role_and_no_role_that_is_missing():
    included = included_roles()
    assert included - set(ROLES) == set(), "included but not in roles/ (with a tasks/main.yml)"
    assert set(ROLES) - included == set(), "roles that no playbook or role runs"


# Entry points that run without the vault password (the secrets kept as inline-vaulted values): their specs name no
# secret, which validating would decrypt.
READS_NO_SECRET = {("stack", "releases")}


@pytest.mark.parametrize("role", ROLES)
def test_spec_keys_equal_defaults_keys(role):
    defaults = set(load(ROOT / "roles" / role / "defaults" / "main.yml"))
    specs = load(ROOT / "roles" / role / "meta" / "argument_specs.yml")["argument_specs"]
    assert "main" in specs and "preflight" in specs
    # The stack role owns the shared inputs (some required, with no default); every other role its own only.
    prefix = "pliers_" if role == "stack" else f"{role}_"
    for entry, spec in specs.items():
        options = set(spec["options"])
        if (role, entry) in READS_NO_SECRET:
            # It takes only what it reads (the main entry point's words for it), so no secret is decrypted.
            assert options < set(specs["main"]["options"]), f"{role}:{entry} documents {sorted(options)}"
            assert all(spec["options"][name] == specs["main"]["options"][name] for name in options)
            continue
        assert defaults <= options, f"{role}:{entry} does not document {sorted(defaults - options)}"
        extra = options - defaults
        if role == "stack":
            assert all(name.startswith("pliers_") for name in extra), f"{role}:{entry} documents {sorted(extra)}"
        else:
            assert not extra, f"{role}:{entry} documents what it has no default for: {sorted(extra)}"
        assert all(name.startswith(prefix) for name in defaults), f"{role}: defaults must be prefixed {prefix}"


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
