"""make test-lab: the lab tests in one pytest process per lab, side by side (most of their time is spent
waiting on health checks and rolling updates, not on this machine's CPU).

    python3 -m tests.lab.parallel [pytest options]

Each process runs the groups PLIERS_LAB_GROUPS names (tests/lab/conftest.py deselects the others); its output
goes to .lab/reports/lab-<groups>.log and, prefixed, to this output. Exits non-zero when any process did.
(pytest-xdist's loadgroup would, but with pytest 9 it cannot tag the tests: it sets an attribute pytest 9 dropped.)
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from lab.common import ROOT

# Two long labs on their own, the short ones one after the other.
PROCESSES = ("deployed-swarm", "deployed-compose", "test-lab,node-loss")
REPORTS = ROOT / ".lab" / "reports"


def relay(name: str, process: subprocess.Popen, log: Path) -> None:
    with log.open("w") as sink:
        for line in process.stdout:
            sink.write(line)
            sink.flush()
            sys.stdout.write(f"[{name}] {line}")
            sys.stdout.flush()


def main(argv: list[str]) -> int:
    REPORTS.mkdir(parents=True, exist_ok=True)
    pytest = Path(sys.executable).parent / "pytest"
    running = []
    for groups in PROCESSES:
        command = [str(pytest), "-m", "lab", "-p", "no:cacheprovider", *argv]
        environment = {**os.environ, "PLIERS_LAB_GROUPS": groups, "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)  # fmt: skip
        log = REPORTS / f"lab-{groups.replace(',', '+')}.log"
        thread = threading.Thread(target=relay, args=(groups, process, log), daemon=True)
        thread.start()
        running.append((groups, process, thread, log))
    failed = []
    for groups, process, thread, log in running:
        process.wait()
        thread.join()
        if process.returncode != 0:
            failed.append(f"{groups} (exit {process.returncode}, log {log})")
    for groups, _, _, log in running:
        # pytest's last line, and the one line per failed test of its short summary: a CI log's tail names them.
        lines = log.read_text().strip().splitlines()
        for line in [line for line in lines if line.startswith(("FAILED ", "ERROR "))] + lines[-1:]:
            print(f"{groups}: {line}")
    if failed:
        print("lab tests failed: " + "; ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
