"""Traefik cannot run on these machines (no package anywhere we can reach), so the configuration the
traefik role renders for the production inventory is validated offline against Traefik v3's published
JSON schemas (../shared/schemas/, from SchemaStore). What this proves: the files are well-formed Traefik v3
configuration with the settings we mean; not that a Traefik process accepted them."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml
from ansible_collections.pliers.deploy.plugins.filter.stack import compose_project

from ..render import render_stack
from .schemas import schema_file

CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"
CA = "-----BEGIN CERTIFICATE-----\nMIIC-pebble\n-----END CERTIFICATE-----\n"
NAMES = ["pliers.example.com", "www.pliers.example.com"]
# The stack's shared edge inputs, set here rather than taken from its defaults: the assertions below name them.
SHARED = {
    "pliers_server_names": NAMES,
    "pliers_acme_directory": "https://acme.test:14000/dir",
    "pliers_acme_email": "ops@example.com",
    "pliers_acme_ca_certificate": "",
    "pliers_edge_hsts_max_age": 31536000,
    "pliers_edge_rate_limit": 20,
    "pliers_edge_rate_burst": 40,
    "pliers_edge_max_body_size": 1048576,
    "pliers_edge_trusted_proxies": [],
}
# Cipher-suite words that mean a weak TLS 1.2 suite: CBC mode, RSA key exchange (no forward secrecy), 3DES, RC4.
WEAK = ("CBC", "3DES", "RC4", "TLS_RSA_", "_SHA,", "NULL", "EXPORT")


# Production's own (inventory certificates) in both modes; ACME and no TLS in one mode each: the modes differ only
# in the label provider.
CASES = [("compose", "inventory"), ("swarm", "inventory"), ("swarm", "acme"), ("compose", "off")]


@pytest.fixture(scope="module", params=CASES, ids=["-".join(case) for case in CASES])
def case(request) -> tuple[str, str]:
    return request.param


@pytest.fixture(scope="module")
def mode(case) -> str:
    return case[0]


@pytest.fixture(scope="module")
def tls(case) -> str:
    return case[1]


def render(tmp_path_factory, name: str, **overrides) -> tuple[Path, dict]:
    """The production stack rendered on this machine into a scratch project directory (overrides above the
    inventory): the directory, and the service model."""
    project = tmp_path_factory.mktemp(f"project-{name}")
    overrides = {"pliers_project_name": "pliers-production", "vault_tls_certificate": CERT, "vault_tls_key": KEY,
                 **SHARED, **overrides}  # fmt: skip
    return project, render_stack(project, "production", overrides)


@pytest.fixture(scope="module")
def rendered(mode, tls, tmp_path_factory) -> tuple[Path, dict]:
    """The production stack in that mode with that TLS (a private ACME server's CA with acme)."""
    extra = {"pliers_acme_ca_certificate": CA} if tls == "acme" else {}
    return render(tmp_path_factory, f"{mode}-{tls}", pliers_mode=mode, pliers_tls=tls, **extra)


@pytest.fixture(scope="module")
def variant(tmp_path_factory) -> tuple[Path, dict]:
    """Compose, ACME from a public CA (the system's trust store), no HSTS, behind a load balancer, the dashboard on."""
    return render(tmp_path_factory, "variant", pliers_mode="compose", pliers_tls="acme", traefik_dashboard=True,
                  pliers_edge_hsts_max_age=0, pliers_edge_trusted_proxies=["10.0.0.0/8"])  # fmt: skip


def static_of(project: Path) -> dict:
    return yaml.safe_load((project / "configs/traefik/traefik.yml").read_text())


def dynamic_of(project: Path) -> dict:
    return yaml.safe_load((project / "configs/traefik/dynamic.yml").read_text())


def port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def validate(document: dict, schema_name: str) -> None:
    schema = yaml.safe_load(schema_file(schema_name).read_text())
    jsonschema.validate(document, schema, cls=jsonschema.Draft7Validator)


def test_static_configuration_is_valid_traefik_v3(mode, tls, rendered):
    project, _ = rendered
    static = static_of(project)
    validate(static, "traefik-v3.json")
    assert static["api"] == {"dashboard": False, "insecure": False}, "the dashboard is off and never insecure"
    # Compose: the docker provider; Swarm: Traefik v3's swarm provider (never both).
    provider = "swarm" if mode == "swarm" else "docker"
    assert set(static["providers"]) == {provider, "file"}
    assert static["providers"][provider]["exposedByDefault"] is False
    assert static["providers"][provider]["network"] == "pliers-production_backend"
    entrypoints = static["entryPoints"]
    if tls == "off":
        # Plain HTTP serves the routers (a load balancer in front terminates TLS).
        assert "websecure" not in entrypoints
        assert entrypoints["web"]["http"] == {"middlewares": ["pliers-headers@file"]}
        assert entrypoints["web"]["asDefault"] is True
    else:
        assert entrypoints["web"]["http"]["redirections"]["entryPoint"] == {"to": "websecure", "scheme": "https"}
        websecure = entrypoints["websecure"]
        assert websecure["address"] == ":443" and websecure["asDefault"] is True
        assert websecure["http"]["middlewares"] == ["pliers-headers@file"]
        assert websecure["http"]["tls"] == (
            {"options": "default", "certResolver": "acme"} if tls == "acme" else {"options": "default"}
        )
    # Prometheus metrics on their own entry point, which the service never publishes (the monitoring role scrapes it).
    assert (
        static["metrics"]["prometheus"]["entryPoint"] == "metrics"
        and static["entryPoints"]["metrics"]["address"] == ":8082"
    )
    assert static["ping"] == {"entryPoint": "ping"} and entrypoints["ping"] == {"address": ":8081"}
    assert "forwardedHeaders" not in entrypoints["web"], "no trusted proxy: X-Forwarded-* come from the connection"


def test_acme_gets_its_certificates_from_the_directory_onto_a_volume(tls, rendered):
    project, services = rendered
    static, traefik = static_of(project), services["traefik"]
    if tls != "acme":
        assert "certificatesResolvers" not in static
        assert "environment" not in traefik or "LEGO_CA_CERTIFICATES" not in traefik["environment"]
        assert all(volume["target"] != "/data" for volume in traefik["volumes"])
        return
    assert static["certificatesResolvers"] == {
        "acme": {
            "acme": {
                "caServer": "https://acme.test:14000/dir",
                "email": "ops@example.com",
                "storage": "/data/acme.json",
                "httpChallenge": {"entryPoint": "web"},
            }
        }
    }
    assert {"type": "volume", "source": "traefik_acme", "target": "/data"} in traefik["volumes"]
    # The private ACME server's CA, trusted by lego (Traefik's ACME client) through the file it names.
    assert traefik["environment"] == {"LEGO_CA_CERTIFICATES": "/etc/traefik/acme-ca.pem"}
    assert (project / "configs/traefik/acme-ca.pem").read_text() == CA


def test_acme_with_the_system_trust_store_sets_no_ca(variant):
    project, services = variant
    traefik = services["traefik"]
    assert static_of(project)["certificatesResolvers"]["acme"]["acme"]["caServer"] == "https://acme.test:14000/dir"
    assert not traefik.get("environment")
    assert all(config["target"] != "/etc/traefik/acme-ca.pem" for config in traefik["configs"])
    assert not (project / "configs/traefik/acme-ca.pem").exists()


def test_dynamic_configuration_is_valid_and_serves_the_certificate_of_its_mode(tls, rendered):
    project, services = rendered
    dynamic = dynamic_of(project)
    validate(dynamic, "traefik-v3-file-provider.json")
    if tls == "inventory":
        assert dynamic["tls"]["certificates"] == [
            {"certFile": "/run/secrets/tls.crt", "keyFile": "/run/secrets/tls.key"}
        ]
        assert (project / "secrets/traefik/tls.crt").read_text() == CERT
        assert (project / "secrets/traefik/tls.key").stat().st_mode & 0o777 == 0o400
    else:
        assert "certificates" not in dynamic.get("tls", {}) and not services["traefik"].get("secrets")
        assert not (project / "secrets/traefik").exists()
    assert ("tls" in dynamic) == (tls != "off")


def test_tls_is_1_2_and_up_with_forward_secret_aead_suites_and_strict_sni(tls, rendered):
    dynamic = dynamic_of(rendered[0])
    if tls == "off":
        assert "tls" not in dynamic, "no TLS here: the load balancer in front terminates it"
        return
    options = dynamic["tls"]["options"]
    assert set(options) == {"default"}, "one set of options, which every router uses"
    default = options["default"]
    assert default["minVersion"] == "VersionTLS12" and "maxVersion" not in default
    assert default["sniStrict"] is True, "a client naming no server of ours gets no handshake"
    suites = default["cipherSuites"]
    assert suites
    for suite in suites:
        assert not any(word in suite + "," for word in WEAK), suite
        assert suite.startswith("TLS_ECDHE_") and ("_GCM_" in suite or "CHACHA20_POLY1305" in suite), suite


def published(services: dict) -> set[int]:
    """The container ports the Traefik service publishes."""
    return {int(p["target"]) for p in services["traefik"]["ports"]}


def test_ping_metrics_and_the_dashboard_are_on_no_published_entry_point(tls, rendered, variant):
    for project, services in (rendered, variant):
        entrypoints = static_of(project)["entryPoints"]
        ports = {name: port(entrypoint["address"]) for name, entrypoint in entrypoints.items()}
        public = {"web", "websecure"} & set(entrypoints)
        assert {ports[name] for name in public} == published(services), "the public entry points, and only those"
        internal = set(ports) - public
        assert {"ping", "metrics"} <= internal and not {ports[name] for name in internal} & published(services)
        # The container's health: the ping entry point, found in the static configuration.
        assert services["traefik"]["healthcheck"]["test"] == ["CMD", "traefik", "healthcheck", "--ping"]
    assert "routers" not in dynamic_of(rendered[0])["http"], "the dashboard off: no router to it"
    assert "dashboard" not in static_of(rendered[0])["entryPoints"]
    # The dashboard, when on: its router answers on its own entry point, never a published one.
    project, services = variant
    static, dynamic = static_of(project), dynamic_of(project)
    assert static["api"] == {"dashboard": True, "insecure": False}
    (router,) = [r for r in dynamic["http"]["routers"].values() if r["service"] == "api@internal"]
    assert router["entryPoints"] == ["dashboard"]
    assert port(static["entryPoints"]["dashboard"]["address"]) not in published(services)


def test_security_headers_and_limits(tls, rendered):
    middlewares = dynamic_of(rendered[0])["http"]["middlewares"]
    headers = middlewares["pliers-headers"]["headers"]
    assert headers["stsSeconds"] == 31536000
    assert headers.get("forceSTSHeader", False) is (tls == "off"), "sent over the load balancer's HTTPS"
    assert headers["contentTypeNosniff"] is True and headers["customFrameOptionsValue"] == "SAMEORIGIN"
    assert headers["contentSecurityPolicy"] == "frame-ancestors 'self'"
    assert headers["referrerPolicy"] == "strict-origin-when-cross-origin"
    assert middlewares["pliers-rate-limit"] == {"rateLimit": {"average": 20, "burst": 40, "period": "1s"}}
    assert middlewares["pliers-body-limit"] == {"buffering": {"maxRequestBodyBytes": 1048576}}


def test_no_hsts_when_its_max_age_is_0_and_forwarded_headers_only_from_trusted_proxies(variant):
    project, _ = variant
    static, dynamic = static_of(project), dynamic_of(project)
    validate(static, "traefik-v3.json")
    validate(dynamic, "traefik-v3-file-provider.json")
    headers = dynamic["http"]["middlewares"]["pliers-headers"]["headers"]
    assert "stsSeconds" not in headers and "forceSTSHeader" not in headers
    for name in ("web", "websecure"):
        assert static["entryPoints"][name]["forwardedHeaders"] == {"trustedIPs": ["10.0.0.0/8"]}
    assert all("forwardedHeaders" not in static["entryPoints"][name] for name in ("ping", "metrics", "dashboard"))
    # Behind the load balancer, each client is the address it forwards, not the balancer's.
    assert dynamic["http"]["middlewares"]["pliers-rate-limit"]["rateLimit"]["sourceCriterion"] == {
        "ipStrategy": {"excludedIPs": ["10.0.0.0/8"]}
    }


def test_a_bad_static_configuration_is_caught_by_the_schema(rendered):
    static = static_of(rendered[0])
    static["api"]["dashbaord"] = True  # a typo Traefik would reject
    with pytest.raises(jsonschema.ValidationError):
        validate(static, "traefik-v3.json")


SERVICES = {
    "api": {"image": "api", "phase": "app", "http": {"port": 3000, "path_prefix": "/api"}},
    "ai-service": {"image": "ai", "phase": "app", "http": {"port": 3001, "path_prefix": "/ai"}},
    "web": {"image": "web", "phase": "app", "http": {"port": 8080, "path_prefix": "/"}},
}


def labels(**options) -> dict:
    project = compose_project(SERVICES, name="p", networks={}, project_dir="/opt/p", edge="traefik", **options)
    return {name: svc["labels"] for name, svc in project["services"].items()}


def test_routes_become_traefik_labels_for_every_http_service_on_the_server_names_only():
    rendered = labels(server_names=NAMES, tls="inventory")
    rules = {name: label[f"traefik.http.routers.{name}.rule"] for name, label in rendered.items()}
    hosts = "(Host(`pliers.example.com`) || Host(`www.pliers.example.com`))"
    assert rules == {
        "api": f"{hosts} && PathPrefix(`/api`)",
        "ai-service": f"{hosts} && PathPrefix(`/ai`)",
        "web": f"{hosts} && PathPrefix(`/`)",
    }
    # The middlewares the traefik role's dynamic configuration defines: the APIs rate-limited, every body limited.
    middlewares = {name: label[f"traefik.http.routers.{name}.middlewares"] for name, label in rendered.items()}
    assert middlewares == {
        "api": "pliers-rate-limit@file,pliers-body-limit@file",
        "ai-service": "pliers-rate-limit@file,pliers-body-limit@file",
        "web": "pliers-body-limit@file",
    }
    assert all(label[f"traefik.http.routers.{name}.entrypoints"] == "websecure" for name, label in rendered.items())


def test_the_router_labels_name_what_the_role_renders(tls, rendered):
    """Every entry point, middleware and certificate resolver the renderer's labels name exists in the role's
    configuration for that TLS mode."""
    project, _ = rendered
    static, dynamic = static_of(project), dynamic_of(project)
    for name, label in labels(server_names=NAMES, tls=tls).items():
        assert label[f"traefik.http.routers.{name}.entrypoints"] in static["entryPoints"]
        for middleware in label[f"traefik.http.routers.{name}.middlewares"].split(","):
            assert middleware.removesuffix("@file") in dynamic["http"]["middlewares"]
        resolver = label.get(f"traefik.http.routers.{name}.tls.certresolver")
        assert resolver is None or resolver in static["certificatesResolvers"]
        assert (f"traefik.http.routers.{name}.tls" in label) == (tls != "off")
