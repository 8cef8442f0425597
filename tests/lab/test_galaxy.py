"""The collection as users get it: the Galaxy tarball installed into an empty collections path, its deploy
playbook run by FQCN with the previous supported ansible-core, and with the newest under ansible-runner the
way AWX runs a job template (extra vars, the vault password answered at its prompt) — against the deployed
Compose stack, where a correct run changes nothing."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

from lab import hosts as lab_hosts
from lab.common import ROOT, VAULT

from .support import PREVIOUS_CORE_VENVS, install_tarball, output

VENV = Path(sys.executable).parent.parent
# community.docker and friends, from the `ansible` package in the controller venv (Galaxy is not reachable).
COMMUNITY = sysconfig.get_paths()["purelib"]


@pytest.fixture(scope="module")
def collections(tmp_path_factory) -> Path:
    """pliers.deploy built as Galaxy ships it and installed into an empty collections path."""
    collections = install_tarball(tmp_path_factory.mktemp("galaxy"))
    assert not (collections / "ansible_collections/pliers/deploy/lab").exists(), "the lab must not ship"
    return collections


def clean_environment(collections: Path, venv: Path) -> dict[str, str]:
    """This process's environment without Ansible settings, with the installed collection and that venv."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("ANSIBLE_")}
    environment["ANSIBLE_COLLECTIONS_PATH"] = f"{collections}:{COMMUNITY}"
    environment["PATH"] = f"{venv / 'bin'}:{environment['PATH']}"
    return environment


def recap_changed(text: str, host: str) -> int:
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)  # ansible-runner's output keeps Ansible's colours, as AWX shows them
    match = re.search(rf"^{re.escape(host)}\s+: ok=\d+\s+changed=(\d+)", text, re.MULTILINE)
    assert match, f"no play recap for {host}:\n{text[-3000:]}"
    return int(match.group(1))


# The newest ansible-core runs the tarball's playbook below, under ansible-runner; the one before it here.
@pytest.mark.parametrize("deployed", ["compose"], indirect=True)
def test_the_tarball_deploys_by_fqcn_with_the_previous_ansible_core(deployed, collections, tmp_path):
    assert len(PREVIOUS_CORE_VENVS) == 1, f"expected one .venv-core-* (make makes it): {PREVIOUS_CORE_VENVS}"
    venv = PREVIOUS_CORE_VENVS[0]
    version = subprocess.run([str(venv / "bin" / "ansible"), "--version"], capture_output=True, text=True, check=True)
    assert "[core 2.20." in version.stdout, version.stdout
    command = [
        str(venv / "bin" / "ansible-playbook"), "pliers.deploy.deploy", "-i", str(deployed.inventory),
        "-i", str(deployed.lab.inventory), "--vault-password-file", str(ROOT / VAULT),
    ]  # fmt: skip
    # Away from the checkout: no ansible.cfg, no .venv/collections link, only the tarball's install.
    result = subprocess.run(command, cwd=tmp_path, env=clean_environment(collections, venv), capture_output=True,
                            text=True, check=False)  # fmt: skip
    # rc 0: every play ran, the stack was verified through the edge and the release recorded. (Changes are
    # allowed here: this deploy returns the stack to the inventory's settings after the earlier tests'
    # extra vars, such as the backup tests' offsite copy. The next test asserts a run that changes nothing.)
    assert result.returncode == 0, version.stdout.splitlines()[0] + "\n" + output(result)
    assert "Release | record the attempt in the release history" in result.stdout, result.stdout[-4000:]


@pytest.mark.parametrize("deployed", ["compose"], indirect=True)
def test_awx_runs_the_deploy_unattended_under_ansible_runner(deployed, collections, tmp_path):
    """AWX's engine: a private data directory with the project, the inventory, extra vars and the vault
    password, which ansible-runner types at ansible-playbook's prompt as AWX does with a vault credential."""
    # The stack at the inventory's settings and release 1.0.0 first (an earlier test may have left it at another
    # release, or with extra vars of its own), for the job below to find nothing to change.
    converged = deployed.play("deploy.yml", "-e", "pliers_release=1.0.0")
    assert converged.returncode == 0, output(converged)
    private = tmp_path / "awx"
    (private / "project").mkdir(parents=True)
    (private / "project" / "deploy.yml").write_text(
        "---\n- name: Deploy Pliers\n  ansible.builtin.import_playbook: pliers.deploy.deploy\n"
    )
    shutil.copytree(deployed.inventory, private / "inventory")
    shutil.copy(deployed.lab.inventory, private / "inventory" / "lab.yml")
    env = private / "env"
    env.mkdir()
    (env / "extravars").write_text(yaml.safe_dump({"pliers_release": "1.0.0", "awx_user_name": "awx-alice",
                                                   "awx_job_id": 4242}))  # fmt: skip
    (env / "passwords").write_text(json.dumps({r"^Vault password:\s*?$": (ROOT / VAULT).read_text().strip()}))
    (env / "cmdline").write_text("--ask-vault-pass")
    (env / "envvars").write_text(yaml.safe_dump({"ANSIBLE_COLLECTIONS_PATH": f"{collections}:{COMMUNITY}"}))
    runner = [str(VENV / "bin" / "ansible-runner"), "run", str(private), "-p", "deploy.yml", "--ident", "job-4242"]
    result = subprocess.run(runner, cwd=tmp_path, env=clean_environment(collections, VENV), capture_output=True,
                            text=True, check=False)  # fmt: skip
    artifacts = private / "artifacts" / "job-4242"
    status = (artifacts / "status").read_text() if (artifacts / "status").exists() else "(no status)"
    assert result.returncode == 0 and status == "successful", f"status {status}\n{output(result)}"
    stdout = (artifacts / "stdout").read_text()
    assert recap_changed(stdout, deployed.deployer.name) == 0, stdout[-4000:]
    # The release history records who ran it and which job: AWX's awx_user_name and awx_job_id.
    history = json.loads(lab_hosts.ssh(deployed.deployer, "tail -n 1 /var/lib/pliers/local/releases.log").stdout)
    assert history["user"] == "awx-alice" and str(history["job"]) == "4242", history
