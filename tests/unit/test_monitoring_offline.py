"""The monitoring role's files, rendered on this machine as a deploy renders them on a host.

Grafana, Loki and Alloy cannot run here (no image or package anywhere we can reach): their rendered
provisioning and configuration are checked offline — Loki's and Alertmanager's against the published JSON
schemas (../shared/schemas/, from SchemaStore), the dashboards against Grafana's dashboard schema and the
data sources they name, Alloy's configuration for its structure. What this proves: well-formed files with
the settings we mean; not that those processes accepted them. Prometheus and Alertmanager do run (lab
tests), and promtool/amtool check their files there."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from ..image_contracts import CONTRACTS
from ..render import render_stack
from .schemas import schema_file

SECRET = "s3cret-value-for-tests-0123456789"
WEBHOOK = "https://hooks.example.net/T0KEN-abcdef"
SECRETS = {
    f"vault_{name}": SECRET
    for name in ("postgres_password", "postgres_owner_password", "postgres_app_password", "postgres_monitor_password",
                 "redis_password", "redis_monitor_password", "grafana_admin_password")
}  # fmt: skip
# Each mode with the inventory rendered for it: compose, development's (nginx edge, no alert receiver); swarm,
# production's (Traefik edge, the webhook receiver). Both with Grafana and the logs.
CASES = {
    "compose": ("development", {"pliers_project_name": "pliers-development"}),
    "swarm": (
        "production",
        {
            "pliers_project_name": "pliers-production",
            "vault_alert_webhook_url": WEBHOOK,
        },
    ),
}


@pytest.fixture(scope="module", params=list(CASES))
def mode(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def rendered(mode, tmp_path_factory) -> tuple[Path, dict]:
    """The stack rendered in that mode (passed to the roles, whatever the inventory says)."""
    inventory, overrides = CASES[mode]
    project = tmp_path_factory.mktemp(f"monitoring-{mode}")
    overrides = {**SECRETS, **overrides, "pliers_mode": mode}
    services = render_stack(project, inventory, overrides)
    return project, services


def config(rendered, path: str):
    """A configuration file the monitoring's services read, by <service>/<file>."""
    project, _ = rendered
    text = (project / "configs" / path).read_text()
    return json.loads(text) if path.endswith(".json") else yaml.safe_load(text)


def validate(document, schema_name: str) -> None:
    schema = json.loads(schema_file(schema_name).read_text())
    jsonschema.validators.validator_for(schema)(schema).validate(document)


def test_prometheus_scrapes_every_part_of_the_stack(mode, rendered):
    """Prometheus scrapes what it reaches on the monitoring network; the scrape agent scrapes the rest and writes
    it to Prometheus: between them every part of the stack."""
    prometheus = config(rendered, "prometheus/prometheus.yml")
    agent = config(rendered, "prometheus-agent/prometheus.yml")
    own = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    relayed = {job["job_name"]: job for job in agent["scrape_configs"]}
    assert not set(own) & set(relayed)
    jobs = own | relayed
    assert {"prometheus", "prometheus-agent", "node", "postgres", "redis", "api", "ai-service", "edge", "alertmanager",
            "loki"} <= set(jobs)  # fmt: skip
    assert {"api", "ai-service"} <= set(relayed)
    swarm = mode == "swarm"
    for name, job in own.items():
        if name == "prometheus":
            continue
        if swarm:
            # Tasks discovered through the manager's Docker socket, kept only on the network Prometheus shares.
            (sd,) = job["dockerswarm_sd_configs"]
            assert sd["role"] == "tasks" and sd["filters"][0]["values"][0].startswith("pliers-production_")
            keeps = [rule["regex"] for rule in job["relabel_configs"] if rule.get("action") == "keep"]
            assert "running" in keeps and "pliers-production_monitoring" in keeps
        else:
            assert job["dns_sd_configs"][0]["type"] == "A"
    for name, job in relayed.items():
        if name == "prometheus-agent":
            continue
        # The agent has no Docker socket: Docker's DNS names each container (Compose) or task (Swarm).
        (sd,) = job["dns_sd_configs"]
        assert sd["type"] == "A"
        service = "traefik" if name == "edge" else name  # Traefik's job is the edge's
        assert sd["names"] == [f"tasks.pliers-production_{service}" if swarm else service]
    assert prometheus["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    assert prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]
    # Agent mode takes no rules and no Alertmanager: it writes every sample to Prometheus.
    assert "rule_files" not in agent and "alerting" not in agent
    assert agent["remote_write"] == [{"url": "http://prometheus:9090/api/v1/write"}]
    # The edge: the nginx edge through its exporter (development), Traefik's own metrics (production).
    edge = jobs["edge"]
    target = (edge.get("dns_sd_configs") or edge.get("dockerswarm_sd_configs"))[0]
    assert (target.get("names") or target["filters"][0]["values"])[0].endswith(
        "edge-exporter" if not swarm else "traefik"
    )


def test_alertmanager_configuration_is_valid_and_routes_to_the_inventorys_receiver(mode, rendered):
    project, _ = rendered
    alertmanager = yaml.safe_load((project / "secrets/alertmanager/alertmanager.yml").read_text())
    validate(alertmanager, "prometheus-alertmanager.json")
    (receiver,) = alertmanager["receivers"]
    assert alertmanager["route"]["receiver"] == receiver["name"]
    if mode == "swarm":  # production's webhook
        assert receiver["webhook_configs"] == [{"url": WEBHOOK, "send_resolved": True}]
    else:
        assert "webhook_configs" not in receiver  # development configures no receiver
    assert (project / "secrets/alertmanager/alertmanager.yml").stat().st_mode & 0o777 == 0o400


def test_loki_configuration_is_valid(rendered):
    loki = config(rendered, "loki/loki.yaml")
    validate(loki, "loki.json")
    assert loki["limits_config"]["retention_period"] == "168h" and loki["compactor"]["retention_enabled"] is True


def test_dashboards_are_valid_and_name_only_provisioned_data_sources(rendered):
    project, _ = rendered
    sources = {
        source["uid"]: source["type"] for source in config(rendered, "grafana/pliers-datasources.yml")["datasources"]
    }
    assert sources == {"prometheus": "prometheus", "loki": "loki"}
    dashboards = sorted((project / "configs/grafana").glob("*.json"))
    assert [path.stem for path in dashboards] == ["pliers-api", "pliers-hosts", "pliers-postgres", "pliers-redis"]
    for path in dashboards:
        dashboard = json.loads(path.read_text())
        validate({"dashboard": dashboard}, "grafana-dashboard-5.x.json")
        assert dashboard["uid"] == path.stem and dashboard["panels"]
        for panel in dashboard["panels"]:
            for source in [panel["datasource"], *(target["datasource"] for target in panel["targets"])]:
                assert sources.get(source["uid"]) == source["type"], f"{path.name} {panel['title']}: {source}"
            assert all(target["expr"] for target in panel["targets"])
    provider = config(rendered, "grafana/pliers-dashboards.yml")["providers"][0]
    assert provider["options"]["path"] == "/etc/grafana/dashboards" and provider["allowUiUpdates"] is False


def test_a_bad_dashboard_is_caught_by_the_schema():
    with pytest.raises(jsonschema.ValidationError):
        validate({"dashboard": {"uid": "short", "panels": []}}, "grafana-dashboard-5.x.json")  # uid: 8-40 characters


def test_alloy_configuration_wires_every_component_it_names(mode, rendered):
    project, _ = rendered
    text = (project / "configs/alloy/config.alloy").read_text()
    code = re.sub(r"^\s*//[^\n]*", "", text, flags=re.MULTILINE)  # whole-line comments (URLs hold //)
    assert code.count("{") == code.count("}"), "unbalanced blocks"
    declared = set(re.findall(r'^([a-z_]+(?:\.[a-z_]+)+) "([a-z_]+)" \{', code, re.MULTILINE))
    assert {kind for kind, _ in declared} == {
        "discovery.docker",
        "discovery.relabel",
        "loki.source.docker",
        "loki.write",
    }
    components = {f"{kind}.{label}" for kind, label in declared}
    # Every expression naming a component (discovery.docker.pliers.targets, loki.write.pliers.receiver) names a
    # declared one.
    references = re.findall(r"=\s*\[?((?:discovery|loki)\.[a-z_.]+)", code)
    assert references
    for reference in references:
        assert any(reference.startswith(component + ".") for component in components), reference
    label = "com.docker.stack.namespace" if mode == "swarm" else "com.docker.compose.project"
    assert f'"{label}=pliers-' in code and 'url = "http://loki:3100/loki/api/v1/push"' in code


def test_nothing_is_published_but_to_loopback_and_never_in_swarm(mode, rendered):
    _, services = rendered
    monitoring = {name: svc for name, svc in services.items() if svc["role"] == "monitoring"}
    assert {"prometheus", "alertmanager", "node-exporter", "postgres-exporter", "redis-exporter", "grafana", "loki",
            "alloy"} <= set(monitoring)  # fmt: skip
    # The exporters hold the database's and Redis's credentials: only internal networks, no way out.
    for name in ("node-exporter", "postgres-exporter", "redis-exporter", "loki", "alloy", "prometheus-agent"):
        assert set(monitoring[name]["networks"]) <= {"monitoring", "metrics", "backend"}, name
    published = {name: svc["ports"] for name, svc in monitoring.items() if svc.get("ports")}
    if mode == "swarm":
        assert published == {}
        assert services["node-exporter"]["mode"] == "global" and services["alloy"]["mode"] == "global"
    else:
        assert set(published) == {"prometheus", "alertmanager", "grafana"}
        assert {port["host_ip"] for ports in published.values() for port in ports} == {"127.0.0.1"}
        # What publishes needs a network with a way out (ops); in Swarm, nothing does.
        assert all("ops" in monitoring[name]["networks"] for name in published)


def test_no_app_container_shares_a_network_with_prometheus_alertmanager_grafana_or_a_data_exporter(rendered):
    _, services = rendered
    # (The Docker API proxies are on no network.)
    apps = {
        name: svc
        for name, svc in services.items()
        if svc["role"] in ("web", "api", "ai_service", "traefik") and not svc.get("isolated")
    }
    assert {"web", "api", "ai-service"} <= set(apps)
    guarded = ["prometheus", "alertmanager", "grafana", "postgres-exporter", "redis-exporter", "edge-exporter"]
    for name, svc in apps.items():
        # The nginx edge alone shares a network with its exporter, edge_metrics, which no other service joins.
        measured = {"edge_metrics"} if name == "edge" else set()
        assert not {"ops", "monitoring", "metrics", "edge_metrics"} - measured & set(svc["networks"]), name
        for other in guarded:
            if other in services:
                assert not set(svc["networks"]) - measured & set(services[other]["networks"]), (name, other)
    sharing = {name for name, svc in services.items() if "edge_metrics" in svc.get("networks", [])}
    assert sharing == ({"edge", "edge-exporter"} if "edge-exporter" in services else set()), sharing
    assert services["alertmanager"]["networks"] == ["monitoring", "ops"]
    # The scrape agent shares the apps' networks, and listens on its loopback only: none of them can connect to it.
    agent = services["prometheus-agent"]
    assert "--web.listen-address=127.0.0.1:9090" in agent["command"]
    assert "--enable-feature=agent" in agent["command"]  # the inventories' Prometheus 2.42
    # What the exporters measure is on their network.
    assert {"postgres", "redis"} <= {name for name, svc in services.items() if "metrics" in svc.get("networks", [])}


def test_each_health_check_runs_a_program_the_upstream_image_has(rendered):
    """The upstream images are busybox, Alpine or Debian ones (tests/image_contracts.py); a health check that needs
    more (bash, curl) would pass in the lab, whose images are Debian's, and never on the upstream image. An image
    with no program at all (built from scratch) gets no health check: one would never pass there."""
    _, services = rendered
    checked, unchecked = {}, set()
    for contract in CONTRACTS:
        for name in set(contract.services) & set(services):
            if not contract.tools:
                assert "healthcheck" not in services[name], f"{name}: {contract.upstream} has no program to run it"
                unchecked.add(name)
                continue
            test = services[name]["healthcheck"]["test"]
            program = "sh" if test[0] == "CMD-SHELL" else test[1]
            assert program in contract.tools, f"{name}: {program} is not in {contract.upstream}"
            checked[name] = program
    assert {"postgres", "redis", "prometheus", "alertmanager", "redis-exporter"} <= set(checked), checked
    # The nginx edge's exporter (Traefik's metrics need none).
    assert unchecked == {"edge-exporter"} & set(services), unchecked


def test_only_the_docker_api_proxies_mount_the_engines_socket(rendered, mode):
    """Alloy, and in Swarm mode Traefik and Prometheus's discovery, read the Docker API, each through a proxy of its
    own that runs where it runs, on no network; nothing else mounts the engine's socket."""
    project, services = rendered
    readers = {name for name, svc in services.items() if svc.get("docker_api")}
    assert readers == ({"alloy", "prometheus", "traefik"} if mode == "swarm" else {"alloy"})
    mounting = {
        name
        for name, svc in services.items()
        if any(volume["source"] == "/var/run/docker.sock" for volume in svc.get("volumes") or [])
    }
    assert mounting == {f"{reader}-docker-api" for reader in readers}
    for reader in readers:
        proxy = services[f"{reader}-docker-api"]
        assert proxy["isolated"] is True and not proxy.get("networks"), reader
        assert proxy["placement"] == services[reader].get("placement", []), reader
        shared = {"source": f"{reader}_docker_api", "target": "/run/docker-api", "read_only": True}
        assert shared in services[reader]["volumes"], reader
    # Prometheus, its agent and Alertmanager run as the upstream images' nobody in both modes, with no capability,
    # and own their volumes (the deploy hands their data to that user); the Redis exporter as its upstream image's.
    for service in ("prometheus", "prometheus-agent", "alertmanager"):
        assert str(services[service]["user"]) == "65534:65534" and not services[service].get("cap_add"), service
        owned = [volume["source"] for volume in services[service]["volumes"] if volume.get("owned")]
        assert owned == [f"{service.replace('-', '_')}_data"], service
    assert str(services["redis-exporter"]["user"]) == "59000:59000"
    alloy = (project / "configs/alloy/config.alloy").read_text()
    assert alloy.count('"unix:///run/docker-api/docker.sock"') == 2 and "/var/run/docker.sock" not in alloy
    if mode == "swarm":
        prometheus = (project / "configs/prometheus/prometheus.yml").read_text()
        assert "host: unix:///run/docker-api/docker.sock" in prometheus and "/var/run/docker.sock" not in prometheus


def test_the_agent_is_started_as_the_prometheus_images_major_version_takes_it(tmp_path):
    """Prometheus 3 dropped the agent feature flag for --agent: an upstream 3.x image (v-prefixed tag) gets that."""
    services = render_stack(tmp_path, "development", {"monitoring_prometheus_image": "prom/prometheus:v3.5.0"})
    command = services["prometheus-agent"]["command"]
    assert command[0] == "--agent" and "--enable-feature=agent" not in command


def test_secrets_are_files_never_environment(rendered):
    project, services = rendered
    for name, svc in services.items():
        assert SECRET not in json.dumps(svc.get("environment", {})), f"{name} carries a secret in its environment"
    for path in (project / "secrets").glob("*/*"):
        assert path.stat().st_mode & 0o777 == 0o400, path
    assert SECRET in (project / "secrets/grafana/grafana_admin_password").read_text()
    assert json.loads((project / "secrets/redis-exporter/redis_password.json").read_text()) == {
        "redis://redis:6379": SECRET
    }
