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


class Client:
    """An operator's client through the edge, in two background threads: one reads (`/api/health`, `/ai/health`,
    `/` in turn, `read_rate` a second), one writes (`POST /api/items`, `write_rate` a second).

    Every failure is kept with the time its request was sent (seconds since the client started: a request sent
    once the service was back succeeds, however long an earlier one hung); every write the api acknowledged
    (a 2xx with the item's id) is kept by name, to be found again afterwards (`lost()`).
    """

    def __init__(self, base_url: str, tag: str, read_rate: float = 5, write_rate: float = 10,
                 paths=("/api/health", "/ai/health", "/")):  # fmt: skip
        self.base_url = base_url
        self.tag = tag
        self.paths = paths
        self.read_interval = 1 / read_rate
        self.write_interval = 1 / write_rate
        self.started = time.monotonic()
        self.reads = 0
        self.writes = 0
        self.read_failures: list[tuple[float, str, int, str]] = []
        self.write_failures: list[tuple[float, int, str]] = []
        self.acknowledged: list[str] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._read, daemon=True),
            threading.Thread(target=self._write, daemon=True),
        ]

    def now(self) -> float:
        return round(time.monotonic() - self.started, 2)

    def _paced(self, step, interval: float) -> None:
        """`step` every `interval` seconds; after a request that hung, the next one goes at once (no burst)."""
        count = 0
        due = time.monotonic()
        while not self._stop.is_set():
            step(count)
            count += 1
            due = max(due + interval, time.monotonic())
            time.sleep(max(0.0, due - time.monotonic()))

    def _read(self) -> None:
        def read(count: int) -> None:
            path = self.paths[count % len(self.paths)]
            sent = self.now()
            status, body = http(self.base_url + path, timeout=10)
            self.reads += 1
            if status != 200:
                self.read_failures.append((sent, path, status, body[:200]))

        self._paced(read, self.read_interval)

    def _write(self) -> None:
        def write(count: int) -> None:
            name = f"{self.tag}-{count}"
            sent = self.now()
            status, body = http(self.base_url + "/api/items", method="POST", body={"name": name}, timeout=10)
            self.writes += 1
            if 200 <= status < 300 and '"id"' in body:
                self.acknowledged.append(name)
            else:
                self.write_failures.append((sent, status, body[:200]))

        self._paced(write, self.write_interval)

    def __enter__(self) -> Client:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def failures(self) -> list[float]:
        return sorted([f[0] for f in self.read_failures] + [f[0] for f in self.write_failures])

    def recovery(self, since: float) -> float:
        """Seconds from `since` to the last failed request after it (0.0 when none failed)."""
        after = [moment for moment in self.failures() if moment >= since]
        return round(after[-1] - since, 1) if after else 0.0

    def lost(self) -> list[str]:
        """The acknowledged writes the api no longer lists."""
        status, body = http(self.base_url + "/api/items", timeout=30)
        assert status == 200, f"listing the items failed: {status} {body[:300]}"
        listed = {item["name"] for item in json.loads(body)}
        return [name for name in self.acknowledged if name not in listed]

    def summary(self) -> str:
        return (
            f"reads {len(self.read_failures)}/{self.reads} failed, writes {len(self.write_failures)}/{self.writes} "
            f"failed ({len(self.acknowledged)} acknowledged)"
            + (f"; first failures: {(self.read_failures + self.write_failures)[:4]}" if self.failures() else "")
        )


# --- A deployed stack in each mode (the session fixture `deployed`) ---------------------------------------

PLAYBOOK_BIN = Path(sys.executable).parent / "ansible-playbook"
VAULT = "inventories/local/vault-password-dev-only.txt"
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

    def __init__(self, mode: str, inventory: Path) -> None:
        self.mode = mode
        self.lab: Lab = MODES[mode]["lab"]
        self.inventory = inventory
        # The deployer holds the lock and the release history; in swarm mode it is the leading manager.
        self.deployer = lab_hosts.lab_host(self.lab, MODES[mode]["deployer"])
        self.edge = f"http://{lab_hosts.lab_host(self.lab, MODES[mode]['edge']).address}:80"
        self.db = lab_hosts.lab_host(self.lab, MODES[mode]["db"])

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
            node = lab_hosts.lab_host(self.lab, host)
            containers = lab_hosts.ssh(node, find).stdout.split()
            if containers:
                command = f'docker exec {containers[0]} psql -U pliers -d pliers -tAc "{query}"'
                return lab_hosts.ssh(node, command).stdout.strip()
        raise AssertionError("no node runs PostgreSQL")

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


def output(result: subprocess.CompletedProcess) -> str:
    return result.stdout[-5000:] + result.stderr[-2000:]
