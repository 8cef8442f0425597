"""The one renderer: the service model in, a Compose project out; bad models refused by name."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.pliers.deploy.plugins.filter.stack import compose_project, swarm_stack
from ansible_collections.pliers.deploy.plugins.filter.swarm import labelled_nodes

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


SWARM_NETWORKS = {**NETWORKS, "database": {"internal": True, "attachable": True}}


def swarm_model(**extra) -> dict:
    secret = {"name": "api_db", "file": "/opt/p/secrets/api/db", "target": "database_password", "uid": 10001,
              "gid": 10001, "version": "abc123"}  # fmt: skip
    return model(networks=["backend", "database"], secrets=[secret], **extra)


def test_swarm_branch_renders_deploy_blocks_placement_and_versioned_secrets():
    services = {
        "api": swarm_model(replicas=3, resources={"limits": {"cpus": "0.5"}, "reservations": {"memory": "64M"}},
                           max_replicas_per_node=2, depends_on={"postgres": "service_healthy"}),
        "postgres": model(image="pg", networks=["database"], placement=["node.labels.db == true"],
                          update_order="stop-first"),
        "web": model(image="web", networks=["frontend"], mode="global", placement=["node.labels.edge == true"],
                     ports=[{"published": 80, "target": 8080, "host_ip": ""}]),
    }  # fmt: skip
    stack = swarm_stack(services, name="pliers-prod", networks=SWARM_NETWORKS)
    api = stack["services"]["api"]
    assert api["deploy"]["replicas"] == 3 and api["deploy"]["endpoint_mode"] == "dnsrr"
    # Capped per node: stop-first, or a lost node leaves the update no room to start its next task.
    assert api["deploy"]["update_config"]["order"] == api["deploy"]["rollback_config"]["order"] == "stop-first"
    assert api["deploy"]["update_config"]["failure_action"] == "rollback"
    assert api["deploy"]["placement"] == {"max_replicas_per_node": 2}
    uncapped = swarm_stack({"api": swarm_model(replicas=3)}, name="p", networks=SWARM_NETWORKS)["services"]["api"]
    assert uncapped["deploy"]["update_config"]["order"] == "start-first" and "placement" not in uncapped["deploy"]
    assert api["deploy"]["resources"] == {"limits": {"cpus": "0.5"}, "reservations": {"memory": "64M"}}
    assert "depends_on" not in api and "restart" not in api, "Swarm ignores them: the renderer leaves them out"
    assert api["secrets"] == [
        {"source": "api_db", "target": "database_password", "uid": "10001", "gid": "10001", "mode": 0o400}
    ]
    assert stack["secrets"] == {"api_db": {"file": "/opt/p/secrets/api/db", "name": "pliers-prod_api_db_abc123"}}
    postgres = stack["services"]["postgres"]["deploy"]
    assert postgres["placement"] == {"constraints": ["node.labels.db == true"]}
    assert postgres["update_config"]["order"] == postgres["rollback_config"]["order"] == "stop-first"
    web = stack["services"]["web"]
    assert web["deploy"]["mode"] == "global" and "replicas" not in web["deploy"]
    assert web["ports"] == [{"target": 8080, "published": 80, "protocol": "tcp", "mode": "host"}]
    assert stack["networks"]["database"] == {"driver": "overlay", "attachable": True, "internal": True}
    assert stack["networks"]["frontend"] == {"driver": "overlay", "attachable": False}


def test_swarm_options_vip_and_encryption_stay_available():
    stack = swarm_stack({"api": swarm_model()}, name="p", networks=SWARM_NETWORKS, endpoint_mode="vip", encrypted=True)
    assert stack["services"]["api"]["deploy"]["endpoint_mode"] == "vip"
    assert all(net["driver_opts"] == {"encrypted": "true"} for net in stack["networks"].values())


def test_gpu_services_reserve_a_gpu_on_gpu_nodes():
    services = {"ai": swarm_model(placement=["node.labels.gpu == true"], generic_resources={"gpu": 1})}
    deploy = swarm_stack(services, name="p", networks=SWARM_NETWORKS)["services"]["ai"]["deploy"]
    assert deploy["placement"]["constraints"] == ["node.labels.gpu == true"]
    assert deploy["resources"]["reservations"]["generic_resources"] == [
        {"discrete_resource_spec": {"kind": "gpu", "value": 1}}
    ]


@pytest.mark.parametrize(
    ("service", "message"),
    [
        (swarm_model(replicas=0), "replicas must be a whole number >= 1"),
        (swarm_model(update_order="sideways"), "update_order must be one of"),
        (swarm_model(mode="daemon"), "mode must be replicated or global"),
        (model(secrets=[{"name": "s", "file": "/f", "target": "t"}]), "secrets s needs a version"),
    ],
)
def test_bad_swarm_models_are_refused(service, message):
    with pytest.raises(AnsibleFilterError, match=message):
        swarm_stack({"api": service}, name="p", networks=SWARM_NETWORKS)


def test_labelled_nodes_reads_each_hosts_node_labels():
    hostvars = {
        "a": {"docker_host_node_labels": {"db": "true", "edge": True}},
        "b": {"docker_host_node_labels": {"db": "false"}},
        "c": {},
    }
    assert labelled_nodes(["a", "b", "c"], hostvars, "db") == ["a"]
    assert labelled_nodes(["a", "b", "c"], hostvars, "edge") == ["a"]
    assert labelled_nodes(["c", "b"], hostvars, "db", "false") == ["b"]
