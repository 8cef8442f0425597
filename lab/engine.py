"""Step 1: a Docker engine on this machine.

If an engine already answers it is used as it is and never touched. Otherwise
Debian's docker.io is installed when dockerd is missing, and dockerd is started
in the background (there is no systemd here); its pid and log stay under .lab/.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

from .common import STATE, LabError, log, run

DOCKERD = "/usr/sbin/dockerd"
START_TIMEOUT = 60


def engine_version() -> str | None:
    result = run(["docker", "version", "--format", "{{.Server.Version}}"], check=False)
    return result.stdout.strip() if result.returncode == 0 else None


def apt_install(*packages: str) -> None:
    """Install Debian packages on this machine (root, non-interactive)."""
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    log(f"installing {' '.join(packages)} from Debian")
    run(["apt-get", "update", "-q"], env=env, check=False)
    run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages], env=env)


def ensure_tools(*commands: str, package: str) -> None:
    if not all(shutil.which(cmd) for cmd in commands):
        apt_install(package)


def ensure_engine() -> str:
    version = engine_version()
    if version:
        return version
    if not os.path.exists(DOCKERD):
        apt_install("docker.io")
    STATE.mkdir(exist_ok=True)
    log_path = STATE / "dockerd.log"
    log(f"starting dockerd in the background (log: {log_path})")
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(
            [DOCKERD],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    (STATE / "dockerd.pid").write_text(f"{process.pid}\n")
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        version = engine_version()
        if version:
            log(f"dockerd {version} answers (pid {process.pid})")
            return version
        if process.poll() is not None:
            break
        time.sleep(0.5)
    tail = log_path.read_text(errors="replace").splitlines()[-15:]
    raise LabError("dockerd did not come up; last log lines:\n" + "\n".join(tail))
