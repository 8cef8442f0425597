"""Helpers for tests on the real lab: labelled containers, HTTP, polling."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from lab import hosts as lab_hosts
from lab.common import ROOT, docker
from lab.topology import Lab

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


def http(url: str, *, method: str = "GET", body: object = None, timeout: float = 5) -> tuple[int, str]:
    """(status, body) of one request; HTTP errors are answers too, connection errors give status 0."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - lab addresses only
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(exc)


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


class Probe:
    """Requests through the edge at a steady rate in a background thread, counting what failed.

    A failure is any answer but 200, or no answer; each is kept (time, path, status, body) to be reported.
    """

    def __init__(self, base_url: str, paths: tuple[str, ...] = ("/api/health", "/ai/health", "/"), rate: float = 20):
        self.base_url = base_url
        self.paths = paths
        self.interval = 1 / rate
        self.sent = 0
        self.failures: list[tuple[float, str, int, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stop.is_set():
            path = self.paths[self.sent % len(self.paths)]
            status, body = http(self.base_url + path, timeout=10)
            self.sent += 1
            if status != 200:
                self.failures.append((round(time.monotonic() - started, 2), path, status, body[:200]))
            # A steady rate: the next request is due interval after the previous one was due.
            time.sleep(max(0.0, started + self.sent * self.interval - time.monotonic()))

    def __enter__(self) -> Probe:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> str:
        return f"{self.sent} requests, {len(self.failures)} failed" + (
            f"; first failures: {self.failures[:5]}" if self.failures else ""
        )


# --- A deployed stack on a lab of its own, in each mode (the session fixture `deployed`) -----------------

PLAYBOOK_BIN = Path(sys.executable).parent / "ansible-playbook"
VAULT = "inventories/local/vault-password-dev-only.txt"
STACK = "pliers-local"  # both local inventories deploy the environment "local"
MODES = {
    "compose": {
        "lab": Lab("pliers-rel"),
        # pliers-rel-2 is not deployed to: it is the SFTP server of the offsite backup copy.
        "hosts": 2,
        "inventory": "local",
        "db": "pliers-rel-1",
        "offsite": "pliers-rel-2",
        "layout": "pliers_hosts:\n  hosts:\n    pliers-rel-1:\n",
    },
    "swarm": {
        "lab": Lab("pliers-relsw"),
        "hosts": 3,
        "inventory": "local-swarm",
        "db": "pliers-relsw-2",
        "offsite": "pliers-relsw-3",
        "layout": """\
pliers_hosts:
  children:
    swarm_managers:
      hosts:
        pliers-relsw-1: {docker_host_node_labels: {edge: "true"}}
    swarm_workers:
      hosts:
        pliers-relsw-2: {docker_host_node_labels: {db: "true"}}
        pliers-relsw-3: {docker_host_node_labels: {}}
""",
    },
}
FIGURES: dict[str, dict] = {}


class Target:
    """One mode's lab, its inventory, and the ways to deploy to it and look at it."""

    def __init__(self, mode: str, inventory: Path) -> None:
        self.mode = mode
        self.lab: Lab = MODES[mode]["lab"]
        self.inventory = inventory
        self.deployer = lab_hosts.Host(f"{self.lab.name}-1", lab_hosts.host_address(self.lab, f"{self.lab.name}-1"))
        self.edge = f"http://{self.deployer.address}:80"
        self.db = lab_hosts.Host(MODES[mode]["db"], lab_hosts.host_address(self.lab, MODES[mode]["db"]))

    def command(self, playbook: str, *extra: str) -> list[str]:
        return [
            str(PLAYBOOK_BIN), f"playbooks/{playbook}", "-i", str(self.inventory), "-i", str(self.lab.inventory),
            "--vault-password-file", VAULT, *extra,
        ]  # fmt: skip

    def play(self, playbook: str, *extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(playbook, *extra), cwd=ROOT, capture_output=True, text=True)

    def version(self) -> str:
        status, body = http(f"{self.edge}/api/health")
        assert status == 200, f"the api does not answer through the edge: {status} {body}"
        return json.loads(body)["version"]

    def sql(self, query: str) -> str:
        """One value from PostgreSQL, on the node that runs it (a Compose container or a Swarm task)."""
        find = (
            "docker ps -q --filter label=com.docker.compose.service=postgres; "
            f"docker ps -q --filter label=com.docker.swarm.service.name={STACK}_postgres"
        )
        for host in lab_hosts.running_hosts(self.lab):
            node = lab_hosts.Host(host, lab_hosts.host_address(self.lab, host))
            containers = lab_hosts.ssh(node, find).stdout.split()
            if containers:
                command = f'docker exec {containers[0]} psql -U pliers -d pliers -tAc "{query}"'
                return lab_hosts.ssh(node, command).stdout.strip()
        raise AssertionError("no node runs PostgreSQL")

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


def output(result: subprocess.CompletedProcess) -> str:
    return result.stdout[-5000:] + result.stderr[-2000:]
