"""Each lab image keeps the contract of the upstream image it stands in for (docs/images.md): the user it runs as,
where it keeps its data and who owns it, the ports it says it serves - what the collection's settings (the uids it
runs a service as and gives its secrets and data to) assume. Read from the image the lab built, with `docker image
inspect` and short `docker run --rm` probes: no stack.

Not here yet: etcd (the lab's runs as 2379, upstream's as root: docs/images.md says what the collection has to do
first), and the rest of each contract (entrypoint, `*_FILE` variables, the tools a health check uses)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from lab.common import docker
from lab.images import Builder

# No lab host: on the Compose lane, the shortest.
LAB_GROUP = "deployed-compose"


@dataclass(frozen=True)
class Contract:
    image: str  # the lab image's key
    upstream: str  # the image it stands in for (docs/images.md)
    user: str  # uid:gid it runs as, or the account the entrypoint drops to (postgres, redis start as root)
    account: str = ""  # the account that uid:gid belongs to, when the entrypoint switches to it
    data: tuple[str, ...] = ()  # directories it keeps its state in, owned by the user
    ports: tuple[str, ...] = ()  # ExposedPorts


CONTRACTS = (
    Contract("postgres", "postgres:17-trixie", "999:999", "postgres", ("/var/lib/postgresql/data",), ("5432/tcp",)),
    Contract("redis", "redis:8-trixie", "999:999", "redis", ("/data",), ("6379/tcp",)),
    Contract("nginx", "nginxinc/nginx-unprivileged:1.30", "101:101", ports=("8080/tcp",)),
    Contract("prometheus", "prom/prometheus:v3", "65534:65534", data=("/prometheus",), ports=("9090/tcp",)),
    Contract("alertmanager", "prom/alertmanager:v0.33", "65534:65534", data=("/alertmanager",), ports=("9093/tcp",)),
    Contract("node-exporter", "prom/node-exporter:v1.12", "65534:65534", ports=("9100/tcp",)),
    Contract("postgres-exporter", "prometheuscommunity/postgres-exporter:v0.20", "65534:65534", ports=("9187/tcp",)),
    Contract("redis-exporter", "oliver006/redis_exporter:v1.88", "59000:59000", ports=("9121/tcp",)),
    Contract("nginx-exporter", "nginx/nginx-prometheus-exporter:1.5", "1001:1001", ports=("9113/tcp",)),
    Contract("haproxy", "haproxy:3.2", "99:99", "haproxy"),
)


@pytest.fixture(scope="module")
def built() -> dict[str, str]:
    """The lab's images by key (built, or found by their content hash): no host is needed."""
    return Builder().build_all()


def probe(tag: str, script: str) -> str:
    """script's output, run by sh in a throwaway container of the image, as root (to read any owner)."""
    return docker("run", "--rm", "--user", "0:0", "--entrypoint", "sh", tag, "-c", script).stdout.strip()


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
        "data": {path: probe(tag, f"stat -c %u:%g {path} 2>/dev/null || echo missing") for path in contract.data},
        "ports": sorted(config.get("ExposedPorts") or {}),
    }
    promised = {
        "user": contract.user,
        "data": {path: contract.user for path in contract.data},
        "ports": sorted(contract.ports),
    }
    assert found == promised, f"{contract.image} is not {contract.upstream}'s contract"
