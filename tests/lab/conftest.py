"""Every test here runs on the real lab: a Docker engine, a lab of its own and its registry."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from lab import hosts as lab_hosts
from lab.images import Builder

from .support import FAULTS, MODES, ROOT, TEST_LAB, Target, fault_line, lab_cli


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "/tests/lab/" in str(item.path):
            item.add_marker(pytest.mark.lab)
    # make test-lab (tests/lab/parallel.py) runs each lab's tests in a process of its own.
    wanted = os.environ.get("PLIERS_LAB_GROUPS")
    if wanted:
        groups = set(wanted.split(","))
        deselected = [item for item in items if "/tests/lab/" in str(item.path) and lab_group(item) not in groups]
        if deselected:
            config.hook.pytest_deselected(items=deselected)
            items[:] = [item for item in items if item not in deselected]
    # The fault suite's last case stops the Swarm's worker for good and the node-loss tests stop a manager too:
    # they run last, on a stack every other test has finished with (a stable sort keeps the rest in file order).
    items.sort(key=lambda item: LAST.index(item.path.name) + 1 if item.path.name in LAST else 0)


# The files that run after every other lab test, in this order.
LAST = ("test_resilience.py", "test_swarm_node_loss.py")


# Each Molecule scenario's recap, by scenario (the `deployed` fixture runs them).
MOLECULE: dict[str, list[str]] = {}


def pytest_terminal_summary(terminalreporter):
    """The Molecule scenarios' recaps; one line per fault case: what was injected, what the client saw, how long
    recovery took."""
    if MOLECULE:
        terminalreporter.section("molecule")
        for lines in MOLECULE.values():
            for line in lines:
                terminalreporter.write_line(line)
    if FAULTS:
        terminalreporter.section("faults")
        for mode, entries in FAULTS.items():
            for entry in entries:
                terminalreporter.write_line(fault_line(mode, entry))


def lab_group(item) -> str:
    """Which lab a test runs on (make test-lab runs the groups side by side): each mode's deployed stack, or the
    test lab."""
    params = getattr(item, "callspec", None) and item.callspec.params
    if params and "deployed" in params:
        return f"deployed-{params['deployed']}"
    # A module that needs no lab host may say which lane has the time for it.
    return getattr(item.module, "LAB_GROUP", "test-lab")


@pytest.fixture(scope="session")
def test_lab():
    """A fresh three-host lab named pliers-test (removed first, so its hosts are bare), then torn down."""
    lab_cli("down")
    lab_cli("up", "--hosts", "3")
    yield TEST_LAB
    lab_cli("down")


@pytest.fixture(scope="session")
def images(test_lab) -> dict[str, str]:
    """The lab's local image tags by key ("postgres", "api:1.0.0", ...); built by `lab up`."""
    return Builder().build_all()


@pytest.fixture(scope="session")
def hosts(test_lab) -> list[lab_hosts.Host]:
    return [lab_hosts.lab_host(test_lab, name) for name in lab_hosts.running_hosts(test_lab)]


@pytest.fixture(scope="session")
def docker_hosts(hosts) -> list[lab_hosts.Host]:
    """The first two hosts with Debian's Docker installed (a stand-in for docker_host, tested in #3).

    Debian 13 ships the CLI apart from the engine (docker-cli is only recommended by docker.io).
    """
    install = (
        "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "
        "docker.io docker-cli && docker version --format '{{.Server.Version}}'"
    )
    pair = hosts[:2]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda host: lab_hosts.ssh(host, install, check=False), pair))
    for host, result in zip(pair, results, strict=True):
        assert result.returncode == 0, f"installing Docker on {host.name} failed:\n{result.stderr[-2000:]}"
    return pair


@pytest.fixture(scope="session", params=list(MODES))
def deployed(request, tmp_path_factory):
    """Each mode's stack as its Molecule scenario leaves it: created on bare hosts, converged at 1.0.0, idempotent,
    checked and verified (molecule test, without its final destroy). The release, backup and fault tests go on
    from there on the same hosts, then the lab is removed: one lab and one first deploy per mode."""
    mode = request.param
    spec = MODES[mode]
    # Bare hosts, whatever an earlier run left behind (the scenario's own destroy: its lab and Molecule's state).
    assert run_molecule("destroy", spec["scenario"]).returncode == 0
    # Removed at the end whatever happens (--destroy never skips the scenario's own final destroy).
    request.addfinalizer(lambda: run_molecule("destroy", spec["scenario"]))
    scenario = run_molecule("test", spec["scenario"], "--destroy", "never")
    assert scenario.returncode == 0, f"molecule test -s {spec['scenario']} failed:\n{scenario.stdout[-6000:]}"
    # The scenario's inventory, its symlinked group_vars copied as files (the node tests edit the hosts).
    inventory = tmp_path_factory.mktemp(f"inventory-{mode}")
    shutil.copytree(ROOT / "molecule" / spec["scenario"] / "inventory", inventory, dirs_exist_ok=True)
    target = Target(mode, inventory)
    assert target.version() == "1.0.0"
    return target


def run_molecule(command: str, scenario: str, *options: str) -> subprocess.CompletedProcess:
    """molecule COMMAND on the scenario; its output in .lab/reports/molecule-<scenario>-<command>.log, and the
    recap of a test in the terminal summary."""
    venv_bin = Path(sys.executable).parent
    environment = {**os.environ, "PATH": f"{venv_bin}:{os.environ['PATH']}"}
    result = subprocess.run(
        [str(venv_bin / "molecule"), command, "--scenario-name", scenario, *options],
        cwd=ROOT, env=environment, capture_output=True, text=True, check=False,
    )  # fmt: skip
    text = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr)
    log = ROOT / ".lab" / "reports" / f"molecule-{scenario}-{command}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(text)
    if command == "test":
        MOLECULE[scenario] = [line.strip() for line in text.splitlines() if "actions=" in line] or [
            f"{scenario}: no recap (exit {result.returncode}, log {log})"
        ]
    return subprocess.CompletedProcess(result.args, result.returncode, text, "")
