"""pliers.deploy.migrate and pliers.deploy.health_check, run by Ansible against real containers
(PostgreSQL, Redis and the reference api on this machine's engine)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lab.common import PLAYBOOK_BIN, ROOT, docker

from .support import TEST_LAB, published, run_container, wait_for, wait_http, write_secret

NETWORK = "pliers-test-modules"
DB_PASSWORD = "modules-test-db-password"


def run_module(tmp_path: Path, module: str, args: dict, *, check: bool = False) -> dict:
    """Run one module through ansible-playbook on localhost; returns its registered result."""
    out = tmp_path / "result.json"
    play = [{
        "hosts": "localhost", "connection": "local", "gather_facts": False,
        "vars": {"ansible_python_interpreter": sys.executable},
        "tasks": [
            {"name": "module under test", module: args, "register": "result", "ignore_errors": True},
            {"name": "keep the result", "check_mode": False,
             "ansible.builtin.copy": {"content": "{{ result | to_json }}", "dest": str(out), "mode": "0600"}},
        ],
    }]  # fmt: skip
    playbook = tmp_path / "play.yml"
    playbook.write_text(yaml.safe_dump(play))
    command = [str(PLAYBOOK_BIN), str(playbook), "-i", "localhost,"]
    result = subprocess.run(command + (["--check"] if check else []), cwd=ROOT, capture_output=True, text=True)
    assert out.exists(), result.stdout + result.stderr
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def database(images, tmp_path_factory):
    """PostgreSQL and Redis on a network, and the api's secret files as the deploy writes them."""
    secrets = tmp_path_factory.mktemp("module-secrets")
    docker("network", "rm", NETWORK, check=False)
    docker("network", "create", "--label", TEST_LAB.label, NETWORK)
    db_secret = write_secret(secrets, "database_password", DB_PASSWORD)
    redis_conf = write_secret(secrets, "redis.conf", f"requirepass {DB_PASSWORD}\n")
    redis_secret = write_secret(secrets, "redis_password", DB_PASSWORD)
    for path in (db_secret, redis_secret):
        path.chmod(0o400)
        subprocess.run(["chown", "10001:10001", str(path)], check=True)
    postgres = run_container(images["postgres"], name="pliers-test-mod-postgres", options=(
        "--network", NETWORK, "--network-alias", "postgres", "-e", "POSTGRES_USER=pliers",
        "-e", "POSTGRES_PASSWORD_FILE=/run/secrets/pw", "-v", f"{db_secret}:/run/secrets/pw:ro",
        "--health-cmd", "pg_isready -h 127.0.0.1 -U pliers", "--health-interval", "1s",
    ))  # fmt: skip
    redis = run_container(
        images["redis"],
        "/run/secrets/redis.conf",
        name="pliers-test-mod-redis",
        options=("--network", NETWORK, "--network-alias", "redis", "-v", f"{redis_conf}:/run/secrets/redis.conf:ro"),
    )
    wait_for(lambda: docker("exec", postgres, "pg_isready", "-h", "127.0.0.1", check=False).returncode == 0,
             timeout=60, what="PostgreSQL ready")  # fmt: skip
    yield {
        "env": {"DATABASE_HOST": "postgres", "DATABASE_USER": "pliers", "DATABASE_NAME": "pliers",
                "DATABASE_PASSWORD_FILE": "/run/secrets/database_password", "REDIS_HOST": "redis",
                "REDIS_PASSWORD_FILE": "/run/secrets/redis_password"},
        "secrets": [{"name": "db", "file": str(db_secret), "target": "database_password"},
                    {"name": "redis", "file": str(redis_secret), "target": "redis_password"}],
        "postgres": postgres,
    }  # fmt: skip
    for container in (postgres, redis):
        docker("rm", "-f", container, check=False)
    docker("network", "rm", NETWORK, check=False)


def applied_in_database(postgres: str) -> list[str]:
    query = "SELECT version FROM schema_migrations ORDER BY 1"
    result = docker("exec", postgres, "psql", "-U", "pliers", "-tAc", query, check=False)
    return result.stdout.split() if result.returncode == 0 else []


def test_migrate_applies_once_and_check_mode_applies_nothing(images, database, tmp_path):
    args = {"image": images["api:1.0.0"], "network": NETWORK, "env": database["env"], "secrets": database["secrets"]}

    checked = run_module(tmp_path, "pliers.deploy.migrate", args, check=True)
    assert checked.get("failed") is not True, checked
    assert (checked["changed"], checked["pending"], checked["applied_now"]) == (True, ["0001_items"], [])
    assert applied_in_database(database["postgres"]) == [], "check mode must apply nothing"

    first = run_module(tmp_path, "pliers.deploy.migrate", args)
    assert (first["changed"], first["applied_now"]) == (True, ["0001_items"]), first
    again = run_module(tmp_path, "pliers.deploy.migrate", args)
    assert (again["changed"], again["pending"], again["applied_now"]) == (False, [], []), again

    upgrade = {**args, "image": images["api:1.1.0"]}
    assert run_module(tmp_path, "pliers.deploy.migrate", upgrade)["applied_now"] == ["0002_item_tags"]
    assert run_module(tmp_path, "pliers.deploy.migrate", upgrade)["changed"] is False
    assert applied_in_database(database["postgres"]) == ["0001_items", "0002_item_tags"]


def test_migrate_names_a_missing_network(images, database, tmp_path):
    args = {"image": images["api:1.0.0"], "network": "no-such-network", "env": database["env"]}
    result = run_module(tmp_path, "pliers.deploy.migrate", args)
    assert result["failed"] is True
    assert "network no-such-network does not exist" in result["msg"]


def test_health_check_passes_waits_and_fails_naming_what_it_saw(images, database, tmp_path):
    mounts = [
        arg for secret in database["secrets"] for arg in ("-v", f"{secret['file']}:/run/secrets/{secret['target']}:ro")
    ]
    api = run_container(images["api:1.1.0"], name="pliers-test-mod-api", options=(
        "--network", NETWORK, "-p", "127.0.0.1::3000", *mounts,
        *[arg for key, value in database["env"].items() for arg in ("-e", f"{key}={value}")],
    ))  # fmt: skip
    try:
        url = f"http://{published(api, 3000)}/api/health"
        wait_http(url)
        good = run_module(tmp_path, "pliers.deploy.health_check", {"targets": [
            {"name": "api", "url": url, "json": {"version": "1.1.0", "checks.database": "ok"}},
            {"name": "postgres", "container": database["postgres"]},
        ], "timeout": 30}, check=True)  # fmt: skip
        assert good.get("failed") is not True, good
        assert good["changed"] is False and [t["ok"] for t in good["targets"]] == [True, True]
        assert good["targets"][0]["last"].startswith("HTTP 200")

        bad = run_module(
            tmp_path,
            "pliers.deploy.health_check",
            {"targets": [{"name": "api", "url": url, "json": {"version": "9.9.9"}}], "timeout": 3, "interval": 1},
        )
        assert bad["failed"] is True and bad["changed"] is False
        assert "1 of 1 health checks failed" in bad["msg"]
        assert "api: JSON version is '1.1.0', expected '9.9.9'" in bad["msg"]
        assert bad["targets"][0]["attempts"] >= 2
    finally:
        docker("rm", "-f", api, check=False)
