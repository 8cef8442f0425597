"""The collection's packaging agrees with itself: what the Galaxy build ships, the execution environment's
pins, the supported ansible-core range. (The build, Galaxy's importer, ansible-test and the tarball's
install run in make test-collection and tests/lab/test_galaxy.py.)"""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
from pathlib import Path

import yaml

from ..paths import ROOT

GALAXY = yaml.safe_load((ROOT / "galaxy.yml").read_text())
EE = yaml.safe_load((ROOT / "execution-environment.yml").read_text())


def pinned(package: str) -> str:
    match = re.search(rf"^{re.escape(package)}==(\S+)$", (ROOT / "requirements.txt").read_text(), re.MULTILINE)
    assert match, f"requirements.txt does not pin {package}"
    return match.group(1)


SHIPPED = {"roles", "playbooks", "plugins", "docs", "meta", "README.md", "changelogs", "CHANGELOG.rst", "LICENSE",
           "execution-environment.yml", ".ansible-lint-ignore", "awx"}  # fmt: skip


def test_the_build_ships_the_collection_and_nothing_of_the_project():
    ignored = set(GALAXY["build_ignore"])
    assert {"lab", "molecule", "tests", "inventories", "bench", "tools", ".ansible", ".venv", ".lab"} <= ignored
    # What make test-collection leaves behind (Galaxy's importer's report) is never shipped.
    assert "importer_result.json" in ignored
    for shipped in SHIPPED:
        assert shipped not in ignored and (ROOT / shipped).exists(), shipped


def test_the_tarball_holds_the_collection_its_license_and_galaxys_manifests_only(tmp_path):
    galaxy = Path(sys.executable).parent / "ansible-galaxy"
    command = [str(galaxy), "collection", "build", "--output-path", str(tmp_path), str(ROOT)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    with tarfile.open(next(tmp_path.glob("*.tar.gz"))) as tarball:
        top = {member.name.split("/")[0] for member in tarball.getmembers()}
    # Files the checkout holds beyond git's (a lab's reports, an importer's result) would show here.
    assert top - SHIPPED <= {"MANIFEST.json", "FILES.json"}, sorted(top - SHIPPED)
    assert {"LICENSE", "MANIFEST.json", "FILES.json"} <= top


def test_the_execution_environment_pins_what_the_controller_is_tested_with():
    dependencies = EE["dependencies"]
    assert EE["version"] == 3
    assert dependencies["ansible_core"]["package_pip"] == f"ansible-core=={pinned('ansible-core')}"
    assert dependencies["ansible_runner"]["package_pip"] == f"ansible-runner=={pinned('ansible-runner')}"
    collections = {entry["name"]: entry["version"] for entry in dependencies["galaxy"]["collections"]}
    assert collections == {"pliers.deploy": GALAXY["version"], **GALAXY["dependencies"]}


def test_the_execution_environment_renders_a_build_context(tmp_path):
    builder = Path(sys.executable).parent / "ansible-builder"
    command = [str(builder), "create", "--file", "execution-environment.yml", "--context", str(tmp_path / "ee")]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    containerfile = (tmp_path / "ee" / "Dockerfile").read_text()
    assert f"ansible-core=={pinned('ansible-core')}" in containerfile
    assert "ansible-galaxy collection install" in containerfile
    assert "pliers.deploy" in (tmp_path / "ee" / "_build" / "requirements.yml").read_text()


def test_the_supported_ansible_core_range_is_the_tested_one():
    runtime = yaml.safe_load((ROOT / "meta/runtime.yml").read_text())
    assert runtime["requires_ansible"] == ">=2.20.0"  # tested: 2.20 and 2.21 (tests/lab/test_galaxy.py)
    for meta in (ROOT / "roles").glob("*/meta/main.yml"):
        assert yaml.safe_load(meta.read_text())["galaxy_info"]["min_ansible_version"] == "2.20", meta


def test_every_relative_link_in_the_shipped_docs_resolves_inside_the_collection():
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue
            resolved = (page.parent / target).resolve()
            inside = resolved.relative_to(ROOT.resolve()).parts if resolved.is_relative_to(ROOT.resolve()) else ()
            assert inside and inside[0] in SHIPPED and resolved.exists(), f"{page.name} links to {target}"
