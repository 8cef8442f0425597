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
        (("-e", "pliers_environment=qa"), "pliers_environment"),
        (("-e", "api_replicas=-1"), "api_replicas must be 0 or more"),
        (("-e", "ai_service_replicas=-3"), "ai_service_replicas must be 0 or more"),
        (("-e", "web_http_port=70000"), "web_http_port must be a TCP port"),
        (("-e", "pliers_edge=haproxy"), "pliers_edge"),
        (("-e", "monitoring_scrape_interval=often"), "monitoring_scrape_interval"),
        (("-e", "monitoring_prometheus_port=99999"), "monitoring_prometheus_port must be a port number"),
        (("-e", "monitoring_bind_address=localhost"), "monitoring_bind_address must be an IPv4 or IPv6 address"),
        (("-e", "monitoring_alert_webhook_url=hooks.example.net/x"), "monitoring_alert_webhook_url must be an http"),
        (("-e", "monitoring_alert_email_to=ops@example.net"), "monitoring_alert_smtp_smarthost (host:port)"),
        (("-e", "monitoring_grafana_enabled=true"), "monitoring_grafana_admin_password is empty"),
        (("-e", "pliers_deploy_lock_lease=soon"), "argument 'pliers_deploy_lock_lease' is of type str"),
        (("-e", "pliers_deploy_lock_lease=600"), "at least 8 times pliers_rollout_timeout (got 600 and 180)"),
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
    for named in ("monitoring_prometheus_port must be a port number", "monitoring_bind_address must be an IPv4",
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


def swarm_hosts(managers: dict[str, str], workers: dict[str, str]) -> str:
    """An inventory of unreachable hosts in swarm groups; values are each host's node labels (YAML)."""

    def group(hosts: dict[str, str]) -> str:
        return "".join(
            f"        {name}: {{{NOWHERE}, docker_host_node_labels: {labels}}}\n" for name, labels in hosts.items()
        )

    return (
        "pliers_hosts:\n  children:\n"
        f"    swarm_managers:\n      hosts:\n{group(managers)}"
        f"    swarm_workers:\n      hosts:\n{group(workers) if workers else '        {}'}\n"
    )


EDGE, DB, PLAIN = "{edge: 'true'}", "{db: 'true'}", "{}"


@pytest.mark.parametrize(
    ("managers", "workers", "extra", "named"),
    [
        ({"m1": EDGE, "m2": PLAIN}, {"w1": DB}, (), "swarm_managers has 2 hosts: a Swarm needs an odd number"),
        ({"m1": EDGE}, {"w1": PLAIN, "w2": PLAIN}, (), 'must be "true" on exactly one node, found 0'),
        ({"m1": EDGE}, {"w1": DB, "w2": DB}, (), "found 2: w1, w2"),
        ({"m1": EDGE}, {"w1": DB}, ("-e", "api_replicas=0"), "api_replicas must be 1 or more"),
        ({"m1": EDGE}, {"w1": DB}, ("-e", "ai_service_replicas=0"), "ai_service_replicas must be 1 or more"),
        ({"m1": EDGE, "m2": DB, "w1": PLAIN}, {"w1": PLAIN}, (), "listed in both swarm_managers and swarm_workers: w1"),
        ({"m1": DB}, {"w1": PLAIN}, (), "the nginx edge runs on nodes labelled edge=true"),
        ({"m1": EDGE}, {"w1": DB}, ("--limit", "w1"), "that this run reaches (--limit left out every manager?)"),
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


# A string for the list of names, and a host name among the proxies' addresses: one sentence for both problems.
NAMES_AND_PROXIES = (
    f'pliers_server_names must list the host names the edge answers for (pliers.example.com), got "{SERVER_NAME}"; '
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
