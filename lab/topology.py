"""Which lab we are talking about: its name, label, network and state files.

The default lab is "pliers-lab" (state in .lab/); tests run their own labs under
other names so they never disturb the one a developer is using.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .common import LABEL, STATE, LabError

DEFAULT_NAME = "pliers-lab"
REGISTRY_ALIAS = "registry.pliers.lab"
REGISTRY_PORT = 5000
MAX_HOSTS = 9


@dataclass(frozen=True)
class Lab:
    name: str = DEFAULT_NAME

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9-]{1,30}", self.name):
            raise LabError(f"lab name {self.name!r} must be 2-31 lowercase letters, digits or dashes")

    @property
    def label(self) -> str:
        return f"{LABEL}={self.name}"

    @property
    def network(self) -> str:
        return self.name

    @property
    def state(self) -> Path:
        """Per-lab files: the inventory, the registry credentials, what was pushed."""
        return STATE if self.name == DEFAULT_NAME else STATE / "labs" / self.name

    @property
    def inventory(self) -> Path:
        return self.state / "inventory.yml"

    @property
    def credentials(self) -> Path:
        return self.state / "registry-credentials.yml"

    @property
    def registry_container(self) -> str:
        return f"{self.name}-registry"

    @property
    def registry(self) -> str:
        """The registry as the lab hosts reach it."""
        return f"{REGISTRY_ALIAS}:{REGISTRY_PORT}"

    def host_name(self, index: int) -> str:
        return f"{self.name}-{index}"


def parse_host_count(value: str) -> int:
    """HOSTS from the command line: a whole number from 1 to MAX_HOSTS."""
    text = str(value).strip()
    if not text.isdigit():
        raise LabError(f"HOSTS must be a whole number from 1 to {MAX_HOSTS}, got {value!r}")
    count = int(text)
    if not 1 <= count <= MAX_HOSTS:
        raise LabError(f"HOSTS must be from 1 to {MAX_HOSTS} (this 2-core machine), got {count}")
    return count


def parse_user(value: str) -> str:
    """--deploy-user: empty (root logs in), or a user name as useradd takes it (not root)."""
    if value and (value == "root" or not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", value)):
        raise LabError(f"--deploy-user takes a user name other than root (like deploy), got {value!r}")
    return value


def parse_ports(values: list[str]) -> tuple[str, ...]:
    """--publish MACHINE_PORT:HOST_PORT values, each port 1-65535."""
    ports = []
    for value in values:
        parts = value.split(":")
        if len(parts) != 2 or not all(p.isdigit() and 1 <= int(p) <= 65535 for p in parts):
            raise LabError(f"--publish takes MACHINE_PORT:HOST_PORT with ports 1-65535, got {value!r}")
        ports.append(f"{int(parts[0])}:{int(parts[1])}")
    return tuple(ports)
