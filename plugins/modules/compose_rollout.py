#!/usr/bin/python
# Copyright (c) pliers.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: compose_rollout
short_description: Roll stateless Compose services to their new definition without dropping a request
version_added: 0.2.0
description:
  - For each service in O(services), in order, whose running containers differ from the project's current
    definition (Compose's own configuration hash), starts the new containers beside the old ones, waits for
    their health, points the nginx edge at them (a graceful reload), waits O(drain) seconds, then stops and
    removes the old containers.
  - When a service's new containers do not turn healthy (unhealthy, exited, or not healthy within O(timeout)),
    removes them, leaves the old ones serving, stops, and fails with a message naming the service and what
    its health check last said.
  - With O(edge), writes one nginx C(upstream) block per routed service into O(upstreams_dir)
    (C(upstream-<service>.conf)), naming the service's containers, so the edge sends requests only to
    containers that passed their health check. An upstream file that differs from the containers also
    reloads the edge.
  - Starts the edge when it does not run (a first deploy), with placeholder upstreams; Compose starts the
    services it depends on with it, all at once. Containers of the current definition that are still starting
    are waited for, not replaced; each service's upstream is pointed at its containers as soon as they are
    healthy, so that a service started later can reach an earlier one through the edge.
  - With no O(services) and O(reload_edge), only reloads the edge, so that it resolves its upstreams' container
    names again (containers restarted outside a rollout may have new addresses).
  - Reports C(changed) when it rolled a service, rewrote an upstream file or reloaded the edge.
  - Runs the C(docker compose) CLI on the target, in O(project_src).
author:
  - Pliers team (@pliers)
attributes:
  check_mode:
    support: full
    description: Reports which services would roll; starts, stops and writes nothing.
  diff_mode:
    support: none
    description: Reports no diff.
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
    description: The stateless services to roll, in this order. Each needs a health check.
    type: list
    elements: str
    required: true
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
- name: Roll the application services behind the nginx edge
  pliers.deploy.compose_rollout:
    project_src: /opt/pliers/production
    services: [api, ai-service, web]
    routes: {api: 3000, ai-service: 3001, web: 8080}
    edge: edge
    upstreams_dir: /opt/pliers/production/configs/edge
"""

RETURN = r"""
services:
  description: What happened to each service, in order.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The service.
      type: str
    action:
      description: C(unchanged), C(rolled) (C(would roll) in check mode), C(started) (its containers of the
        current definition were still starting, as on a first deploy, and were waited for) or C(failed); the
        services after a failed one are not listed.
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
      description: Seconds the rollout of this service took.
      type: float
reloaded:
  description: Whether the edge was reloaded.
  returned: always
  type: bool
"""

import json
import os
import tempfile
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.pliers.deploy.plugins.module_utils._docker import DockerException, NotFound, docker_client

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
HASH_LABEL = "com.docker.compose.config-hash"
ONEOFF_LABEL = "com.docker.compose.oneoff"
RELOAD_TRIES = 5


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

    def run(self, *args: str) -> str:
        rc, out, err = self.module.run_command(self.base + list(args))
        if rc != 0:
            raise RolloutError(f"docker compose {' '.join(args)} failed (exit {rc}): {(err or out).strip()}")
        return out

    def hashes(self, services: list[str]) -> dict[str, str]:
        """Compose's configuration hash of each service: the label its up-to-date containers carry."""
        lines = self.run("config", "--hash", ",".join(services)).splitlines()
        return dict(line.split(None, 1) for line in lines if line.strip())

    def replicas(self, service: str) -> int:
        definition = self.model["services"].get(service)
        if definition is None:
            raise RolloutError(f"the project has no service {service}")
        if not definition.get("healthcheck") or definition["healthcheck"].get("disable"):
            raise RolloutError(f"service {service} has no health check: its rollout could not be gated on health")
        return int((definition.get("deploy") or {}).get("replicas", 1))

    def containers(self, service: str) -> list:
        filters = {"label": [f"{PROJECT_LABEL}={self.project}", f"{SERVICE_LABEL}={service}"]}
        found = self.client.containers.list(all=True, filters=filters)
        return sorted((c for c in found if c.labels.get(ONEOFF_LABEL) != "True"), key=lambda c: c.name)


def health(container) -> tuple[str, str]:
    """(status, what the health check last said) of a container: status starting/healthy/unhealthy/exited."""
    container.reload()
    state = container.attrs["State"]
    if state["Status"] != "running":
        return "exited", f"container {state['Status']} (exit code {state.get('ExitCode')})"
    checks = state.get("Health") or {}
    log = checks.get("Log") or []
    last = log[-1]["Output"].strip() if log else "no health check has run yet"
    return checks.get("Status", "starting"), last


def wait_healthy(containers: list, service: str, timeout: int) -> None:
    deadline = time.monotonic() + timeout
    while True:
        states = {c.name: health(c) for c in containers}
        failed = {name: state for name, state in states.items() if state[0] in ("unhealthy", "exited")}
        if failed:
            name, (status, last) = sorted(failed.items())[0]
            raise RolloutError(
                f"service {service}: the new container {name} is {status}; its health check last said: {last}"
            )
        if all(state[0] == "healthy" for state in states.values()):
            return
        if time.monotonic() >= deadline:
            name, (status, last) = sorted(states.items())[0]
            raise RolloutError(
                f"service {service}: the new container {name} did not turn healthy in {timeout}s (still {status}); "
                f"its health check last said: {last}"
            )
        time.sleep(1)


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
    """The nginx edge's upstream files and its graceful reload."""

    def __init__(self, module, compose: Compose) -> None:
        self.module = module
        self.compose = compose
        self.service = module.params["edge"]
        self.directory = module.params["upstreams_dir"]
        self.routes = module.params["routes"] if self.service else {}
        # Upstream files written but not loaded yet: reloading once after every service is enough, unless a
        # service about to be waited for reaches an earlier one through the edge.
        self.pending = False
        self.reloaded = False

    def path(self, service: str) -> str:
        return os.path.join(self.directory, f"upstream-{service}.conf")

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
        return True

    def ensure_running(self) -> bool:
        """Start the edge when it does not run (a first deploy), and with it what it depends on.

        Compose starts the routed services the edge depends on first, all at once (their health is waited for
        service by service afterwards); until a service is healthy, its upstream holds a placeholder.
        True when anything was done.
        """
        if not self.service or self.module.check_mode:
            return False
        placeholders = [self.point(service, []) for service in self.routes if self.current(service) is None]
        if any(c.status == "running" for c in self.compose.containers(self.service)):
            return any(placeholders)
        self.compose.run("up", "--detach", "--no-recreate", self.service)
        self.pending = False  # the edge loaded every upstream file as it started
        return True

    def flush(self) -> None:
        """Load the upstream files written so far."""
        if self.pending:
            self.reloaded |= self.reload()
            self.pending = False

    def reload(self) -> bool:
        """Test the edge's configuration, then reload it gracefully; False when the edge does not run yet."""
        if not self.service or self.module.check_mode:
            return False
        running = [c for c in self.compose.containers(self.service) if c.status == "running"]
        for container in running:
            # The reload gets a few tries: an edge started a moment ago may not have written its master's pid yet.
            for command, tries in ((["nginx", "-t", "-q"], 1), (["nginx", "-s", "reload"], RELOAD_TRIES)):
                result = exec_with_tries(container, command, tries)
                if result.exit_code != 0:
                    output = result.output.decode(errors="replace").strip()
                    raise RolloutError(
                        f"the edge {container.name} refused its new configuration ({' '.join(command)}): {output}"
                    )
        return bool(running)


def roll(module, compose: Compose, edge: Edge, service: str, desired_hash: str) -> dict:
    started = time.monotonic()
    replicas = compose.replicas(service)
    containers = compose.containers(service)
    serving = [c for c in containers if c.status == "running"]
    current = [c for c in serving if c.labels.get(HASH_LABEL) == desired_hash]
    states = [health(c)[0] for c in current]
    up_to_date = len(current) == replicas == len(containers) and all(s in ("healthy", "starting") for s in states)
    report = {"name": service, "action": "unchanged", "old": [], "new": [c.name for c in current], "seconds": 0.0}
    if up_to_date and "starting" in states and not module.check_mode:
        # Started with the edge (a first deploy): waited for, not replaced; what it reaches through the edge
        # must be loaded there first. Containers that do not turn healthy are removed, as a rollout's would be.
        report.update(action="started", seconds=0.0)
        edge.flush()
        try:
            wait_healthy(current, service, module.params["timeout"])
        except RolloutError:
            for container in current:
                container.remove(force=True)
            raise
        report["seconds"] = round(time.monotonic() - started, 1)
    if up_to_date:
        # Upstreams written but not yet loaded: the caller reloads the edge once, after every service.
        edge.point(service, current)
        return report
    report.update(action="would roll" if module.check_mode else "rolled", old=[c.name for c in containers])
    if module.check_mode:
        return report
    # Stopped leftovers serve nothing; Compose would restart them rather than create new ones.
    for container in containers:
        if container.status != "running":
            container.remove(force=True)
    before = {c.id for c in serving}
    # Not --no-deps: Compose would drop depends_on from the new containers' configuration hash.
    compose.run("up", "--detach", "--no-recreate", "--scale", f"{service}={len(serving) + replicas}", service)
    new = [c for c in compose.containers(service) if c.id not in before]
    try:
        wait_healthy(new, service, module.params["timeout"])
    except RolloutError:
        for container in new:
            container.remove(force=True)
        raise
    if edge.point(service, new):
        edge.flush()
        if serving:
            time.sleep(module.params["drain"])
    for container in serving:
        container.stop()
        container.remove()
    report.update(new=[c.name for c in new], seconds=round(time.monotonic() - started, 1))
    return report


def main() -> None:
    argument_spec = dict(
        project_src=dict(type="path", required=True),
        files=dict(type="list", elements="str", default=["compose.yaml"]),
        services=dict(type="list", elements="str", required=True),
        routes=dict(type="dict", default={}),
        edge=dict(type="str"),
        upstreams_dir=dict(type="path"),
        reload_edge=dict(type="bool", default=False),
        timeout=dict(type="int", default=180),
        drain=dict(type="float", default=2.0),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    if module.params["routes"] and module.params["edge"] and not module.params["upstreams_dir"]:
        module.fail_json(msg="upstreams_dir is required when an edge routes services")
    unrouted = sorted(set(module.params["routes"]) - set(module.params["services"]))
    if unrouted:
        module.fail_json(msg=f"routes name services that are not rolled: {', '.join(unrouted)}")
    client = docker_client(module)
    reports: list[dict] = []
    edge = None
    try:
        compose = Compose(module, client)
        edge = Edge(module, compose)
        hashes = compose.hashes(module.params["services"]) if module.params["services"] else {}
        edge_started = edge.ensure_running()
        for service in module.params["services"]:
            reports.append({"name": service, "action": "failed", "old": [], "new": [], "seconds": 0.0})
            reports[-1] = roll(module, compose, edge, service, hashes[service])
        # Upstreams rewritten without a rollout (a file edited by hand), or the edge's own configuration changed.
        rewritten = edge.pending
        if module.params["reload_edge"]:
            edge.pending = True
        edge.flush()
        reloaded = edge.reloaded
    except (RolloutError, DockerException, NotFound) as exc:
        module.fail_json(msg=str(exc), services=reports, reloaded=bool(edge and edge.reloaded))
    changed = edge_started or rewritten or reloaded or any(r["action"] != "unchanged" for r in reports)
    module.exit_json(changed=changed, services=reports, reloaded=reloaded)


if __name__ == "__main__":
    main()
