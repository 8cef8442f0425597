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


@pytest.fixture(scope="module", params=["compose", "swarm"])
def mode(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def rendered(mode, tmp_path_factory) -> Path:
    """The production stack rendered on this machine into a scratch project directory, in that mode."""
    project = tmp_path_factory.mktemp(f"project-{mode}")
    overrides = {"pliers_project_name": "pliers-production", "vault_tls_certificate": CERT, "vault_tls_key": KEY,
                 "pliers_mode": mode}  # fmt: skip
    render_stack(project, "production", overrides)
    return project


def validate(document: dict, schema_name: str) -> None:
    schema = yaml.safe_load(schema_file(schema_name).read_text())
    jsonschema.validate(document, schema, cls=jsonschema.Draft7Validator)


def test_static_configuration_is_valid_traefik_v3(mode, rendered):
    static = yaml.safe_load((rendered / "configs/traefik/traefik.yml").read_text())
    validate(static, "traefik-v3.json")
    assert static["api"] == {"dashboard": False, "insecure": False}, "the dashboard is off and never insecure"
    # Compose: the docker provider; Swarm: Traefik v3's swarm provider (never both).
    provider = "swarm" if mode == "swarm" else "docker"
    assert set(static["providers"]) == {provider, "file"}
    assert static["providers"][provider]["exposedByDefault"] is False
    assert static["providers"][provider]["network"] == "pliers-production_backend"
    assert static["entryPoints"]["web"]["http"]["redirections"]["entryPoint"]["to"] == "websecure"
    # Prometheus metrics on their own entry point, which the service never publishes (the monitoring role scrapes it).
    assert (
        static["metrics"]["prometheus"]["entryPoint"] == "metrics"
        and static["entryPoints"]["metrics"]["address"] == ":8082"
    )


def test_dynamic_configuration_is_valid_and_serves_the_provided_certificate(rendered):
    dynamic = yaml.safe_load((rendered / "configs/traefik/dynamic.yml").read_text())
    validate(dynamic, "traefik-v3-file-provider.json")
    assert dynamic["tls"]["certificates"] == [{"certFile": "/run/secrets/tls.crt", "keyFile": "/run/secrets/tls.key"}]
    assert (rendered / "secrets/traefik/tls.crt").read_text() == CERT
    assert (rendered / "secrets/traefik/tls.key").stat().st_mode & 0o777 == 0o400


def test_a_bad_static_configuration_is_caught_by_the_schema(rendered):
    static = yaml.safe_load((rendered / "configs/traefik/traefik.yml").read_text())
    static["api"]["dashbaord"] = True  # a typo Traefik would reject
    with pytest.raises(jsonschema.ValidationError):
        validate(static, "traefik-v3.json")


def test_routes_become_traefik_labels_for_every_http_service():
    services = {
        "api": {"image": "api", "http": {"port": 3000, "path_prefix": "/api"}},
        "ai-service": {"image": "ai", "http": {"port": 3001, "path_prefix": "/ai"}},
        "web": {"image": "web", "http": {"port": 8080, "path_prefix": "/"}},
    }
    services = {name: {**service, "phase": "app"} for name, service in services.items()}
    project = compose_project(services, name="p", networks={}, project_dir="/opt/p", edge="traefik")
    rules = {name: svc["labels"][f"traefik.http.routers.{name}.rule"] for name, svc in project["services"].items()}
    assert rules == {"api": "PathPrefix(`/api`)", "ai-service": "PathPrefix(`/ai`)", "web": "PathPrefix(`/`)"}
