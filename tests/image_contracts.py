"""The contract of the upstream image each lab image stands in for (docs/images.md), as far as tests check it:
the lab test (tests/lab/test_image_contracts.py) holds each lab image to it, an offline one
(tests/unit/test_monitoring_offline.py) holds the stack's health checks to the programs it promises."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Contract:
    image: str  # the lab image's key
    # The image it stands in for: the default's (its name in the lab registry too).
    upstream: str
    user: str  # uid:gid it runs as, or the account the entrypoint drops to (postgres, redis start as root)
    account: str = ""  # the account that uid:gid belongs to, when the entrypoint switches to it
    data: tuple[str, ...] = ()  # directories it keeps its state in, owned by the user
    ports: tuple[str, ...] = ()  # ExposedPorts
    # The programs the upstream image has that the collection may run in it (a health check's, a module's); empty
    # when it has none at all (an image built from scratch).
    tools: tuple[str, ...] = ()
    # The stack's services that run it.
    services: tuple[str, ...] = ()


# busybox's: what the Prometheus project's images (and Alpine ones) offer a health check.
BUSYBOX = ("sh", "wget")

CONTRACTS = (
    Contract("postgres", "postgres:15-bookworm", "999:999", "postgres", ("/var/lib/postgresql/data",), ("5432/tcp",),
             ("bash", "sh", "pg_isready", "psql", "pg_dump", "pg_restore"), ("postgres",)),
    Contract("redis", "redis:7.0.15-bookworm", "999:999", "redis", ("/data",), ("6379/tcp",),
             ("bash", "sh", "redis-cli"), ("redis",)),
    Contract("nginx", "nginxinc/nginx-unprivileged:1.22.1", "101:101", ports=("8080/tcp",),
             # The edge's follower's (roles/web/files/pliers-edge.sh) and health check's: the Debian variant's.
             tools=("sh", "curl", "getent", "awk", "cksum", "flock", "setsid"), services=("edge",)),
    Contract("prometheus", "prom/prometheus:v2.42.0", "65534:65534", data=("/prometheus",), ports=("9090/tcp",),
             tools=(*BUSYBOX, "promtool"), services=("prometheus", "prometheus-agent")),
    Contract("alertmanager", "prom/alertmanager:v0.25.0", "65534:65534", data=("/alertmanager",), ports=("9093/tcp",),
             tools=(*BUSYBOX, "amtool"), services=("alertmanager",)),
    Contract("node-exporter", "prom/node-exporter:v1.5.0", "65534:65534", ports=("9100/tcp",), tools=BUSYBOX,
             services=("node-exporter",)),
    Contract("postgres-exporter", "prometheuscommunity/postgres-exporter:v0.11.1", "65534:65534", ports=("9187/tcp",),
             tools=BUSYBOX, services=("postgres-exporter",)),
    Contract("redis-exporter", "oliver006/redis_exporter:v1.45.0-alpine", "59000:59000", ports=("9121/tcp",),
             tools=BUSYBOX, services=("redis-exporter",)),
    # Built from scratch: no program but the exporter, so no health check (the stack runs it without one). Its
    # Dockerfile declares no port.
    Contract("nginx-exporter", "nginx/nginx-prometheus-exporter:0.11.0", "1001:1001", services=("edge-exporter",)),
    Contract("haproxy", "haproxy:2.6.12", "99:99", "haproxy", tools=("bash", "sh", "test")),
    # distroless: etcd's programs only, and root (the stack runs it as postgres_etcd_uid, on a volume made for it).
    Contract("etcd", "coreos/etcd:v3.5.16", "0:0", data=("/var/lib/etcd",), ports=("2379/tcp", "2380/tcp"),
             tools=("etcd", "etcdctl")),
)  # fmt: skip
