"""What a converged host must look like: a healthy stack behind one edge, nothing else reachable,
secrets only in root-managed 0400 files (never in a container's environment), a hardened engine."""

from __future__ import annotations

import json
import os

import pytest
import testinfra

PROJECT_DIR = "/opt/pliers/local"
INVENTORY = os.path.join(os.environ["MOLECULE_PROJECT_DIRECTORY"], ".lab/labs/pliers-molecule/inventory.yml")
SERVICES = {"postgres", "redis", "api", "ai-service", "web", "edge"}
MONITORING = {"prometheus", "prometheus-agent", "alertmanager", "node-exporter", "postgres-exporter", "redis-exporter",
              "edge-exporter"}  # fmt: skip
# Never reachable from outside the host: PostgreSQL, Redis, the api, the ai-service, the Docker API, Alertmanager,
# the exporters and the edge's status page.
CLOSED_PORTS = (5432, 6379, 3000, 3001, 8080, 2375, 2376, 9093, 9100, 9187, 9121, 9113, 8082)


@pytest.fixture(scope="module")
def containers(host):
    listing = host.check_output(f"docker compose --project-directory {PROJECT_DIR} ps --all --format json")
    rows = [json.loads(line) for line in listing.splitlines() if line.strip()]
    return {row["Service"]: row for row in rows}


@pytest.fixture(scope="module")
def bystander():
    return testinfra.get_host(f"ansible://pliers-molecule-2?ansible_inventory={INVENTORY}")


@pytest.fixture(scope="module")
def address(host):
    return host.ansible.get_variables()["ansible_host"]


def test_every_service_runs_healthy(containers):
    assert set(containers) == SERVICES | MONITORING
    for service, row in containers.items():
        assert row["State"] == "running", f"{service}: {row['Status']}"
        # The nginx exporter's upstream image has no program to run a health check (docs/images.md).
        expected = "" if service == "edge-exporter" else "healthy"
        assert row["Health"] == expected, f"{service}: {row['Status']}"


@pytest.mark.parametrize(("path", "expected"), [("/", "Pliers"), ("/api/health", '"version": "1.0.0"'),
                                                ("/ai/health", '"service": "ai-service"')])  # fmt: skip
def test_the_edge_routes_each_path(host, path, expected):
    # Over HTTPS, as the lab's name (the certificate's trust is tests/lab's: this checks the routes).
    name = host.ansible.get_variables()["pliers_lab_domain"]
    body = host.check_output(f"curl -fsSk --resolve {name}:443:127.0.0.1 https://{name}{path}")
    assert expected in body


def test_http_redirects_to_https(host):
    name = host.ansible.get_variables()["pliers_lab_domain"]
    curl = f"curl -sS -o /dev/null -w '%{{http_code}} %{{redirect_url}}' -H 'Host: {name}'"
    answer = host.check_output(f"{curl} http://127.0.0.1/api/health")
    assert answer == f"308 https://{name}:8443/api/health"


def test_only_the_edge_is_reachable_from_another_host(bystander, address):
    for port in (80, 443):
        answer = bystander.run(f"timeout 3 bash -c '</dev/tcp/{address}/{port}'")
        assert answer.rc == 0, f"the edge must answer on {port}"
    for port in CLOSED_PORTS:
        attempt = bystander.run(f"timeout 3 bash -c '</dev/tcp/{address}/{port}'")
        assert attempt.rc != 0, f"port {port} of the deploy host answers from another host"


def test_only_the_edge_and_prometheus_publish_ports(containers):
    # Prometheus: the local inventory publishes it for the lab to forward to the machine's 127.0.0.1:9090.
    publishers = {service for service, row in containers.items() if row.get("Publishers") and any(
        p.get("PublishedPort") for p in row["Publishers"])}  # fmt: skip
    assert publishers == {"edge", "prometheus"}


def test_secrets_are_root_managed_0400_files_never_in_the_environment(host, containers):
    paths = host.check_output(f"find {PROJECT_DIR}/secrets -type f").split()
    assert len(paths) >= 7
    values = []
    for path in paths:
        secret = host.file(path)
        assert secret.mode == 0o400, f"{path} is {oct(secret.mode)}"
        value = secret.content_string.strip()
        if value and not value.startswith("#"):
            values.append(value)
    assert host.file(f"{PROJECT_DIR}/secrets").mode == 0o700
    # redis.conf holds the password on its requirepass line
    redis_conf = host.file(f"{PROJECT_DIR}/secrets/redis/redis.conf").content_string.splitlines()
    values += [line.split()[1] for line in redis_conf if line.startswith("requirepass ")]
    for service, row in containers.items():
        environment = json.loads(host.check_output(f"docker inspect --format '{{{{json .Config.Env}}}}' {row['ID']}"))
        leaked = [value for value in values if any(value in variable for variable in environment)]
        assert not leaked, f"{service} carries a secret in its environment"
    api_env = json.loads(
        host.check_output(f"docker inspect --format '{{{{json .Config.Env}}}}' {containers['api']['ID']}")
    )
    assert "DATABASE_PASSWORD_FILE=/run/secrets/database_password" in api_env


def test_secret_files_belong_to_the_user_that_reads_them(host):
    assert host.file(f"{PROJECT_DIR}/secrets/api/database_password").uid == 10001
    assert host.file(f"{PROJECT_DIR}/secrets/ai-service/openai_api_key").uid == 10001
    assert host.file(f"{PROJECT_DIR}/secrets/redis/redis.conf").uid == 999
    assert host.file(f"{PROJECT_DIR}/secrets/postgres/postgres_password").uid == 999
    assert host.file(f"{PROJECT_DIR}/secrets/postgres-exporter/postgres_password").uid == 65534
    assert host.file(f"{PROJECT_DIR}/secrets/alertmanager/alertmanager.yml").uid == 65534
    assert host.file(f"{PROJECT_DIR}/secrets/redis-exporter/redis_password.json").uid == 59000


def test_networks_keep_data_services_internal(host):
    for network, internal in (
        ("frontend", False),
        ("backend", True),
        ("database", True),
        ("monitoring", True),
        ("edge_metrics", True),
    ):
        inspected = host.check_output(f"docker network inspect --format '{{{{.Internal}}}}' pliers-local_{network}")
        assert inspected == str(internal).lower(), network


def test_the_engine_is_hardened(host):
    daemon = json.loads(host.file("/etc/docker/daemon.json").content_string)
    assert daemon["live-restore"] is True and daemon["no-new-privileges"] is True
    assert daemon["userland-proxy"] is False and daemon["icc"] is False
    assert daemon["log-driver"] == "json-file" and daemon["log-opts"]["max-size"]
    assert host.file(f"{PROJECT_DIR}/compose.yaml").mode == 0o640


def test_the_rendered_project_is_valid_compose(host):
    assert host.run(f"docker compose --project-directory {PROJECT_DIR} config --quiet").rc == 0
