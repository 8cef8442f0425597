"""The one renderer: the service model in, a Compose project out; bad models refused by name."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from .plugin_loader import load_plugin

compose_project = load_plugin("filter/stack.py").compose_project

NETWORKS = {"frontend": {}, "backend": {"internal": True}, "database": {"internal": True}}


def model(**extra) -> dict:
    return {"image": "registry.example:5000/pliers/api:1.0.0", **extra}


def test_renders_networks_secrets_configs_and_volumes():
    services = {
        "api": model(
            networks=["database", "backend"],
            environment={"DATABASE_PASSWORD_FILE": "/run/secrets/database_password", "PORT": 3000},
            secrets=[{"name": "api_db", "file": "/opt/p/secrets/api/db", "target": "database_password"}],
            healthcheck={"test": ["CMD", "pliers", "healthcheck"], "interval": "5s"},
            depends_on={"postgres": "service_healthy"},
            resources={"limits": {"cpus": 0.5, "memory": "256M"}},
        ),
        "web": model(
            image="web:1",
            networks=["frontend"],
            ports=[{"published": 80, "target": 8080, "host_ip": ""}],
            configs=[{"name": "edge", "file": "/opt/p/configs/edge.conf", "target": "/etc/nginx/conf.d/edge.conf"}],
        ),
        "postgres": model(image="pg:15", networks=["database"], volumes=[{"source": "pgdata", "target": "/data"}]),
    }
    project = compose_project(services, name="pliers-test", networks=NETWORKS)
    assert project["name"] == "pliers-test"
    assert project["networks"] == {"backend": {"internal": True}, "database": {"internal": True}, "frontend": {}}
    api = project["services"]["api"]
    assert api["networks"] == ["backend", "database"]
    assert api["environment"] == {"DATABASE_PASSWORD_FILE": "/run/secrets/database_password", "PORT": "3000"}
    assert api["secrets"] == [{"source": "api_db", "target": "database_password"}]
    assert api["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert api["deploy"] == {"resources": {"limits": {"cpus": "0.5", "memory": "256M"}}}
    assert api["restart"] == "unless-stopped"
    assert "ports" not in api, "only the edge publishes ports"
    assert project["secrets"] == {"api_db": {"file": "/opt/p/secrets/api/db"}}
    assert project["configs"] == {"edge": {"file": "/opt/p/configs/edge.conf"}}
    assert project["volumes"] == {"pgdata": {}}
    assert project["services"]["web"]["ports"] == [{"target": 8080, "published": "80", "protocol": "tcp"}]


def test_traefik_edge_gets_router_labels_from_http_routes():
    services = {"api": model(http={"port": 3000, "path_prefix": "/api"}), "web": model(http={"port": 8080})}
    nginx = compose_project(services, name="p", networks=NETWORKS)
    assert "labels" not in nginx["services"]["api"]
    labels = compose_project(services, name="p", networks=NETWORKS, edge="traefik")["services"]["api"]["labels"]
    assert labels["traefik.http.routers.api.rule"] == "PathPrefix(`/api`)"
    assert labels["traefik.http.services.api.loadbalancer.server.port"] == "3000"
    web_labels = compose_project(services, name="p", networks=NETWORKS, edge="traefik")["services"]["web"]["labels"]
    assert web_labels["traefik.http.routers.web.rule"] == "PathPrefix(`/`)"


@pytest.mark.parametrize(
    ("services", "message"),
    [
        ({"api": model(replica=2)}, "service api: unknown key(s) replica"),
        ({"api": model(replicas=-1)}, "service api: replicas must be a whole number >= 0"),
        ({"api": model(networks=["public"])}, "service api: unknown network(s) public"),
        ({"api": {"command": ["x"]}}, "service api: missing image"),
        ({"api": model(secrets=[{"name": "s", "file": "/f"}])}, "service api secrets[0]: missing target"),
        ({"api": model(ports=[{"published": 80, "target": 8080, "bind": "any"}])}, "ports[0]: unknown key(s) bind"),
        ({}, "no services were contributed"),
    ],
)
def test_bad_models_are_refused_naming_the_service_and_key(services, message):
    with pytest.raises(AnsibleFilterError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        compose_project(services, name="p", networks=NETWORKS)


def test_zero_replicas_render():
    assert compose_project({"api": model(replicas=0)}, name="p", networks=NETWORKS)["services"]["api"]["deploy"] == {
        "replicas": 0
    }
