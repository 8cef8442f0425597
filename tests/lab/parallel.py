"""make test-lab: the lab tests in one pytest process per lab, side by side (much of their time is spent waiting
on health checks and rolling updates, which the others fill). make test adds the offline checks as one more
process, started first and at the lowest priority: they take the CPU time the labs, which mostly wait, leave.

    python3 -m tests.lab.parallel [--offline "<command>"] [pytest options]

Each pytest process runs the groups PLIERS_LAB_GROUPS names (tests/lab/conftest.py deselects the others): each
mode's deployed stack (its Molecule scenario, then the release, backup, monitoring and fault tests on the hosts the
scenario converged, and in swarm mode the node-loss tests last), and the test lab. Each process's output goes to
.lab/reports/lab-<name>.log and, prefixed, to this output. Exits non-zero when any process did.
(pytest-xdist's loadgroup would, but with pytest 9 it cannot tag the tests: it sets an attribute pytest 9 dropped.)
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import threading
from pathlib import Path

from lab.common import ROOT

# The longest first: the Swarm's lane.
PYTEST_GROUPS = ("deployed-swarm", "deployed-compose", "test-lab")
REPORTS = ROOT / ".lab" / "reports"
RECAP = re.compile(r"actions=|(failed|unreachable)=[1-9]")


def relay(name: str, process: subprocess.Popen, log: Path) -> None:
    with log.open("w") as sink:
        for line in process.stdout:
            sink.write(line)
            sink.flush()
            sys.stdout.write(f"[{name}] {line}")
            sys.stdout.flush()


def summary(output: str) -> list[str]:
    """What a CI log's tail shows of a process: one line per failed test and pytest's last line; Molecule's
    scenario recaps and any host that failed or was unreachable."""
    lines = [line for line in output.strip().splitlines() if line.strip()]
    kept = [line for line in lines if line.startswith(("FAILED ", "ERROR ")) or RECAP.search(line)]
    return kept + [line for line in lines[-1:] if line not in kept]


def cpu_seconds() -> tuple[float, float, float]:
    """The machine's CPU time so far, summed over its CPUs (seconds, from /proc/stat): busy, idle, and stolen by the
    hypervisor (a share of busy)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle, steal = fields[3] + fields[4], fields[7]  # idle and iowait; steal
    ticks = os.sysconf("SC_CLK_TCK")
    return (sum(fields) - idle) / ticks, idle / ticks, steal / ticks


def start(name: str, command: list[str], environment: dict[str, str]) -> tuple:
    process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)  # fmt: skip
    log = REPORTS / f"lab-{name}.log"
    thread = threading.Thread(target=relay, args=(name, process, log), daemon=True)
    thread.start()
    return name, process, thread, log


def main(argv: list[str]) -> int:
    REPORTS.mkdir(parents=True, exist_ok=True)
    cpu_before = cpu_seconds()
    running = []
    if argv[:1] == ["--offline"]:
        # Not the parent make's jobserver: the offline make runs its own jobs.
        environment = {key: value for key, value in os.environ.items() if key not in ("MAKEFLAGS", "MFLAGS")}
        # At the lowest priority: on CI's two cores the labs' lanes are the run's critical path, and the offline
        # checks, which take a core for most of an hour beside them, have the time the labs spend waiting.
        running.append(start("offline", ["nice", "-n", "19", *shlex.split(argv[1])], environment))
        argv = argv[2:]
    # What the labs share (images, CA, SSH key) first.
    images = subprocess.run(["python3", "-m", "lab", "images"], cwd=ROOT, stdout=subprocess.DEVNULL, check=False)
    if images.returncode != 0:
        for _, process, thread, _ in running:
            process.wait()
            thread.join()
        print(f"lab images failed (exit {images.returncode})", file=sys.stderr)
        return 1
    pytest = Path(sys.executable).parent / "pytest"
    for name in PYTEST_GROUPS:
        environment = {**os.environ, "PLIERS_LAB_GROUPS": name, "PYTHONUNBUFFERED": "1"}
        running.append(start(name, [str(pytest), "-m", "lab", "-p", "no:cacheprovider", *argv], environment))
    failed, used = [], {}
    for name, process, thread, log in running:
        # The lane's own CPU time, its ansible-playbooks' and SSH clients' included (the lab hosts' is the engine's).
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        used[name] = usage.ru_utime + usage.ru_stime
        thread.join()
        if process.returncode != 0:
            failed.append(f"{name} (exit {process.returncode}, log {log})")
    for name, _, _, log in running:
        for line in summary(log.read_text()):
            print(f"{name}: {line}")
    # Where the run's time went: how busy the machine's CPUs were, and how much of it the lanes' processes took.
    busy, idle, steal = (now - before for now, before in zip(cpu_seconds(), cpu_before, strict=True))
    print(
        f"CPU: {100 * busy / max(busy + idle, 1):.0f}% busy over {os.cpu_count()} CPUs (busy {busy:.0f} s, of it "
        f"stolen {steal:.0f} s; idle {idle:.0f} s); the lanes' processes: "
        + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in used.items())
    )
    if failed:
        print("failed: " + "; ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
