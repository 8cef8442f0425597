"""The reference Pliers app and the service images, run for real: PostgreSQL, Redis, the api and
ai-service at each version, the web frontend, and the exporters and Prometheus beside them."""

from __future__ import annotations

import json
import time

import pytest

from lab.common import docker

from .support import TEST_LAB, container_logs, http, published, run_container, wait_for, wait_http, write_secret

NETWORK = "pliers-test-app"
DB_PASSWORD = "db-secret-for-the-lab-test"
REDIS_PASSWORD = "redis-secret-for-the-lab-test"
AI_KEY = "sk-lab-test-not-a-real-key"


@pytest.fixture(scope="module")
def stack(images, tmp_path_factory):
    """A network with PostgreSQL and Redis (passwords from files), and a way to run app containers."""
    secrets = tmp_path_factory.mktemp("secrets")
    secrets.chmod(0o755)  # the services read their files as their own unprivileged users
    write_secret(secrets, "db_password", DB_PASSWORD)
    write_secret(secrets, "redis_password", REDIS_PASSWORD)
    write_secret(secrets, "openai_key", AI_KEY)
    write_secret(secrets, "redis.conf", f"requirepass {REDIS_PASSWORD}\nappendonly yes\n")
    docker("network", "rm", NETWORK, check=False)
    docker("network", "create", "--label", TEST_LAB.label, NETWORK)
    started = []

    def start(image_key: str, name: str, *args: str, port: int | None = None, options: tuple[str, ...] = ()) -> str:
        publish = ("-p", f"127.0.0.1::{port}") if port else ()
        container = run_container(
            images[image_key],
            *args,
            name=name,
            options=(
                "--network",
                NETWORK,
                "--network-alias",
                name.removeprefix("pliers-test-"),
                "-v",
                f"{secrets}:/run/secrets:ro",
                *publish,
                *options,
            ),
        )
        started.append(container)
        return container

    postgres = start(
        "postgres",
        "pliers-test-postgres",
        options=(
            "-e",
            "POSTGRES_USER=pliers",
            "-e",
            "POSTGRES_DB=pliers",
            "-e",
            "POSTGRES_PASSWORD_FILE=/run/secrets/db_password",
        ),
    )
    start("redis", "pliers-test-redis", "/run/secrets/redis.conf")
    wait_for(
        lambda: docker("exec", postgres, "pg_isready", "-h", "127.0.0.1", check=False).returncode == 0,
        timeout=60,
        what="PostgreSQL ready",
    )
    yield start
    for container in started:
        docker("rm", "-f", container, check=False)
    docker("network", "rm", NETWORK, check=False)


APP_ENV = (
    "-e",
    "DATABASE_HOST=postgres",
    "-e",
    "DATABASE_USER=pliers",
    "-e",
    "DATABASE_NAME=pliers",
    "-e",
    "DATABASE_PASSWORD_FILE=/run/secrets/db_password",
    "-e",
    "REDIS_HOST=redis",
    "-e",
    "REDIS_PASSWORD_FILE=/run/secrets/redis_password",
)


def one_off(images, version: str, *command: str) -> dict:
    """The api image's migration command, as a deploy runs it: a one-off container on the network."""
    result = docker(
        "run",
        "--rm",
        "--label",
        TEST_LAB.label,
        "--network",
        NETWORK,
        "-v",
        f"{secret_dir()}:/run/secrets:ro",
        *APP_ENV,
        images[f"api:{version}"],
        *command,
    )
    return json.loads(result.stdout)


def secret_dir() -> str:
    mounts = json.loads(docker("inspect", "--format", "{{json .Mounts}}", "pliers-test-postgres").stdout)
    return next(m["Source"] for m in mounts if m["Destination"] == "/run/secrets")


def test_redis_requires_its_password(stack):
    assert docker("exec", "pliers-test-redis", "redis-cli", "ping", check=False).stdout.strip().startswith("NOAUTH")
    authed = docker("exec", "-e", f"REDISCLI_AUTH={REDIS_PASSWORD}", "pliers-test-redis", "redis-cli", "ping")
    assert authed.stdout.strip() == "PONG"
    aof = docker(
        "exec", "-e", f"REDISCLI_AUTH={REDIS_PASSWORD}", "pliers-test-redis", "redis-cli", "config", "get", "appendonly"
    ).stdout.split()
    assert aof == ["appendonly", "yes"]


def test_migrations_report_pending_and_apply_once_per_version(images, stack):
    assert one_off(images, "1.0.0", "pliers", "migrate", "status")["pending"] == ["0001_items"]
    assert one_off(images, "1.0.0", "pliers", "migrate", "up")["applied_now"] == ["0001_items"]
    assert one_off(images, "1.0.0", "pliers", "migrate", "up")["applied_now"] == []
    status = one_off(images, "1.1.0", "pliers", "migrate", "status")
    assert (status["applied"], status["pending"]) == (["0001_items"], ["0002_item_tags"])
    assert one_off(images, "1.1.0", "pliers", "migrate", "up")["applied_now"] == ["0002_item_tags"]
    assert one_off(images, "broken", "pliers", "migrate", "status")["pending"] == []


@pytest.mark.parametrize("version", ["1.0.0", "1.1.0"])
def test_each_version_reports_its_own_version_and_serves_items(images, stack, version):
    one_off(images, version, "pliers", "migrate", "up")
    api = stack(f"api:{version}", f"pliers-test-api-{version.replace('.', '-')}", port=3000, options=APP_ENV)
    base = f"http://{published(api, 3000)}"
    health = json.loads(wait_http(f"{base}/api/health", what=f"api {version} healthy ({container_logs(api)})"))
    assert health["version"] == version and health["checks"] == {"database": "ok", "redis": "ok"}
    assert json.loads(http(f"{base}/health")[1])["version"] == version

    assert http(f"{base}/api/items", method="DELETE")[0] == 200
    status, created = http(f"{base}/api/items", method="POST", body={"name": f"made by {version}"})
    assert status == 201 and json.loads(created)["name"] == f"made by {version}"
    assert http(f"{base}/api/items", method="POST", body={"title": "no name"})[0] == 400
    listing = json.loads(http(f"{base}/api/items")[1])
    assert [item["name"] for item in listing] == [f"made by {version}"]
    assert ("tags" in listing[0]) is (version == "1.1.0")
    assert f'pliers_build_info{{service="api",version="{version}"}} 1' in http(f"{base}/metrics")[1]

    env = docker("inspect", "--format", "{{json .Config.Env}}", api).stdout
    assert DB_PASSWORD not in env and REDIS_PASSWORD not in env
    assert docker("exec", api, "id", "-u").stdout.strip() == "10001"

    ai = stack(
        f"ai-service:{version}",
        f"pliers-test-ai-{version.replace('.', '-')}",
        port=3001,
        options=(
            "-e",
            "REDIS_HOST=redis",
            "-e",
            "REDIS_PASSWORD_FILE=/run/secrets/redis_password",
            "-e",
            f"API_URL=http://api-{version.replace('.', '-')}:3000",
            "-e",
            "OPENAI_API_KEY_FILE=/run/secrets/openai_key",
        ),
    )
    ai_url = f"http://{published(ai, 3001)}/ai/health"
    ai_health = json.loads(wait_http(ai_url, what=f"ai-service {version} healthy ({container_logs(ai)})"))
    assert ai_health["version"] == version
    assert ai_health["providers"] == {"openai": "configured", "anthropic": "missing"}
    assert AI_KEY not in docker("inspect", "--format", "{{json .Config.Env}}", ai).stdout

    web = stack(f"web:{version}", f"pliers-test-web-{version.replace('.', '-')}", port=8080)
    web_base = f"http://{published(web, 8080)}"
    assert json.loads(wait_http(f"{web_base}/health"))["version"] == version
    assert f'<span id="version">{version}</span>' in http(f"{web_base}/")[1]


def test_broken_never_turns_healthy_while_a_good_build_does(images, stack):
    probe = (
        "--health-cmd",
        "pliers healthcheck",
        "--health-interval",
        "1s",
        "--health-timeout",
        "3s",
        "--health-retries",
        "1",
        "--health-start-period",
        "0s",
    )
    good = stack("api:1.1.0", "pliers-test-api-good", options=(*APP_ENV, *probe))
    broken = stack("api:broken", "pliers-test-api-broken", port=3000, options=(*APP_ENV, *probe))
    health_of = lambda c: docker("inspect", "--format", "{{.State.Health.Status}}", c).stdout.strip()  # noqa: E731
    wait_for(lambda: health_of(good) == "healthy", timeout=30, what="the 1.1.0 api healthy under the same probe")
    # Started second, the broken build may not listen yet on a loaded machine: wait for its first answer.
    wait_http(f"http://{published(broken, 3000)}/health", status=503, what="the broken api answering")
    seen = set()
    for _ in range(8):  # several health-check rounds, after the good build passed its own
        seen.add(health_of(broken))
        status, body = http(f"http://{published(broken, 3000)}/health")
        assert status == 503 and json.loads(body)["version"] == "broken"
        time.sleep(1)
    assert "healthy" not in seen and "unhealthy" in seen
    web = stack("web:broken", "pliers-test-web-broken", port=8080)
    wait_http(f"http://{published(web, 8080)}/health", status=503)


def test_exporters_and_prometheus_run(images, stack):
    exporters = {
        "node-exporter": (9100, (), "node_exporter_build_info"),
        "postgres-exporter": (
            9187,
            ("-e", f"DATA_SOURCE_NAME=postgresql://pliers:{DB_PASSWORD}@postgres:5432/pliers?sslmode=disable"),
            "pg_up 1",
        ),
        "redis-exporter": (
            9121,
            ("-e", "REDIS_ADDR=redis://redis:6379", "-e", f"REDIS_PASSWORD={REDIS_PASSWORD}"),
            "redis_up 1",
        ),
        "prometheus": (9090, (), "prometheus_build_info"),
        "alertmanager": (9093, (), "alertmanager_build_info"),
    }
    for name, (port, options, expected) in exporters.items():
        container = stack(name, f"pliers-test-{name}", port=port, options=options)
        metrics = wait_http(f"http://{published(container, port)}/metrics", what=f"{name} /metrics")
        assert expected in metrics, f"{name}: {expected!r} not in its metrics"
