"""The networks keep each container from what it has no use for, on the deployed stack of each mode: from the web
container no monitoring API, exporter, database or Redis answers; from the ai-service neither Prometheus nor its scrape
agent, Alertmanager, PostgreSQL or an exporter (it reaches Redis as its own ACL user, the api through the edge); from
the api no monitoring API and no exporter (it reaches PostgreSQL and Redis as its own users). Each is tried with a
TCP connection from inside the container, and a service each may reach shows that the way of trying works."""

from __future__ import annotations

import pytest

# Whether something answers at {host}:{port}, from a shell in the container (bash's /dev/tcp; a name the container's
# networks do not know does not resolve).
CONNECT = "bash -c 'timeout 5 bash -c \"exec 3<>/dev/tcp/{host}/{port}\" 2>/dev/null && echo open || echo closed'"

# Prometheus and its scrape agent listen on 9090; the agent only on its own loopback, though it shares the backend
# network with the api and the ai-service.
MONITORING = [("prometheus", 9090), ("prometheus-agent", 9090), ("alertmanager", 9093), ("postgres-exporter", 9187),
              ("redis-exporter", 9121), ("edge-exporter", 9113)]  # fmt: skip
UNREACHABLE = {
    "web": [*MONITORING, ("postgres", 5432), ("redis", 6379)],
    "ai-service": [*MONITORING, ("postgres", 5432)],
    "api": MONITORING,
}
# What each does reach: the edge in front of the web, Redis for the ai-service, PostgreSQL for the api.
REACHABLE = {"web": ("edge", 8080), "ai-service": ("redis", 6379), "api": ("postgres", 5432)}


def answers(target, service: str, host: str, port: int) -> str:
    return target.exec_in(service, CONNECT.format(host=host, port=port)).stdout.strip()


@pytest.mark.parametrize("service", sorted(UNREACHABLE))
def test_an_app_container_reaches_no_monitoring_api_and_no_data_it_does_not_use(deployed, service):
    assert answers(deployed, service, *REACHABLE[service]) == "open", REACHABLE[service]
    reached = [
        f"{host}:{port}" for host, port in UNREACHABLE[service] if answers(deployed, service, host, port) != "closed"
    ]
    assert reached == [], f"{service} reaches {reached}"
