#!/usr/bin/python
# Copyright (c) pliers.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: compose_rollout
short_description: Bring a Compose project's files and services to their definition, health-gated, without dropping
  a request
version_added: 0.1.0
description:
  - Checks a host's whole desired state in one run - the stack's files, its images, its containers' definitions
    and health - and repairs what differs, whatever the state it finds - files edited, containers stopped,
    removed, unhealthy, recreated by hand with another definition, too many or too few, or left side by side by a
    rollout that was interrupted.
  - First writes O(write) (the stack's secret and configuration files and the project file itself, as
    M(pliers.deploy.stack_files) would), then pulls the images the services it acts on lack, first those of the
    stores of O(stores) and of what they and the services of O(services) depend on, then the others beside the
    data services' start and the accounts. Each image of that second pull is first asked of its registry, so that
    a tag the registry does not hold fails the run before anything changes; a pull that fails later (the network,
    a full disk) fails it before anything rolls. What of O(first) needs one of those images (its own, or a
    dependency's) starts once the second pull has ended.
  - Then converges O(first) in place (the data services), health-gated, side by side, and brings each store of
    O(stores) to the accounts the services log in with (as M(pliers.deploy.postgres_access) and
    M(pliers.deploy.redis_access) do, through the store's own container), so that a rotated password's new login
    exists before the first container that uses it; the services of O(first) that log in to a store (the
    exporters) converge once it is. What of O(first) is no store and no dependency of a service of O(services)
    (monitoring, the exporters) starts then too (once its image is pulled), but its health is waited for at the
    end of the run (by the next run, when this one holds for migrations), not before the rollout. With
    O(remove_orphans), once every service is at its definition and answers through the edge, what no service uses
    any more (a rotated password's old login or password) is dropped, when the first pass found any.
  - The services in O(services) are rolled. Each whose containers differ from the project's current definition
    (Compose's own configuration hash) or are not all running and healthy gets its missing containers started
    beside the ones that serve - all such services at once, created by one C(docker compose up --no-start) and
    started side by side, since the services they depend on still serve healthy (Compose itself would start a
    service only once the new containers of what it depends on are healthy; where a dependency has nothing
    healthy, Compose starts them in its order) - and as soon as the new containers of services are healthy, the
    edge is pointed at their healthy containers of the current definition, in one reload; then, once the edge's old
    workers have finished the requests they hold (at most O(drain) seconds), the others are stopped and removed,
    side by side. When new containers do not turn healthy (unhealthy, exited, or not
    healthy within O(timeout)), they are removed and the old ones keep serving.
  - With O(hold), stops after O(first) when one of those rolled services needs acting on, so that the caller can
    run their migrations before they roll (RV(held)); nothing else is changed then. When O(migrations) says how,
    it first asks the service's new image which migrations are pending, and goes on rolling when none is (most
    releases), in the same run. When the stores already run at their definition (a release), it asks beside the
    data services' convergence and the accounts (once the images pulled beside them are here), and asks again
    after them if that failed (a rotated password).
    In check mode it goes on, and reports what it would do.
  - The services in O(in_place) are then converged in place, as C(docker compose up) would (created, started or
    recreated where they differ), and a running container of the current definition that is unhealthy is
    restarted; their health is waited for side by side. A service that depends on a service that could not be
    brought back is left as it is (Compose would recreate that dependency in place).
  - A service that cannot be brought back does not stop the others. Once every service was tried, the module
    fails naming each service it could not bring back and what its health check last said. When a store, or a
    service of O(first) that a rolled service depends on, could not be brought back and O(hold) would hold,
    nothing is rolled.
  - With O(edge), the nginx edge's upstream files in O(upstreams_dir) name each routed service's healthy
    containers, and O(sync_command) runs in the edge to load them; it also reloads the edge when a file of
    O(write) that the edge reloads in place changed. A stale edge, or a follower that stopped, is repaired too.
    The edge is started when it does not run (a first deploy), with placeholder upstreams; Compose starts the
    services it depends on with it, all at once, and each is routed as soon as it is healthy. What of O(in_place)
    depends on the edge (its exporter) starts in the same command, rather than after the rollout.
  - Reports C(changed) when it wrote a file, pulled an image, rolled, repaired, created, started or restarted a
    service, rewrote an upstream or reloaded the edge.
  - One rollout of a project at a time - a rollout still running on the host (the module of a deploy that was
    killed outlives its connection) is waited for, up to three times O(timeout).
  - Runs the C(docker compose) CLI on the target, in O(project_src).
author:
  - Pliers team (@pliers)
extends_documentation_fragment:
  - pliers.deploy._attributes
  - pliers.deploy._attributes.actiongroup_deploy
  - pliers.deploy._files.write
attributes:
  check_mode:
    support: full
    details: Reports which files would change, which images would be pulled and which services would roll or be
      repaired, judged against the new project file; starts, stops and writes nothing.
  diff_mode:
    support: partial
    details: Shows a diff of each file of O(write) that is not secret; RV(services) says what each service needed.
    version_added: 0.2.0
  action_group:
    version_added: 0.2.0
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
  pull:
    description: Pull the images the services this run acts on lack (those the data services need before they
      start, the others beside the data services' start).
    type: bool
    default: true
    version_added: 0.2.0
  first:
    description: Services converged in place before anything else - the data services, waited for then, and what
      needs only them (monitoring), waited for at the end.
    type: list
    elements: str
    default: []
    version_added: 0.2.0
  hold:
    description: Rolled services whose migrations must run before they roll - when one needs acting on, the module
      stops after O(first) and names it in RV(held).
    type: list
    elements: str
    default: []
    version_added: 0.2.0
  migrations:
    description:
      - How to ask a service of O(hold) for its pending migrations - its image's status command, run in a one-off
        container on its network as M(pliers.deploy.migrate) runs it. A service of O(hold) with none is held
        whenever it needs acting on; so is one whose status command fails (the caller's migrations step reports
        why).
      - The stack model's C(stack_plan) gives each entry as it is.
    type: list
    elements: dict
    default: []
    version_added: 0.2.0
    suboptions:
      service:
        description: The service of O(hold) the entry is for.
        type: str
        required: true
      image:
        description: The image to ask (the new release's).
        type: str
        required: true
      network:
        description: The project's network to run on, without the project's prefix.
        type: str
        required: true
      environment:
        description: The container's environment.
        type: dict
        default: {}
      secrets:
        description: The secret files mounted read-only under C(/run/secrets), each with C(file) and C(target);
          the paths, never the values.
        type: list
        elements: dict
        default: []
      status_command:
        description: The command that prints the migrations as JSON (pending, applied).
        type: list
        elements: str
        default: [pliers, migrate, status]
      backup_first:
        description: Accepted as C(stack_plan) gives it; the caller's migrations step reads it.
        type: bool
        default: true
  stores:
    description:
      - The data stores (services of O(first)) and the accounts the services log in to them with. A store that
        cannot be reached once O(first) is up stops the run before anything rolls (in check mode, it is reported).
    type: list
    elements: dict
    default: []
    version_added: 0.2.0
    suboptions:
      service:
        description: The store's service (in O(first)); its containers are reached on O(stores[].network).
        type: str
        required: true
      kind:
        description: Which store it is.
        type: str
        required: true
        choices: [postgres, redis]
      image:
        description: The store's image, for a one-off client when its own container does not run here.
        type: str
        required: true
      network:
        description: The project's network the store is reached on (its name in the project file).
        type: str
        required: true
      port:
        description: The port the store listens on.
        type: int
        required: true
      database:
        description: For C(postgres), the database whose roles and privileges are brought.
        type: str
        default: ""
      admin_user:
        description: The store's admin (PostgreSQL's superuser, Redis's admin user).
        type: str
        required: true
      admin_password_file:
        description: The admin's password file on the host, as the store's container mounts it.
        type: path
        required: true
      accounts:
        description: The accounts, as M(pliers.deploy.postgres_access) or M(pliers.deploy.redis_access) takes them.
        type: list
        elements: dict
        default: []
        suboptions:
          name:
            description: The login role or user.
            type: str
            required: true
          password:
            description: Its password (never logged).
            type: str
            required: true
          privileges:
            description: C(owner), C(dml) or C(monitor) for C(postgres); C(readwrite), C(monitor) or C(backup) for
              C(redis).
            type: str
            required: true
          group:
            description: For a C(dml) account, its group role.
            type: str
          service:
            description: The service that logs in as it (for messages only).
            type: str
  owned_volumes:
    description:
      - The named volumes whose every file is their service's user's (the stack model's C(owned) volumes). Before
        anything starts, a volume with a file of another owner (an earlier release ran the service as another user)
        has its service's containers stopped and every file handed to that user; the run starts them again. A volume
        not made yet is made, empty and its top owned by that user (the service mounts it without the image's
        content).
    type: list
    elements: dict
    default: []
    version_added: 0.2.0
    suboptions:
      service:
        description: The service that mounts it.
        type: str
        required: true
      volume:
        description: The volume's name in the project (without the project's prefix).
        type: str
        required: true
      uid:
        description: The owner its files are handed to.
        type: int
        required: true
      gid:
        description: Their group.
        type: int
        required: true
  accounts_brought:
    description:
      - The stores of O(stores) whose accounts an earlier run of this deploy brought, each with what that run found
        to drop (its RV(prunable)), as the run that stopped for migrations returns them. Their accounts are not
        brought again; after the rollout, only those with something to drop are pruned.
    type: dict
    default: {}
    version_added: 0.2.0
  services:
    description: The stateless services to roll behind the edge. Each needs a health check.
    type: list
    elements: str
    required: true
  in_place:
    description: The services to converge in place after O(services) (the edge itself, exporters), as
      C(docker compose up) would.
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
    description: Reload the edge even when none of its files and no upstream changed.
    type: bool
    default: false
  timeout:
    description: Seconds to wait for a service's new containers to turn healthy.
    type: int
    default: 180
  drain:
    description: At most this many seconds between switching the edge to the new containers and stopping the old
      ones, for the edge's old workers to finish the requests they hold; less once O(drain_command) says they did.
    type: float
    default: 2.0
  drain_command:
    description: The command run in the edge's container, with a limit in tenths of a second appended, that returns
      once the workers its last reload retired have finished their requests (or the limit passed). When it fails,
      or is empty, the whole O(drain) is waited.
    type: list
    elements: str
    default: [sh, /etc/nginx/conf.d/pliers-edge.sh, drained]
    version_added: 0.2.0
  verify:
    description:
      - Once every service is at its definition, HTTP endpoints (through the edge) to check, as
        M(pliers.deploy.health_check)'s O(pliers.deploy.health_check#module:targets) with a C(url) - each must answer
        its C(status) (200), C(json) fields and C(body_regex) in the same round, within O(verify_timeout); the module
        fails naming each that did not. Not in check mode, nor when the run stopped for migrations (O(hold)).
    type: list
    elements: dict
    default: []
    version_added: 0.2.0
    suboptions:
      name:
        description: What the endpoint is, in messages.
        type: str
      url:
        description: The URL.
        type: str
        required: true
      status:
        description: The status it must answer.
        type: int
        default: 200
      json:
        description: Fields the JSON body must have, by dotted path, with their expected values.
        type: dict
      body_regex:
        description: A regular expression the body must match.
        type: str
      host:
        description: The host name to ask as (the C(Host) header, and the TLS server name over HTTPS), the URL giving
          the address - an edge that answers only its server names, reached by address.
        type: str
  verify_timeout:
    description: Seconds the endpoints of O(verify) may take to pass.
    type: int
    default: 120
    version_added: 0.2.0
  validate_certs:
    description: Verify the HTTPS certificates of O(verify)'s endpoints.
    type: bool
    default: true
    version_added: 0.2.0
requirements:
  - the Python Docker SDK and the docker compose CLI on the target
"""

EXAMPLES = r"""
- name: Write the stack's files, bring the data services up, roll the application services behind the nginx edge
  pliers.deploy.compose_rollout:
    project_src: /opt/pliers/production
    write:
      directories: [{path: /opt/pliers/production, mode: "0750"}]
      files:
        - {path: /opt/pliers/production/compose.yaml, content: "{{ project | to_nice_yaml }}", mode: "0640",
           secret: false, validate: docker compose --file %s config --quiet}
    first: [postgres, redis]
    services: [api, ai-service, web]
    in_place: [edge]
    routes: {api: 3000, ai-service: 3001, web: 8080}
    edge: edge
    upstreams_dir: /opt/pliers/production/configs/edge/upstreams

- name: Bring the data services back to their definition, health-gated
  pliers.deploy.compose_rollout:
    project_src: /opt/pliers/production
    services: []
    first: [postgres, redis]
"""

RETURN = r"""
services:
  description: What happened to each service, in order (O(first), O(services), then O(in_place)).
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
      version_added: 0.2.0
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
held:
  description: The services of O(hold) that need acting on, when the module stopped after O(first) for their
    migrations to run (empty otherwise).
  returned: always
  type: list
  elements: str
  version_added: 0.2.0
migration_status:
  description: What each service of O(hold) asked through O(migrations) answered - its C(pending) and C(applied)
    migrations (none pending when the run went on rolling).
  returned: always
  type: dict
  sample: {api: {pending: [], applied: [001_items]}}
  version_added: 0.2.0
written:
  description: The paths of O(write) that were created or changed (would be, in check mode).
  returned: always
  type: list
  elements: str
  version_added: 0.2.0
pulled:
  description: The images that were pulled (would be, in check mode).
  returned: always
  type: list
  elements: str
  version_added: 0.2.0
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
handed:
  description: The volumes of O(owned_volumes) handed to their service's user (or that would be, in check mode), each
    with the first file it found of another owner, or C(found=null) for a volume it made for that user.
  returned: always
  type: list
  elements: dict
  version_added: 0.2.0
  sample:
    - {volume: prometheus_data, service: prometheus, owner: "65534:65534",
       found: /var/lib/docker/volumes/pliers_prometheus_data/_data/wal}
access:
  description: What was changed (or would be, in check mode) on each store of O(stores), and what was left as it is,
    by pass (the one before the rollout, the prune after it); no password is in them.
  returned: always
  type: list
  elements: dict
  version_added: 0.2.0
  sample: [{store: postgres, prune: false, actions: ["create login pliers_app_1f3a9c2e in pliers_app"], notes: []}]
prunable:
  description: For each store of O(stores), the logins or users it holds that no account needs any more (names
    only), as the last pass on it found them (none after a prune, O(accounts_brought)'s for a store this run did
    not bring); a run that stops for migrations hands it to the next one as O(accounts_brought).
  returned: always
  type: dict
  version_added: 0.2.0
  sample: {postgres: [pliers_app_1f3a9c2e], redis: []}
verified:
  description: The endpoints of O(verify) that passed (their names).
  returned: always
  type: list
  elements: str
  version_added: 0.2.0
failures:
  description: The services that could not be brought back, and the endpoints of O(verify) that did not pass, each
    with what it last said.
  returned: always
  type: list
  version_added: 0.2.0
  elements: str
"""

import contextlib
import fcntl
import json
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.pliers.deploy.plugins.module_utils import _postgres_access, _redis_access
from ansible_collections.pliers.deploy.plugins.module_utils._docker import (
    COMPOSE_PROJECT_LABEL,
    COMPOSE_SERVICE_LABEL,
    DockerException,
    ImageNotFound,
    NotFound,
    docker_client,
)
from ansible_collections.pliers.deploy.plugins.module_utils._files import (
    DIRECTORY_OPTIONS,
    FILE_OPTIONS,
    FilesError,
    Writer,
    reveal_non_secrets,
)
from ansible_collections.pliers.deploy.plugins.module_utils._health import verify
from ansible_collections.pliers.deploy.plugins.module_utils._migrations import STATUS_COMMAND, MigrationError, run_json
from ansible_collections.pliers.deploy.plugins.module_utils._nginx_edge import Edge, EdgeError
from ansible_collections.pliers.deploy.plugins.module_utils._store import (
    ANSWER_WAIT,
    ImageMissing,
    StoreError,
    StoreNotReached,
    brought,
)

# The nginx edge's follower (roles/web/files/pliers-edge.sh), where the web role puts it in the edge's container.
EDGE_SCRIPT = "/etc/nginx/conf.d/pliers-edge.sh"
# How often health is read while waiting: the engine runs a starting container's check every second (start_interval),
# and each service is routed to as soon as it is healthy.
HEALTH_POLL_SECONDS = 0.25
# How long a rollout waits for a dependency's containers, unhealthy for a moment (a store that came back), to pass a
# health check again before Compose is asked to start what depends on them.
RECOVERY_WAIT = 30
HASH_LABEL = "com.docker.compose.config-hash"
ONEOFF_LABEL = "com.docker.compose.oneoff"
# How each kind of store's accounts are checked and brought.
STORE_KINDS = {"postgres": _postgres_access, "redis": _redis_access}


class RolloutError(Exception):
    """A step failed; the message says which service and why."""


class Compose:
    """The docker compose CLI for one project, and the project's containers through the SDK."""

    def __init__(self, module, client, files: list[str] | None = None, hashed: list[str] = ()) -> None:
        self.module = module
        self.client = client
        self.base = ["docker", "compose", "--project-directory", module.params["project_src"]]
        for name in files or module.params["files"]:
            self.base += ["--file", os.path.join(module.params["project_src"], name)]
        # The project's model and the hashes of the services asked for, read side by side (each a CLI run).
        with ThreadPoolExecutor(max_workers=2) as pool:
            hashes = pool.submit(self.hashes, list(hashed)) if hashed else None
            self.model = json.loads(self.run("config", "--format", "json"))
            self.initial_hashes = hashes.result() if hashes else {}
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

    def serving_healthy(self, service: str) -> bool:
        """Whether the service runs, every running container of it healthy."""
        running = [c for c in self.containers(service) if c.status == "running"]
        return bool(running) and all(health(c)[0] == "healthy" for c in running)

    def starts_itself(self, service: str) -> bool:
        """Whether Compose does something of its own as the service's containers start: a post_start hook, or a
        config or secret given inline (its content, or an environment variable), which it copies in."""
        definition = self.definition(service)
        if definition.get("post_start"):
            return True
        inline = {
            (kind, name)
            for kind in ("configs", "secrets")
            for name, top in (self.model.get(kind) or {}).items()
            if "content" in (top or {}) or "environment" in (top or {})
        }
        return any(
            (kind, entry.get("source") if isinstance(entry, dict) else entry) in inline
            for kind in ("configs", "secrets")
            for entry in definition.get(kind) or []
        )

    def lost_networks(self, container) -> list[str]:
        """The networks a container is attached to that no longer exist (removed while it was stopped)."""
        if self.network_ids is None:
            self.network_ids = {network.id for network in self.client.networks.list()}
        attached = (container.attrs.get("NetworkSettings") or {}).get("Networks") or {}
        return sorted(name for name, endpoint in attached.items() if endpoint.get("NetworkID") not in self.network_ids)

    def containers(self, service: str) -> list:
        filters = {"label": [f"{COMPOSE_PROJECT_LABEL}={self.project}", f"{COMPOSE_SERVICE_LABEL}={service}"]}
        found = self.client.containers.list(all=True, filters=filters)
        return sorted((c for c in found if c.labels.get(ONEOFF_LABEL) != "True"), key=lambda c: c.name)

    def missing_images(self, services: list[str]) -> dict[str, list[str]]:
        """The images these services need that the host lacks, each with the services that need it."""
        missing: dict[str, list[str]] = {}
        for service in services:
            image = self.definition(service).get("image")
            if not image:
                continue
            try:
                self.client.images.get(image)
            except ImageNotFound:
                missing.setdefault(image, []).append(service)
        return missing

    def confirm_in_registry(self, images: dict[str, list[str]]) -> None:
        """Fail naming each of these images (each with the services that need it) that its registry does not hold
        or will not show: asked side by side, one round trip each, nothing pulled."""

        def refused(image: str) -> str | None:
            try:
                self.client.images.get_registry_data(image)
            except (DockerException, OSError) as exc:  # OSError: the SDK's connection errors and timeouts
                return f"{image} (for {', '.join(images[image])}): {exc}"
            return None

        if not images:
            return
        with ThreadPoolExecutor(max_workers=min(8, len(images))) as pool:
            problems = [problem for problem in pool.map(refused, sorted(images)) if problem]
        if problems:
            raise RolloutError("cannot pull " + "; ".join(problems))


class Pull:
    """A docker compose pull of some services that runs beside the rest of the run; join() waits for its end and
    raises what made it fail."""

    def __init__(self, compose: Compose, services: list[str]) -> None:
        self.services = set(services)
        self.future = None
        if services:
            pool = ThreadPoolExecutor(max_workers=1)
            self.future = pool.submit(compose.run, "pull", "--quiet", *services)
            pool.shutdown(wait=False)

    def join(self) -> None:
        if self.future is not None:
            self.future.result()


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


def wait_all_healthy(groups: dict[str, list], timeout: int, on_healthy=None) -> dict[str, str]:
    """Wait side by side for each service's containers to be healthy, calling on_healthy(services) with those found
    healthy at each reading; the services that failed, with why."""
    deadline = time.monotonic() + timeout
    failures: dict[str, str] = {}
    pending = dict(groups)
    while pending:
        out_of_time = time.monotonic() >= deadline
        healthy = []
        for service, containers in list(pending.items()):
            try:
                if assess(containers, timeout, out_of_time):
                    del pending[service]
                    healthy.append(service)
            except RolloutError as exc:
                failures[service] = str(exc)
                del pending[service]
        if healthy and on_healthy:
            on_healthy(healthy)
        if pending:
            time.sleep(HEALTH_POLL_SECONDS)
    return failures


def wait_healthy(containers: list, service: str, timeout: int) -> None:
    failures = wait_all_healthy({service: containers}, timeout)
    if failures:
        raise RolloutError(failures[service])


# --- The decision core: what a rolled service needs, from what runs -------------------------------------------


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


class Decision:
    """What a rolled service needs, decided from its containers and their health (no side effect).

    keep: the containers of the current definition that serve or are about to (the healthy first), up to the
    replicas; starting: those of them still starting; missing: how many new ones to start; retire: the running
    ones that are not kept; stopped: leftovers to remove. action: unchanged, started (its current containers were
    starting: they are waited for), rolled (a new definition) or repaired.
    """

    def __init__(self, service: str, containers: list, states: dict, desired_hash: str, replicas: int) -> None:
        self.service = service
        self.containers = containers
        self.running = [c for c in containers if c.status == "running"]
        self.stopped = [c for c in containers if c.status != "running"]
        current = [
            c
            for c in self.running
            if c.labels.get(HASH_LABEL) == desired_hash and states[c.id][0] in ("healthy", "starting")
        ]
        self.keep = sorted(current, key=lambda c: (states[c.id][0] != "healthy", c.name))[:replicas]
        self.starting = [c for c in self.keep if states[c.id][0] == "starting"]
        self.missing = replicas - len(self.keep)
        self.retire = [c for c in self.running if c not in self.keep]
        self.reason = ""
        if len(self.keep) == replicas and len(containers) == replicas:
            self.action = "started" if self.starting else "unchanged"
            self.reason = "its containers were starting" if self.starting else ""
        else:
            new_definition = any(c.labels.get(HASH_LABEL) != desired_hash for c in containers)
            self.action = "rolled" if new_definition else "repaired"
            self.reason = describe_drift(self.running, self.stopped, states, desired_hash, replicas, self.keep)

    @property
    def acts(self) -> bool:
        """Whether the service's containers change (a migration may be due first)."""
        return self.action in ("rolled", "repaired")

    def report(self, check_mode: bool) -> dict:
        action = {"rolled": "would roll", "repaired": "would repair"}.get(self.action, self.action)
        return {
            "name": self.service,
            "action": action if check_mode else self.action,
            "reason": self.reason,
            "old": [c.name for c in self.containers if c not in self.keep] if self.acts else [],
            "new": [c.name for c in self.keep],
        }


def decide(compose: Compose, service: str, desired_hash: str) -> Decision:
    replicas = compose.gated_replicas(service)
    containers = compose.containers(service)
    states = {c.id: health(c) for c in containers if c.status == "running"}
    return Decision(service, containers, states, desired_hash, replicas)


def roll(module, compose: Compose, edge: Edge, services: list[str], hashes: dict, failed: set[str]) -> list[dict]:
    """Roll the services together: every new container starts at once, each service is routed to its new
    containers as soon as they are healthy, then one drain, then the old containers stop."""
    started = time.monotonic()
    reports: dict[str, dict] = {}
    decisions: dict[str, Decision] = {}
    for service in services:
        try:
            decision = decide(compose, service, hashes[service])
        except (RolloutError, DockerException, NotFound) as exc:
            reports[service] = {"name": service, "action": "failed", "reason": str(exc), "old": [], "new": []}
            continue
        reports[service] = decision.report(module.check_mode)
        failed_now = failed | {name for name, report in reports.items() if report["action"] == "failed"}
        blocked = sorted(compose.dependencies(service) & failed_now)
        if decision.acts and blocked:
            reports[service].update(
                action="skipped",
                reason=f"{decision.reason}, but it depends on {', '.join(blocked)}, which could not be brought back",
            )
            continue
        decisions[service] = decision
    if module.check_mode:
        return [dict(report, seconds=0.0) for report in reports.values()]
    acting = {s: d for s, d in decisions.items() if d.action != "unchanged"}
    if acting:
        # An edge serving stale addresses, or whose follower stopped, would fail the health of what reaches another
        # service through it: repaired before anything is rolled.
        edge.reloaded |= edge.sync()
    for service, decision in decisions.items():
        if decision.action == "unchanged":
            # Written again when edited by hand; loaded once, after every service, by the caller.
            edge.point(service, [c.name for c in decision.keep])
    for decision in acting.values():
        # Stopped leftovers serve nothing; Compose would restart them rather than create new ones.
        for container in decision.stopped:
            container.remove(force=True)
    new = start_new(compose, edge, acting, reports, module.params["timeout"])
    serving = {s: [c.name for c in d.keep] + [c.name for c in new.get(s, [])] for s, d in acting.items()}
    repointed: set[str] = set()

    def route(services: list[str]) -> None:
        """Point the edge at these services' new containers, in one reload."""
        repointed.update(service for service in services if edge.point(service, serving[service]))
        edge.load(*services)

    waiting = {s: d.starting + new.get(s, []) for s, d in acting.items() if reports[s]["action"] != "failed"}
    ready = [s for s, containers in waiting.items() if not containers]
    for service in ready:
        del waiting[service]
    if ready:
        route(ready)
    if any(d.starting for d in acting.values()):
        # What the containers that start reach through the edge (an earlier service) must be loaded there first.
        edge.flush()
    for service, reason in wait_all_healthy(waiting, module.params["timeout"], on_healthy=route).items():
        # What served keeps serving: the new containers go.
        for container in new.get(service, []):
            container.remove(force=True)
        reports[service].update(action="failed", reason=reason, new=[c.name for c in acting[service].keep])
    retiring = [c for s, d in acting.items() if reports[s]["action"] != "failed" for c in d.retire]
    if retiring and repointed:
        edge.drain(module.params["drain"])
    retire(retiring)
    for service in acting:
        if reports[service]["action"] != "failed":
            reports[service]["new"] = sorted(serving[service])
        reports[service]["seconds"] = round(time.monotonic() - started, 1)
    return list(reports.values())


def retire(containers: list) -> None:
    """Stop and remove the containers side by side: each stop waits for its own container's exit (up to its stop
    grace period), which one after the other would add up."""

    def end(container) -> None:
        container.stop()
        container.remove()

    if containers:
        with ThreadPoolExecutor(max_workers=min(len(containers), 8)) as pool:
            list(pool.map(end, containers))


def start_new(compose: Compose, edge: Edge, acting: dict, reports: dict, timeout: int) -> dict[str, list]:
    """Start every missing container (the old ones keep serving: the scale counts them); a service whose start
    fails is reported failed. The new containers, by service."""
    scale = {s: len(d.running) + d.missing for s, d in acting.items() if d.missing > 0}
    if not scale:
        return {}
    dependencies_recovered(compose, sorted(scale), timeout)
    # What the new containers reach through the edge (an earlier service) must be loaded there first.
    edge.flush()
    before = {s: {c.id for c in d.running} for s, d in acting.items()}
    # Created by one compose command, then started side by side; or started by Compose, in its order.
    side_by_side = leans_on_old_containers(compose, scale)
    options = ["--no-start", "--no-recreate"] if side_by_side else ["--detach", "--no-recreate"]
    for service, reason in compose_up(compose, options, sorted(scale), scale).items():
        reports[service].update(action="failed", reason=reason)
    new = {
        s: [c for c in compose.containers(s) if c.id not in before[s]]
        for s in scale
        if reports[s]["action"] != "failed"
    }
    if side_by_side:
        start_side_by_side(new, reports)
    return {s: containers for s, containers in new.items() if reports[s]["action"] != "failed"}


def dependencies_recovered(compose: Compose, services: list[str], timeout: int) -> None:
    """Compose starts no container of a service while any container of a service it depends on being healthy is
    unhealthy (even one about to be retired): it fails at once ("dependency failed to start"). After a store came
    back (a deploy onto a stopped database), what checks it stays unhealthy until its next health check: waited for
    until none is, for at most RECOVERY_WAIT seconds (a few health checks; one that never recovers, a broken old
    release, is then left to Compose, which names it)."""
    dependencies = sorted(
        name
        for service in services
        for name, condition in (compose.definition(service).get("depends_on") or {}).items()
        if (condition or {}).get("condition") == "service_healthy"
    )
    deadline = time.monotonic() + min(timeout, RECOVERY_WAIT)

    def unhealthy() -> bool:
        for dependency in dependencies:
            for container in compose.containers(dependency):
                if container.status != "running":
                    continue
                try:
                    if health(container)[0] == "unhealthy":
                        return True
                except NotFound:  # gone meanwhile: nothing to wait for
                    continue
        return False

    while unhealthy() and time.monotonic() < deadline:
        time.sleep(1)


def leans_on_old_containers(compose: Compose, scale: dict) -> bool:
    """Whether the new containers can start side by side, outside Compose: every service they depend on runs, all
    its containers healthy (those that get new containers too still have their old ones serving), and Compose has
    nothing of its own to do as they start (a post_start hook, configs or secrets it copies in). Compose would wait
    for each dependency's new containers to be healthy before it starts what depends on them (it waits for every
    container of a service_healthy dependency), which adds one health wait per step of the chain."""
    dependencies = {dependency for service in scale for dependency in compose.dependencies(service)}
    return not any(compose.starts_itself(service) for service in scale) and all(
        compose.serving_healthy(dependency) for dependency in dependencies
    )


def compose_up(compose: Compose, options: list[str], services: list[str], scale: dict | None = None) -> dict:
    """docker compose up of the services (with their --scale, if any), in one command; when it fails (one service's
    failure fails the whole command: a missing image, a port taken), each service alone, to know which. The
    failures, by service. No service, no command: an up naming none would bring up the whole project."""
    if not services:
        return {}

    def up(chosen: list[str]) -> None:
        # Not --no-deps: Compose would drop depends_on from the new containers' configuration hash.
        flags = [arg for s in chosen if s in (scale or {}) for arg in ("--scale", f"{s}={scale[s]}")]
        compose.run("up", *options, *flags, *chosen)

    try:
        up(services)
    except RolloutError:
        failures = {}
        for service in services:
            try:
                up([service])
            except RolloutError as exc:
                failures[service] = str(exc)
        return failures
    return {}


def start_side_by_side(created: dict[str, list], reports: dict) -> None:
    """Start the containers Compose created, every service's side by side; a service whose container fails to
    start (a port taken, a device missing) is reported failed and its new containers go (what serves keeps
    serving)."""

    def start(service: str) -> None:
        try:
            for container in created[service]:
                container.start()
        except DockerException as exc:
            reports[service].update(action="failed", reason=f"its new container did not start: {exc}")
            for container in created[service]:
                with contextlib.suppress(DockerException):
                    container.remove(force=True)

    if created:
        with ThreadPoolExecutor(max_workers=min(len(created), 8)) as pool:
            list(pool.map(start, created))


def start_edge(compose: Compose, edge: str, in_place: list[str]) -> None:
    """Start the edge (a first deploy), with what it depends on and, beside it, what of O(in_place) depends on it
    (its exporter): started after the rollout, they would add their start to the deploy's. Should one of those fail
    to start, the edge starts alone; their own convergence reports why."""
    beside = [service for service in in_place if edge in compose.dependencies(service)]
    try:
        compose.run("up", "--detach", "--no-recreate", edge, *beside)
    except RolloutError:
        if not beside:
            raise
        compose.run("up", "--detach", "--no-recreate", edge)


def converge_in_place(module, compose: Compose, services: list[str], hashes: dict, failed: set[str]) -> list[dict]:
    """Converge services in place, as docker compose up would; unhealthy containers are restarted. Their health is
    waited for."""
    return start_in_place(module, compose, services, hashes, failed).wait()


class InPlace:
    """Services converged in place, started: wait() waits for their health (some of them, or the rest) and completes
    their reports."""

    def __init__(self, module, compose: Compose, reports: dict[str, dict], started: float) -> None:
        self.module = module
        self.compose = compose
        self.reports = reports
        self.started = started
        self.waited: set[str] = set()

    def wait(self, only: list[str] | None = None) -> list[dict]:
        """Wait for these services (all not waited for yet, by default); the reports of all of them."""
        chosen = [s for s in (self.reports if only is None else only) if s in self.reports and s not in self.waited]
        self.waited.update(chosen)
        if self.module.check_mode:
            return list(self.reports.values())
        compose, reports = self.compose, self.reports
        waiting = {
            service: compose.containers(service)
            for service in chosen
            if reports[service]["action"] not in ("skipped", "failed")
        }
        for service, reason in wait_all_healthy(waiting, self.module.params["timeout"]).items():
            reports[service].update(action="failed", reason=reason)
        for service in chosen:
            report = reports[service]
            report["new"] = [c.name for c in compose.containers(service)] if report["action"] != "skipped" else []
            if report["action"] not in ("unchanged", "skipped"):
                report["seconds"] = round(time.monotonic() - self.started, 1)
        return list(reports.values())


def start_in_place(module, compose: Compose, services: list[str], hashes: dict, failed: set[str]) -> InPlace:
    """Converge services in place, as docker compose up would, and restart their unhealthy containers; their health
    is not waited for yet."""
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
        return InPlace(module, compose, reports, started)
    for container in to_remove:
        container.remove(force=True)
    for service, reason in compose_up(compose, ["--detach"], to_up).items():
        reports[service].update(action="failed", reason=reason)
    for container in to_restart:
        container.restart()
    return InPlace(module, compose, reports, started)


def remove_orphans(module, compose: Compose) -> list[str]:
    """Containers of services the project no longer defines (not one-off runs); removed outside check mode."""
    found = compose.client.containers.list(all=True, filters={"label": f"{COMPOSE_PROJECT_LABEL}={compose.project}"})
    orphans = [
        c
        for c in found
        if c.labels.get(COMPOSE_SERVICE_LABEL) not in compose.model["services"] and c.labels.get(ONEOFF_LABEL) != "True"
    ]
    if not module.check_mode:
        for container in orphans:
            container.remove(force=True)
    return sorted(c.name for c in orphans)


@contextmanager
def one_rollout_at_a_time(module, directory: str, wait: int):
    """Hold the project's rollout lock: a rollout whose deploy was killed may still run on the host (its module
    outlives the controller's connection); the next one waits for it to end rather than act beside it."""
    if module.check_mode or not os.path.isdir(directory):
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


@contextmanager
def project_files(module, writer: Writer):
    """The Compose files to read the project from: in check mode, a project file of O(write) that would change is
    read from a temporary copy, so that what would roll is judged against the new definition."""
    files = list(module.params["files"])
    paths = {os.path.join(module.params["project_src"], name): index for index, name in enumerate(files)}
    copies = []
    if module.check_mode:
        for entry in module.params["write"]["files"]:
            if (
                entry["path"] in paths
                and entry["path"] in writer.changed
                and os.path.isdir(module.params["project_src"])
            ):
                fd, tmp = tempfile.mkstemp(dir=module.params["project_src"], prefix=".compose-check-", suffix=".yaml")
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    handle.write(entry["content"])
                files[paths[entry["path"]]] = os.path.basename(tmp)
                copies.append(tmp)
    try:
        yield files
    finally:
        for tmp in copies:
            os.unlink(tmp)


def tree(top: str):
    """TOP and every path under it, symbolic links not followed."""
    yield top
    for directory, dirs, files in os.walk(top):
        for name in dirs + files:
            yield os.path.join(directory, name)


def foreign_file(top: str, uid: int, gid: int) -> str | None:
    """The first path of TOP's tree not owned by UID:GID, or None. (Read while its service runs: a file it removed
    meanwhile is skipped.)"""
    for path in tree(top):
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            continue
        if (info.st_uid, info.st_gid) != (uid, gid):
            return path
    return None


def hand_tree(top: str, uid: int, gid: int) -> None:
    """Every path of TOP's tree owned by UID:GID (a symbolic link itself, not its target)."""
    for path in tree(top):
        with contextlib.suppress(FileNotFoundError):
            os.lchown(path, uid, gid)


class Rollout:
    """One run of the module: the files, the images, the data services, then the rollout."""

    def __init__(self, module, client) -> None:
        self.module = module
        self.params = module.params
        self.client = client
        self.writer = Writer(module)
        self.reports: list[dict] = []
        self.held: list[str] = []
        # What the rollout needs healthy first (the stores and what the rolled services depend on).
        self.needed: set[str] = set()
        self.migration_status: dict[str, dict] = {}
        self.pulled: list[str] = []
        self.orphans: list[str] = []
        self.edge: Edge | None = None
        self.edge_started = False
        self.verified: list[str] = []
        self.unverified: list[str] = []
        self.access_reports: list[dict] = []
        self.handed: list[dict] = []
        # What an earlier run of this deploy found to drop, by store: those stores' accounts are not brought again.
        self.prunable: dict[str, list] = dict(module.params["accounts_brought"])

    def failed(self) -> set[str]:
        return {r["name"] for r in self.reports if r["action"] in ("failed", "skipped")}

    def run(self) -> None:
        params = self.params
        self.writer.apply(params["write"]["directories"], params["write"]["files"])
        if not os.path.isdir(params["project_src"]):
            # Check mode on a host that was never deployed to: everything would be created.
            return
        wanted = params["first"] + params["services"] + params["in_place"]
        with project_files(self.module, self.writer) as files:
            compose = Compose(self.module, self.client, files, hashed=wanted)
            self.converge(compose)

    def converge(self, compose: Compose) -> None:
        params = self.params
        wanted = params["first"] + params["services"] + params["in_place"]
        hashes = compose.initial_hashes or (compose.hashes(wanted) if wanted else {})
        # The stores' accounts before the first container that logs in with them starts (a rotated password's new
        # login exists by then) and before the migrations, which log in as the owner: the services of O(first) with
        # no account converge side by side with the stores, those with one (the exporters) once the accounts are.
        # (A store may hold an account of its own, the backups' on Redis: it is a store first.)
        stores = {store["service"] for store in params["stores"]}
        account_holders = {a.get("service") for store in params["stores"] for a in store["accounts"]} - stores
        # Waited for before the accounts and the rollout: the stores and what they and the rolled services depend
        # on. The rest of O(first) (monitoring, the exporters) starts beside them and is waited for at the end of the
        # run (by the next run, when this one holds for migrations), so that its start does not add to the release's.
        self.needed = needed = stores | {
            dependency for root in stores | set(params["services"]) for dependency in compose.dependencies(root)
        }
        # Pulling is most of a first deploy: the images of what is needed first (and of what it depends on) are
        # pulled now, the others beside the data services' start; what of O(first) needs one of those (its own, or
        # a dependency's, which Compose would start and pull with it) starts once they are here.
        now = {s for s in params["first"] if s in needed}
        pulling = self.pull(compose, wanted, now | {d for s in now for d in compose.dependencies(s)})
        waits = {s for s in params["first"] if {s, *compose.dependencies(s)} & pulling.services}
        asked = self.ask_migrations_early(compose, hashes, pulling)
        here = [s for s in params["first"] if s not in waits]
        try:
            # Once every image is known to be there (a missing one fails the pull), before anything starts.
            self.hand_owned_volumes(compose)
            early = start_in_place(self.module, compose, [s for s in here if s not in account_holders], hashes, set())
            self.reports += early.wait([s for s in early.reports if s in needed])
            self.access(compose, prune=False)
            later = start_in_place(
                self.module, compose, [s for s in here if s in account_holders], hashes, self.failed()
            )
            self.reports += later.wait([s for s in later.reports if s in needed])
        except Exception:
            # The run fails with what stopped it, once the pull has ended: the next run does not start beside it.
            with contextlib.suppress(Exception):
                pulling.join()
            raise
        pulling.join()
        pulled = start_in_place(self.module, compose, [s for s in params["first"] if s in waits], hashes, self.failed())
        self.reports += pulled.wait([])
        if self.hold(compose, hashes, asked):
            return
        self.edge = Edge(
            params["edge"], params["upstreams_dir"], params["routes"], params["sync_command"], self.module.check_mode,
            running=lambda: [c for c in compose.containers(params["edge"]) if c.status == "running"],
            start=lambda: start_edge(compose, params["edge"], params["in_place"]),
            drain_command=params["drain_command"],
        )  # fmt: skip
        edge = self.edge
        if params["services"]:
            self.edge_started = edge.remove_legacy() | edge.ensure_running()
        self.reports += roll(self.module, compose, edge, params["services"], hashes, self.failed())
        edge.flush()
        self.reports += converge_in_place(self.module, compose, params["in_place"], hashes, self.failed())
        for started in (early, later, pulled):
            started.wait()
        if params["remove_orphans"]:
            self.orphans = remove_orphans(self.module, compose)
        # What the edge serves, checked on every run: upstreams rewritten by hand, a stopped follower, or the
        # edge's own configuration changed.
        if edge.service:
            reloadable = [
                f["path"]
                for f in params["write"]["files"]
                if f.get("service") == edge.service and f.get("reload") and f["path"] in self.writer.changed
            ]
            try:
                edge.reloaded |= edge.sync(force=params["reload_edge"] or bool(reloadable))
            except EdgeError as exc:
                self.reports.append(
                    {"name": edge.service, "action": "failed", "reason": str(exc), "old": [], "new": []}
                )
        # The stack verified through its edge, once every service is at its definition.
        if params["verify"] and not self.module.check_mode:
            timeout, certs = params["verify_timeout"], params["validate_certs"]
            self.unverified = verify(params["verify"], timeout, validate_certs=certs)
            names = [target.get("name") or target["url"] for target in params["verify"]]
            failed = {line.split(":", 1)[0] for line in self.unverified}
            self.verified = [name for name in names if name not in failed]
        # Every service rolled and answers (a run of some services only may leave one on an old login): what no
        # service uses any more (a rotated password's old login or password) is dropped.
        if params["remove_orphans"] and not self.failed() and not self.unverified:
            self.access(compose, prune=True)

    def hand_owned_volumes(self, compose: Compose) -> None:
        """Each volume of O(owned_volumes) not made yet made for the service's user (empty, its top the user's), and
        each with a file of another owner handed over: its service's running containers stopped (the converge starts
        them again), then every file handed to the user. In check mode, only reported."""
        for owned in self.params["owned_volumes"]:
            name = f"{compose.project}_{owned['volume']}"
            owner = f"{owned['uid']}:{owned['gid']}"
            handed = {"volume": owned["volume"], "service": owned["service"], "owner": owner}
            try:
                top = self.client.volumes.get(name).attrs["Mountpoint"]
            except NotFound:
                self.handed.append({**handed, "found": None})
                if not self.module.check_mode:
                    # Compose's own labels: it takes the volume for the project's (no warning, no second volume).
                    labels = {COMPOSE_PROJECT_LABEL: compose.project, "com.docker.compose.volume": owned["volume"]}
                    made = self.client.volumes.create(name=name, labels=labels)
                    os.lchown(made.attrs["Mountpoint"], owned["uid"], owned["gid"])
                continue
            found = foreign_file(top, owned["uid"], owned["gid"])
            if found is None:
                continue
            self.handed.append({**handed, "found": found})
            if self.module.check_mode:
                continue
            for container in compose.containers(owned["service"]):
                if container.status in ("running", "restarting"):
                    container.stop()
            hand_tree(top, owned["uid"], owned["gid"])

    def access(self, compose: Compose, prune: bool) -> None:
        """Each store of O(stores) brought to its accounts; with prune, only a store the first pass found holding
        something to drop. A store that cannot be reached stops the run (in check mode, it is reported)."""
        for store in self.params["stores"]:
            name = store["service"]
            # A store that could not be brought back: what logs in to it is not rolled (it depends on it).
            if name in self.failed() or (prune and not self.prunable.get(name, True)):
                continue
            if not prune and name in self.params["accounts_brought"]:
                continue
            target = dict(
                store, host=name, network=f"{compose.project}_{store['network']}", timeout=self.params["timeout"]
            )
            try:
                # Check mode starts nothing that waiting could see answer.
                wait = 0 if self.module.check_mode else ANSWER_WAIT
                result = brought(self.module, self.client, target, STORE_KINDS[store["kind"]].bring, prune, wait)
            except ImageMissing:
                result = dict(changed=True, actions=["unknown: the image is not on this host"], notes=[], prunable=[])
            except StoreNotReached as exc:
                if not self.module.check_mode:
                    raise RolloutError(f"the accounts on {name} could not be brought: {exc.failure}") from exc
                result = dict(changed=True, actions=[f"unknown: {exc.note}"], notes=[], prunable=[])
            except (StoreError, DockerException) as exc:
                raise RolloutError(f"the accounts on {name} could not be brought: {exc}") from exc
            self.prunable[name] = result["prunable"]
            if result["actions"] or result["notes"]:
                self.access_reports.append(
                    {"store": name, "prune": prune, **{k: result[k] for k in ("actions", "notes")}}
                )

    def pull(self, compose: Compose, services: list[str], now: set[str]) -> Pull:
        """Pull what the services lack: the images of those in NOW here, the others beside the rest of the run (the
        pull returned), once their registries said they hold them. A missing image fails here, before anything
        changes."""
        if not self.params["pull"] or not services:
            return Pull(compose, [])
        missing = compose.missing_images(services)
        self.pulled = sorted(missing)
        if not missing or self.module.check_mode:
            return Pull(compose, [])
        first = {image: names for image, names in missing.items() if set(names) & now}
        behind = {image: names for image, names in missing.items() if image not in first}
        compose.confirm_in_registry(behind)
        if first:
            compose.run("pull", "--quiet", *sorted({s for names in first.values() for s in names}))
        return Pull(compose, sorted({s for names in behind.values() for s in names}))

    def hold(self, compose: Compose, hashes: dict, asked: dict) -> bool:
        """Whether to stop after the data services, for the migrations of a service about to roll to run first
        (asked: the answers asked for early, by service)."""
        candidates = [s for s in self.params["hold"] if s in self.params["services"]]
        self.held = [s for s in candidates if decide(compose, s, hashes[s]).acts]
        if not self.held or self.module.check_mode:
            return False
        first_failed = [r for r in self.reports if r["action"] in ("failed", "skipped") and r["name"] in self.needed]
        if first_failed:
            raise RolloutError(
                "the release stops before the migrations of " + ", ".join(self.held) + ", with no app container "
                "changed: could not bring back " + "; ".join(f"{r['name']}: {r['reason']}" for r in first_failed)
            )
        self.held = [s for s in self.held if self.migrations_pending(compose, s, asked.get(s))]
        return bool(self.held)

    def migration_spec(self, service: str) -> dict | None:
        return next((m for m in self.params["migrations"] if m["service"] == service), None)

    def ask_once_pulled(self, compose: Compose, spec: dict, pulling: Pull) -> dict:
        pulling.join()
        return self.ask_migrations(compose, spec)

    def ask_migrations(self, compose: Compose, spec: dict) -> dict:
        """What the service's new image says of its migrations (its status command's JSON)."""
        return run_json(
            self.module, self.client, spec["status_command"], image=spec["image"],
            network=f"{compose.project}_{spec['network']}", env=spec["environment"], secrets=spec["secrets"],
            timeout=self.params["timeout"],
        )  # fmt: skip

    def ask_migrations_early(self, compose: Compose, hashes: dict, pulling: Pull) -> dict:
        """When the stores already serve at their definition (a release), ask the images of the held services that
        need acting on now (once PULLING has brought them), beside the data services' convergence and the accounts:
        the answers, as futures, by service. An answer that fails is asked for again once the accounts are brought
        (a rotated password)."""
        if self.module.check_mode:
            return {}
        asked = [
            s
            for s in self.params["hold"]
            if s in self.params["services"] and self.migration_spec(s) and decide(compose, s, hashes[s]).acts
        ]
        stores = [store["service"] for store in self.params["stores"]]
        settled = all(
            compose.serving_healthy(store)
            and all(c.labels.get(HASH_LABEL) == hashes.get(store) for c in compose.containers(store))
            for store in stores
        )
        if not asked or not settled:
            return {}
        pool = ThreadPoolExecutor(max_workers=len(asked))
        try:
            return {s: pool.submit(self.ask_once_pulled, compose, self.migration_spec(s), pulling) for s in asked}
        finally:
            pool.shutdown(wait=False)  # the questions asked still run to their end

    def migrations_pending(self, compose: Compose, service: str, asked=None) -> bool:
        """Whether the service's new image has migrations to run (or cannot say) before it rolls; asked: the answer
        asked for early, if any."""
        spec = self.migration_spec(service)
        if spec is None:
            return True
        status = None
        if asked is not None:
            with contextlib.suppress(MigrationError, DockerException):
                status = asked.result()
        try:
            status = status if status is not None else self.ask_migrations(compose, spec)
        except (MigrationError, DockerException):
            return True
        self.migration_status[service] = {
            key: [str(name) for name in status.get(key) or []] for key in ("pending", "applied")
        }
        return bool(self.migration_status[service]["pending"])

    def result(self, waited: float) -> dict:
        edge = self.edge
        failures = [f"{r['name']}: {r['reason']}" for r in self.reports if r["action"] in ("failed", "skipped")]
        failures += [f"verify {line}" for line in self.unverified]
        changed = (
            bool(self.writer.changed)
            or bool(self.pulled)
            or self.edge_started
            or bool(edge and (edge.reloaded or edge.rewritten))
            or bool(self.orphans)
            or bool(self.handed)
            or any(report["actions"] for report in self.access_reports)
            # Waiting for containers that were starting changed nothing.
            or any(r["action"] not in ("unchanged", "started", "failed", "skipped") for r in self.reports)
        )
        result = dict(
            changed=changed,
            services=self.reports,
            held=self.held,
            migration_status=self.migration_status,
            written=self.writer.changed,
            pulled=self.pulled,
            reloaded=bool(edge and edge.reloaded),
            upstreams=edge.rewritten if edge else [],
            orphans=self.orphans,
            handed=self.handed,
            access=self.access_reports,
            prunable=self.prunable,
            waited=waited,
            verified=self.verified,
            failures=failures,
        )
        if self.module._diff and self.writer.diffs:
            result["diff"] = self.writer.diffs
        return result


def main() -> None:
    argument_spec = dict(
        project_src=dict(type="path", required=True),
        files=dict(type="list", elements="str", default=["compose.yaml"]),
        write=dict(
            type="dict",
            default={},
            options=dict(
                directories=dict(type="list", elements="dict", default=[], options=DIRECTORY_OPTIONS),
                files=dict(type="list", elements="dict", default=[], options=FILE_OPTIONS),
            ),
        ),
        pull=dict(type="bool", default=True),
        first=dict(type="list", elements="str", default=[]),
        hold=dict(type="list", elements="str", default=[]),
        migrations=dict(
            type="list",
            elements="dict",
            default=[],
            options=dict(
                service=dict(type="str", required=True),
                image=dict(type="str", required=True),
                network=dict(type="str", required=True),
                environment=dict(type="dict", default={}),
                # Paths of the secret files, never their values.
                secrets=dict(type="list", elements="dict", default=[], no_log=False),
                status_command=dict(type="list", elements="str", default=list(STATUS_COMMAND)),
                backup_first=dict(type="bool", default=True),
            ),
        ),
        services=dict(type="list", elements="str", required=True),
        in_place=dict(type="list", elements="str", default=[]),
        remove_orphans=dict(type="bool", default=False),
        routes=dict(type="dict", default={}),
        edge=dict(type="str"),
        upstreams_dir=dict(type="path"),
        sync_command=dict(type="list", elements="str", default=["sh", EDGE_SCRIPT, "sync"]),
        drain_command=dict(type="list", elements="str", default=["sh", EDGE_SCRIPT, "drained"]),
        reload_edge=dict(type="bool", default=False),
        timeout=dict(type="int", default=180),
        drain=dict(type="float", default=2.0),
        verify=dict(
            type="list",
            elements="dict",
            default=[],
            options=dict(
                name=dict(type="str"),
                url=dict(type="str", required=True),
                status=dict(type="int", default=200),
                json=dict(type="dict"),
                body_regex=dict(type="str"),
                host=dict(type="str"),
            ),
        ),
        verify_timeout=dict(type="int", default=120),
        validate_certs=dict(type="bool", default=True),
        owned_volumes=dict(
            type="list",
            elements="dict",
            default=[],
            options=dict(
                service=dict(type="str", required=True),
                volume=dict(type="str", required=True),
                uid=dict(type="int", required=True),
                gid=dict(type="int", required=True),
            ),
        ),
        accounts_brought=dict(type="dict", default={}),
        stores=dict(
            type="list",
            elements="dict",
            default=[],
            options=dict(
                service=dict(type="str", required=True),
                kind=dict(type="str", required=True, choices=sorted(STORE_KINDS)),
                image=dict(type="str", required=True),
                network=dict(type="str", required=True),
                port=dict(type="int", required=True),
                database=dict(type="str", default=""),
                admin_user=dict(type="str", required=True),
                admin_password_file=dict(type="path", required=True, no_log=False),
                accounts=dict(
                    type="list",
                    elements="dict",
                    default=[],
                    options=dict(
                        name=dict(type="str", required=True),
                        password=dict(type="str", required=True, no_log=True),
                        privileges=dict(type="str", required=True),
                        group=dict(type="str"),
                        service=dict(type="str"),
                    ),
                ),
            ),
        ),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    params["write"] = params["write"] or {"directories": [], "files": []}
    reveal_non_secrets(module, params["write"]["files"])
    if params["routes"] and params["edge"] and not params["upstreams_dir"]:
        module.fail_json(msg="upstreams_dir is required when an edge routes services")
    unrouted = sorted(set(params["routes"]) - set(params["services"]))
    if unrouted:
        module.fail_json(msg=f"routes name services that are not rolled: {', '.join(unrouted)}")
    lists = {"first": params["first"], "services": params["services"], "in_place": params["in_place"]}
    twice = sorted({s for a in lists for b in lists if a < b for s in set(lists[a]) & set(lists[b])})
    if twice:
        module.fail_json(msg=f"a service is in one of first, services and in_place only: {', '.join(twice)}")
    problems = [
        f"stores[{store['service']}]: {problem}"
        for store in params["stores"]
        for problem in STORE_KINDS[store["kind"]].account_problems(store["accounts"], store["admin_user"])
    ]
    if problems:
        module.fail_json(msg="; ".join(problems))
    client = docker_client(module)
    rollout = Rollout(module, client)
    waited = 0.0
    try:
        with one_rollout_at_a_time(module, params["project_src"], 3 * params["timeout"]) as waited:
            rollout.run()
    except (RolloutError, EdgeError, FilesError, DockerException, NotFound, OSError) as exc:
        outcome = rollout.result(waited)
        outcome["changed"] = False
        module.fail_json(msg=str(exc), **outcome)
    result = rollout.result(waited)
    if result["failures"]:
        module.fail_json(msg="could not bring back " + "; ".join(result["failures"]), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
