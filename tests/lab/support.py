"""Helpers for tests on the real lab: labelled containers, polling, each mode's deployed stack. (Requests and
traffic through an edge, `http`, `Probe` and `Client`, are lab/traffic.py's: the bench uses them too.)"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import yaml

from lab import acme
from lab import hosts as lab_hosts
from lab.common import PLAYBOOK_BIN, ROOT, VAULT, docker
from lab.topology import Lab
from lab.traffic import Client, Probe, http, route_edge

TEST_LAB = Lab("pliers-test")


def lab_cli(*args: str, name: str = TEST_LAB.name, check: bool = True) -> subprocess.CompletedProcess:
    """python3 -m lab --name NAME ARGS..., as a user runs it."""
    result = subprocess.run(
        [sys.executable, "-m", "lab", "--name", name, *args], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"lab {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def run_container(image: str, *args: str, name: str, options: tuple[str, ...] = ()) -> str:
    """Start a detached container labelled for the test lab (so `lab down` removes it too)."""
    docker("rm", "-f", name, check=False)
    return docker("run", "-d", "--name", name, "--label", TEST_LAB.label, *options, image, *args).stdout.strip()


def published(container: str, port: int) -> str:
    return docker("port", container, f"{port}/tcp").stdout.split()[0]


def wait_for(probe, *, timeout: float, what: str, interval: float = 0.5):
    """Poll probe() until it returns a truthy value; fail naming what and the last value seen."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what}: not reached in {timeout}s (last seen: {last!r})")


def wait_http(url: str, *, status: int = 200, timeout: float = 30, what: str = "") -> str:
    """Poll url until it answers with status; returns the body."""

    def answered() -> str | None:
        seen_status, body = http(url)
        return body if seen_status == status else None

    return wait_for(answered, timeout=timeout, what=what or f"{url} answering {status}")


def container_logs(container: str) -> str:
    result = docker("logs", "--tail", "30", container, check=False)
    return result.stdout + result.stderr


def write_secret(directory: Path, name: str, value: str) -> Path:
    path = directory / name
    path.write_text(value)
    path.chmod(0o644)  # read by the container's unprivileged user through a bind mount
    return path


# --- A deployed stack in each mode (the session fixture `deployed`) ---------------------------------------

STACK = "pliers-local"  # both local inventories deploy the environment "local"
# Each mode's stack is the one its Molecule scenario converged and verified (molecule/<scenario>): the release,
# backup and fault tests go on from there, on the scenario's hosts and with its inventory.
MODES = {
    "compose": {
        "scenario": "default",
        "lab": Lab("pliers-molecule"),
        "deployer": "pliers-molecule-1",
        "edge": "pliers-molecule-1",
        "db": "pliers-molecule-1",
        # Not deployed to: it looks in from outside (Molecule), and serves the offsite backup copy over SFTP.
        "offsite": "pliers-molecule-2",
    },
    "swarm": {
        "scenario": "swarm",
        "lab": Lab("pliers-mswarm"),
        # Three managers (the first leads every deploy and runs Prometheus; the others are the edge and the
        # database's node) and one worker, which the node-loss tests stop.
        "deployer": "pliers-mswarm-1",
        "edge": "pliers-mswarm-2",
        "db": "pliers-mswarm-3",
        "worker": "pliers-mswarm-4",
        # The second of swarm_managers: it leads a run that leaves the first out.
        "next_manager": "pliers-mswarm-2",
    },
}
FIGURES: dict[str, dict] = {}
# Each fault case's figures, by mode (tests/lab/test_resilience.py); conftest.py prints them after the run.
FAULTS: dict[str, list[dict]] = {}


def vault_values() -> dict[str, str]:
    """The lab inventories' vault, decrypted: each non-empty value by name."""
    vault_file = ROOT / "inventories" / "local" / "group_vars" / "all" / "vault.yml"
    view = [str(PLAYBOOK_BIN.parent / "ansible-vault"), "view", "--vault-password-file", VAULT, str(vault_file)]
    values = yaml.safe_load(subprocess.run(view, capture_output=True, text=True, check=True).stdout)
    return {name: str(value) for name, value in values.items() if str(value)}


def report(target, case: str, injected: str, client: Client, recovery: float | None = None, **figures) -> None:
    """Keep (and write) one case's figures; the terminal summary prints them (conftest.py)."""
    entry = {
        "case": case,
        "injected": injected,
        "reads": client.reads,
        "failed_reads": len(client.read_failures),
        "writes": client.writes,
        "failed_writes": len(client.write_failures),
        "acknowledged": len(client.acknowledged),
        "lost_writes": len(client.lost()),
        "recovery_seconds": recovery,
        **figures,
    }
    FAULTS.setdefault(target.mode, []).append(entry)
    path = ROOT / ".lab" / "reports" / f"faults-{target.mode}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(FAULTS[target.mode], indent=2) + "\n")


def fault_line(mode: str, entry: dict) -> str:
    recovery = entry.get("recovery_seconds")
    extra = {k: v for k, v in entry.items() if k not in FAULT_KEYS}
    return (
        f"[{mode}] {entry['case']}: injected {entry['injected']}; reads {entry['failed_reads']}/{entry['reads']} "
        f"failed, writes {entry['failed_writes']}/{entry['writes']} failed, {entry['lost_writes']} of "
        f"{entry['acknowledged']} acknowledged writes lost"
        + (f"; recovered in {recovery}s" if recovery is not None else "")
        + (f"; {json.dumps(extra)}" if extra else "")
    )


FAULT_KEYS = ("case", "injected", "reads", "failed_reads", "writes", "failed_writes", "acknowledged", "lost_writes",
              "recovery_seconds")  # fmt: skip


class Target:
    """One mode's lab, its inventory, and the ways to deploy to it and look at it."""

    def __init__(self, mode: str, inventory: Path, spec: dict | None = None) -> None:
        """spec: the lab and its hosts' parts (as MODES gives them); default the mode's deployed stack's."""
        spec = spec or MODES[mode]
        self.mode = mode
        self.lab: Lab = spec["lab"]
        self.inventory = inventory
        # The deployer holds the lock and the release history; in swarm mode it is the leading manager.
        self.deployer = lab_hosts.lab_host(self.lab, spec["deployer"])
        # The stack as its clients see it: https://<the lab's name>, trusting only the lab's ACME root.
        self.edge_host = lab_hosts.lab_host(self.lab, spec["edge"])
        self.domain = acme.domain(self.lab)
        route_edge(self.domain, self.edge_host.address, str(acme.root_file(self.lab)))
        self.edge = f"https://{self.domain}"
        self.db = lab_hosts.lab_host(self.lab, spec["db"])

    def command(self, playbook: str, *extra: str) -> list[str]:
        return [
            str(PLAYBOOK_BIN), f"playbooks/{playbook}", "-i", str(self.inventory), "-i", str(self.lab.inventory),
            "--vault-password-file", VAULT, *extra,
        ]  # fmt: skip

    def play(self, playbook: str, *extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(playbook, *extra), cwd=ROOT, capture_output=True, text=True)

    def module(self, name: str, args: dict) -> dict:
        """One run of a pliers.deploy module on the deployer (ansible's ad-hoc command): its result."""
        command = [str(PLAYBOOK_BIN.parent / "ansible"), self.deployer.name, "-i", str(self.inventory), "-i",
                   str(self.lab.inventory), "--vault-password-file", VAULT, "-m", f"pliers.deploy.{name}",
                   "-a", json.dumps(args), "--one-line"]  # fmt: skip
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
        answer = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
        assert " => " in answer, f"{name} gave no result: {result.stdout[-2000:]}{result.stderr[-2000:]}"
        return json.loads(answer.split(" => ", 1)[1])

    def version(self) -> str:
        status, body = http(f"{self.edge}/api/health")
        assert status == 200, f"the api does not answer through the edge: {status} {body}"
        return json.loads(body)["version"]

    def exec_in(self, service: str, command: str, input: str | None = None) -> subprocess.CompletedProcess:
        """`docker exec` of command (a shell line) in a running container of the service, on the first node that runs
        one (a Compose container or a Swarm task); input goes to its standard input."""
        find = (
            f"docker ps -q --filter label=com.docker.compose.service={service}; "
            f"docker ps -q --filter label=com.docker.swarm.service.name={STACK}_{service}"
        )
        for host in lab_hosts.running_hosts(self.lab):
            node = lab_hosts.lab_host(self.lab, host)
            containers = lab_hosts.ssh(node, find).stdout.split()
            if containers:
                interactive = "-i " if input is not None else ""
                return lab_hosts.ssh(node, f"docker exec {interactive}{containers[0]} {command}", input=input)
        raise AssertionError(f"no node runs {service}")

    def sql(self, query: str) -> str:
        """One value from PostgreSQL, asked as its superuser."""
        return self.exec_in("postgres", f'psql -U pliers -d pliers -tAc "{query}"').stdout.strip()

    def redis(self, *command: str) -> str:
        """Redis's reply to a command (its words shell-quoted by the caller where needed), asked as its admin user."""
        script = 'REDISCLI_AUTH="$(cat /run/secrets/admin_password)" redis-cli --no-auth-warning ' + " ".join(command)
        return self.exec_in("redis", f"sh -c '{script}'").stdout.strip()

    def promql(self, query: str) -> list[dict]:
        """An instant query, asked of the running Prometheus with its own promtool (its port need not be published)."""
        find = (
            "docker ps -q --filter label=com.docker.compose.service=prometheus; "
            f"docker ps -q --filter label=com.docker.swarm.service.name={STACK}_prometheus"
        )
        containers = lab_hosts.ssh(self.deployer, find).stdout.split()
        assert containers, f"no Prometheus container on {self.deployer.name}"
        command = f"docker exec {containers[0]} promtool query instant -o json http://127.0.0.1:9090 '{query}'"
        result = lab_hosts.ssh(self.deployer, command, check=False)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def release(self, playbook: str, *extra: str, name: str) -> tuple[subprocess.CompletedProcess, Probe]:
        """Run a playbook under the probe; keep its duration and the probe's counts."""
        with Probe(self.edge) as probe:
            time.sleep(1)
            started = time.monotonic()
            result = self.play(playbook, *extra)
            seconds = round(time.monotonic() - started, 1)
            time.sleep(1)
        FIGURES.setdefault(self.mode, {})[name] = {
            "rc": result.returncode, "seconds": seconds, "requests": probe.sent, "failed": len(probe.failures),
        }  # fmt: skip
        report = ROOT / ".lab" / "reports" / f"releases-{self.mode}.json"
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(FIGURES[self.mode], indent=2) + "\n")
        return result, probe


# Where the lab inventories keep the backups, on the host that holds the database.
BACKUPS = "/var/backups/pliers/local"


def items(target) -> str:
    """The api's listing of the items, through the edge."""
    status, body = http(f"{target.edge}/api/items")
    assert status == 200, body
    return body


def newest_backup(target) -> str:
    return lab_hosts.ssh(target.db, f"ls {BACKUPS} | grep -v '^status' | tail -1").stdout.strip()


def recap_changed(result: subprocess.CompletedProcess) -> list[int]:
    """Each host's changed count in a play's recap."""
    return [int(n) for n in re.findall(r"changed=(\d+)", result.stdout)]


def output(result: subprocess.CompletedProcess) -> str:
    return result.stdout[-5000:] + result.stderr[-2000:]


# The ansible-core before the newest, in its own venv (make test-lab and make test-collection create it).
PREVIOUS_CORE_VENVS = sorted(ROOT.glob(".venv-core-*"))


def install_tarball(build: Path) -> Path:
    """pliers.deploy built as Galaxy ships it into build, and installed from that tarball into an empty collections
    path: build/collections, returned."""
    galaxy = str(Path(sys.executable).parent / "ansible-galaxy")
    built = subprocess.run([galaxy, "collection", "build", "--output-path", str(build), str(ROOT)],
                           capture_output=True, text=True, check=False)  # fmt: skip
    assert built.returncode == 0, output(built)
    (tarball,) = build.glob("pliers-deploy-*.tar.gz")
    # --force: the checkout itself is installed in the configured collections path already.
    installed = subprocess.run(
        [galaxy, "collection", "install", "--force", "--offline", "--no-deps", "-p", str(build / "collections"),
         str(tarball)], cwd=build, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert installed.returncode == 0, output(installed)
    return build / "collections"


def task_changed(result: subprocess.CompletedProcess, task: str) -> bool:
    """Whether the first task whose name holds `task` reported changed on some host."""
    lines = result.stdout.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("TASK [") and task in line:
            for following in lines[index + 1 :]:
                if following.startswith(("TASK [", "PLAY ")):
                    return False
                if following.startswith("changed:"):
                    return True
    return False


def said(result: subprocess.CompletedProcess, task: str):
    """What the first debug task whose name holds `task` printed (its msg), or None when it did not run."""
    lines = result.stdout.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("TASK [") and task in line:
            body = []
            for following in lines[index + 1 :]:
                if following.startswith(("TASK [", "PLAY ")):
                    break
                body.append(following)
            text = "\n".join(body)
            start = text.find("=> {")
            if start < 0:
                return None
            end = text.find("\n}", start)
            return json.loads(text[start + 3 : end + 2]).get("msg")
    return None
