"""Every test here runs on the real lab: a Docker engine, a lab of its own and its registry."""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest

from lab import hosts as lab_hosts
from lab.images import Builder

from .support import FAULTS, MODES, ROOT, TEST_LAB, Target, fault_line, lab_cli, output


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
    # The node-loss lab (four engines) first: it is gone before the test lab comes up, never beside it.
    items.sort(key=lambda item: "/tests/lab/" not in str(item.path) or lab_group(item) != "node-loss")


def pytest_terminal_summary(terminalreporter):
    """One line per fault case: what was injected, what the client saw, how long recovery took."""
    if FAULTS:
        terminalreporter.section("faults")
        for mode, entries in FAULTS.items():
            for entry in entries:
                terminalreporter.write_line(fault_line(mode, entry))


def lab_group(item) -> str:
    """Which lab a test runs on (make test-lab runs the groups side by side)."""
    params = getattr(item, "callspec", None) and item.callspec.params
    if item.path.name == "test_resilience.py":
        # make test-faults: beside the other labs, on two cores, its recovery bounds measured the load.
        return "faults"
    if params and "deployed" in params:
        return f"deployed-{params['deployed']}"
    if item.path.name == "test_swarm_node_loss.py":
        return "node-loss"
    return "test-lab"


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
    """The stack deployed at 1.0.0 on a lab of its own, in each mode; shared by the release and backup tests."""
    mode = request.param
    spec = MODES[mode]
    lab_cli("down", name=spec["lab"].name)
    lab_cli("up", "--hosts", str(spec["hosts"]), name=spec["lab"].name)
    inventory = tmp_path_factory.mktemp(f"inventory-{mode}")
    shutil.copytree(ROOT / "inventories" / spec["inventory"] / "group_vars", inventory / "group_vars")
    shutil.copy(ROOT / "molecule/default/inventory/group_vars/pliers_hosts.yml", inventory / "group_vars")
    (inventory / "hosts.yml").write_text(spec["layout"])
    target = Target(mode, inventory)
    first = target.play("deploy.yml", "-e", "pliers_release=1.0.0")
    assert first.returncode == 0, output(first)
    assert target.version() == "1.0.0"
    yield target
    lab_cli("down", name=spec["lab"].name)
