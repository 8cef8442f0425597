#!/usr/bin/python
# Copyright (c) pliers.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: stack_rollout
short_description: Wait for a Swarm stack's rollout, then prune the secret and config versions it no longer needs
version_added: 0.1.0
description:
  - Polls the services of a stack until each runs its desired number of up-to-date tasks and its last update
    completed, or the deadline passes.
  - Fails with a message naming the service when Swarm rolled an update back (or paused it), or when a service
    did not converge in time, with what it last saw. Once one service rolled back, it waits for the others still
    updating to settle, so that the message names every service that rolled back. The message gives the error of
    the task that made Swarm roll back. A rollback that cannot finish (the previous spec's task can run on no node
    that is up) fails at once instead of at the deadline.
  - After a converged rollout, with O(prune=true), removes the stack's secrets and configs that neither the
    current nor the previous version of any service uses (Swarm rolls back to the previous one).
  - With O(updates_since), an update that Swarm rolled back or paused before that time belongs to an earlier
    deploy, not to this one. A service rolled back then runs its current spec and counts as converged; a service
    whose update was left paused is resumed with a forced update.
  - A service left half updated (tasks of an older spec still running while no update is in progress, as an
    update that lost a node leaves it, and the service unchanged for 20 s, since Swarm starts an update a moment
    after the change) is resumed with a forced update too, and so is an update waiting for a task
    assigned to a node that went down (Swarm would wait for it forever). So a rerun converges what an interrupted
    or failed deploy left half done, and a release that loses a node completes on the others.
  - Reports C(changed) when it resumed an update. Pruning is housekeeping, as the deploy lock and the release history
    are - it never reports C(changed) (RV(pruned) names what it removed). C(docker stack deploy) updates every service
    it is given, changed or not, so the version a changed secret or config replaced is only unused from the next
    deploy on, which then removes it; a rerun with nothing to do still reports no change.
  - Must run on a Swarm manager.
author:
  - Pliers team (@pliers)
extends_documentation_fragment:
  - pliers.deploy._attributes
  - pliers.deploy._attributes.actiongroup_deploy
attributes:
  check_mode:
    support: full
    details: Waits and reports; prunes and resumes nothing.
  diff_mode:
    support: none
  action_group:
    version_added: 0.2.0
options:
  stack:
    description: The stack's name (its C(com.docker.stack.namespace) label).
    type: str
    required: true
  services:
    description: Only these services (short names, without the stack prefix); default every service of the stack.
    type: list
    elements: str
  timeout:
    description: Seconds to wait for convergence.
    type: int
    default: 300
  interval:
    description: Seconds between checks.
    type: float
    default: 2.0
  prune:
    description: Remove the stack's secret and config versions no current or previous service spec uses.
    type: bool
    default: false
  updates_since:
    description: When this deploy began (ISO 8601, with a time zone), on the managers' clock; updates that
      started earlier are an earlier deploy's.
    type: str
    version_added: 0.2.0
requirements:
  - the Python Docker SDK on the target
"""

EXAMPLES = r"""
- name: Wait for the rollout and drop unused secret versions
  pliers.deploy.stack_rollout:
    stack: pliers-production
    timeout: 600
    prune: true
"""

RETURN = r"""
services:
  description: The state of each service when the module returned.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The service's short name.
      type: str
    desired:
      description: Tasks it should run.
      type: int
    running:
      description: Up-to-date tasks running.
      type: int
    update_state:
      description: The state of its last update (C(completed), C(updating), C(rollback_completed), ...), or C(none).
      type: str
    converged:
      description: Whether it runs as desired.
      type: bool
resumed:
  description: The services whose update was resumed, each with why (C(api - ...)).
  returned: always
  type: list
  elements: str
  version_added: 0.2.0
pruned:
  description: Names of the secrets and configs removed.
  returned: always
  type: list
  elements: str
elapsed:
  description: Seconds spent waiting.
  returned: always
  type: float
"""

import re
import time
from datetime import datetime

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.pliers.deploy.plugins.module_utils._docker import DockerException, docker_client

STACK_LABEL = "com.docker.stack.namespace"
FAILED_UPDATES = ("rollback_completed", "rollback_paused", "paused")
# A task in one of these states on a node that is down never runs; an update waiting for it never ends.
NOT_STARTED = ("new", "allocated", "pending", "assigned", "accepted", "preparing", "ready", "starting")
IN_PROGRESS_UPDATES = ("updating", "rollback_started")
# The scheduler's reason for a task no node's constraints allow (as opposed to resources still in use).
UNPLACEABLE = "scheduling constraints not satisfied"
# Swarm starts the update of a changed service a moment after the change, later on a busy manager: a service whose
# tasks of an older spec run with no update in progress is only left half updated once it has not changed for this
# long (forced sooner, its update would replace one about to start and roll back).
SETTLED_SECONDS = 20.0


def timestamp(text: str | None) -> float | None:
    """Seconds since the epoch of an ISO 8601 time (Docker's carry nanoseconds), or None."""
    if not text:
        return None
    # Six digits of fraction exactly: Python before 3.11 reads no other count (Docker drops trailing zeros).
    text = re.sub(r"\.(\d+)", lambda m: "." + m.group(1)[:6].ljust(6, "0"), text.strip()).replace("Z", "+00:00")
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def service_state(service, stack: str, since: float | None = None, down: dict | None = None) -> dict:
    """What a service runs, and whether (and why) its update must be resumed: `resume` is a reason or empty."""
    attrs = service.attrs
    spec = attrs["Spec"]
    name = spec["Name"].removeprefix(f"{stack}_")
    container_spec = spec["TaskTemplate"]["ContainerSpec"]
    tasks = service.tasks(filters={"desired-state": "running"})
    history = sorted(service.tasks(), key=lambda task: task.get("UpdatedAt", ""), reverse=True)
    current = [task for task in tasks if task["Spec"].get("ContainerSpec") == container_spec]
    older = [t for t in tasks if t["Spec"].get("ContainerSpec") != container_spec and t["Status"]["State"] == "running"]
    running = sum(1 for task in current if task["Status"]["State"] == "running")
    replicated = spec["Mode"].get("Replicated")
    desired = replicated.get("Replicas", 1) if replicated is not None else len(tasks)
    update = attrs.get("UpdateStatus") or {}
    state = update.get("State", "none")
    started = timestamp(update.get("StartedAt"))
    # Tasks of this update (created since it started) waiting on a node that is down: they never run.
    down = down or {}
    lost = sorted(
        {
            down[t["NodeID"]]
            for t in history
            if t.get("NodeID") in down
            and t["Status"]["State"] in NOT_STARTED
            and (timestamp(t.get("CreatedAt")) or 0.0) >= (started or 0.0)
        }
    )
    # An earlier deploy's outcome: rolled back means the current spec runs; paused is resumed by the caller.
    stale = since is not None and started is not None and started < since
    if stale and state == "rollback_completed":
        state = "none"
    last_error = next((t["Status"].get("Err") for t in history if t["Status"].get("Err")), "")
    message = update.get("Message", "")
    # Swarm says which task made it roll back ("rollback completed" once done), not why: the error of that task,
    # or of the newest one that ran the spec it rolled back from, says it.
    cause = ""
    if state in FAILED_UPDATES or state == "rollback_started":
        named = re.search(r"\btask (\w+)", message)
        culprits = [
            t
            for t in history
            if t["Status"]["State"] not in NOT_STARTED
            and (t.get("ID") == named.group(1) if named else t["Spec"].get("ContainerSpec") != container_spec)
        ]
        # A task that ended without an error (exited 0, was shut down) still says how it ended.
        cause = next((t["Status"]["Err"] for t in culprits if t["Status"].get("Err")), "") or next(
            (f"its task {t['Status']['State']} ({t['Status'].get('Message', '')})" for t in culprits), ""
        )
    message = f"{message}: {cause}" if message and cause else message or last_error
    # A rollback whose tasks can run on no node that is up (the previous spec was pinned to a node that went
    # down) never ends: Swarm waits for that node.
    blocked = ""
    if state == "rollback_started":
        unplaceable = next(
            (
                t["Status"]["Err"]
                for t in tasks
                if t["Status"]["State"] in NOT_STARTED and UNPLACEABLE in t["Status"].get("Err", "")
            ),
            "",
        )
        if lost:
            blocked = f"its task waits on {', '.join(lost)}, which is down"
        elif unplaceable:
            blocked = f"no node can run its task ({unplaceable})"
    resume = ""
    if stale and state in ("paused", "rollback_paused"):
        resume = f"its update was left {state} by an earlier deploy"
    elif state == "updating" and lost:
        resume = f"its update waited for a task on {', '.join(lost)}, which is down"
    elif (
        state in ("none", "completed")
        and older
        and time.time() - (timestamp(attrs.get("UpdatedAt")) or 0.0) >= SETTLED_SECONDS
    ):
        resume = f"{len(older)} tasks of an older spec still ran with no update in progress"
    return {
        "name": name,
        "desired": desired,
        "running": running,
        "update_state": state,
        "message": message + (f"; the rollback cannot finish: {blocked}" if blocked else ""),
        "blocked": bool(blocked),
        "converged": running == desired and state in ("none", "completed"),
        "stale": stale and state in ("paused", "rollback_paused"),
        "resume": resume,
    }


def resume(module, service: str) -> None:
    """Roll every task of a service to its current spec (a forced update replaces the update in progress)."""
    rc, out, err = module.run_command(["docker", "service", "update", "--force", "--detach", service])
    if rc != 0:
        module.fail_json(msg=f"resuming the update of {service} failed: {(err or out).strip()}")


def referenced(services, kind: str) -> set[str]:
    """Names of the secrets (or configs) that any service's current or previous spec uses."""
    key = "Secrets" if kind == "secrets" else "Configs"
    names = set()
    for service in services:
        for spec_key in ("Spec", "PreviousSpec"):
            spec = service.attrs.get(spec_key) or {}
            for ref in spec.get("TaskTemplate", {}).get("ContainerSpec", {}).get(key) or []:
                names.add(ref.get("SecretName") or ref.get("ConfigName"))
    return names


def prune(module, client, stack: str, services) -> list[str]:
    pruned = []
    for kind, collection in (("secrets", client.secrets), ("configs", client.configs)):
        keep = referenced(services, kind)
        for item in collection.list(filters={"label": f"{STACK_LABEL}={stack}"}):
            if item.name not in keep:
                if not module.check_mode:
                    item.remove()
                pruned.append(item.name)
    return sorted(pruned)


def main() -> None:
    argument_spec = dict(
        stack=dict(type="str", required=True),
        services=dict(type="list", elements="str"),
        timeout=dict(type="int", default=300),
        interval=dict(type="float", default=2.0),
        prune=dict(type="bool", default=False),
        updates_since=dict(type="str"),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    stack = module.params["stack"]
    client = docker_client(module)
    started = time.monotonic()
    deadline = started + module.params["timeout"]
    states: list[dict] = []
    since = timestamp(module.params["updates_since"])
    if module.params["updates_since"] and since is None:
        module.fail_json(msg=f"updates_since must be an ISO 8601 time, got {module.params['updates_since']!r}")
    resumed: list[str] = []
    done: set[str] = set()
    suspects: dict[str, str] = {}
    try:
        while True:
            services = client.services.list(filters={"label": f"{STACK_LABEL}={stack}"})
            wanted = module.params["services"]
            if wanted:
                services = [s for s in services if s.attrs["Spec"]["Name"].removeprefix(f"{stack}_") in wanted]
                missing = sorted(set(wanted) - {s.attrs["Spec"]["Name"].removeprefix(f"{stack}_") for s in services})
                if missing:
                    module.fail_json(msg=f"stack {stack} has no service {', '.join(missing)}")
            if not services:
                module.fail_json(msg=f"stack {stack} has no services: deploy it first")
            down = {
                node.id: node.attrs["Description"]["Hostname"]
                for node in client.nodes.list()
                if node.attrs["Status"]["State"] == "down"
            }
            states = [service_state(service, stack, since, down) for service in services]
            for state in states:
                # Once per service and run; a half-updated service must be seen so twice (an update starting).
                reason = state["resume"]
                if reason and state["name"] not in done and (state["stale"] or reason == suspects.get(state["name"])):
                    done.add(state["name"])
                    resumed.append(f"{state['name']} - {reason}")
                    if not module.check_mode:
                        resume(module, f"{stack}_{state['name']}")
                if module.check_mode and state["name"] in done:
                    # Not resumed in check mode: what a real run would do is reported, not waited for.
                    state["converged"] = True
                suspects[state["name"]] = reason
            rolled_back = [
                s for s in states if (s["update_state"] in FAILED_UPDATES and not s["stale"]) or s["blocked"]
            ]
            # Services roll at once: once one rolled back, wait for the others to settle, to name them all.
            settling = [s for s in states if s["update_state"] in IN_PROGRESS_UPDATES and not s["blocked"]]
            if rolled_back and settling and time.monotonic() < deadline:
                time.sleep(module.params["interval"])
                continue
            if rolled_back:
                details = "; ".join(f"{s['name']}: update {s['update_state']} ({s['message']})" for s in rolled_back)
                module.fail_json(
                    msg=f"Swarm rolled back or paused the update of {details}",
                    services=states,
                    pruned=[],
                    elapsed=round(time.monotonic() - started, 1),
                )
            if all(s["converged"] for s in states) or time.monotonic() >= deadline:
                break
            time.sleep(module.params["interval"])
        elapsed = round(time.monotonic() - started, 1)
        waiting = [s for s in states if not s["converged"]]
        if waiting:
            details = "; ".join(
                f"{s['name']}: {s['running']}/{s['desired']} up-to-date tasks running, update {s['update_state']}"
                + (f" ({s['message']})" if s["message"] else "")
                for s in waiting
            )
            message = f"stack {stack} did not converge in {elapsed}s: {details}"
            module.fail_json(msg=message, services=states, pruned=[], elapsed=elapsed)
        pruned = prune(module, client, stack, services) if module.params["prune"] and not wanted else []
    except DockerException as exc:
        module.fail_json(msg=f"reading stack {stack} failed: {exc}")
    module.exit_json(changed=bool(resumed), services=states, pruned=pruned, resumed=resumed, elapsed=elapsed)


if __name__ == "__main__":
    main()
