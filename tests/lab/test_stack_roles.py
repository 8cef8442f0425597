"""The stack role and the service roles on the deployed stacks of both modes (after the release tests):

- `--tags <role>` re-deploys that role's services and nothing else: a changed Redis setting under `--tags redis`
  replaces Redis's container (task) and no other; under each service role's tag, with nothing changed, the run
  acts on that role's services only and changes nothing;
- `--check --diff` of an upgrade with a pending migration says what would change (the services that would roll, the
  project file's diff, the migrations) and changes nothing;
- a service of the user's own (tests/roles/echo, added with pliers_extra_roles) is deployed, routed and verified
  through the edge, a rerun changes nothing, and a deploy without it removes it;
- compose_rollout, run on its own, reports changed once it repaired something, then not; stack_rollout prunes a
  secret version no service uses, then finds nothing to prune (pruning never reports changed);
- a no-op Compose deploy reaches its host in five round trips (the lock, the probe, the host's files, the rollout,
  the release): a task that slips in a sixth fails here, not only in `make bench`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from lab import hosts as lab_hosts
from lab.common import ROOT

from .support import STACK, http, output, recap_changed, said, vault_values, wait_for

ECHO_ROLE = ROOT / "tests" / "roles" / "echo"
# The service roles the lab runs (Traefik cannot run here), with their services.
ROLES = {
    "postgres": ["postgres"],
    "redis": ["redis"],
    "api": ["api"],
    "ai_service": ["ai-service"],
    "web": ["edge", "web"],
    "monitoring": ["alertmanager", "edge-exporter", "node-exporter", "postgres-exporter", "prometheus",
                   "prometheus-agent", "redis-exporter"],
}  # fmt: skip


def on(target, command: str, host=None, check: bool = True) -> str:
    return lab_hosts.ssh(host or target.deployer, command, check=check).stdout.strip()


def running(target) -> dict[str, str]:
    """Every running container (task) of the stack, by service: their ids, joined."""
    if target.mode == "compose":
        listing = on(target, f"docker ps --filter label=com.docker.compose.project={STACK} --format "
                             "'{{.Label \"com.docker.compose.service\"}} {{.ID}}'")  # fmt: skip
    else:
        listing = on(
            target, f"docker stack ps {STACK} --filter desired-state=running --format '{{{{.Name}}}} {{{{.ID}}}}'"
        )
    found: dict[str, list[str]] = {}
    for line in listing.splitlines():
        name, ident = line.split()
        # A Swarm task is named <stack>_<service>.<slot or node>.
        service = name.removeprefix(f"{STACK}_").split(".")[0] if target.mode == "swarm" else name
        found.setdefault(service, []).append(ident)
    return {service: ",".join(sorted(ids)) for service, ids in found.items()}


def changed_tasks(result) -> str:
    """The tasks of a run that reported changed, with the output around them."""
    lines = result.stdout.splitlines()
    found = [
        lines[i - 1] + "\n" + "\n".join(lines[i : i + 12])
        for i, line in enumerate(lines)
        if line.startswith("changed:")
    ]
    return "\n---\n".join(found) or output(result)


def acts_on(result) -> list[str]:
    """The services a run with tags said it acts on."""
    message = said(result, "say which services this run acts on")
    return sorted(message.split(", ")) if message else []


def test_tags_redeploy_the_tagged_role_and_nothing_else(deployed):
    target = deployed
    before = running(target)
    release = ("-e", f"pliers_release={target.version()}")
    result = target.play("deploy.yml", "--tags", "redis", "-e", "redis_maxmemory=300mb", *release)
    assert result.returncode == 0, output(result)
    assert recap_changed(result)[0] > 0, output(result)
    assert acts_on(result) == ["redis"], output(result)
    after = wait_for(lambda: (lambda now: now if set(now) == set(before) else None)(running(target)), timeout=120,
                     what="every service running")  # fmt: skip
    assert after["redis"] != before["redis"], "Redis was not re-deployed"
    assert {s: i for s, i in after.items() if s != "redis"} == {s: i for s, i in before.items() if s != "redis"}
    assert "maxmemory 300mb" in on(target, "cat /opt/pliers/local/secrets/redis/redis.conf")
    # Back to the inventory's setting, the same way.
    restored = target.play("deploy.yml", "--tags", "redis", *release)
    assert restored.returncode == 0 and recap_changed(restored)[0] > 0, output(restored)


@pytest.mark.parametrize("role", list(ROLES))
def test_each_service_roles_tag_acts_on_its_services_only(deployed, role):
    target = deployed
    before = running(target)
    result = target.play("deploy.yml", "--tags", role, "-e", f"pliers_release={target.version()}")
    assert result.returncode == 0, output(result)
    # Swarm: Prometheus's discovery reads the Docker API through its proxy, a monitoring service too.
    proxies = ["prometheus-docker-api"] if role == "monitoring" and target.mode == "swarm" else []
    assert acts_on(result) == sorted(ROLES[role] + proxies), output(result)
    assert recap_changed(result) == [0] * len(recap_changed(result)), output(result)
    assert running(target) == before


def test_check_diff_of_an_upgrade_with_a_pending_migration_says_what_and_changes_nothing(deployed):
    target = deployed
    if target.version() != "1.0.0":
        assert target.play("deploy.yml", "-e", "pliers_release=1.0.0").returncode == 0
    before = running(target)
    applied = target.sql("SELECT count(*) FROM schema_migrations")
    result = target.play("deploy.yml", "--check", "--diff", "-e", "pliers_release=1.1.0")
    said = result.stdout
    assert result.returncode == 0, output(result)
    assert "pliers/api:1.1.0" in said, "the diff shows the new image"
    if target.mode == "compose":
        for service in ("api", "ai-service", "web"):
            assert f"{service}: would roll" in said, output(result)
        assert re.search(r"-\s+image: \S+/pliers/api:1\.0\.0", said) and re.search(
            r"\+\s+image: \S+/pliers/api:1\.1\.0", said
        )
    assert "Migrations | find the pending migrations of api" in said, output(result)
    # Secret files are never shown (the services' passwords, Redis's admin user's hash).
    leaked = sorted(name for name, value in vault_values().items() if value in said)
    assert not leaked, f"the diff shows {', '.join(leaked)}"
    assert running(target) == before, "check mode changed a container"
    assert target.version() == "1.0.0"
    assert target.sql("SELECT count(*) FROM schema_migrations") == applied, "check mode applied a migration"


def test_a_service_of_the_users_own_is_deployed_routed_and_removed(deployed):
    target = deployed
    release = ("-e", f"pliers_release={target.version()}")
    extra = ("-e", json.dumps({"pliers_extra_roles": [str(ECHO_ROLE)], "echo_message": "hello-from-echo"}))
    added = target.play("deploy.yml", *extra, *release)
    assert added.returncode == 0, output(added)
    assert "echo" in added.stdout
    status, body = http(f"{target.edge}/echo/")
    assert (status, body.strip()) == (200, "hello-from-echo"), (status, body)
    again = target.play("deploy.yml", *extra, *release)
    assert again.returncode == 0 and recap_changed(again) == [0] * len(recap_changed(again)), changed_tasks(again)
    removed = target.play("deploy.yml", *release)
    assert removed.returncode == 0, output(removed)
    assert "echo" not in running(target)
    # The edge no longer routes /echo/ to it (the web frontend answers every path it does not route elsewhere).
    assert "hello-from-echo" not in http(f"{target.edge}/echo/")[1]


def test_compose_rollout_run_twice_repairs_then_changes_nothing(deployed):
    target = deployed
    if target.mode != "compose":
        pytest.skip("Compose's module")
    web = on(target, "docker ps -q --filter label=com.docker.compose.service=web")
    on(target, f"docker stop {web.split()[0]}")
    args = {"project_src": "/opt/pliers/local", "services": ["web"], "routes": {"web": 8080}, "edge": "edge",
            "upstreams_dir": "/opt/pliers/local/configs/edge/upstreams"}  # fmt: skip
    first = target.module("compose_rollout", args)
    assert first["changed"] is True and first["services"][0]["action"] == "repaired", first
    second = target.module("compose_rollout", args)
    assert second["changed"] is False and second["services"][0]["action"] == "unchanged", second


def test_stack_rollout_run_twice_prunes_then_finds_nothing_to_prune(deployed):
    target = deployed
    if target.mode != "swarm":
        pytest.skip("Swarm's module")
    # A secret version no service uses, as a changed secret leaves behind once the next deploy rotated the specs.
    unused = f"{STACK}_api_database_password_000000000000"
    on(target, f"printf unused | docker secret create --label com.docker.stack.namespace={STACK} {unused} -")
    args = {"stack": STACK, "prune": True, "timeout": 120}
    first = target.module("stack_rollout", args)
    # (Other versions may go too: a deploy that failed before `docker stack deploy` leaves its new ones unused.)
    assert unused in first["pruned"] and first["changed"] is False, first  # housekeeping, as the lock is
    assert unused not in on(target, "docker secret ls --format '{{.Name}}'")
    second = target.module("stack_rollout", args)
    assert second["pruned"] == [] and second["changed"] is False and not second["resumed"], second


# The actions that run on the controller: every other task that runs (not skipped) is a round trip to its host.
CONTROLLER_ACTIONS = {
    "ansible.builtin.assert", "ansible.builtin.debug", "ansible.builtin.fail", "ansible.builtin.set_fact",
    "ansible.builtin.group_by", "ansible.builtin.include_tasks", "ansible.builtin.include_role",
    "ansible.builtin.import_tasks", "ansible.builtin.import_role", "ansible.builtin.validate_argument_spec",
    "ansible.builtin.meta", "assert", "debug", "fail", "set_fact", "group_by", "include_tasks", "include_role",
    "validate_argument_spec", "meta",
}  # fmt: skip
# Compose: the lock, the probe, the host's files (packages, units and the certificate's ready included), the
# rollout (the owned volumes' check, the stores' accounts and the verification included), the release.
ROUND_TRIPS = {"compose": 5}


def test_a_noop_deploy_reaches_its_host_in_a_few_round_trips(deployed):
    target = deployed
    if target.mode not in ROUND_TRIPS:
        pytest.skip("no budget yet for the Swarm deployer's round trips (docker_stack alone makes several)")
    release = ("-e", f"pliers_release={target.version()}")
    # Whatever an earlier test left, converged first: the run measured is a no-op.
    converged = target.play("deploy.yml", *release)
    assert converged.returncode == 0, output(converged)
    environment = {**os.environ, "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json"}
    command = target.command("deploy.yml", *release)
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=environment, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    report = json.loads(result.stdout[result.stdout.index("{") :])
    trips = [
        f"{task['task']['name']} ({outcome.get('action')})"
        for play in report["plays"]
        for task in play["tasks"]
        for host, outcome in task["hosts"].items()
        if host == target.deployer.name
        and not outcome.get("skipped")
        and outcome.get("action") not in CONTROLLER_ACTIONS
    ]
    assert report["stats"][target.deployer.name]["changed"] == 0, "a no-op"
    assert len(trips) <= ROUND_TRIPS[target.mode], "round trips:\n" + "\n".join(trips)
