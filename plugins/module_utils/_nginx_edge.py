# Copyright (c) pliers.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The nginx edge of a Compose stack, as compose_rollout drives it (private to this collection).

One upstream file per routed service names the service's healthy containers; the follower in the edge's container
(roles/web/files/pliers-edge.sh) resolves those names, loads them and reloads nginx gracefully whenever an address
changes - at each rollout, and between deploys too (docs/architecture.md says why).
"""

from __future__ import annotations

import os
import tempfile
import time

from ansible_collections.pliers.deploy.plugins.module_utils._docker import DockerException

SYNC_TRIES = 5


class EdgeError(Exception):
    """The edge could not load its upstreams; the message names the container and what it said."""


def upstream(service: str, port: int, names: list[str]) -> str:
    """The nginx upstream block of a service: least_conn over its containers, with keepalive connections."""
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
    """The upstream files of the routed services, and the follower in the edge's containers that loads them.

    running() lists the edge's running containers, start() starts it (and what it depends on) when it does not
    run; both are given by the caller, which knows the project.
    """

    def __init__(self, service: str | None, directory: str | None, routes: dict, sync_command: list[str],
                 check_mode: bool, running, start, drain_command: list[str] = ()) -> None:  # fmt: skip
        self.service = service
        self.directory = directory
        self.routes = routes if service else {}
        self.sync_command = list(sync_command)
        self.drain_command = list(drain_command)
        self.check_mode = check_mode
        self._running = running
        self._start = start
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

    def point(self, service: str, names: list[str]) -> bool:
        """Write the service's upstream for these containers; True when the file changed."""
        if service not in self.routes:
            return False
        wanted = upstream(service, int(self.routes[service]), sorted(names))
        if self.current(service) == wanted:
            return False
        if not self.check_mode:
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
        if not self.service or not self.directory or self.check_mode:
            return False
        parent = os.path.dirname(os.path.normpath(self.directory))
        legacy = [f"upstream-{service}.conf" for service in self.routes]
        removed = [name for name in legacy if os.path.exists(os.path.join(parent, name))]
        for name in removed:
            os.unlink(os.path.join(parent, name))
        return bool(removed)

    def ensure_running(self) -> bool:
        """Start the edge when it does not run (a first deploy), and with it what it depends on.

        Until a service is healthy, its upstream holds a placeholder. True when anything was done.
        """
        if not self.service or self.check_mode:
            return False
        placeholders = [self.point(service, []) for service in self.routes if self.current(service) is None]
        if self._running():
            return any(placeholders)
        self._start()
        self.pending = False  # the edge loaded every upstream file as it started
        return True

    def load(self, *services: str) -> None:
        """Load these services' upstreams now, in one reload, even unchanged: a new container may carry an old one's
        name, not its address."""
        self.pending |= any(service in self.routes for service in services)
        self.flush()

    def flush(self) -> None:
        """Load the upstream files written so far."""
        if self.pending:
            self.reloaded |= self.sync()
            self.pending = False

    def sync(self, force: bool = False) -> bool:
        """Run the follower's sync in every running edge container; True when it reloaded or restarted anything."""
        if not self.service or self.check_mode:
            return False
        command = self.sync_command + (["--force"] if force else [])
        acted = False
        for container in self._running():
            # A few tries: an edge started a moment ago may not have written its master's pid yet.
            result = exec_with_tries(container, command, SYNC_TRIES)
            output = result.output.decode(errors="replace").strip()
            if result.exit_code != 0:
                raise EdgeError(
                    f"the edge {container.name} could not load its upstreams ({' '.join(command)}): {output}"
                )
            acted |= "reloaded" in output or "follower started" in output
        return acted

    def drain(self, seconds: float) -> None:
        """Wait until the workers the edge's last reload retired have finished the requests they hold (to containers
        about to stop), at most seconds: the drain command says when, in each running edge container. An edge that
        cannot say (no drain command, or a container started by an older script) is given the whole time."""
        deadline = time.monotonic() + seconds
        if self.service and self.drain_command and not self.check_mode:
            try:
                results = [
                    container.exec_run(
                        [*self.drain_command, str(min(int(max(0.0, deadline - time.monotonic()) * 10), 9999))]
                    )
                    for container in self._running()
                ]
            except DockerException:
                results = [None]
            if results and all(result is not None and result.exit_code == 0 for result in results):
                return
        time.sleep(max(0.0, deadline - time.monotonic()))
