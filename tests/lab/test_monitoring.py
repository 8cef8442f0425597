"""Monitoring for real: promtool and amtool (from the images the stack deploys) check the rules and the
rendered configurations; on the deployed stack, Prometheus scrapes every target, in Swarm on every node,
and an alert fires when Redis stops and resolves when it returns."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from lab import hosts as lab_hosts
from lab.common import ROOT, docker
from lab.engine import ensure_engine
from lab.images import Builder, catalogue

from ..render import render_stack
from .support import STACK, http, output, task_changed, wait_for

RULES = ROOT / "roles/monitoring/files/rules"
RULE_TESTS = ROOT / "tests/rules/alerts-test.yml"
SECRETS = {f"vault_{name}": "s3cret-value-for-tests-0123456789" for name in ("postgres_password", "redis_password",
                                                                             "grafana_admin_password")}  # fmt: skip
# What each check renders: the inventories' own settings, and the e-mail receiver's.
RENDERINGS = {
    "development": ("development", {}),
    "production": ("production", {"vault_alert_webhook_url": "https://hooks.example.net/T0KEN"}),
    "email": ("development", {"monitoring_alert_email_to": "ops@example.net", "monitoring_alert_email_from":
                              "alerts@example.net", "monitoring_alert_smtp_smarthost": "smtp.example.net:587",
                              "monitoring_alert_smtp_username": "alerts", "monitoring_alert_smtp_password": "pw"}),
}  # fmt: skip
EXPECTED_JOBS = {"prometheus", "prometheus-agent", "node", "postgres", "redis", "api", "ai-service", "edge",
                 "alertmanager"}  # fmt: skip
AGENT_JOBS = {"prometheus-agent", "api", "ai-service"}


@pytest.fixture(scope="module")
def tools() -> dict[str, str]:
    """The lab's Prometheus and Alertmanager images (built, or reused when unchanged)."""
    ensure_engine()
    tags = Builder([image for image in catalogue() if image.repo in ("prometheus", "alertmanager")]).build_all()
    return {"promtool": tags["prometheus"], "amtool": tags["alertmanager"]}


def tool(image: str, command: str, *args: str, mounts: dict[Path, str]):
    volumes = [option for source, target in mounts.items() for option in ("-v", f"{source}:{target}:ro")]
    return docker("run", "--rm", "--entrypoint", command, *volumes, image, *args, check=False)


def test_promtool_tests_the_alert_rules(tools):
    mounts = {RULES / "alerts.yml": "/w/alerts.yml", RULE_TESTS: "/w/alerts-test.yml"}
    checked = tool(tools["promtool"], "promtool", "check", "rules", "/w/alerts.yml", mounts=mounts)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 25 rules found" in checked.stdout
    tested = tool(tools["promtool"], "promtool", "test", "rules", "/w/alerts-test.yml", mounts=mounts)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


@pytest.mark.parametrize("rendering", list(RENDERINGS))
def test_promtool_and_amtool_accept_the_rendered_configuration(tools, rendering, tmp_path):
    inventory, overrides = RENDERINGS[rendering]
    render_stack(tmp_path, inventory, {**SECRETS, **overrides, "pliers_project_name": "pliers-x"})
    configs = tmp_path / "configs/prometheus"
    mounts = {configs / "prometheus.yml": "/etc/prometheus/prometheus.yml",
              configs / "alerts.yml": "/etc/prometheus/rules/alerts.yml"}  # fmt: skip
    checked = tool(tools["promtool"], "promtool", "check", "config", "/etc/prometheus/prometheus.yml", mounts=mounts)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 1 rule files found" in checked.stdout
    agent = tmp_path / "configs/prometheus-agent/prometheus.yml"
    checked = tool(tools["promtool"], "promtool", "check", "config", "--agent", "/w/prometheus.yml",
                   mounts={agent: "/w/prometheus.yml"})  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    alertmanager = tmp_path / "secrets/alertmanager/alertmanager.yml"
    amtool = tool(tools["amtool"], "amtool", "check-config", "/w/alertmanager.yml",
                  mounts={alertmanager: "/w/alertmanager.yml"})  # fmt: skip
    assert amtool.returncode == 0, amtool.stdout + amtool.stderr
    receivers = yaml.safe_load(alertmanager.read_text())["receivers"][0]
    expected = {"development": set(), "production": {"webhook_configs"}, "email": {"email_configs"}}[rendering]
    assert set(receivers) - {"name"} == expected


# --- On the deployed stack -----------------------------------------------------------------------------------


def test_prometheus_scrapes_every_target_on_every_node(deployed):
    expected_nodes = {
        lab_hosts.ssh(lab_hosts.lab_host(deployed.lab, name), "hostname").stdout.strip()
        for name in lab_hosts.running_hosts(deployed.lab)
        if deployed.mode == "swarm" or name == deployed.deployer.name
    }

    def all_up():
        series = deployed.promql("up")
        jobs = {row["metric"]["job"] for row in series}
        down = [row["metric"] for row in series if row["value"][1] != "1"]
        nodes = {row["metric"]["node"] for row in series if row["metric"]["job"] == "node"}
        return (jobs >= EXPECTED_JOBS and not down and nodes == expected_nodes) and series

    series = wait_for(all_up, timeout=120, interval=3, what=f"every target up, node exporters on {expected_nodes}")
    # One api and one ai-service target per replica (their /metrics), each on its own node's task or container.
    replicas = {"compose": {"api": 1, "ai-service": 1}, "swarm": {"api": 3, "ai-service": 2}}[deployed.mode]
    for job, count in replicas.items():
        assert len([row for row in series if row["metric"]["job"] == job]) == count, job
    # The backup status file of #6 reaches Prometheus through node exporter's textfile collector: that of a backup
    # taken now (a first deploy takes none).
    taken = int(lab_hosts.ssh(deployed.db, "date +%s").stdout.strip())
    backup = deployed.play("backup.yml")
    assert backup.returncode == 0, output(backup)
    wait_for(lambda: deployed.promql(f"pliers_backup_last_success_timestamp_seconds >= {taken}"), timeout=90,
             interval=3, what="the status of the backup just taken in Prometheus")  # fmt: skip
    # At least ten alert rules, loaded and evaluated.
    rules = deployed.promql("sum(prometheus_rule_group_rules)")
    assert int(float(rules[0]["value"][1])) >= 10


# Compose only: Swarm publishes nothing of the monitoring stack (it cannot bind a port to loopback).
@pytest.mark.parametrize("deployed", ["compose"], indirect=True)
def test_prometheus_answers_on_the_published_port_with_targets_and_rules(deployed):
    base = f"http://{deployed.deployer.address}:9090"
    status, body = http(f"{base}/api/v1/targets?state=active")
    assert status == 200, body
    targets = json.loads(body)["data"]["activeTargets"]
    # The api's and the ai-service's samples come through the scrape agent, not from targets of Prometheus's own.
    assert {target["labels"]["job"] for target in targets} >= EXPECTED_JOBS - AGENT_JOBS
    assert all(target["health"] == "up" for target in targets), [t for t in targets if t["health"] != "up"]
    status, body = http(f"{base}/api/v1/rules")
    rules = [rule for group in json.loads(body)["data"]["groups"] for rule in group["rules"]]
    assert len(rules) >= 10 and {"RedisDown", "BackupTooOld", "InstanceDown"} <= {rule["name"] for rule in rules}


# Compose on the deployer of the Molecule scenario's stack (the local inventory's project directory).
COMPOSE = "docker compose --project-directory /opt/pliers/local"


def alert_state(deployed, name: str, **labels: str) -> str:
    """The state in Prometheus of the alert of that name (and those labels): firing, pending or '' (inactive)."""
    status, body = http(f"http://{deployed.deployer.address}:9090/api/v1/alerts")
    assert status == 200, body
    alerts = json.loads(body)["data"]["alerts"]
    states = [
        alert["state"]
        for alert in alerts
        if alert["labels"]["alertname"] == name and labels.items() <= alert["labels"].items()
    ]
    return states[0] if states else ""


def scrape_interval() -> int:
    """monitoring_scrape_interval's default, in seconds."""
    defaults = yaml.safe_load((ROOT / "roles/monitoring/defaults/main.yml").read_text())
    return int(defaults["monitoring_scrape_interval"].removesuffix("s"))


# Compose only: the rule and the exporter are the same in Swarm, where discovery is tested above.
@pytest.mark.parametrize("deployed", ["compose"], indirect=True)
def test_stopping_redis_fires_its_alert_and_starting_it_resolves_it(deployed, request):
    rule = next(
        rule
        for group in yaml.safe_load((RULES / "alerts.yml").read_text())["groups"]
        for rule in group["rules"]
        if rule["alert"] == "RedisDown"
    )
    rule_for = int(rule["for"].removesuffix("s"))
    scrape = scrape_interval()
    assert alert_state(deployed, "RedisDown") == ""
    lab_hosts.ssh(deployed.deployer, f"{COMPOSE} stop redis")
    request.addfinalizer(lambda: lab_hosts.ssh(deployed.deployer, f"{COMPOSE} start redis", check=False))
    stopped = time.monotonic()
    # Polling every second adds at most a second; the HTTP round trip a few milliseconds.
    wait_for(lambda: alert_state(deployed, "RedisDown") == "firing", timeout=rule_for + 2 * scrape + 2, interval=1,
             what=f"RedisDown firing within its for ({rule_for}s) plus two scrape intervals ({scrape}s)")  # fmt: skip
    fired = time.monotonic() - stopped
    # Prometheus hands it to Alertmanager (which, with no receiver in the local inventory, keeps it).
    alertmanager = lab_hosts.ssh(deployed.deployer, f"{COMPOSE} ps -q alertmanager").stdout.strip()
    amtool = "amtool alert query --alertmanager.url=http://127.0.0.1:9093"
    query = f"docker exec {alertmanager} {amtool} alertname=RedisDown"
    wait_for(lambda: "RedisDown" in lab_hosts.ssh(deployed.deployer, query, check=False).stdout, timeout=30,
             interval=1, what="RedisDown in Alertmanager")  # fmt: skip
    lab_hosts.ssh(deployed.deployer, f"{COMPOSE} start redis")
    started = time.monotonic()
    wait_for(lambda: alert_state(deployed, "RedisDown") == "", timeout=2 * scrape + 2, interval=1,
             what="RedisDown resolved")  # fmt: skip
    resolved = time.monotonic() - started
    print(f"RedisDown fired {fired:.1f}s after redis stopped, resolved {resolved:.1f}s after it started")
    # The stack recovers by itself: the api reconnects to Redis.
    wait_for(lambda: http(f"{deployed.edge}/api/health")[0] == 200, timeout=60, what="the api healthy again")


# Compose only: a Swarm service's stopped task is replaced, and Prometheus lists Swarm tasks from the Docker API.
@pytest.mark.parametrize("deployed", ["compose"], indirect=True)
def test_a_stopped_exporter_leaves_its_job_no_target_and_is_scrape_targets_missing(deployed, request):
    """An exporter stopped by hand stays stopped (restart policies do not start it again), and Docker's DNS no longer
    names it: its job has no target left to be down, so InstanceDown cannot see it. ScrapeTargetsMissing can:
    pending here once discovery finds nothing (promtool's test shows it fires after its 3 minutes)."""
    scrape = scrape_interval()
    missing = {"name": "ScrapeTargetsMissing", "config": "edge"}
    assert alert_state(deployed, **missing) == ""
    lab_hosts.ssh(deployed.deployer, f"{COMPOSE} stop edge-exporter")
    request.addfinalizer(lambda: lab_hosts.ssh(deployed.deployer, f"{COMPOSE} start edge-exporter", check=False))
    # Discovery refreshes every scrape interval, and the rules are evaluated every scrape interval too.
    wait_for(lambda: alert_state(deployed, **missing) == "pending", timeout=3 * scrape + 5, interval=1,
             what="ScrapeTargetsMissing for the edge job pending")  # fmt: skip
    lab_hosts.ssh(deployed.deployer, f"{COMPOSE} start edge-exporter")
    wait_for(lambda: alert_state(deployed, **missing) == "", timeout=3 * scrape + 5, interval=1,
             what="ScrapeTargetsMissing for the edge job gone")  # fmt: skip


# --- Swarm: the Docker API through a proxy ----------------------------------------------------------------------


@pytest.mark.parametrize("deployed", ["swarm"], indirect=True)
def test_prometheus_reads_the_docker_api_through_its_proxy_which_refuses_the_rest(deployed):
    """The proxy's socket, on the node Prometheus runs on, asked as Prometheus asks it: what its discovery reads
    answers; anything else, or any other method, is refused; and no container of the stack but the proxy mounts
    the engine's socket."""
    volume = f"{STACK}_prometheus_docker_api"
    socket = lab_hosts.ssh(deployed.deployer, f"docker volume inspect -f '{{{{.Mountpoint}}}}' {volume}").stdout
    curl = f"curl -s -o /dev/null -w '%{{http_code}}' --unix-socket {socket.strip()}/docker.sock"
    asked = {
        "GET /v1.41/tasks": 200, "GET /services": 200, "GET /v1.41/nodes": 200, "GET /networks": 200,
        "GET /_ping": 200, "GET /containers/json": 403, "GET /secrets": 403, "GET /v1.41/info": 403,
        "POST /v1.41/services/create": 403, "DELETE /v1.41/networks/x": 403, "POST /v1.41/containers/x/exec": 403,
    }  # fmt: skip
    answered = {
        request: lab_hosts.ssh(
            deployed.deployer, f"{curl} -X {request.split()[0]} http://engine{request.split()[1]}"
        ).stdout.strip()
        for request in asked
    }
    assert answered == {request: str(status) for request, status in asked.items()}
    mounts = "docker ps -q | xargs docker inspect -f '{{.Name}} {{range .Mounts}}{{.Source}} {{end}}'"
    readers = {
        line.split()[0].lstrip("/").split(".")[0]
        for host in lab_hosts.running_hosts(deployed.lab)
        for line in lab_hosts.ssh(lab_hosts.lab_host(deployed.lab, host), mounts).stdout.splitlines()
        if "/var/run/docker.sock" in line.split()[1:]
    }
    assert readers == {f"{STACK}_prometheus-docker-api"}


@pytest.mark.parametrize("deployed", ["compose", "swarm"], indirect=True)
def test_monitoring_data_an_earlier_release_wrote_is_handed_to_its_user_and_kept(deployed):
    """Upgrading from 0.1.0, which ran Prometheus and Alertmanager as uid 100 (and Prometheus as root in Swarm mode
    before its Docker API proxy): their data is not their user's (65534, the upstream images'), which, with no
    capability, cannot write it. The deploy hands each volume over (its service stopped meanwhile) and keeps the
    data; once handed over there is nothing to hand (Molecule's idempotence run shows it)."""
    before = int(lab_hosts.ssh(deployed.deployer, "date +%s").stdout.strip()) - 5
    wait_for(lambda: deployed.promql(f"count(up @ {before})"), timeout=60, interval=3, what="samples to keep")
    volumes = {"prometheus_data": "100:101", "alertmanager_data": "0:0"}
    mountpoints = {
        volume: lab_hosts.ssh(
            deployed.deployer, f"docker volume inspect -f '{{{{.Mountpoint}}}}' {STACK}_{volume}"
        ).stdout.strip()
        for volume in volumes
    }
    for volume, owner in volumes.items():
        lab_hosts.ssh(deployed.deployer, f"chown -R {owner} {mountpoints[volume]}")
    result = deployed.play("deploy.yml")
    assert result.returncode == 0, output(result)
    if deployed.mode == "compose":  # in compose_rollout's run, which says so
        for volume in volumes:
            assert f"volume {volume} handed to 65534:65534" in result.stdout, output(result)
    else:
        assert task_changed(result, "hand every file of each such volume to its user"), output(result)
    for volume, mountpoint in mountpoints.items():
        foreign = lab_hosts.ssh(deployed.deployer, f"find {mountpoint} ! -user 65534 | head -3").stdout.strip()
        assert foreign == "", f"{volume}: not its user's: {foreign}"
    kept = wait_for(lambda: deployed.promql(f"count(up @ {before})"), timeout=60, interval=3, what="the samples kept")
    assert int(kept[0]["value"][1]) > 0


def test_an_owned_volume_that_is_gone_is_made_for_its_user_before_its_service_runs_again(deployed):
    """Alertmanager's volume removed with its service: the deploy makes it again before Alertmanager runs, its top
    65534's (the service mounts it with nocopy, or Docker would copy the image directory's owner in), and
    Alertmanager runs on it. (Each manager's etcd volume, made on a first deploy, where the image's directory is
    root's: tests/lab/test_database_ha.py.)"""
    volume = f"{STACK}_alertmanager_data"
    if deployed.mode == "compose":
        removed = "docker rm -f $(docker ps -aq --filter label=com.docker.compose.service=alertmanager)"
    else:
        removed = f"docker service rm {STACK}_alertmanager"
    lab_hosts.ssh(deployed.deployer, removed)
    wait_for(lambda: lab_hosts.ssh(deployed.deployer, f"docker volume rm {volume}", check=False).returncode == 0,
             timeout=60, what=f"{volume} removed")  # fmt: skip
    result = deployed.play("deploy.yml")
    assert result.returncode == 0, output(result)
    if deployed.mode == "compose":  # in compose_rollout's run, which says so
        assert "alertmanager: volume alertmanager_data was made for 65534:65534" in result.stdout, output(result)
    else:
        assert task_changed(result, "make each not made yet for its user"), output(result)
    wait_for(lambda: [r for r in deployed.promql('up{job="alertmanager"}') if r["value"][1] == "1"],
             timeout=90, interval=3, what="Alertmanager scraped again")  # fmt: skip
    mountpoint = f"$(docker volume inspect -f '{{{{.Mountpoint}}}}' {volume})"
    foreign = f"find {mountpoint} \\( ! -user 65534 -o ! -group 65534 \\) | head -3"
    seen = lab_hosts.ssh(deployed.deployer, f"stat -c %u:%g {mountpoint}; {foreign}")
    assert seen.stdout.split() == ["65534:65534"], seen.stdout
