"""ansible-test on the target Pythons this machine lacks (#15): make test-collection (tools/ansible_test.sh) runs
sanity and units on every target Python the supported ansible-cores allow that is installed here; each one that is not
(3.14: no Debian release has it yet) runs in the lab's image for it, on the collection as Galaxy ships it: sanity's
compile and import tests and the unit tests, as the script runs them on every Python but 3.12."""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lab.common import docker
from lab.images import Builder, catalogue

from .support import PREVIOUS_CORE_VENVS, ROOT, TEST_LAB, install_tarball

# The lab's images of a Python, by version ("python3.14" -> "3.14").
PYTHON_IMAGES = {image.key.removeprefix("python"): image for image in catalogue() if image.repo.startswith("python")}
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")


def target_pythons(python: str) -> list[str]:
    """The target Pythons of the ansible-core installed for python."""
    code = (
        "from ansible_test._util.target.common.constants import REMOTE_ONLY_PYTHON_VERSIONS as r, "
        "CONTROLLER_PYTHON_VERSIONS as c; print(*r, *c)"
    )
    return subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout.split()


def on_this_machine(version: str) -> bool:
    """Whether ansible_test.sh finds pythonX.Y here: on the PATH, or in a pyenv version."""
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    return shutil.which(f"python{version}") is not None or any(pyenv.glob(f"{version}.*/bin/python{version}"))


def test_every_target_python_of_the_supported_ansible_cores_is_here_or_has_a_lab_image():
    # The controller venv's ansible-core, and the previous one's venv (make test-collection makes it).
    assert len(PREVIOUS_CORE_VENVS) == 1, f"expected one .venv-core-* (make makes it): {PREVIOUS_CORE_VENVS}"
    cores = [sys.executable, str(PREVIOUS_CORE_VENVS[0] / "bin" / "python")]
    targets = {version for python in cores for version in target_pythons(python)}
    assert "3.12" in targets, targets
    uncovered = sorted(v for v in targets if not on_this_machine(v) and v not in PYTHON_IMAGES)
    assert not uncovered, f"no Python {', '.join(uncovered)} here and no lab image of it (lab/images.py)"


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> Path:
    """The collection as Galaxy ships it, installed into an empty collections path, with the unit tests
    (make test-collection's copy)."""
    installed = install_tarball(tmp_path_factory.mktemp("collection")) / "ansible_collections" / "pliers" / "deploy"
    shutil.copytree(ROOT / "tests" / "unit" / "plugins", installed / "tests" / "unit" / "plugins")
    return installed


@pytest.mark.parametrize("version", sorted(PYTHON_IMAGES))
def test_sanity_compile_and_import_and_the_unit_tests_pass_on_a_python_this_machine_lacks(version, collection):
    if on_this_machine(version):
        pytest.skip(f"Python {version} is on this machine: make test-collection runs it")
    image = Builder([PYTHON_IMAGES[version]]).build_all()[PYTHON_IMAGES[version].key]
    core = importlib.metadata.version("ansible-core")
    # ansible-test fetches a pip bootstrap script from a host this machine cannot reach: tools/get_pip.py stands in
    # (as in tools/ansible_test.sh), under the name this ansible-test looks for.
    venv = Path(sys.executable).parent.parent
    requirements = next(venv.glob("lib/python3*/site-packages/ansible_test/_internal/python_requirements.py"))
    pip_version = re.search(r"pip='([0-9.]+)'", requirements.read_text()).group(1)
    get_pip = f"/root/.ansible/test/cache/get_pip_{pip_version.replace('.', '_')}.py"
    root = collection.parents[2]
    script = (
        f"python{version} -m venv /venv && /venv/bin/pip install -q ansible-core=={core}"
        " && cd /collections/ansible_collections/pliers/deploy"
        f" && /venv/bin/ansible-test sanity --venv --python {version} --test compile --test import"
        f" && /venv/bin/ansible-test units --venv --python {version}"
    )
    # The package index is reached through this machine's proxy, whose CA only this machine's bundle has; its
    # proxy settings, if any, go along.
    passed_on = [f"{key}={value}" for key, value in os.environ.items() if key.upper() in PROXY_VARIABLES]
    name = f"{TEST_LAB.name}-ansible-test-{version}"
    docker("rm", "-f", name, check=False)
    try:
        result = docker(
            "run", "--name", name, "--label", TEST_LAB.label,
            "-v", f"{root}:/collections",
            "-v", f"{ROOT / 'tools' / 'get_pip.py'}:{get_pip}:ro",
            "-v", f"{CA_BUNDLE}:{CA_BUNDLE}:ro",
            "-e", f"PIP_CERT={CA_BUNDLE}", "-e", f"SSL_CERT_FILE={CA_BUNDLE}",
            *(option for variable in passed_on for option in ("-e", variable)),
            image, "sh", "-c", script,
            check=False, timeout=900,
        )  # fmt: skip
    finally:
        docker("rm", "-f", name, check=False)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-6000:]
    # ansible-test exits 0 when it skips a test: both must have run.
    for test in ("compile", "import"):
        assert f'Running sanity test "{test}" on Python {version}' in out, out[-3000:]
    # One pytest run per kind of unit test (the modules', on the target Python; the controller's plugins').
    runs = [int(count) for count in re.findall(r"^=+ (\d+) passed", out, re.MULTILINE)]
    assert runs and all(runs), out[-3000:]
    passed = " + ".join(map(str, runs))
    print(f"ansible-test, Python {version}, ansible-core {core}: compile and import passed; units: {passed} passed")
