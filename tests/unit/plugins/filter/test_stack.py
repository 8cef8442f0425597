"""The one renderer: the service model in, a Compose project, a Swarm stack, the files and the plan of a deploy out;
bad models refused by name."""

from __future__ import annotations

import re

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.pliers.deploy.plugins.filter.secrets import content_version
from ansible_collections.pliers.deploy.plugins.filter.stack import (
    FILES_LABEL,
    compose_project,
    contribute,
    maintenance_open,
    prunable_images,
    service_files,
    stack_files,
    stack_plan,
    stack_stores,
    swarm_stack,
)
from ansible_collections.pliers.deploy.plugins.filter.swarm import labelled_nodes

NETWORKS = {"frontend": {}, "backend": {"internal": True}, "database": {"internal": True}}
DIR = "/opt/p"


def model(phase: str = "app", **extra) -> dict:
    return {"image": "registry.example:5000/pliers/api:1.0.0", "phase": phase, **extra}


def secret(name: str = "api_db", target: str = "database_password", content: str = "pw", **extra) -> dict:
    return {"name": name, "target": target, "content": content, **extra}


def render(services: dict, **options) -> dict:
    return compose_project(services, name="p", networks=NETWORKS, project_dir=DIR, **options)


def test_renders_networks_secrets_configs_and_volumes():
    services = {
        "api": model(
            networks=["database", "backend"],
            environment={"DATABASE_PASSWORD_FILE": "/run/secrets/database_password", "PORT": 3000},
            secrets=[secret(uid=10001)],
            healthcheck={"test": ["CMD", "pliers", "healthcheck"], "interval": "5s"},
            depends_on={"postgres": "service_healthy"},
            resources={"limits": {"cpus": 0.5, "memory": "256M"}},
        ),
        "web": model(
            image="web:1",
            networks=["frontend"],
            ports=[{"published": 80, "target": 8080, "host_ip": ""}],
            configs=[{"name": "site", "target": "/etc/nginx/conf.d/site.conf", "content": "server {}"}],
        ),
        "postgres": model("data", image="pg:15", networks=["database"], volumes=[{"source": "pgdata", "target": "/d"}]),
    }
    project = compose_project(services, name="pliers-test", networks=NETWORKS, project_dir=DIR)
    assert project["name"] == "pliers-test"
    assert project["networks"] == {"backend": {"internal": True}, "database": {"internal": True}, "frontend": {}}
    api = project["services"]["api"]
    assert api["networks"] == ["backend", "database"]
    assert api["environment"] == {"DATABASE_PASSWORD_FILE": "/run/secrets/database_password", "PORT": "3000"}
    assert api["secrets"] == [{"source": "api_db", "target": "database_password"}]
    assert api["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert api["deploy"] == {"resources": {"limits": {"cpus": "0.5", "memory": "256M", "pids": 256}}}
    assert api["restart"] == "unless-stopped"
    assert "ports" not in api, "only the edge publishes ports"
    # Each file in its service's own directory, named after its target; what the pipeline reads is left out.
    assert project["secrets"] == {"api_db": {"file": "/opt/p/secrets/api/database_password"}}
    assert project["configs"] == {"site": {"file": "/opt/p/configs/web/site.conf"}}
    assert project["volumes"] == {"pgdata": {}}
    assert project["services"]["web"]["ports"] == [{"target": 8080, "published": "80", "protocol": "tcp"}]
    assert "phase" not in api and "role" not in api


def test_a_changed_file_changes_the_label_that_recreates_the_container():
    first = render({"api": model(secrets=[secret(content="one")])})["services"]["api"]["labels"][FILES_LABEL]
    second = render({"api": model(secrets=[secret(content="two")])})["services"]["api"]["labels"][FILES_LABEL]
    again = render({"api": model(secrets=[secret(content="one")])})["services"]["api"]["labels"][FILES_LABEL]
    assert first != second and first == again
    assert "labels" not in render({"api": model()})["services"]["api"], "no file, no label"


def test_reloaded_configs_are_mounted_by_their_directory_and_do_not_recreate():
    edge = model(
        "edge",
        configs=[
            {"name": "edge", "target": "/etc/nginx/conf.d/edge.conf", "content": "v1", "reload": True},
            {"name": "follower", "target": "/etc/nginx/conf.d/follow.sh", "content": "#!/bin/sh"},
        ],
    )
    rendered = render({"edge": edge})["services"]["edge"]
    assert rendered["volumes"] == [
        {"type": "bind", "source": "/opt/p/configs/edge", "target": "/etc/nginx/conf.d", "read_only": True}
    ]
    assert "configs" not in rendered, "the directory mount serves both files"
    edited = dict(edge, configs=[dict(edge["configs"][0], content="v2"), edge["configs"][1]])
    assert render({"edge": edited})["services"]["edge"]["labels"] == rendered["labels"], "a reload, not a recreate"
    new_follower = dict(edge, configs=[edge["configs"][0], dict(edge["configs"][1], content="#!/bin/sh\n")])
    assert render({"edge": new_follower})["services"]["edge"]["labels"] != rendered["labels"]


def test_traefik_edge_gets_router_labels_from_http_routes():
    services = {"api": model(http={"port": 3000, "path_prefix": "/api"}), "web": model(http={"port": 8080})}
    assert "labels" not in render(services)["services"]["api"]
    labels = render(services, edge="traefik")["services"]["api"]["labels"]
    assert labels["traefik.http.routers.api.rule"] == "PathPrefix(`/api`)", "no server names: any host"
    assert labels["traefik.http.services.api.loadbalancer.server.port"] == "3000"
    web_labels = render(services, edge="traefik")["services"]["web"]["labels"]
    assert web_labels["traefik.http.routers.web.rule"] == "PathPrefix(`/`)"


ROUTED = {"api": model(http={"port": 3000, "path_prefix": "/api"}), "web": model(http={"port": 8080})}


def test_traefik_routers_match_the_server_names_only_and_limit_what_they_route():
    names = ["pliers.example.com", "www.pliers.example.com", "10.0.0.5"]
    project = render(ROUTED, edge="traefik", server_names=names, tls="inventory")
    api, web = (project["services"][name]["labels"] for name in ("api", "web"))
    hosts = "(Host(`pliers.example.com`) || Host(`www.pliers.example.com`) || Host(`10.0.0.5`))"
    assert api["traefik.http.routers.api.rule"] == f"{hosts} && PathPrefix(`/api`)"
    assert web["traefik.http.routers.web.rule"] == f"{hosts} && PathPrefix(`/`)"
    one = render(ROUTED, edge="traefik", server_names=["pliers.example.com"], tls="inventory")["services"]["api"]
    assert one["labels"]["traefik.http.routers.api.rule"] == "Host(`pliers.example.com`) && PathPrefix(`/api`)"
    # The APIs rate-limited per client; every request body limited.
    assert api["traefik.http.routers.api.middlewares"] == "pliers-rate-limit@file,pliers-body-limit@file"
    assert web["traefik.http.routers.web.middlewares"] == "pliers-body-limit@file"
    assert api["traefik.http.routers.api.entrypoints"] == "websecure" and api["traefik.http.routers.api.tls"] == "true"
    assert not any(".tls.certresolver" in label or ".tls.domains" in label for label in api)
    # Swarm: the same labels, in deploy.labels.
    stack = swarm(ROUTED, edge="traefik", server_names=names, tls="inventory")
    swarm_labels = stack["services"]["api"]["deploy"]["labels"]
    assert {key: swarm_labels[key] for key in api if key.startswith("traefik.")} == {
        key: value for key, value in api.items() if key.startswith("traefik.")
    }


def test_traefik_routers_with_acme_name_the_resolver_and_the_names_but_the_addresses():
    names = ["pliers.example.com", "10.0.0.5", "www.pliers.example.com"]
    labels = render(ROUTED, edge="traefik", server_names=names, tls="acme")["services"]["api"]["labels"]
    # A router's own tls section replaces its entry point's: it names the resolver itself.
    assert labels["traefik.http.routers.api.tls"] == "true"
    assert labels["traefik.http.routers.api.tls.certresolver"] == "acme"
    assert labels["traefik.http.routers.api.tls.domains[0].main"] == "pliers.example.com"
    assert labels["traefik.http.routers.api.tls.domains[0].sans"] == "www.pliers.example.com"
    single = render(ROUTED, edge="traefik", server_names=["pliers.example.com"], tls="acme")["services"]["api"]
    assert "traefik.http.routers.api.tls.domains[0].sans" not in single["labels"]


def test_traefik_routers_without_tls_serve_plain_http():
    options = {"edge": "traefik", "server_names": ["pliers.example.com"], "tls": "off"}
    for labels in (
        render(ROUTED, **options)["services"]["api"]["labels"],
        swarm(ROUTED, **options)["services"]["api"]["deploy"]["labels"],
    ):
        assert labels["traefik.http.routers.api.entrypoints"] == "web"
        assert not any(key.startswith("traefik.http.routers.api.tls") for key in labels)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"server_names": ["pliers.example.com", "`) || PathPrefix(`/"]}, "server_names must be host names"),
        ({"server_names": ["*.example.com"]}, "server_names must be host names"),
        ({"server_names": [""]}, "server_names must be host names"),
        ({"tls": "on"}, "tls must be one of acme, inventory, off, got 'on'"),
    ],
)
def test_bad_edge_options_are_refused(options, message):
    with pytest.raises(AnsibleFilterError, match=message):
        render(ROUTED, edge="traefik", **options)
    with pytest.raises(AnsibleFilterError, match=message):
        swarm(ROUTED, edge="traefik", **options)


def test_capabilities_a_read_only_root_and_tmpfs_are_rendered_in_both_modes():
    service = model(cap_drop=["ALL"], cap_add=["NET_BIND_SERVICE"], read_only=True, tmpfs=["/tmp", "/run"],
                    volumes=[{"source": "data", "target": "/data"}])  # fmt: skip
    compose = render({"api": service})["services"]["api"]
    stack = swarm({"api": {**swarm_model(), **service}})["services"]["api"]
    for rendered in (compose, stack):
        assert rendered["cap_drop"] == ["ALL"] and rendered["cap_add"] == ["NET_BIND_SERVICE"]
        assert rendered["read_only"] is True
        assert rendered["volumes"] == [
            {"type": "volume", "source": "data", "target": "/data", "read_only": False},
            {"type": "tmpfs", "target": "/tmp"},
            {"type": "tmpfs", "target": "/run"},
        ]
    plain = render({"api": model(read_only=False, cap_drop=[])})["services"]["api"]
    assert not {"cap_add", "cap_drop", "read_only", "volumes"} & set(plain)


def test_every_service_is_hardened_unless_it_says_otherwise():
    compose = render({"api": model()})["services"]["api"]
    stack = swarm({"api": swarm_model()})["services"]["api"]
    for rendered in (compose, stack):
        assert rendered["cap_drop"] == ["ALL"] and "cap_add" not in rendered
        assert rendered["read_only"] is True
        assert rendered["deploy"]["resources"]["limits"]["pids"] == 256
    # Swarm takes no-new-privileges from the engine's defaults (docker_host's daemon.json), Compose per container.
    assert compose["security_opt"] == ["no-new-privileges:true"] and "security_opt" not in stack
    assert render({"api": model(pids_limit="512")})["services"]["api"]["deploy"]["resources"]["limits"]["pids"] == 512


@pytest.mark.parametrize(
    ("services", "message"),
    [
        ({"api": model(replica=2)}, "service api: unknown key(s) replica"),
        ({"api": model(replicas=-1)}, "service api: replicas must be a whole number >= 0"),
        ({"api": model(networks=["public"])}, "service api: unknown network(s) public"),
        ({"api": {"command": ["x"], "phase": "app"}}, "service api: missing image"),
        ({"api": model(phase="web")}, "service api: phase must be one of data, app, edge, ops, got 'web'"),
        ({"api": model(secrets=[{"name": "s", "content": "x"}])}, "service api secrets[0]: missing target"),
        ({"api": model(secrets=[{"name": "s", "target": "t"}])}, "service api secrets[0]: missing content"),
        ({"api": model(secrets=[secret(reload=True)])}, "only configs can be reloaded in place"),
        ({"api": model(secrets=[secret(), secret(name="other", target="/x/database_password")])}, "both end in"),
        ({"api": model(ports=[{"published": 80, "target": 8080, "bind": "any"}])}, "ports[0]: unknown key(s) bind"),
        ({"api": model(http={"path_prefix": "/api"})}, "service api http: missing port"),
        ({"api": model(cap_add=["ALL"])}, "service api cap_add: 'ALL' is not a capability name"),
        ({"api": model(cap_drop=["net_raw"])}, "service api cap_drop: 'net_raw' is not a capability name"),
        ({"api": model(cap_drop="ALL")}, "service api cap_drop: expected a list of capability names"),
        ({"api": model(cap_add=[1])}, "service api cap_add: 1 is not a capability name"),
        ({"api": model(read_only="yes")}, "service api: read_only must be true or false"),
        ({"api": model(tmpfs=["tmp"])}, "service api: tmpfs must be a list of absolute paths"),
        ({"api": model(tmpfs="/tmp")}, "service api: tmpfs must be a list of absolute paths"),
        ({"api": model(pids_limit="many")}, "service api: pids_limit must be a whole number of processes, 16 or more"),
        ({"api": model(pids_limit=4)}, "service api: pids_limit must be a whole number of processes, 16 or more"),
        ({"api": model(cluster={})}, "service api cluster: missing kind"),
        ({"api": model(cluster=None)}, "service api cluster: expected a mapping, got NoneType"),
        ({"api": model(cluster={"kind": "raft"})}, "service api cluster: kind must be one of patroni"),
        ({"api": model(cluster={"kind": "patroni", "sync": True})}, "service api cluster: unknown key(s) sync"),
        ({}, "no services were contributed"),
    ],
)
def test_bad_models_are_refused_naming_the_service_and_key(services, message):
    with pytest.raises(AnsibleFilterError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        render(services)


def test_zero_replicas_render():
    assert render({"api": model(replicas=0)})["services"]["api"]["deploy"]["replicas"] == 0


# --- Swarm ----------------------------------------------------------------------------------------------------

SWARM_NETWORKS = {**NETWORKS, "database": {"internal": True, "attachable": True}}


def swarm_model(phase: str = "app", **extra) -> dict:
    return model(phase, **{"networks": ["backend", "database"], "secrets": [secret(uid=10001)], **extra})


def swarm(services: dict, **options) -> dict:
    return swarm_stack(services, name="pliers-prod", networks=SWARM_NETWORKS, project_dir=DIR, **options)


def test_swarm_branch_renders_deploy_blocks_placement_and_versioned_secrets():
    services = {
        "api": swarm_model(replicas=3, resources={"limits": {"cpus": "0.5"}, "reservations": {"memory": "64M"}},
                           max_replicas_per_node=2, depends_on={"postgres": "service_healthy"}),
        "postgres": model("data", image="pg", networks=["database"], placement=["node.labels.db == true"]),
        "web": model("edge", image="web", networks=["frontend"], mode="global", placement=["node.labels.edge == true"],
                     ports=[{"published": 80, "target": 8080, "host_ip": ""}]),
    }  # fmt: skip
    stack = swarm(services)
    api = stack["services"]["api"]
    assert api["deploy"]["replicas"] == 3 and api["deploy"]["endpoint_mode"] == "dnsrr"
    # Capped per node: stop-first, or a lost node leaves the update no room to start its next task.
    assert api["deploy"]["update_config"]["order"] == api["deploy"]["rollback_config"]["order"] == "stop-first"
    assert api["deploy"]["update_config"]["failure_action"] == "rollback"
    assert api["deploy"]["placement"] == {"max_replicas_per_node": 2}
    uncapped = swarm({"api": swarm_model(replicas=3)})["services"]["api"]
    assert uncapped["deploy"]["update_config"]["order"] == "start-first" and "placement" not in uncapped["deploy"]
    assert api["deploy"]["resources"] == {"limits": {"cpus": "0.5", "pids": 256}, "reservations": {"memory": "64M"}}
    assert "depends_on" not in api and "restart" not in api, "Swarm ignores them: the renderer leaves them out"
    assert api["secrets"] == [
        {"source": "api_db", "target": "database_password", "uid": "10001", "gid": "10001", "mode": 0o400}
    ]
    version = content_version("pw")
    assert stack["secrets"] == {
        "api_db": {"file": "/opt/p/secrets/api/database_password", "name": f"pliers-prod_api_db_{version}"}
    }
    # Data and edge services update stop-first: a volume, host-mode ports, cannot be shared by two tasks.
    for name in ("postgres", "web"):
        deploy = stack["services"][name]["deploy"]
        assert deploy["update_config"]["order"] == deploy["rollback_config"]["order"] == "stop-first", name
    assert stack["services"]["postgres"]["deploy"]["placement"] == {"constraints": ["node.labels.db == true"]}
    web = stack["services"]["web"]
    assert web["deploy"]["mode"] == "global" and "replicas" not in web["deploy"]
    assert web["ports"] == [{"target": 8080, "published": 80, "protocol": "tcp", "mode": "host"}]
    assert stack["networks"]["database"] == {"driver": "overlay", "attachable": True, "internal": True}
    assert stack["networks"]["frontend"] == {"driver": "overlay", "attachable": False}


def test_a_changed_secret_is_a_new_swarm_object_and_the_same_content_the_same_one():
    names = [swarm({"api": swarm_model(secrets=[secret(content=c)])})["secrets"]["api_db"]["name"] for c in "aba"]
    assert names[0] != names[1] and names[0] == names[2]


def test_a_port_bound_to_the_loopback_is_not_published_in_swarm():
    service = model("ops", ports=[{"published": 9090, "target": 9090, "host_ip": "127.0.0.1"},
                                  {"published": 80, "target": 8080, "host_ip": "10.0.0.5"}])  # fmt: skip
    assert swarm({"prometheus": service})["services"]["prometheus"]["ports"] == [
        {"target": 8080, "published": 80, "protocol": "tcp", "mode": "host"}
    ]
    published = render({"prometheus": service})["services"]["prometheus"]["ports"]
    assert published[0] == {"target": 9090, "published": "9090", "protocol": "tcp", "host_ip": "127.0.0.1"}


def test_swarm_options_vip_and_encryption_stay_available():
    stack = swarm({"api": swarm_model()}, endpoint_mode="vip", encrypted=True)
    assert stack["services"]["api"]["deploy"]["endpoint_mode"] == "vip"
    assert all(net["driver_opts"] == {"encrypted": "true"} for net in stack["networks"].values())


def test_gpu_services_reserve_a_gpu_on_gpu_nodes():
    services = {"ai": swarm_model(placement=["node.labels.gpu == true"], generic_resources={"gpu": 1})}
    deploy = swarm(services)["services"]["ai"]["deploy"]
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
    ],
)
def test_bad_swarm_models_are_refused(service, message):
    with pytest.raises(AnsibleFilterError, match=message):
        swarm({"api": service})


# --- The files a deploy writes --------------------------------------------------------------------------------


def test_each_file_has_its_place_owner_and_mode_and_secrets_are_marked_secret():
    services = {
        "api": model(secrets=[secret(uid=10001)]),
        "prometheus": model(
            "ops", configs=[{"name": "prom", "target": "/etc/prometheus/prometheus.yml", "content": "x"}]
        ),
    }
    written = stack_files(services, DIR)
    assert written["directories"] == [
        {"path": "/opt/p/secrets", "mode": "0700"},
        {"path": "/opt/p/configs", "mode": "0755"},
        {"path": "/opt/p/secrets/api", "mode": "0700"},
        {"path": "/opt/p/configs/prometheus", "mode": "0755"},
    ]
    assert written["files"] == [
        {"path": "/opt/p/secrets/api/database_password", "content": "pw", "mode": "0400", "owner": 10001,
         "group": 10001, "secret": True, "service": "api", "reload": False},
        {"path": "/opt/p/configs/prometheus/prometheus.yml", "content": "x", "mode": "0644", "owner": 0, "group": 0,
         "secret": False, "service": "prometheus", "reload": False},
    ]  # fmt: skip
    only_api = stack_files(services, DIR, ["api"])
    assert [f["service"] for f in only_api["files"]] == ["api"]


def test_one_name_for_two_contents_is_refused():
    services = {"api": model(secrets=[secret(content="a")]), "worker": model(secrets=[secret(content="b")])}
    with pytest.raises(AnsibleFilterError, match="secrets api_db is defined by api and worker with different contents"):
        stack_files(services, DIR)


# --- The plan of a deploy -------------------------------------------------------------------------------------


def stack(**extra) -> dict:
    return {
        "postgres": model("data", image="pg:15"),
        "redis": model("data", image="redis:7"),
        "api": model(image="r/api:1.1.0", networks=["backend", "database"], secrets=[secret()],
                     depends_on={"postgres": "service_healthy", "redis": "service_healthy"},
                     environment={"DATABASE_HOST": "postgres"},
                     http={"port": 3000, "path_prefix": "/api",
                           "verify": {"path": "/api/health", "json": {"version": "1.1.0"}}},
                     migrations={"network": "database"}),
        "ai-service": model(image="r/ai:1.1.0", depends_on={"api": "service_healthy"}, http={"port": 3001}),
        "web": model(image="r/web:1.1.0", http={"port": 8080, "path_prefix": "/", "verify": {"path": "/"}}),
        "edge": model("edge", image="nginx", depends_on={"web": "service_started"},
                      upstreams={"dir": "upstreams", "sync": ["sh", "sync"]}),
        "node-exporter": model("ops", image="ne"),
        "postgres-exporter": model("ops", image="pe", depends_on={"postgres": "service_healthy"}),
        "edge-exporter": model("ops", image="ee", depends_on={"edge": "service_healthy"}),
        **extra,
    }  # fmt: skip


def test_the_plan_takes_each_phase_in_its_step_and_in_dependency_order():
    plan = stack_plan(stack(), None, DIR)
    assert plan["all"] is True
    assert plan["data"] == ["postgres", "redis"]
    # What needs nothing but the data services starts with them.
    assert plan["first"] == ["node-exporter", "postgres", "postgres-exporter", "redis"]
    assert plan["rolled"] == ["api", "ai-service", "web"]  # the ai-service after the api it depends on
    assert plan["rest"] == ["edge", "edge-exporter"]
    assert plan["routes"] == {"ai-service": 3001, "api": 3000, "web": 8080}
    assert plan["verify"] == [{"name": "api", "path": "/api/health", "json": {"version": "1.1.0"}},
                              {"name": "web", "path": "/"}]  # fmt: skip
    assert plan["edge"] == "edge"
    assert plan["upstreams"] == {"dir": "/opt/p/configs/edge/upstreams", "sync": ["sh", "sync"], "drained": []}
    assert plan["versions"] == {"ai-service": "1.1.0", "api": "1.1.0", "web": "1.1.0"}
    (migrations,) = plan["migrations"]
    assert migrations == {
        "service": "api", "network": "database", "backup_first": True, "image": "r/api:1.1.0",
        "environment": {"DATABASE_HOST": "postgres"},
        "secrets": [{"name": "api_db", "file": "/opt/p/secrets/api/database_password", "target": "database_password"}],
    }  # fmt: skip


def test_a_selection_acts_on_its_services_only():
    plan = stack_plan(stack(), ["redis"], DIR)
    assert (plan["all"], plan["selected"], plan["first"], plan["rolled"], plan["rest"]) == (
        False, ["redis"], ["redis"], [], []
    )  # fmt: skip
    assert plan["migrations"] == [] and plan["verify"] == []
    assert plan["edge"] == "edge", "the edge keeps serving what the run rolls"
    assert stack_plan(stack(), ["web"], DIR)["verify"] == [{"name": "web", "path": "/"}]


@pytest.mark.parametrize(
    ("services", "selected", "message"),
    [
        (stack(), ["nosuch"], "no service nosuch in the stack"),
        (stack(loop=model(depends_on={"loop": "service_started"})), None, "depend on each other in a circle"),
        (stack(api=model(migrations={"network": "frontend"}, networks=["backend"])), None, "migrations run on one of"),
    ],
)
def test_a_bad_plan_is_refused(services, selected, message):
    with pytest.raises(AnsibleFilterError, match=message):
        stack_plan(services, selected, DIR)


def test_a_role_contributes_its_services_marked_with_its_name():
    services = contribute(None, "redis", {"redis": model("data")})
    services = contribute(services, "api", {"api": model()})
    assert {name: svc["role"] for name, svc in services.items()} == {"redis": "redis", "api": "api"}
    assert contribute(services, "redis", {"redis": model("data", image="redis:8")})["redis"]["image"] == "redis:8"
    with pytest.raises(AnsibleFilterError, match="role myredis contributes service redis, which role redis did"):
        contribute(services, "myredis", {"redis": model("data")})
    with pytest.raises(AnsibleFilterError, match="phase must be one of"):
        contribute(services, "echo", {"echo": {"image": "echo"}})


def test_labelled_nodes_reads_each_hosts_node_labels():
    hostvars = {
        "a": {"docker_host_node_labels": {"db": "true", "edge": True}},
        "b": {"docker_host_node_labels": {"db": "false"}},
        "c": {},
    }
    assert labelled_nodes(["a", "b", "c"], hostvars, "db") == ["a"]
    assert labelled_nodes(["a", "b", "c"], hostvars, "edge") == ["a"]
    assert labelled_nodes(["c", "b"], hostvars, "db", "false") == ["b"]


PROXY_IMAGE = "registry.example:5000/pliers/haproxy:2.6"


def docker_api_reader(**extra) -> dict:
    reader = model("ops", docker_api={"image": PROXY_IMAGE, "endpoints": ["tasks", "services"]}, **extra)
    return contribute(None, "monitoring", {"prometheus": reader})


def test_a_docker_api_reader_gets_a_proxy_of_its_own_and_never_the_engines_socket():
    services = docker_api_reader(placement=["node.labels.pliers.host == m1"], volumes=[{"source": "d", "target": "/d"}])
    assert set(services) == {"prometheus", "prometheus-docker-api"}
    proxy = services["prometheus-docker-api"]
    assert (proxy["role"], proxy["phase"], proxy["image"], proxy["user"]) == ("monitoring", "ops", PROXY_IMAGE, "0:0")
    project = render(services)
    reader, rendered = project["services"]["prometheus"], project["services"]["prometheus-docker-api"]
    # The reader: its own volumes, and the proxy's socket read-only; started once the proxy is healthy.
    assert reader["volumes"][1] == {"type": "volume", "source": "prometheus_docker_api", "target": "/run/docker-api",
                                    "read_only": True}  # fmt: skip
    assert not any(v.get("source") == "/var/run/docker.sock" for v in reader["volumes"])
    assert reader["depends_on"] == {"prometheus-docker-api": {"condition": "service_healthy"}}
    # The proxy: on no network, no capability, a read-only root; the engine's socket and the shared volume.
    assert rendered["network_mode"] == "none" and "networks" not in rendered
    assert (rendered["cap_drop"], rendered["read_only"]) == (["ALL"], True)
    assert [v["source"] for v in rendered["volumes"]] == ["/var/run/docker.sock", "prometheus_docker_api"]
    assert rendered["deploy"]["resources"]["limits"]["pids"] == 64
    # Swarm: where the reader runs (its placement, every node of it), on the stack's isolated internal network.
    stack = swarm_stack(services, name="p", networks=NETWORKS, project_dir=DIR)
    proxy = stack["services"]["prometheus-docker-api"]
    assert proxy["networks"] == ["isolated"]
    assert proxy["deploy"]["mode"] == "global"
    assert proxy["deploy"]["placement"] == {"constraints": ["node.labels.pliers.host == m1"]}
    assert stack["networks"]["isolated"] == {"driver": "overlay", "attachable": False, "internal": True}


def test_the_proxy_passes_get_and_head_on_the_readers_endpoints_only():
    config = docker_api_reader()["prometheus-docker-api"]["configs"][0]
    assert config["target"] == "/usr/local/etc/haproxy/haproxy.cfg"
    content = config["content"]
    assert "bind /run/docker-api/docker.sock mode 666" in content
    assert "server engine /var/run/docker.sock" in content
    rule = next(line.strip() for line in content.splitlines() if "http-request deny" in line)
    assert rule.startswith("http-request deny deny_status 403 unless { method GET HEAD }")
    pattern = re.search(r"path_reg (\S+) }", rule).group(1)
    allowed = ["/_ping", "/v1.41/version", "/v1.43/services", "/services/abc", "/v1.47/tasks", "/tasks/x1.y_z-2"]
    refused = ["/containers/json", "/v1.43/containers/create", "/secrets", "/services/abc/update",
               "/v1.43/exec/x/start", "/tasks/../containers/json", "/v1/tasks", "/x/tasks"]  # fmt: skip
    assert [p for p in allowed if not re.fullmatch(pattern, p)] == []
    assert [p for p in refused if re.fullmatch(pattern, p)] == []


@pytest.mark.parametrize(
    ("docker_api", "message"),
    [
        ({"image": PROXY_IMAGE}, "docker_api: missing endpoints"),
        ({"endpoints": ["tasks"]}, "docker_api: missing image"),
        (
            {"image": PROXY_IMAGE, "endpoints": ["tasks", "exec"]},
            "docker_api: endpoints must be a list of containers, events",
        ),
        ({"image": PROXY_IMAGE, "endpoints": "tasks"}, "docker_api: endpoints must be a list of"),
        ({"image": PROXY_IMAGE, "endpoints": ["tasks"], "socket": "/x"}, r"docker_api: unknown key\(s\) socket"),
    ],
)
def test_a_bad_docker_api_is_refused_naming_it(docker_api, message):
    with pytest.raises(AnsibleFilterError, match=f"service prometheus {message}"):
        contribute(None, "monitoring", {"prometheus": model("ops", docker_api=docker_api)})


def test_an_isolated_service_joins_no_network_and_the_isolated_network_is_the_stacks():
    with pytest.raises(AnsibleFilterError, match="service p: an isolated service joins no network, got backend"):
        render({"p": model(isolated=True, networks=["backend"])})
    with pytest.raises(AnsibleFilterError, match="network name isolated is the stack's own"):
        swarm_stack(docker_api_reader(), name="p", networks={**NETWORKS, "isolated": {}}, project_dir=DIR)
    # Without an isolated service, the name is the user's.
    assert (
        "isolated"
        in swarm_stack({"a": model(networks=["isolated"])}, name="p", networks={"isolated": {}}, project_dir=DIR)[
            "networks"
        ]
    )


def test_an_app_reads_no_docker_api_and_a_proxy_is_its_readers_alone():
    reader = {"image": PROXY_IMAGE, "endpoints": ["containers"]}
    with pytest.raises(AnsibleFilterError, match="service api: an app service reads no Docker API"):
        contribute(None, "api", {"api": model(docker_api=reader)})
    services = contribute(None, "mine", {"prometheus-docker-api": model("ops")})
    with pytest.raises(
        AnsibleFilterError, match="role monitoring's prometheus needs service prometheus-docker-api, wh"
    ):
        contribute(services, "monitoring", {"prometheus": model("ops", docker_api=reader)})


def database(**store) -> dict:
    """A PostgreSQL store with its admin's password, and an api that logs in to it."""
    return {
        "postgres": model(
            "data",
            networks=["database"],
            secrets=[secret("postgres_password", "postgres_password", uid=999)],
            store={
                "kind": "postgres",
                "database": "app",
                "admin_user": "admin",
                "admin_password": "postgres_password",
                **store,
            },
        ),
        "api": model(
            networks=["database"],
            accounts=[{"store": "postgres", "name": "api", "password": "pw", "privileges": "rows"}],
        ),
    }


def test_a_store_is_reached_by_its_service_with_its_image_and_its_admins_password():
    [store] = stack_stores(database(), DIR)
    assert store["service"] == "postgres"
    assert store["image"] == model()["image"]
    assert store["network"] == "database"
    assert store["port"] == 5432
    assert store["admin_password_file"].startswith(DIR) and store["admin_password_file"].endswith("postgres_password")
    assert store["accounts"] == [{"name": "api", "password": "pw", "privileges": "rows", "service": "api"}]


def test_a_store_behind_a_proxy_is_reached_through_the_proxy_with_its_servers_client_and_password():
    services = database(server="postgres-member")
    member = {key: value for key, value in services["postgres"].items() if key != "store"}
    member |= {"image": "registry.example:5000/pliers/postgres-ha:17", "networks": ["cluster"]}
    services["postgres-member"] = member
    proxy = "registry.example:5000/pliers/haproxy:2.6"
    services["postgres"] = model(
        "data", image=proxy, networks=["database", "cluster"], store=services["postgres"]["store"]
    )
    [store] = stack_stores(services, DIR)
    # Clients reach the proxy, on its network, as the accounts name it; the one-off client is the server's image.
    assert (store["service"], store["network"]) == ("postgres", "database")
    assert store["image"] == "registry.example:5000/pliers/postgres-ha:17"
    [member_password] = [f["path"] for f in service_files("postgres-member", member, DIR) if f["secret"]]
    assert store["admin_password_file"] == member_password
    services["postgres"]["store"] = services["postgres"]["store"] | {"server": "nowhere"}
    with pytest.raises(AnsibleFilterError, match="service postgres store: its server 'nowhere' is no service"):
        stack_stores(services, DIR)
    services["postgres"]["store"] = services["postgres"]["store"] | {"server": "api"}
    with pytest.raises(AnsibleFilterError, match="service api store: no secret has the target 'postgres_password'"):
        stack_stores(services, DIR)


def test_only_the_networks_a_service_joins_are_made():
    services = {"api": model(networks=["backend"]), "web": model(networks=["frontend", "backend"])}
    networks = {**NETWORKS, "database_cluster": {"internal": True}}
    assert set(render(services, edge="nginx")["networks"]) == {"backend", "frontend"}
    assert set(swarm_stack(services, name="p", networks=networks, project_dir=DIR)["networks"]) == {
        "backend",
        "frontend",
    }


def test_a_services_other_names_answer_on_each_of_its_networks_in_both_modes():
    services = {"postgres": model(networks=["database", "backend"], aliases=["postgres-replicas"])}
    networks = {**NETWORKS, "database_cluster": {"internal": True}}
    wanted = {"backend": {"aliases": ["postgres-replicas"]}, "database": {"aliases": ["postgres-replicas"]}}
    assert render(services, edge="nginx")["services"]["postgres"]["networks"] == wanted
    swarm = swarm_stack(services, name="p", networks=networks, project_dir=DIR)
    assert swarm["services"]["postgres"]["networks"] == wanted
    assert set(swarm["networks"]) == {"backend", "database"}
    # Without aliases, the list as before.
    assert render({"api": model(networks=["backend"])}, edge="nginx")["services"]["api"]["networks"] == ["backend"]


@pytest.mark.parametrize("aliases", ["postgres-replicas", ["Postgres_Replicas"], ["-x"], [""]])
def test_an_alias_that_is_no_dns_name_is_refused_naming_the_service(aliases):
    with pytest.raises(AnsibleFilterError, match="service postgres: aliases must be a list of DNS names"):
        render({"postgres": model(networks=["database"], aliases=aliases)}, edge="nginx")


# --- maintenance_open ---------------------------------------------------------------------------------------------


def test_maintenance_leaves_the_health_endpoints_open_but_the_webs_every_page():
    assert maintenance_open(["/", "/api/health", "/ai/health", "/api/health"]) == ["/ai/health", "/api/health"]
    assert maintenance_open(["/"]) == []


def test_maintenance_open_refuses_what_is_not_a_list_of_paths():
    with pytest.raises(AnsibleFilterError, match="maintenance_open: expected a list of paths"):
        maintenance_open("/api/health")


# --- prunable_images ----------------------------------------------------------------------------------------------

API = "registry.example:5000/pliers/api"
WEB = "registry.example:5000/pliers/web"


def release(api: str, web: str, result: str = "ok", playbook: str = "deploy") -> dict:
    return {"versions": {"api": api, "web": web}, "result": result, "playbook": playbook}


def held(*tags: str) -> dict:
    """docker_host_info's result on a host with these images and no container."""
    images = [{"Id": f"sha256:{index}", "RepoTags": [tag]} for index, tag in enumerate(tags)]
    return {"images": images, "containers": []}


def test_the_plan_names_each_app_services_repository():
    services = {
        "api": model(),
        "db": model("data", image="postgres:17"),
        "web": model(image=f"{WEB}@sha256:" + "a" * 64),
    }
    assert stack_plan(services)["repositories"] == {"api": API, "web": WEB}


def test_the_plan_lists_the_owned_volumes_of_the_services_it_deploys_with_their_user_and_host():
    data = {"source": "prom_data", "target": "/prometheus", "owned": True}
    services = {
        "prom": model("ops", user="65534:65534", volumes=[data, {"source": "rules", "target": "/rules"}],
                      placement=["node.role == manager", "node.labels.pliers.host == node-2"]),
        "alerts": model("ops", user="100:101", volumes=[{"source": "alerts_data", "target": "/a", "owned": True}]),
        "api": model(volumes=[{"source": "cache", "target": "/cache", "owned": False}]),
    }  # fmt: skip
    assert stack_plan(services)["owned_volumes"] == [
        {"service": "alerts", "volume": "alerts_data", "uid": 100, "gid": 101, "host": None},
        {"service": "prom", "volume": "prom_data", "uid": 65534, "gid": 65534, "host": "node-2"},
    ]
    assert stack_plan(services, ["api", "prom"])["owned_volumes"] == [
        {"service": "prom", "volume": "prom_data", "uid": 65534, "gid": 65534, "host": "node-2"}
    ]
    # Not a key of the rendered services; mounted without the image's content, which would hand the volume's top
    # back to the image's owner (the deploy makes it its user's).
    rendered = compose_project(services, "p", NETWORKS, DIR)["services"]["prom"]["volumes"]
    assert rendered == [
        {"type": "volume", "source": "prom_data", "target": "/prometheus", "read_only": False,
         "volume": {"nocopy": True}},
        {"type": "volume", "source": "rules", "target": "/rules", "read_only": False},
    ]  # fmt: skip


OWNED = {"source": "d", "target": "/d", "owned": True}


@pytest.mark.parametrize(
    ("volume", "user", "message"),
    [
        (OWNED, None, "an owned volume's service runs as a numeric uid:gid, got user ''"),
        (OWNED, "nobody", "got user 'nobody'"),
        (OWNED, "65534", "got user '65534'"),
        ({**OWNED, "source": "/srv/d", "type": "bind"}, "1:1", "only a named volume can be owned, not a bind"),
        ({**OWNED, "owned": "yes"}, "1:1", "owned must be true or false, got 'yes'"),
        ({"target": "/d", "owned": True}, "1:1", "missing source"),
        ({**OWNED, "mode": "global"}, "1:1", "a global service's volume cannot be owned"),
    ],
)  # fmt: skip
def test_an_owned_volume_the_deploy_could_not_hand_over_is_refused_naming_the_service(volume, user, message):
    mode = {"mode": volume.pop("mode")} if "mode" in volume else {}
    service = model("ops", volumes=[volume], **({"user": user} if user else {}), **mode)
    with pytest.raises(AnsibleFilterError, match=re.escape(message)) as raised:
        contribute({}, "monitoring", {"prom": service})
    assert str(raised.value).startswith("service prom volumes[0]: ")


def test_swarm_mode_refuses_an_owned_volume_whose_service_is_not_pinned_to_a_host():
    """A Swarm volume is its node's own: the deploy makes it for its user on the host the service is pinned to, and an
    unpinned task could start anywhere, on a volume the engine makes there for root."""
    data = [{"source": "prom_data", "target": "/prometheus", "owned": True}]
    pinned = swarm_model("ops", user="65534:65534", volumes=data, placement=["node.labels.pliers.host == node-2"])
    assert swarm({"prom": pinned})["services"]["prom"]["volumes"][0]["volume"] == {"nocopy": True}
    unpinned = swarm_model("ops", user="65534:65534", volumes=data, placement=["node.role == manager"])
    with pytest.raises(
        AnsibleFilterError, match=re.escape("service prom: its owned volume prom_data needs the service pinned")
    ):
        swarm({"prom": unpinned})
    # Compose runs every service on its one host.
    assert render({"prom": model("ops", user="65534:65534", volumes=data)})["services"]["prom"]["volumes"]


def test_a_host_keeps_the_running_version_and_the_keep_before_it_per_service():
    history = [release(f"1.{n}.0", "1.0.0") for n in range(6)]
    listed = held(*(f"{API}:1.{n}.0" for n in range(6)), f"{WEB}:1.0.0", "postgres:17", "registry.example:5000/x:1")
    assert prunable_images(listed, {"api": API, "web": WEB}, history, 2) == [
        f"{API}:1.0.0",
        f"{API}:1.1.0",
        f"{API}:1.2.0",
    ]


def test_failed_attempts_and_restores_keep_nothing_and_a_rollback_target_stays():
    # 1.0.0 -> 1.1.0 -> 1.2.0 failed -> a restore -> rolled back to 1.0.0: the running 1.0.0 and the one before it.
    restore = {"versions": {}, "result": "ok", "playbook": "restore"}
    history = [release("1.0.0", "1.0.0"), release("1.1.0", "1.0.0"), release("1.2.0", "1.0.0", "failed"), restore,
               release("1.0.0", "1.0.0", playbook="rollback")]  # fmt: skip
    listed = held(f"{API}:1.0.0", f"{API}:1.1.0", f"{API}:1.2.0")
    assert prunable_images(listed, {"api": API}, history, 1) == [f"{API}:1.2.0"]


def test_an_image_with_several_tags_is_named_by_each_tag_that_may_go():
    listed = {"images": [{"Id": "sha256:1", "RepoTags": [f"{API}:1.0.0", f"{API}:old"]}]}
    assert prunable_images(listed, {"api": API}, [release("1.0.0", "1.0.0")], 1) == [f"{API}:old"]


@pytest.mark.parametrize("keep", [0, -1, "3", True, None])
def test_keep_must_be_one_or_more(keep):
    with pytest.raises(AnsibleFilterError, match="keep must be a whole number of 1 or more"):
        prunable_images({}, {"api": API}, [], keep)


def test_a_swarm_nodes_images_held_by_digest_alone_keep_the_newest():
    # A Swarm node pulls the digest a service is pinned to: no tag, only RepoDigests.
    images = [{"Id": f"sha256:{n}", "RepoTags": [], "RepoDigests": [f"{API}@sha256:{n}"], "Created": 1000 + n}
              for n in range(5)]  # fmt: skip
    images.append({"Id": "sha256:other", "RepoTags": None, "RepoDigests": ["postgres@sha256:9"], "Created": 1})
    assert prunable_images({"images": images}, {"api": API}, [release("1.4.0", "1.0.0")], 2) == ["sha256:0", "sha256:1"]


def test_an_image_a_container_uses_is_never_named():
    listed = {**held(f"{API}:1.0.0", f"{API}:0.9.0"), "containers": [{"Id": "c1", "ImageID": "sha256:1"}]}
    assert prunable_images(listed, {"api": API}, [release("1.0.0", "1.0.0")], 1) == []


def test_maintenance_switches_are_not_releases_and_docker_hub_names_match_as_listed():
    history = [release("1.0.0", "1.0.0"), release("1.1.0", "1.0.0"), release("1.2.0", "1.0.0"),
               {"versions": {}, "result": "ok", "playbook": "maintenance"}]  # fmt: skip
    listed = held("pliers/api:1.0.0", "pliers/api:1.1.0", "pliers/api:1.2.0")
    assert prunable_images(listed, {"api": "docker.io/pliers/api"}, history, 1) == ["pliers/api:1.0.0"]
