"""Least privilege for the data, on the deployed stack of each mode: the api logs in as a role that may only read and
write rows (no CREATE TABLE, no pg_authid, no temporary table), the exporter as a role in pg_monitor, the migrations
as the owner of every table; each Redis client as an ACL user of its own (the ai-service may not CONFIG SET or
FLUSHALL, the exporter and the backups touch no key); and the database's and Redis's passwords rotated by new vault
values and a redeploy under a probe through the edge fail no request, the old login or password dropped once no
container uses it."""

from __future__ import annotations

import hashlib
import json
import secrets
import shlex
import time

import pytest
from ansible_collections.pliers.deploy.plugins.filter.secrets import rotating_login

from lab import hosts as lab_hosts
from lab.traffic import Probe

from .support import output, vault_values, wait_for

# What the api's own process would run: its environment and its secret file, inside one of its containers.
AS_THE_API = """
import json, os, sys
import psycopg2
with open(os.environ["DATABASE_PASSWORD_FILE"]) as secret:
    password = secret.read()
connection = psycopg2.connect(host=os.environ["DATABASE_HOST"], dbname=os.environ["DATABASE_NAME"],
                              user=os.environ["DATABASE_USER"], password=password)
connection.autocommit = True
cursor = connection.cursor()
try:
    cursor.execute(sys.argv[1])
    print(json.dumps({"rows": cursor.fetchall() if cursor.description else []}, default=str))
except psycopg2.Error as error:
    print(json.dumps({"error": str(error).splitlines()[0]}))
"""


def as_the_api(target, query: str) -> dict:
    """query run as the api logs in ({"rows": ...} or {"error": ...}), in a running api container."""
    quoted = query.replace("'", "'\\''")
    result = target.exec_in("api", f"python3 - '{quoted}'", input=AS_THE_API)
    return json.loads(result.stdout.strip().splitlines()[-1])


# What a Redis client of the stack would send: its service's settings (REDIS_*, the password from its file).
AS_A_REDIS_CLIENT = """
import json, os, sys
import redis
def setting(name, default=None):
    path = os.environ.get(name + "_FILE")
    return open(path).read().strip() if path else os.environ.get(name, default)
client = redis.Redis(host=setting("REDIS_HOST", "redis"), port=int(setting("REDIS_PORT", "6379")),
                     username=setting("REDIS_USERNAME"), password=setting("REDIS_PASSWORD"), decode_responses=True)
try:
    print(json.dumps({"reply": client.execute_command(*sys.argv[1:])}, default=str))
except redis.RedisError as error:
    print(json.dumps({"error": str(error)}))
"""


def as_a_redis_client(target, service: str, *command: str) -> dict:
    """Redis's reply ({"reply": ...} or {"error": ...}) to a command sent as the service logs in, from its container."""
    words = " ".join(shlex.quote(word) for word in command)
    result = target.exec_in(service, f"python3 - {words}", input=AS_A_REDIS_CLIENT)
    return json.loads(result.stdout.strip().splitlines()[-1])


def redis_password_hashes(target) -> dict[str, list[str]]:
    """Each Redis ACL user's password hashes (ACL LIST, asked as the admin)."""
    users = {}
    for line in target.redis("ACL", "LIST").splitlines():
        words = line.split()
        users[words[1]] = sorted(word[1:] for word in words if word.startswith("#"))
    return users


def test_the_api_reads_and_writes_rows_and_nothing_else(deployed):
    user = as_the_api(deployed, "SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user")
    assert user["rows"][0][0].startswith("pliers_app_") and user["rows"][0][1] is False, user
    assert "rows" in as_the_api(deployed, "INSERT INTO items (name) VALUES ('least privilege') RETURNING id")
    assert "rows" in as_the_api(deployed, "SELECT count(*) FROM items")
    for query in (
        "CREATE TABLE intruder (id int)",
        "CREATE TEMPORARY TABLE intruder (id int)",
        "SELECT rolpassword FROM pg_authid",
        "TRUNCATE items",
        "DROP TABLE items",
        "ALTER TABLE items ADD COLUMN intruder int",
        "CREATE SCHEMA intruder",
    ):
        answer = as_the_api(deployed, query)
        assert "permission denied" in answer.get("error", "") or "must be owner" in answer.get("error", ""), (
            query,
            answer,
        )


def test_the_tables_belong_to_the_owner_and_the_exporter_only_monitors(deployed):
    assert deployed.sql("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'pliers'") == "pliers_owner"
    assert (
        deployed.sql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tableowner <> 'pliers_owner'")
        == "0"
    )
    assert deployed.sql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") != "0"
    monitor = (
        "SELECT rolsuper, pg_has_role('pliers_monitor', 'pg_monitor', 'member') FROM pg_roles "
        "WHERE rolname = 'pliers_monitor'"
    )
    assert deployed.sql(monitor) == "f|t"
    assert deployed.sql("SELECT has_table_privilege('pliers_monitor', 'items', 'SELECT')") == "f"
    # The exporter logs in as it: PostgreSQL is seen up.
    exporter_logs_in(deployed, since=0)


def test_each_redis_client_logs_in_as_its_own_user_with_only_what_it_needs(deployed):
    assert as_a_redis_client(deployed, "ai-service", "ACL", "WHOAMI") == {"reply": "pliers-ai-service"}
    assert as_a_redis_client(deployed, "api", "ACL", "WHOAMI") == {"reply": "pliers-api"}
    assert "reply" in as_a_redis_client(deployed, "ai-service", "INCR", "pliers:test:least-privilege")
    for command in (("CONFIG", "SET", "appendonly", "no"), ("FLUSHALL",), ("KEYS", "*"), ("ACL", "LIST")):
        answer = as_a_redis_client(deployed, "ai-service", *command)
        assert "no permissions" in answer.get("error", ""), (command, answer)
    # The exporter's and the backups' users, tried by the admin (ACL DRYRUN): statistics or a snapshot, no key.
    for user, allowed, refused in (("pliers-exporter", ("INFO", "SLOWLOG GET 1"), ("SLOWLOG RESET", "LATENCY RESET")),
                                   ("pliers-backup", ("BGSAVE", "LASTSAVE"), ())):  # fmt: skip
        for command in allowed:
            assert deployed.redis("ACL", "DRYRUN", user, command) == "OK", (user, command)
        for command in ("GET pliers:test:least-privilege", "SET pliers:test:x 1", "FLUSHALL", "CONFIG SET save 1",
                        *refused):  # fmt: skip
            answer = deployed.redis("ACL", "DRYRUN", user, command)
            assert "no permissions" in answer, (user, command, answer)
    # The exporter logs in as its user: Redis is seen up.
    wait_for(lambda: [r["value"][1] for r in deployed.promql("redis_up")] == ["1"], timeout=90, what="redis_up 1")


def exporter_logs_in(target, since: float) -> None:
    """The exporter's scrape after `since` (a time.time()) saw PostgreSQL up: it logged in as its role."""

    def scraped_up() -> bool:
        up, scraped = target.promql("pg_up"), target.promql("timestamp(pg_up)")
        return [u["value"][1] for u in up] == ["1"] and all(float(t["value"][1]) > since for t in scraped)

    wait_for(scraped_up, timeout=90, what="a scrape of the PostgreSQL exporter that saw the database up")


def test_rotating_the_database_and_redis_passwords_fails_no_request(deployed):
    def deploy(*extra: str, name: str):
        paths = ("/api/health", "/api/items", "/ai/health")
        with Probe(deployed.edge, paths=paths) as probe:
            result = deployed.play("deploy.yml", *extra)
        assert result.returncode == 0, output(result)
        assert not probe.failures, f"{name}: {probe.summary()}"
        assert probe.sent > 50, probe.summary()
        logins = deployed.sql(
            "SELECT string_agg(rolname, ',') FROM pg_roles WHERE rolname LIKE 'pliers\\_app\\_%' AND rolcanlogin"
        )
        current = as_the_api(deployed, "SELECT current_user")["rows"][0][0]
        # Only the login the api uses now is left.
        assert logins == current, (name, logins, current)
        # Each Redis user has the one password its service uses now.
        hashes = redis_password_hashes(deployed)
        for user, service in (("pliers-api", "api"), ("pliers-ai-service", "ai-service")):
            password = deployed.exec_in(service, "sh -c 'cat \"$REDIS_PASSWORD_FILE\"'").stdout.strip()
            assert hashes[user] == [hashlib.sha256(password.encode()).hexdigest()], (name, user, hashes[user])
            assert as_a_redis_client(deployed, service, "PING") == {"reply": True}, (name, service)
        return current

    vault = vault_values()
    from_the_vault = rotating_login("pliers_app", vault["vault_postgres_app_password"])
    rotated = deploy(
        *("-e", f"pliers_database_app_password=rotated-{secrets.token_urlsafe(18)}"),
        *("-e", f"pliers_database_owner_password=rotated-{secrets.token_urlsafe(18)}"),
        *("-e", f"pliers_database_monitor_password=rotated-{secrets.token_urlsafe(18)}"),
        *("-e", f"pliers_redis_api_password=rotated-{secrets.token_urlsafe(18)}"),
        *("-e", f"pliers_redis_ai_service_password=rotated-{secrets.token_urlsafe(18)}"),
        *("-e", f"pliers_redis_monitor_password=rotated-{secrets.token_urlsafe(18)}"),
        name="rotation",
    )
    assert rotated != from_the_vault
    exporter_logs_in(deployed, since=time.time())
    # Back to the vault's values: a second rotation, as clean.
    assert deploy(name="rotation back") == from_the_vault
    exporter_logs_in(deployed, since=time.time())


@pytest.mark.parametrize("deployed", ["compose"], indirect=True)  # Swarm starts a stopped task by itself
def test_a_deploy_onto_a_stopped_database_starts_it_first_then_brings_its_roles(deployed):
    lab_hosts.ssh(deployed.deployer, "docker stop $(docker ps -q --filter label=com.docker.compose.service=postgres)")
    result = deployed.play("deploy.yml")
    assert result.returncode == 0, output(result)
    assert "postgres: converged" in result.stdout, output(result)
    assert "rows" in as_the_api(deployed, "SELECT count(*) FROM items")
