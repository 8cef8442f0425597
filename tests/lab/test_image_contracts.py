"""Each lab image keeps the contract of the upstream image it stands in for (docs/images.md): the user it runs as,
where it keeps its data and who owns it, the ports it says it serves - what the collection's settings (the uids it
runs a service as and gives its secrets and data to) assume. Read from the image the lab built, with `docker image
inspect` and short `docker run --rm` probes: no stack.

The programs the collection may run in it (tests/image_contracts.py: tools) are there too. Not here yet: the rest
of each contract (entrypoint, `*_FILE` variables)."""

from __future__ import annotations

import json

import pytest

from lab.common import docker
from lab.images import Builder

from ..image_contracts import CONTRACTS

# No lab host: on the Compose lane, the shortest.
LAB_GROUP = "deployed-compose"


@pytest.fixture(scope="module")
def built() -> dict[str, str]:
    """The lab's images by key (built, or found by their content hash): no host is needed."""
    return Builder().build_all()


def probe(tag: str, script: str, *args: str) -> str:
    """script's output, run by sh (with args) in a throwaway container of the image, as root (to read any owner)."""
    command = ("run", "--rm", "--user", "0:0", "--entrypoint", "sh", tag, "-c", script, "probe", *args)
    return docker(*command).stdout.strip()


def runs_as(tag: str, config: dict, account: str) -> str:
    """uid:gid the image runs its service as: its USER resolved in the image, or the account its entrypoint drops to."""
    user = account or config.get("User") or "0"
    name, _, group = user.partition(":")
    uid = name if name.isdigit() else probe(tag, f"id -u {name}")
    if group:
        gid = group if group.isdigit() else probe(tag, f"getent group {group} | cut -d: -f3")
    else:  # the user's own group; a uid with no passwd entry runs with gid 0
        gid = probe(tag, f"id -g {name} 2>/dev/null || echo 0")
    return f"{uid}:{gid}"


@pytest.mark.parametrize("contract", CONTRACTS, ids=lambda contract: contract.image)
def test_the_lab_image_keeps_the_upstream_images_contract(built, contract):
    tag = built[contract.image]
    config = json.loads(docker("image", "inspect", "--format", "{{json .Config}}", tag).stdout)
    found = {
        "user": runs_as(tag, config, contract.account),
        "tools": probe(tag, "for tool; do command -v $tool >/dev/null || echo $tool; done", *contract.tools),
        "data": {path: probe(tag, f"stat -c %u:%g {path} 2>/dev/null || echo missing") for path in contract.data},
        "ports": sorted(config.get("ExposedPorts") or {}),
    }
    promised = {
        "user": contract.user,
        "tools": "",
        "data": {path: contract.user for path in contract.data},
        "ports": sorted(contract.ports),
    }
    assert found == promised, f"{contract.image} is not {contract.upstream}'s contract"
