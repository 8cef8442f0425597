"""Helpers every lab step shares: paths, labels, running commands, errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".lab"
LABEL = "pliers.lab"
# What the lab tests and the bench deploy with: the controller venv's ansible-playbook (beside the Python that
# runs them; the lab itself runs on any python3 and never calls it), and the local inventories' dev-only vault
# password file, relative to ROOT.
PLAYBOOK_BIN = Path(sys.executable).parent / "ansible-playbook"
VAULT = "inventories/local/vault-password-dev-only.txt"


class LabError(Exception):
    """A lab step failed; the message says which and why."""


def log(message: str) -> None:
    print(f"lab: {message}", file=sys.stderr, flush=True)


def run(
    cmd: list[str],
    *,
    input: str | bytes | None = None,
    check: bool = True,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
    quiet_stderr: bool = False,
) -> subprocess.CompletedProcess:
    """Run a command and capture its output; on failure raise LabError naming it."""
    text = not isinstance(input, bytes)
    full_env = {**os.environ, **env} if env else None
    try:
        result = subprocess.run(
            cmd,
            input=input,
            capture_output=True,
            text=text,
            env=full_env,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        raise LabError(f"{cmd[0]} is not installed ({exc})") from exc
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"timed out after {timeout}s: {' '.join(cmd)}") from exc
    if check and result.returncode != 0:
        stderr = result.stderr if text else result.stderr.decode(errors="replace")
        detail = "" if quiet_stderr else f": {stderr.strip()[-2000:]}"
        raise LabError(f"command failed (exit {result.returncode}): {' '.join(cmd)}{detail}")
    return result


def docker(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return run(["docker", *args], **kwargs)


def docker_lines(*args: str) -> list[str]:
    return [line for line in docker(*args).stdout.splitlines() if line.strip()]


def write_private(path: Path, content: str | bytes) -> None:
    """Write a file only root can read, creating it with that mode (never readable in between)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content.encode() if isinstance(content, str) else content)
    os.chmod(path, 0o600)
