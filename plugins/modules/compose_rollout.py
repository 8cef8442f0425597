#!/usr/bin/python
# Copyright (c) pliers.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: compose_rollout
short_description: Bring a Compose project's services to their definition, health-gated, without dropping a request
version_added: 0.2.0
description:
  - Compares what runs with what the project defines, service by service, and repairs what differs, whatever
    the state it finds - containers stopped, removed, unhealthy, recreated by hand with another definition, too
    many or too few, or left side by side by a rollout that was interrupted.
  - The services in O(services) sit behind the nginx edge and are rolled. For each, in order, whose containers
    differ from the project's current definition (Compose's own configuration hash) or are not all running and
    healthy, the missing containers start beside the ones that serve, and once they are healthy the edge is
    pointed at the healthy containers of the current definition, O(drain) seconds pass, and the others are
    stopped and removed. When new containers do not turn healthy (unhealthy, exited, or not healthy within
    O(timeout)), they are removed and the old ones keep serving.
  - The services in O(in_place) are then converged in place, as C(docker compose up) would (created, started or
    recreated where they differ), and a running container of the current definition that is unhealthy is
    restarted; their health is waited for side by side. An in-place service that depends on a service that
    could not be brought back is left as it is (Compose would recreate that dependency in place).
  - A service that cannot be brought back does not stop the others. Once every service was tried, the module
    fails naming each service it could not bring back and what its health check last said.
  - With O(edge), writes one nginx C(upstream) block per routed service into O(upstreams_dir)
    (C(<service>.conf)), naming the service's healthy containers, then runs O(sync_command) in the edge,
    which resolves those names and reloads nginx gracefully when an address changed (the web role's follower,
    which also keeps doing so between deploys). A stale edge, or a follower that stopped, is repaired too.
  - Starts the edge when it does not run (a first deploy), with placeholder upstreams; Compose starts the
    services it depends on with it, all at once. Containers of the current definition that are still starting
    are waited for, not replaced; each service's upstream is pointed at its containers as soon as they are
    healthy, so that a service started later can reach an earlier one through the edge.
  - Reports C(changed) when it rolled, repaired, created, started or restarted a service, rewrote an upstream or
    reloaded the edge.
  - One rollout of a project at a time - a rollout still running on the host (the module of a deploy that was
    killed outlives its connection) is waited for, up to three times O(timeout).
  - Runs the C(docker compose) CLI on the target, in O(project_src).
author:
  - Pliers team (@pliers)
attributes:
  check_mode:
    support: full
    description: Reports which services would roll or be repaired; starts, stops and writes nothing.
  diff_mode:
    support: none
    description: Reports no diff; RV(services) says what each service needed.
options:
  project_src:
    description: The directory of the Compose project.
    type: path
    required: true
  files:
    description: The project's Compose files, relative to O(project_src).
    type: list
    elements: str
    default: [compose.yaml]
  services:
    description: The stateless services to roll behind the edge, in this order. Each needs a health check.
    type: list
    elements: str
    required: true
  in_place:
    description: The services to converge in place after O(services) (data services, the edge itself,
      exporters), as C(docker compose up) would.
    type: list
    elements: str
    default: []
    version_added: 0.2.0
  remove_orphans:
    description: Remove the containers of services the project no longer defines.
    type: bool
    default: false
    version_added: 0.2.0
  routes:
    description: The services the edge proxies, with the port it reaches their containers on.
    type: dict
    default: {}
  edge:
    description: The Compose service of the nginx edge to reload after an upstream changed; omit when the edge
      follows the containers by itself (Traefik).
    type: str
  upstreams_dir:
    description: The directory, bind-mounted into the edge, where the upstream files are written.
      Required when O(edge) routes O(routes).
    type: path
  sync_command:
    description: The command run in the edge's container after the upstream files changed, and on every run to
      check that the edge serves what they name; it prints C(reloaded) or C(follower started) when it repaired
      something, and its C(--force) argument reloads nginx anyway.
    type: list
    elements: str
    default: [sh, /etc/nginx/conf.d/pliers-edge.sh, sync]
    version_added: 0.2.0
  reload_edge:
    description: Reload the edge even when no upstream changed (its own configuration did).
    type: bool
    default: false
  timeout:
    description: Seconds to wait for a service's new containers to turn healthy.
    type: int
    default: 180
  drain:
    description: Seconds between switching the edge to the new containers and stopping the old ones, for the
      edge's old workers to finish the requests they hold.
    type: float
    default: 2.0
requirements:
  - the Python Docker SDK and the docker compose CLI on the target
"""

EXAMPLES = r"""
- name: Roll the application services behind the nginx edge, then converge the edge in place
  pliers.deploy.compose_rollout:
    project_src: /opt/pliers/production
    services: [api, ai-service, web]
    in_place: [edge]
    routes: {api: 3000, ai-service: 3001, web: 8080}
    edge: edge
    upstreams_dir: /opt/pliers/production/configs/edge/upstreams

- name: Bring the data services back to their definition, health-gated
  pliers.deploy.compose_rollout:
    project_src: /opt/pliers/production
    services: []
    in_place: [postgres, redis]
"""

RETURN = r"""
services:
  description: What happened to each service, in order (O(services), then O(in_place)).
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The service.
      type: str
    action:
      description: C(unchanged); for a rolled service C(rolled) (a new definition) or C(repaired) (containers
        missing, stopped, unhealthy or left over), C(would roll) or C(would repair) in check mode; C(started)
        (its containers of the current definition were still starting, as on a first deploy, and were waited
        for); for an in-place service C(converged) (created, started or recreated by Compose) or C(restarted)
        (unhealthy), C(would converge) or C(would restart) in check mode; C(failed); C(skipped) (depends on a
        service that failed).
      type: str
    reason:
      description: Why it was acted on, or why it failed (what its health check last said).
      type: str
    old:
      description: Names of the containers it replaced.
      type: list
      elements: str
    new:
      description: Names of the containers serving now.
      type: list
      elements: str
    seconds:
      description: Seconds it took.
      type: float
reloaded:
  description: Whether the edge was reloaded (or its follower started again).
  returned: always
  type: bool
upstreams:
  description: The services whose upstream file was written (their containers changed, or the file was edited).
  returned: always
  type: list
  version_added: 0.2.0
  elements: str
waited:
  description: Seconds spent waiting for another rollout of the project to end (the module of a killed deploy).
  returned: always
  type: float
  version_added: 0.2.0
orphans:
  description: The containers of services the project no longer defines, removed with O(remove_orphans).
  returned: always
  type: list
  version_added: 0.2.0
  elements: str
failures:
  description: The services that could not be brought back, each with what it last said.
  returned: always
  type: list
  version_added: 0.2.0
  elements: str
"""

import fcntl
import json
import os
import tempfile
import time
from contextlib import contextmanager

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.pliers.deploy.plugins.module_utils._docker import DockerException, NotFound, docker_client

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
HASH_LABEL = "com.docker.compose.config-hash"
ONEOFF_LABEL = "com.docker.compose.oneoff"
SYNC_TRIES = 5


class RolloutError(Exception):
    """A step failed; the message says which service and why."""


class Compose:
    """The docker compose CLI for one project, and the project's containers through the SDK."""

    def __init__(self, module, client) -> None:
        self.module = module
        self.client = client
        self.base = ["docker", "compose", "--project-directory", module.params["project_src"]]
        for name in module.params["files"]:
            self.base += ["--file", os.path.join(module.params["project_src"], name)]
        self.model = json.loads(self.run("config", "--format", "json"))
        self.project = self.model["name"]
        self.network_ids: set[str] | None = None

    def run(self, *args: str) -> str:
        rc, out, err = self.module.run_command(self.base + list(args))
        if rc != 0:
            raise RolloutError(f"docker compose {' '.join(args)} failed (exit {rc}): {(err or out).strip()}")
        return out

    def hashes(self, services: list[str]) -> dict[str, str]:
        """Compose's configuration hash of each service: the label its up-to-date containers carry."""
        lines = self.run("config", "--hash", ",".join(services)).splitlines()
        return dict(line.split(None, 1) for line in lines if line.strip())

    def definition(self, service: str) -> dict:
        definition = self.model["services"].get(service)
        if definition is None:
            raise RolloutError(f"the project has no service {service}")
        return definition

    def replicas(self, service: str) -> int:
        return int((self.definition(service).get("deploy") or {}).get("replicas", 1))

    def gated_replicas(self, service: str) -> int:
        """The replicas of a rolled service, which must have a health check to gate its rollout on."""
        healthcheck = self.definition(service).get("healthcheck")
        if not healthcheck or healthcheck.get("disable"):
            raise RolloutError("it has no health check: its rollout could not be gated on health")
        return self.replicas(service)

    def dependencies(self, service: str) -> set[str]:
        """Every service this one depends on, directly or through another."""
        found: set[str] = set()
        pending = [service]
        while pending:
            for dependency in self.definition(pending.pop()).get("depends_on") or {}:
                if dependency not in found:
                    found.add(dependency)
                    pending.append(dependency)
        return found

    def lost_networks(self, container) -> list[str]:
        """The networks a container is attached to that no longer exist (removed while it was stopped)."""
        if self.network_ids is None:
            self.network_ids = {network.id for network in self.client.networks.list()}
        attached = (container.attrs.get("NetworkSettings") or {}).get("Networks") or {}
        return sorted(name for name, endpoint in attached.items() if endpoint.get("NetworkID") not in self.network_ids)

    def containers(self, service: str) -> list:
        filters = {"label": [f"{PROJECT_LABEL}={self.project}", f"{SERVICE_LABEL}={service}"]}
        found = self.client.containers.list(all=True, filters=filters)
        return sorted((c for c in found if c.labels.get(ONEOFF_LABEL) != "True"), key=lambda c: c.name)


def health(container) -> tuple[str, str]:
    """(status, what the health check last said) of a container: status starting/healthy/unhealthy/exited.

    A running container without a health check counts as healthy.
    """
    container.reload()
    state = container.attrs["State"]
    if state["Status"] != "running":
        return "exited", f"container {state['Status']} (exit code {state.get('ExitCode')})"
    checks = state.get("Health")
    if not checks:
        return "healthy", "running (no health check)"
    log = checks.get("Log") or []
    last = log[-1]["Output"].strip() if log else "no health check has run yet"
    return checks.get("Status", "starting"), last


def assess(containers: list, timeout: int, out_of_time: bool) -> bool:
    """True once every container is healthy; raises RolloutError when one failed (or time is out)."""
    states = {c.name: health(c) for c in containers}
    failed = {name: state for name, state in states.items() if state[0] in ("unhealthy", "exited")}
    if failed:
        name, (status, last) = sorted(failed.items())[0]
        raise RolloutError(f"the container {name} is {status} (its health check last said: {last})")
    waiting = {name: state for name, state in states.items() if state[0] != "healthy"}
    if waiting and out_of_time:
        name, (status, last) = sorted(waiting.items())[0]
        raise RolloutError(
            f"the container {name} did not turn healthy in {timeout}s (still {status}; "
            f"its health check last said: {last})"
        )
    return not waiting


def wait_all_healthy(groups: dict[str, list], timeout: int) -> dict[str, str]:
    """Wait side by side for each service's containers to be healthy; the services that failed, with why."""
    deadline = time.monotonic() + timeout
    failures: dict[str, str] = {}
    pending = dict(groups)
    while pending:
        out_of_time = time.monotonic() >= deadline
        for service, containers in list(pending.items()):
            try:
                if assess(containers, timeout, out_of_time):
                    del pending[service]
            except RolloutError as exc:
                failures[service] = str(exc)
                del pending[service]
        if pending:
            time.sleep(1)
    return failures


def wait_healthy(containers: list, service: str, timeout: int) -> None:
    failures = wait_all_healthy({service: containers}, timeout)
    if failures:
        raise RolloutError(failures[service])


def wait_healthy_or_remove(containers: list, service: str, timeout: int) -> None:
    """Wait for new containers' health; remove them if they fail, so that what served keeps serving."""
    try:
        wait_healthy(containers, service, timeout)
    except RolloutError:
        for container in containers:
            container.remove(force=True)
        raise


def upstream(service: str, port: int, names: list[str]) -> str:
    servers = [f"    server {name}:{port} max_fails=3 fail_timeout=10s;" for name in names]
    # nginx refuses an upstream without servers: with no container, the edge answers 502.
    servers = servers or ["    server 127.0.0.1:9 down;"]
    return "\n".join(
        [
            f"# Managed by pliers.deploy (compose_rollout): the healthy containers of {service}.",
            f"upstream {service} {{",
            "    least_conn;",
            *servers,
            "    keepalive 16;",
            "}",
            "",
        ]
    )


def exec_with_tries(container, command: list[str], tries: int):
    """Run command in the container until it succeeds, at most tries times a second apart; the last result."""
    for attempt in range(tries):
        result = container.exec_run(command)
        if result.exit_code == 0 or attempt == tries - 1:
            return result
        time.sleep(1)
    raise ValueError("tries must be 1 or more")


class Edge:
    """The nginx edge's upstream files, and the follower in the edge that loads them."""

    def __init__(self, module, compose: Compose) -> None:
        self.module = module
        self.compose = compose
        self.service = module.params["edge"]
        self.directory = module.params["upstreams_dir"]
        self.routes = module.params["routes"] if self.service else {}
        # Upstream files written but not loaded yet: loading once after every service is enough, unless a
        # service about to be waited for reaches an earlier one through the edge.
        self.pending = False
        self.reloaded = False
        self.rewritten: list[str] = []

    def path(self, service: str) -> str:
        return os.path.join(self.directory, f"{service}.conf")

    def current(self, service: str) -> str | None:
        try:
            with open(self.path(service), encoding="utf-8") as handle:
                return handle.read()
        except FileNotFoundError:
            return None

    def point(self, service: str, containers: list) -> bool:
        """Write the service's upstream for these containers; True when the file changed."""
        if service not in self.routes:
            return False
        wanted = upstream(service, int(self.routes[service]), [c.name for c in containers])
        if self.current(service) == wanted:
            return False
        if not self.module.check_mode:
            os.makedirs(self.directory, mode=0o755, exist_ok=True)
            # Atomic: the edge never reads half a file (the directory, not the file, is bind-mounted).
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".upstream-")
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(wanted)
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.path(service))
        self.pending = True
        if service not in self.rewritten:
            self.rewritten.append(service)
        return True

    def remove_legacy(self) -> bool:
        """Remove the upstream files 0.1.0 wrote beside the edge's configuration, which nginx would load twice."""
        if not self.service or not self.directory or self.module.check_mode:
            return False
        parent = os.path.dirname(os.path.normpath(self.directory))
        legacy = [f"upstream-{service}.conf" for service in self.routes]
        removed = [name for name in legacy if os.path.exists(os.path.join(parent, name))]
        for name in removed:
            os.unlink(os.path.join(parent, name))
        return bool(removed)

    def running(self) -> list:
        return [c for c in self.compose.containers(self.service) if c.status == "running"] if self.service else []

    def ensure_running(self) -> bool:
        """Start the edge when it does not run (a first deploy), and with it what it depends on.

        Compose starts the routed services the edge depends on first, all at once (their health is waited for
        service by service afterwards); until a service is healthy, its upstream holds a placeholder.
        True when anything was done.
        """
        if not self.service or self.module.check_mode:
            return False
        placeholders = [self.point(service, []) for service in self.routes if self.current(service) is None]
        if self.running():
            return any(placeholders)
        self.compose.run("up", "--detach", "--no-recreate", self.service)
        self.pending = False  # the edge loaded every upstream file as it started
        return True

    def load(self, service: str) -> None:
        """Load the service's upstream now, even unchanged: a new container may carry an old one's name, not its
        address."""
        self.pending |= service in self.routes
        self.flush()

    def flush(self) -> None:
        """Load the upstream files written so far."""
        if self.pending:
            self.reloaded |= self.sync()
            self.pending = False

    def sync(self, force: bool = False) -> bool:
        """Run the follower's sync in every running edge container; True when it reloaded or restarted anything."""
        if not self.service or self.module.check_mode:
            return False
        command = list(self.module.params["sync_command"]) + (["--force"] if force else [])
        acted = False
        for container in self.running():
            # A few tries: an edge started a moment ago may not have written its master's pid yet.
            result = exec_with_tries(container, command, SYNC_TRIES)
            output = result.output.decode(errors="replace").strip()
            if result.exit_code != 0:
                raise RolloutError(
                    f"the edge {container.name} could not load its upstreams ({' '.join(command)}): {output}"
                )
            acted |= "reloaded" in output or "follower started" in output
        return acted


def describe_drift(running: list, stopped: list, states: dict, desired_hash: str, replicas: int, keep: list) -> str:
    """Why a rolled service's containers differ from what should run, in a few words."""
    reasons = []
    if any(c.labels.get(HASH_LABEL) != desired_hash for c in running):
        reasons.append("a new definition")
    reasons += [f"{c.name} is {c.status}" for c in stopped]
    reasons += [f"{c.name} is unhealthy ({states[c.id][1][:120]})" for c in running if states[c.id][0] == "unhealthy"]
    serving = [c for c in running if c.labels.get(HASH_LABEL) == desired_hash and states[c.id][0] != "unhealthy"]
    if len(keep) < replicas and not reasons:
        reasons.append(f"{replicas - len(keep)} of {replicas} containers missing")
    elif len(serving) > replicas:
        reasons.append(f"{len(serving)} containers for {replicas} replicas")
    return "; ".join(reasons) or "containers left over"


def roll(module, compose: Compose, edge: Edge, service: str, desired_hash: str) -> dict:
    started = time.monotonic()
    replicas = compose.gated_replicas(service)
    containers = compose.containers(service)
    running = [c for c in containers if c.status == "running"]
    stopped = [c for c in containers if c.status != "running"]
    states = {c.id: health(c) for c in running}
    # The containers of the current definition that serve or are about to: the healthy ones first.
    current = [
        c for c in running if c.labels.get(HASH_LABEL) == desired_hash and states[c.id][0] in ("healthy", "starting")
    ]
    keep = sorted(current, key=lambda c: (states[c.id][0] != "healthy", c.name))[:replicas]
    starting = [c for c in keep if states[c.id][0] == "starting"]
    report = {"name": service, "action": "unchanged", "reason": "", "old": [], "new": [c.name for c in keep]}
    if len(keep) == replicas and len(containers) == replicas:
        if starting and not module.check_mode:
            # Started with the edge (a first deploy): waited for, not replaced; what it reaches through the edge
            # must be loaded there first.
            report.update(action="started", reason="its containers were starting")
            edge.flush()
            wait_healthy_or_remove(starting, service, module.params["timeout"])
        # Upstreams written but not yet loaded: the caller loads them once, after every service.
        edge.point(service, keep)
        return dict(report, seconds=round(time.monotonic() - started, 1))
    new_definition = any(c.labels.get(HASH_LABEL) != desired_hash for c in containers)
    action = "rolled" if new_definition else "repaired"
    report.update(
        action={"rolled": "would roll", "repaired": "would repair"}[action] if module.check_mode else action,
        reason=describe_drift(running, stopped, states, desired_hash, replicas, keep),
        old=[c.name for c in containers if c not in keep],
    )
    if module.check_mode:
        return dict(report, seconds=0.0)
    # Stopped leftovers serve nothing; Compose would restart them rather than create new ones.
    for container in stopped:
        container.remove(force=True)
    new = []
    missing = replicas - len(keep)
    if missing > 0:
        # What the new containers reach through the edge (an earlier service) must be loaded there first.
        edge.flush()
        before = {c.id for c in running}
        # Not --no-deps: Compose would drop depends_on from the new containers' configuration hash.
        compose.run("up", "--detach", "--no-recreate", "--scale", f"{service}={len(running) + missing}", service)
        new = [c for c in compose.containers(service) if c.id not in before]
        wait_healthy_or_remove(new, service, module.params["timeout"])
    if starting:
        wait_healthy_or_remove(starting, service, module.params["timeout"])
    serving = keep + new
    retired = [c for c in running if c not in keep]
    repointed = edge.point(service, serving)
    edge.load(service)
    if repointed and retired:
        time.sleep(module.params["drain"])
    for container in retired:
        container.stop()
        container.remove()
    report.update(new=[c.name for c in serving], seconds=round(time.monotonic() - started, 1))
    return report


def converge_in_place(module, compose: Compose, services: list[str], hashes: dict, failed: set[str]) -> list[dict]:
    """Converge services in place, as docker compose up would; unhealthy containers are restarted."""
    started = time.monotonic()
    reports: dict[str, dict] = {}
    to_up: list[str] = []
    to_restart: list = []
    to_remove: list = []
    for service in services:
        report = {"name": service, "action": "unchanged", "reason": "", "old": [], "new": [], "seconds": 0.0}
        reports[service] = report
        containers = compose.containers(service)
        replicas = compose.replicas(service)
        reasons = [] if containers else ["no container"]
        if any(c.labels.get(HASH_LABEL) != hashes[service] for c in containers):
            reasons.append("a new definition")
        if containers and len(containers) != replicas:
            reasons.append(f"{len(containers)} containers for {replicas} replicas")
        reasons += [f"{c.name} is {c.status}" for c in containers if c.status != "running"]
        # A stopped container attached to a network that was removed cannot start again: Compose creates the
        # network anew, so the container is removed first and Compose creates it anew too.
        stranded = [
            (c, lost) for c in containers if c.status != "running" for lost in [compose.lost_networks(c)] if lost
        ]
        reasons += [f"{c.name}'s network {', '.join(lost)} is gone" for c, lost in stranded]
        blocked = sorted(compose.dependencies(service) & failed)
        if reasons and blocked:
            report.update(
                action="skipped",
                reason=f"{'; '.join(reasons)}, but it depends on {', '.join(blocked)}, which could not be brought back",
            )
            continue
        if reasons:
            to_up.append(service)
            to_remove += [container for container, _lost in stranded]
            report.update(action="would converge" if module.check_mode else "converged", reason="; ".join(reasons))
            continue
        unhealthy = [(c, last) for c in containers for status, last in [health(c)] if status == "unhealthy"]
        if unhealthy:
            to_restart += [container for container, _last in unhealthy]
            report.update(
                action="would restart" if module.check_mode else "restarted",
                reason="; ".join(f"{c.name} was unhealthy ({last[:120]})" for c, last in unhealthy),
            )
    if module.check_mode:
        return list(reports.values())
    for container in to_remove:
        container.remove(force=True)
    if to_up:
        try:
            compose.run("up", "--detach", *to_up)
        except RolloutError:
            # One service's failure (a port taken, a missing image) fails the whole command: try each alone to know.
            for service in to_up:
                try:
                    compose.run("up", "--detach", service)
                except RolloutError as exc:
                    reports[service].update(action="failed", reason=str(exc))
    for container in to_restart:
        container.restart()
    waiting = {
        service: compose.containers(service)
        for service, report in reports.items()
        if report["action"] not in ("skipped", "failed")
    }
    for service, reason in wait_all_healthy(waiting, module.params["timeout"]).items():
        reports[service].update(action="failed", reason=reason)
    for report in reports.values():
        report["new"] = [c.name for c in compose.containers(report["name"])] if report["action"] != "skipped" else []
        if report["action"] not in ("unchanged", "skipped"):
            report["seconds"] = round(time.monotonic() - started, 1)
    return list(reports.values())


def remove_orphans(module, compose: Compose) -> list[str]:
    """Containers of services the project no longer defines (not one-off runs); removed outside check mode."""
    found = compose.client.containers.list(all=True, filters={"label": f"{PROJECT_LABEL}={compose.project}"})
    orphans = [
        c
        for c in found
        if c.labels.get(SERVICE_LABEL) not in compose.model["services"] and c.labels.get(ONEOFF_LABEL) != "True"
    ]
    if not module.check_mode:
        for container in orphans:
            container.remove(force=True)
    return sorted(c.name for c in orphans)


@contextmanager
def one_rollout_at_a_time(module, directory: str, wait: int):
    """Hold the project's rollout lock: a rollout whose deploy was killed may still run on the host (its module
    outlives the controller's connection); the next one waits for it to end rather than act beside it."""
    if module.check_mode:
        yield 0.0
        return
    fd = os.open(os.path.join(directory, ".rollout.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    started = time.monotonic()
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() - started > wait:
                    module.fail_json(
                        msg=f"another rollout of the project in {directory} still runs after {wait}s "
                        "(the module of a deploy that was killed?)",
                        services=[],
                        failures=[],
                    )
                time.sleep(1)
        yield round(time.monotonic() - started, 1)
    finally:
        os.close(fd)


def main() -> None:
    argument_spec = dict(
        project_src=dict(type="path", required=True),
        files=dict(type="list", elements="str", default=["compose.yaml"]),
        services=dict(type="list", elements="str", required=True),
        in_place=dict(type="list", elements="str", default=[]),
        remove_orphans=dict(type="bool", default=False),
        routes=dict(type="dict", default={}),
        edge=dict(type="str"),
        upstreams_dir=dict(type="path"),
        sync_command=dict(type="list", elements="str", default=["sh", "/etc/nginx/conf.d/pliers-edge.sh", "sync"]),
        reload_edge=dict(type="bool", default=False),
        timeout=dict(type="int", default=180),
        drain=dict(type="float", default=2.0),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    if params["routes"] and params["edge"] and not params["upstreams_dir"]:
        module.fail_json(msg="upstreams_dir is required when an edge routes services")
    unrouted = sorted(set(params["routes"]) - set(params["services"]))
    if unrouted:
        module.fail_json(msg=f"routes name services that are not rolled: {', '.join(unrouted)}")
    twice = sorted(set(params["services"]) & set(params["in_place"]))
    if twice:
        module.fail_json(msg=f"services are either rolled or converged in place, not both: {', '.join(twice)}")
    client = docker_client(module)
    reports: list[dict] = []
    edge = None
    orphans: list[str] = []
    waited = 0.0
    try:
        with one_rollout_at_a_time(module, params["project_src"], 3 * params["timeout"]) as waited:
            compose = Compose(module, client)
            edge = Edge(module, compose)
            wanted = params["services"] + params["in_place"]
            hashes = compose.hashes(wanted) if wanted else {}
            edge_started = edge.remove_legacy() | edge.ensure_running()
            # An edge serving stale addresses, or whose follower stopped, would fail the health of what reaches
            # another service through it: repaired before anything is rolled.
            if params["services"]:
                edge.reloaded |= edge.sync()
            for service in params["services"]:
                try:
                    reports.append(roll(module, compose, edge, service, hashes[service]))
                except (RolloutError, DockerException, NotFound) as exc:
                    # A container gone between two looks, an engine error: this service only.
                    reports.append({"name": service, "action": "failed", "reason": str(exc), "old": [], "new": []})
            edge.flush()
            failed = {r["name"] for r in reports if r["action"] == "failed"}
            reports += converge_in_place(module, compose, params["in_place"], hashes, failed)
            if params["remove_orphans"]:
                orphans = remove_orphans(module, compose)
            # What the edge serves, checked on every run: upstreams rewritten by hand, a stopped follower, or the
            # edge's own configuration changed (reload_edge).
            if edge.service:
                try:
                    edge.reloaded |= edge.sync(force=params["reload_edge"])
                except RolloutError as exc:
                    reports.append({"name": edge.service, "action": "failed", "reason": str(exc), "old": [], "new": []})
    except (RolloutError, DockerException, NotFound) as exc:
        module.fail_json(
            msg=str(exc),
            services=reports,
            reloaded=bool(edge and edge.reloaded),
            upstreams=edge.rewritten if edge else [],
            orphans=orphans,
            waited=waited,
            failures=[],
        )
    failures = [f"{r['name']}: {r['reason']}" for r in reports if r["action"] in ("failed", "skipped")]
    changed = (
        edge_started
        or edge.reloaded
        or bool(edge.rewritten)
        or bool(orphans)
        # Waiting for containers that were starting changed nothing.
        or any(r["action"] not in ("unchanged", "started", "failed", "skipped") for r in reports)
    )
    result = dict(
        changed=changed,
        services=reports,
        reloaded=edge.reloaded,
        upstreams=edge.rewritten,
        orphans=orphans,
        waited=waited,
        failures=failures,
    )
    if failures:
        module.fail_json(msg="could not bring back " + "; ".join(failures), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
