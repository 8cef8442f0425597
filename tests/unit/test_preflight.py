"""A bad inventory fails in preflight, naming the variable, before any host is touched.

The inventory's only host is 127.0.0.1 port 1, where nothing listens: had preflight contacted
it, the play would end UNREACHABLE instead of failing on the input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ..paths import ROOT

FAKE_CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
GOOD_SECRET = "a-real-looking-secret-0123456789"
# What the lab's generated inventory gives the local inventories (their edge's name, and pebble's directory).
LAB_DOMAIN = "pliers-test.pliers.test"
LAB_ACME_DIRECTORY = "https://acme.pliers.lab:14000/dir"


NOWHERE = "ansible_host: 127.0.0.1, ansible_port: 1"
ONE_HOST = f"pliers_hosts:\n  hosts:\n    nowhere: {{{NOWHERE}}}\n"


def deploy(
    tmp_path: Path, environment: str, *extra: str, hosts: str = ONE_HOST, playbook: str = "deploy.yml"
) -> subprocess.CompletedProcess:
    inventory = tmp_path / environment
    shutil.copytree(ROOT / "inventories" / environment / "group_vars", inventory / "group_vars")
    (inventory / "hosts.yml").write_text(hosts)
    ca = tmp_path / "ca.crt"
    ca.write_text(FAKE_CA)
    # local-swarm shares the local inventory's dev-only vault.
    vault = ROOT / "inventories" / environment.removesuffix("-swarm") / "vault-password-dev-only.txt"
    command = [
        str(Path(sys.executable).parent / "ansible-playbook"), f"playbooks/{playbook}", "-i", str(inventory),
        "-e", "pliers_lab_registry=registry.test:5000", "-e", f"pliers_lab_registry_ca_file={ca}",
        "-e", f"pliers_lab_domain={LAB_DOMAIN}", "-e", f"pliers_lab_acme_directory={LAB_ACME_DIRECTORY}",
        *extra,
    ]  # fmt: skip
    if vault.exists():
        command += ["--vault-password-file", str(vault)]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)


LOCAL_REGISTRY = ("-e", "vault_registry_username=pliers", "-e", f"vault_registry_password={GOOD_SECRET}")


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (("-e", "pliers_mode=bogus"), "pliers_mode"),
        (("-e", "pliers_database_replicas=2"), "the HA database runs in swarm mode only"),
        (("-e", "pliers_database_replicas=many"), "argument 'pliers_database_replicas' is of type str"),
        (("-e", "pliers_environment=qa"), "pliers_environment"),
        (("-e", "api_replicas=-1"), "api_replicas must be 0 or more"),
        (("-e", "ai_service_replicas=-3"), "ai_service_replicas must be 0 or more"),
        (("-e", "web_http_port=70000"), "web_http_port must be a TCP port"),
        (("-e", "pliers_edge=haproxy"), "pliers_edge"),
        (("-e", "monitoring_scrape_interval=often"), "monitoring_scrape_interval"),
        (("-e", "monitoring_prometheus_port=99999"), "monitoring_prometheus_port must be a TCP port"),
        (("-e", "monitoring_bind_address=localhost"), "monitoring_bind_address must be an IPv4 or IPv6 address"),
        (("-e", "monitoring_alert_webhook_url=hooks.example.net/x"), "monitoring_alert_webhook_url must be an http"),
        (("-e", "monitoring_alert_email_to=ops@example.net"), "monitoring_alert_smtp_smarthost (host:port)"),
        (("-e", "monitoring_grafana_enabled=true"), "monitoring_grafana_admin_password is empty"),
        (("-e", "pliers_deploy_lock_lease=soon"), "argument 'pliers_deploy_lock_lease' is of type str"),
        (("-e", "pliers_deploy_lock_lease=600"), "at least 8 times pliers_rollout_timeout (got 600 and 180)"),
        (("-e", "pliers_deploy_lock_wait=-5"), "pliers_deploy_lock_wait must be 0 or more seconds, got -5"),
        (("-e", "pliers_deploy_lock_wait=later"), "argument 'pliers_deploy_lock_wait' is of type str"),
        (("-e", "pliers_rollout_timeout=5"), "pliers_rollout_timeout must be 10 seconds or more"),
    ],
)
def test_bad_inputs_fail_in_preflight_naming_the_variable(tmp_path, extra, named):
    result = deploy(tmp_path, "local", *LOCAL_REGISTRY, *extra)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert named in output, output[-3000:]
    assert "UNREACHABLE" not in output and "unreachable=0" in output, "preflight must not touch the host"


def test_every_problem_of_a_role_is_named_in_one_run(tmp_path):
    bad = ("-e", "monitoring_prometheus_port=99999", "-e", "monitoring_bind_address=localhost",
           "-e", "monitoring_scrape_interval=often", "-e", "monitoring_grafana_port=0080")  # fmt: skip
    result = deploy(tmp_path, "local", *LOCAL_REGISTRY, *bad)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    for named in ("monitoring_prometheus_port must be a TCP port", "monitoring_bind_address must be an IPv4",
                  "monitoring_scrape_interval (like 15s)"):  # fmt: skip
        assert named in output, output[-3000:]
    assert "monitoring_grafana_port" not in output, "a port with a leading zero is still a port"


def test_a_missing_vault_secret_fails_naming_it(tmp_path):
    # staging ships no vault.yml: nothing defines vault_postgres_password and its friends.
    result = deploy(tmp_path, "staging")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "vault_registry_username" in output or "vault_postgres_password" in output, output[-3000:]
    assert "UNREACHABLE" not in output


def test_placeholder_secrets_are_refused_in_production(tmp_path):
    example = ROOT / "inventories" / "production" / "group_vars" / "all" / "vault.yml.example"
    hosts = swarm_hosts({"m1": "{edge: 'true'}"}, {"w1": "{db: 'true'}"})  # production is a Swarm
    result = deploy(tmp_path, "production", "-e", f"@{example}", hosts=hosts)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "still holds a placeholder" in output, output[-3000:]
    assert "UNREACHABLE" not in output


# One PostgreSQL (the swarm demo's inventory runs the HA database, on its three nodes) unless -e says otherwise: as
# host variables, which the inventory's group_vars/all does not override.
SINGLE_DATABASE = "pliers_database_replicas: 1, pliers_database_synchronous: false"


def swarm_hosts(managers: dict[str, str], workers: dict[str, str]) -> str:
    """An inventory of unreachable hosts in swarm groups; values are each host's node labels (YAML)."""

    def group(hosts: dict[str, str]) -> str:
        return "".join(
            f"        {name}: {{{NOWHERE}, {SINGLE_DATABASE}, docker_host_node_labels: {labels}}}\n"
            for name, labels in hosts.items()
        )

    return (
        "pliers_hosts:\n  children:\n"
        f"    swarm_managers:\n      hosts:\n{group(managers)}"
        f"    swarm_workers:\n      hosts:\n{group(workers) if workers else '        {}'}\n"
    )


EDGE, DB, PLAIN = "{edge: 'true'}", "{db: 'true'}", "{}"
HA = ("-e", "pliers_database_replicas=3")


@pytest.mark.parametrize(
    ("managers", "workers", "extra", "named"),
    [
        ({"m1": EDGE, "m2": PLAIN}, {"w1": DB}, (), "swarm_managers has 2 hosts: a Swarm needs an odd number"),
        ({"m1": EDGE}, {"w1": PLAIN, "w2": PLAIN}, (), 'must be "true" on exactly 1 node, found 0'),
        ({"m1": EDGE}, {"w1": DB, "w2": DB}, (), "found 2: w1, w2"),
        ({"m1": EDGE}, {"w1": DB}, ("-e", "api_replicas=0"), "api_replicas must be 1 or more"),
        ({"m1": EDGE}, {"w1": DB}, ("-e", "ai_service_replicas=0"), "ai_service_replicas must be 1 or more"),
        ({"m1": EDGE, "m2": DB, "w1": PLAIN}, {"w1": PLAIN}, (), "listed in both swarm_managers and swarm_workers: w1"),
        ({"m1": DB}, {"w1": PLAIN}, (), "the nginx edge runs on nodes labelled edge=true"),
        ({"m1": EDGE}, {"w1": DB}, ("--limit", "w1"), "that this run reaches (--limit left out every manager?)"),
        # The HA database: a member on each node labelled db, as many as pliers_database_replicas.
        ({"m1": EDGE}, {"w1": DB}, HA, 'must be "true" on exactly 3 nodes (pliers_database_replicas), found 1: w1'),
        ({"m1": EDGE}, {"w1": DB}, ("-e", "pliers_database_synchronous=true"), "pliers_database_synchronous needs"),
        ({"m1": EDGE}, {"w1": DB}, ("-e", "pliers_database_replicas=0"), "pliers_database_replicas is 0: 1"),
        # etcd, on the managers, must survive losing one.
        ({"m1": "{edge: 'true', db: 'true'}"}, {"w1": DB, "w2": DB}, HA, "it needs 3 or more (swarm_managers has 1)"),
    ],
)
def test_bad_swarm_shapes_fail_in_preflight(tmp_path, managers, workers, extra, named):
    hosts = swarm_hosts(managers, workers)
    result = deploy(tmp_path, "local-swarm", *LOCAL_REGISTRY, *extra, hosts=hosts)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert named in output, output[-3000:]
    assert "UNREACHABLE" not in output and "unreachable=0" in output, "preflight must not touch a host"


def test_one_hosts_bad_input_stops_the_run_on_every_host_before_any_is_contacted(tmp_path):
    # The bad value is on one worker only: the manager must not go on to the lock, nor any host be contacted.
    hosts = swarm_hosts({"m1": EDGE}, {"w1": DB, "w2": PLAIN}).replace(
        "w2: {" + NOWHERE, "w2: {" + NOWHERE + ", web_http_port: 70000"
    )
    result = deploy(tmp_path, "local-swarm", *LOCAL_REGISTRY, hosts=hosts)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "web_http_port must be a TCP port" in output, output[-3000:]
    assert "Lock | take the deploy lock" not in output, "the run went on past preflight on the other hosts"
    assert "UNREACHABLE" not in output


@pytest.mark.parametrize(
    ("playbook", "extra", "named"),
    [
        ("restore.yml", ("-e", "backup=../../etc"), "backup must be latest or a backup's name"),
        ("restore.yml", ("-e", "backup=20261127"), "backup must be latest or a backup's name"),
        ("rollback.yml", ("-e", "pliers_rollback_to=1.0.0; rm -rf /"), "pliers_rollback_to must be previous"),
        ("backup.yml", ("-e", "web_http_port=0"), "web_http_port must be a TCP port"),
    ],
)
def test_restore_rollback_and_backup_check_their_inputs_before_anything_stops(tmp_path, playbook, extra, named):
    result = deploy(tmp_path, "local", *LOCAL_REGISTRY, *extra, playbook=playbook)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert named in output, output[-3000:]
    assert "UNREACHABLE" not in output and "unreachable=0" in output, "preflight must not touch the host"


@pytest.mark.parametrize("playbook", ["restore.yml", "rollback.yml", "backup.yml"])
def test_restore_rollback_and_backup_pass_preflight_with_their_defaults(tmp_path, playbook):
    """No backup name, no rollback target: the defaults (latest, previous) pass; the run goes on to the host."""
    result = deploy(tmp_path, "local", *LOCAL_REGISTRY, playbook=playbook)
    output = result.stdout + result.stderr
    assert "UNREACHABLE" in output, output[-3000:]
    assert "is undefined" not in output, output[-3000:]


@pytest.mark.parametrize(
    ("seed", "extra", "deployer"),
    [
        # Under seeds 1 and 2 a set of these names does not keep the inventory's order.
        ("1", (), "mgr-c"),
        ("2", (), "mgr-c"),
        ("1", ("--limit", "all:!mgr-c"), "mgr-a"),
    ],
)
def test_the_first_manager_the_run_reaches_leads_it_whatever_the_hash_seed(
    tmp_path, monkeypatch, seed, extra, deployer
):
    """The deployer holds the lock and the history: it must be the same manager run after run.
    The inventory is good, so the run passes preflight and the lock play is the first to contact a host."""
    monkeypatch.setenv("PYTHONHASHSEED", seed)
    hosts = swarm_hosts({"mgr-c": EDGE, "mgr-a": PLAIN, "mgr-b": PLAIN}, {"w1": DB})
    result = deploy(tmp_path, "local-swarm", *LOCAL_REGISTRY, *extra, hosts=hosts)
    output = result.stdout + result.stderr
    reached = [line for line in output.splitlines() if "UNREACHABLE!" in line]
    assert reached and f"[{deployer}]" in reached[0], output[-3000:]


@pytest.mark.parametrize("tags", ["docker_host", "backup", "traefik"])
def test_tags_that_select_no_service_pass_the_swarm_preflight(tmp_path, tags):
    """--tags docker_host (or backup, or the edge this inventory does not use) selects no service: the preflight
    still checks the whole stack, and the run goes on to the hosts."""
    hosts = swarm_hosts({"m1": EDGE}, {"w1": DB})
    result = deploy(tmp_path, "local-swarm", *LOCAL_REGISTRY, "--tags", tags, hosts=hosts)
    output = result.stdout + result.stderr
    assert "UNREACHABLE" in output, output[-3000:]
    assert "no services were contributed" not in output, output[-3000:]


def extra_vars(tmp_path: Path, **variables) -> tuple[str, str]:
    """-e @file for variables a command line cannot carry (PEM text has newlines): a JSON file, which is YAML."""
    path = tmp_path / "extra-vars.json"
    path.write_text(json.dumps(variables))
    return "-e", f"@{path}"


NOW = datetime.now(UTC)
SERVER_NAME = "pliers.example.test"


def issue(key, name: str, signer=None, days: tuple[int, int] = (-1, 90), ca: bool = False) -> x509.Certificate:
    """A certificate of key for name, valid from days[0] to days[1] from now: self-signed, or signed by signer (a
    (certificate, key) pair)."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(signer[0].subject if signer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW + timedelta(days=days[0]))
        .not_valid_after(NOW + timedelta(days=days[1]))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
    return builder.sign(signer[1] if signer else key, hashes.SHA256())


def pem(*certificates: x509.Certificate) -> str:
    return "".join(certificate.public_bytes(serialization.Encoding.PEM).decode() for certificate in certificates)


def key_pem(key) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def inventory_tls(certificate: str, key) -> dict:
    return {
        "pliers_tls": "inventory",
        "pliers_server_names": [SERVER_NAME],
        "pliers_tls_certificate": certificate,
        "pliers_tls_key": key_pem(key),
    }


@pytest.fixture(scope="module")
def signer() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A CA of the test's own: the inventory's certificates are chains (the server's certificate, then the CA's)."""
    key = ec.generate_private_key(ec.SECP256R1())
    return issue(key, "Pliers Test CA", ca=True), key


@pytest.mark.parametrize(
    ("fault", "named"),
    [
        ("expired", "pliers_tls_certificate expired on"),
        ("another key", "pliers_tls_key does not match pliers_tls_certificate"),
        ("another name", f"pliers_tls_certificate does not cover {SERVER_NAME} (it covers other.example.test)"),
    ],
)
def test_a_bad_inventory_certificate_fails_in_preflight_naming_it(tmp_path, signer, fault, named):
    key = ec.generate_private_key(ec.SECP256R1())
    name, days = ("other.example.test" if fault == "another name" else SERVER_NAME), (-1, 90)
    if fault == "expired":
        days = (-90, -1)
    certificate = pem(issue(key, name, signer, days), signer[0])
    given_key = ec.generate_private_key(ec.SECP256R1()) if fault == "another key" else key
    result = deploy(tmp_path, "local", *LOCAL_REGISTRY, *extra_vars(tmp_path, **inventory_tls(certificate, given_key)))
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert named in output, output[-3000:]
    assert "UNREACHABLE" not in output and "unreachable=0" in output, "preflight must not touch the host"
    key_lines = [line for line in key_pem(given_key).splitlines() if not line.startswith("-----")]
    assert not any(line in output for line in key_lines), "the key's material must never be printed"


def test_a_good_inventory_certificate_passes_preflight(tmp_path, signer):
    """A chain whose server certificate matches the key and covers the name: the run goes on to the host."""
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = pem(issue(key, SERVER_NAME, signer), signer[0])
    result = deploy(tmp_path, "local", *LOCAL_REGISTRY, *extra_vars(tmp_path, **inventory_tls(certificate, key)))
    output = result.stdout + result.stderr
    assert "UNREACHABLE" in output, output[-3000:]
    assert "pliers_tls_certificate" not in output and "pliers_tls_key" not in output, output[-3000:]


# A string for the list of names (the check of every role's lists), and a host name among the proxies' addresses: one
# sentence for both problems.
NAMES_AND_PROXIES = (
    f"pliers_server_names must be a list ([a, b] in YAML, or one '- a' a line), got a string \"{SERVER_NAME}\"; "
    "pliers_edge_trusted_proxies must list addresses or CIDRs (10.0.0.0/8), got lb.example.test"
)


@pytest.mark.parametrize(
    ("edge", "named", "not_named"),
    [
        # Independent problems of one run: the preflight names them all at once, joined by '; '.
        (
            {"pliers_tls": "off", "pliers_server_names": SERVER_NAME,
             "pliers_edge_trusted_proxies": ["10.0.0.0/8", "lb.example.test"]},
            [NAMES_AND_PROXIES],
            ["pliers_tls acme"],
        ),
        # An address is a name the edge may answer for, but no ACME certificate covers it; good proxies pass.
        (
            {"pliers_tls": "acme", "pliers_server_names": ["127.0.0.1"],
             "pliers_edge_trusted_proxies": ["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"]},
            ["pliers_tls acme needs a DNS name in pliers_server_names"],
            ["pliers_server_names must", "pliers_edge_trusted_proxies"],
        ),
        # The argument spec's choices.
        ({"pliers_tls": "bogus"}, ["pliers_tls must be one of: acme, inventory, off"], []),
    ],
)  # fmt: skip
def test_bad_edge_inputs_fail_in_preflight_naming_the_variable(tmp_path, edge, named, not_named):
    result = deploy(tmp_path, "local", *LOCAL_REGISTRY, *extra_vars(tmp_path, **edge))
    output = result.stdout + result.stderr
    assert result.returncode != 0
    for problem in named:
        assert problem in output, output[-3000:]
    for variable in not_named:
        assert variable not in output, output[-3000:]
    assert "UNREACHABLE" not in output and "unreachable=0" in output, "preflight must not touch the host"


# --- Issue #18: no input reaches a host unchecked -----------------------------------------------------------------

# Staging's and production's vault values, good ones (each case overrides one with a bad one).
STRICT_VAULT = {
    "vault_registry_username": "pliers",
    **{f"vault_{name}": GOOD_SECRET for name in ("registry_password", "postgres_password", "postgres_owner_password",
                                                 "postgres_app_password", "postgres_monitor_password", "redis_password",
                                                 "redis_api_password", "redis_ai_service_password",
                                                 "redis_monitor_password", "redis_backup_password",
                                                 "openai_api_key", "grafana_admin_password")},
    "vault_anthropic_api_key": "",
    "vault_alert_webhook_url": "https://hooks.slack.test/services/T0KEN-0123456789",
}  # fmt: skip
EMAIL = {"monitoring_alert_email_to": "ops@example.net", "monitoring_alert_email_from": "alerts@example.net",
         "monitoring_alert_smtp_smarthost": "smtp.example.net:587"}  # fmt: skip
SSH_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk=\n-----END OPENSSH PRIVATE KEY-----\n"
OFFSITE = {"backup_offsite_repository": "sftp:restic@backup.example.net:/srv/restic/pliers",
           "backup_offsite_password": GOOD_SECRET, "backup_offsite_ssh_key": SSH_KEY,
           "backup_offsite_known_hosts": "backup.example.net ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGg="}  # fmt: skip


# An age public key (of a key made for these tests only).
AGE_RECIPIENT = "age1qyt97qsa7dcpfq4cdk658tg8kk0dlwlycxj44upgwwrxh2h404cs7hxnsy"


def strict_run(tmp_path: Path, environment: str, variables: dict) -> subprocess.CompletedProcess:
    """staging (one host) or production (a Swarm, with the example vault's certificate and key) with good secrets but
    for those variables gives."""
    example = ROOT / "inventories" / environment / "group_vars" / "all" / "vault.yml.example"
    hosts = swarm_hosts({"m1": EDGE}, {"w1": DB}) if environment == "production" else ONE_HOST
    return deploy(tmp_path, environment, "-e", f"@{example}", "-e", json.dumps({**STRICT_VAULT, **variables}),
                  hosts=hosts)  # fmt: skip


@pytest.mark.parametrize(
    ("environment", "variables", "named"),
    [
        # 1. Text written into units and configuration files: one line, and what the file reads there only.
        ("local", {"backup_schedule": "daily\nExecStartPre=/bin/sh -c id"},
         "backup_schedule must be a systemd calendar spec on one line"),
        ("local", {"backup_schedule": "*-*-* 03:15:00; %n"}, "backup_schedule must be a systemd calendar spec"),
        ("local", {"monitoring_loki_retention": "168h\nauth_enabled: true"},
         "monitoring_loki_retention must be a single line, with no newline"),
        ("local", {"web_edge_read_timeout": "30s;\n    return 200"},
         "web_edge_read_timeout must be a time as nginx reads it"),
        ("local", {"redis_maxmemory": "256mb\nrename-command CONFIG x"},
         "redis_maxmemory must be a size as redis.conf"),
        ("local", {"postgres_initdb_args": "--data-checksums; id"}, "postgres_initdb_args must be initdb options"),
        ("local", {"postgres_parameters": ["max_connections=200"]},
         "postgres_parameters must be a mapping ({key: value} in YAML), got a list"),
        ("local", {"postgres_parameters": {"max connections; drop": 1}},
         "postgres_parameters: max connections; drop: not a PostgreSQL setting's name"),
        ("local", {"postgres_parameters": {"work_mem": "4MB\nlisten_addresses = '*'", "shared_buffers": {"a": 1}}},
         "postgres_parameters: shared_buffers, work_mem: a value is one line of text"),
        ("local", {"postgres_parameters": {"port": 5433}}, "postgres_parameters: port: set by the collection"),
        ("local", {**EMAIL, "monitoring_alert_email_to": "ops@example.net\r\nBcc: x@example.org"},
         "monitoring_alert_email_to must be a single line"),
        ("local", {"pliers_release": "1.0.0\n"}, "pliers_release must be a single line"),
        ("local", {"docker_host_log_max_size": "10m\n"}, "docker_host_log_max_size must be a size in bytes as Docker"),
        ("local", {"api_database_user": "pliers\n"}, "api_database_user must be a lowercase identifier"),
        ("local", {"redis_password": "ends with a line break\n"}, "redis_password begins or ends with white space"),
        ("local", {"pliers_redis_api_password": " a-real-looking-secret-0123456789"},
         "api_redis_password begins or ends with white space"),
        ("local", {"api_redis_user": "pliers-api on >x +@all"}, "api_redis_user must be a Redis user name"),
        # 2. Image references, by the distribution grammar.
        ("local", {"api_image": "registry.test:5000/pliers/api:1.0 ; rm -rf /"},
         "api_image must be an image reference"),
        ("local", {"web_edge_image": "registry.test:5000/Pliers/nginx:1.22"},
         "web_edge_image must be an image reference"),
        ("local", {"monitoring_prometheus_image": "registry.test:5000/pliers/../prometheus:2.42"},
         "monitoring_prometheus_image must be an image reference"),
        # A Traefik that Docker Engine 29 refuses (it asks for API 1.24): no route after an engine upgrade.
        ("local", {"pliers_edge": "traefik", "traefik_image": "registry.test:5000/pliers/traefik:v3.1.7"},
         "traefik_image is Traefik 3.1.7, whose Docker provider asks the engine for API 1.24"),
        ("local", {"pliers_edge": "traefik",
                   "traefik_image": f"registry.test:5000/pliers/traefik:3.1@sha256:{'0' * 64}"},
         "traefik_image is Traefik 3.1, whose Docker provider asks the engine for API 1.24"),
        ("local", {"pliers_lab_registry": "registry.test:5000/a b"}, "pliers_registry must be a registry host"),
        # 3. Resource limits.
        ("local", {"api_memory": "1 gigabyte"}, "api_memory must be a size in bytes as Docker reads it"),
        ("local", {"redis_cpus": "-1"}, "redis_cpus must be a number of CPUs above 0"),
        ("local", {"ai_service_reserved_memory": "1G"},
         "ai_service_reserved_memory (1G) must not be more than ai_service_memory (256M)"),
        # 4. Ports.
        ("local", {"web_https_redirect_port": 70000}, "web_https_redirect_port must be a TCP port (1-65535)"),
        ("local", {"web_https_port": 0}, "web_https_port must be a TCP port (1-65535)"),
        ("local", {"monitoring_grafana_port": "3000/tcp"}, "monitoring_grafana_port must be a TCP port"),
        ("local", {**EMAIL, "monitoring_alert_smtp_smarthost": "smtp.example.net:99999"},
         "monitoring_alert_smtp_smarthost (host:port) with a port from 1 to 65535"),
        # 5. URLs, parsed.
        ("local", {"pliers_lab_acme_directory": "https://acme.pliers.lab:99999/dir"},
         "pliers_acme_directory must be an https:// URL: its port must be a number from 1 to 65535"),
        ("local", {"pliers_lab_acme_directory": "https://user:pw@acme.pliers.lab/dir"},
         "pliers_acme_directory must be an https:// URL: it must not hold a password"),
        ("local", {"monitoring_alert_webhook_url": "https://hooks.slack.test/a b"},
         "monitoring_alert_webhook_url must be an http:// or https:// URL: it must not contain whitespace"),
        ("local", {**OFFSITE, "backup_offsite_repository": "sftp:restic@backup.example.net:/srv/restic pliers"},
         "backup_offsite_repository must read sftp:<user>@<host>:/<path>, with no whitespace"),
        ("local", {"docker_host_upstream_repository": "ftp://download.docker.com/linux/debian"},
         "docker_host_upstream_repository must be an https:// or http:// URL: its scheme"),
        # 6. Placeholders in every secret, in staging and production.
        ("staging", {"vault_openai_api_key": "sk-CHANGE_ME-0123456789"},
         "ai_service_openai_api_key still holds a placeholder"),
        ("staging", {"vault_anthropic_api_key": "changeme-0123456789abcdef"},
         "ai_service_anthropic_api_key still holds a placeholder"),
        ("staging", {"vault_alert_webhook_url": "https://hooks.example.com/CHANGE_ME"},
         "monitoring_alert_webhook_url still holds a placeholder"),
        ("staging", {**EMAIL, "monitoring_alert_smtp_username": "ops", "monitoring_alert_smtp_password": "CHANGE_ME"},
         "monitoring_alert_smtp_password still holds a placeholder"),
        ("staging", {**OFFSITE, "backup_offsite_password": "replace_me-0123456789"},
         "backup_offsite_password still holds a placeholder"),
        ("staging", {"vault_registry_password": "placeholder-0123456789"},
         "docker_host_registry_password still holds a placeholder"),
        ("production", {}, "pliers_tls_certificate still holds a placeholder"),
        # 7. Lists and mappings, as the roles iterate them (an argument spec takes "a,b" and "k=v").
        ("local", {"pliers_extra_roles": "my.collection.role"}, "pliers_extra_roles must be a list"),
        ("local", {"docker_host_node_labels": "db=true"}, "docker_host_node_labels must be a mapping"),
        ("local", {"docker_host_swarm_firewall_allowed": ["10.0.0.0/8", "monitoring.example.com", "fd00::/8"]},
         "docker_host_swarm_firewall_allowed must list IPv4 addresses or CIDRs"),
        ("local", {"pliers_versions": "api=1.0.0"}, "pliers_versions must be a mapping"),
        ("local", {"docker_host_upstream_packages": "docker-ce,docker-ce-cli"},
         "docker_host_upstream_packages must be a list"),
        ("local", {"backup_encryption_recipients": AGE_RECIPIENT},
         "backup_encryption_recipients must be a list ([a, b] in YAML"),
        # 8. Keys, by their form.
        ("local", {"backup_encryption_recipients": [AGE_RECIPIENT, "age1-not-a-key"]},
         "backup_encryption_recipients must hold age public keys (age1 and 58 more characters"),
        ("local", {"backup_encryption_identity": "AGE-SECRET-KEY-1TOOSHORT"},
         "backup_encryption_identity must be an age private key"),
        ("local", {"backup_encryption_recipients": [AGE_RECIPIENT]},
         "no backup_encryption_identity on the host, set backup_drill_after_backup to false"),
    ],
)  # fmt: skip
def test_no_bad_input_reaches_a_host(tmp_path, environment, variables, named):
    if environment == "local":
        result = deploy(tmp_path, environment, *LOCAL_REGISTRY, "-e", json.dumps(variables))
    else:
        result = strict_run(tmp_path, environment, variables)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert named in output, output[-3000:]
    assert "UNREACHABLE" not in output and "unreachable=0" in output, "preflight must not touch the host"


def test_a_variable_no_role_declares_is_warned_about_naming_what_it_probably_meant(tmp_path):
    """A typo is warned about, not refused: the run goes on past preflight (to the unreachable host)."""
    result = deploy(tmp_path, "local", *LOCAL_REGISTRY, "-e", "pliers_enviroment=production")
    output = result.stdout + result.stderr
    warnings = [line for line in output.splitlines() if "[WARNING]" in line and "pliers_enviroment" in line]
    assert warnings and "did you mean pliers_environment?" in warnings[0], output[-3000:]
    assert "UNREACHABLE" in output, "the run must go on past preflight"
    # What the lab's inventory and the collection itself set is no typo.
    assert not [line for line in output.splitlines() if "[WARNING]" in line and "pliers_lab_" in line]


def test_the_good_example_inventories_pass_preflight(tmp_path):
    """Staging with good secrets, an offsite copy and e-mail alerts: every check passes, the run reaches the host."""
    result = strict_run(tmp_path, "staging", {**OFFSITE, **EMAIL, "backup_schedule": "Mon..Fri *-*-* 02:30:00"})
    output = result.stdout + result.stderr
    assert "UNREACHABLE" in output, output[-3000:]
    assert "declared by no role" not in output, output[-3000:]


def test_passwords_with_quotes_dollars_backslashes_and_newlines_pass_preflight(tmp_path):
    """The database password reaches its readers as a file: any text is fine (Redis's is written into redis.conf,
    and stays without whitespace, quotes or backslashes)."""
    password = 'it\'s "quoted", $HOME and $(id), back\\slash\\\\, and\na second line'
    secrets = extra_vars(tmp_path, pliers_database_password=password, vault_registry_password=password)
    result = deploy(tmp_path, "local", *LOCAL_REGISTRY, *secrets)
    output = result.stdout + result.stderr
    assert "UNREACHABLE" in output, output[-3000:]
    assert "a second line" not in output and "$(id)" not in output, "a password must never be shown"


def test_the_ha_database_on_three_managers_passes_the_preflight(tmp_path):
    """The swarm demo's shape: three managers, each labelled db, three members; the run goes on to the hosts."""
    hosts = swarm_hosts({"m1": "{edge: 'true', db: 'true'}", "m2": DB, "m3": DB}, {})
    settings = {"postgres_parameters": {"max_connections": 150, "log_connections": True}}
    result = deploy(
        tmp_path, "local-swarm", *LOCAL_REGISTRY, *HA, "-e", "pliers_database_synchronous=true",
        "-e", json.dumps(settings), hosts=hosts,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert "UNREACHABLE" in output, output[-3000:]


def test_the_ha_databases_own_settings_are_not_the_inventorys(tmp_path):
    hosts = swarm_hosts({"m1": "{edge: 'true', db: 'true'}", "m2": DB, "m3": DB}, {})
    settings = {"postgres_parameters": {"wal_level": "minimal", "max_connections": 150}}
    result = deploy(tmp_path, "local-swarm", *LOCAL_REGISTRY, *HA, "-e", json.dumps(settings), hosts=hosts)
    output = result.stdout + result.stderr
    assert "postgres_parameters: wal_level: set by the collection (the HA database needs it)" in output, output[-3000:]
    assert "UNREACHABLE" not in output


@pytest.mark.parametrize(
    ("environment", "extra", "named"),
    [
        ("local", (), "switchover.yml moves the HA database's primary: this inventory has none"),
        (
            "local-swarm",
            HA + ("-e", "pliers_switchover_from=m2", "-e", "pliers_switchover_to=m2"),
            "name the same member, m2",
        ),
        ("local-swarm", HA + ("-e", "pliers_switchover_to=m2;reboot"), "name a member of the HA database"),
    ],
)
def test_a_switchover_checks_its_inputs_before_any_host_is_contacted(tmp_path, environment, extra, named):
    hosts = (
        ONE_HOST
        if environment == "local"
        else swarm_hosts({"m1": "{edge: 'true', db: 'true'}", "m2": DB, "m3": DB}, {})
    )
    result = deploy(tmp_path, environment, *LOCAL_REGISTRY, *extra, hosts=hosts, playbook="switchover.yml")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert named in output, output[-3000:]
    assert "UNREACHABLE" not in output, "preflight must not touch a host"
