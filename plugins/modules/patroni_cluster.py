#!/usr/bin/python
# Copyright (c) pliers.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: patroni_cluster
short_description: Look at the HA database's Patroni cluster, or move its primary to another member
version_added: 0.2.0
description:
  - Asks the Patroni cluster of a Swarm stack's HA database (C(pliers_database_replicas) of 2 or more) which member
    leads and how far each replica is behind, through C(patronictl) in the member that runs on this host.
  - With O(state=present), waits up to O(timeout) seconds for a leader (and, with O(replicas), for that many
    replicas streaming from it), then reports the cluster; fails naming the cluster and each member's state when
    none leads by then.
  - With O(state=present) and O(synchronous), also brings the cluster's synchronous mode to it (through the member's
    REST API, with its login; every member applies it without a restart); reports C(changed) when it did.
  - With O(state=present) and O(parameters), also brings PostgreSQL's settings in the cluster's configuration (kept
    in etcd, every member applies them) to exactly these, then restarts the members a changed setting needs
    restarted (Patroni's I(pending restart)), one at a time - the replicas first, each waited for until it streams
    again, then the primary hands over to a replica (a planned switchover, as with O(state=switched_over)) and
    restarts as a replica. A setting a replica may not hold lower than its primary (C(max_connections),
    C(max_worker_processes), C(max_wal_senders), C(max_prepared_transactions), C(max_locks_per_transaction))
    lowered or removed restarts the primary first, in place (writes pause while it restarts), then the replicas. A
    member left pending by an earlier run is restarted the same way. Reports C(changed) when it changed a setting
    or restarted a member.
  - With O(state=switched_over), a planned switchover - the primary hands over to O(candidate) (or to the replica
    Patroni finds best, the synchronous one first), then waits until the new primary runs and the old one streams
    from it. With O(leader), only when that member leads (a member that does not is already where it should be -
    no change); with O(candidate) alone, only when the candidate does not lead already. Reports C(changed) when it
    switched over.
  - Must run on a host where a member of the cluster runs (it waits up to O(timeout) for one to start).
author:
  - Pliers team (@pliers)
extends_documentation_fragment:
  - pliers.deploy._attributes
  - pliers.deploy._attributes.actiongroup_deploy
attributes:
  check_mode:
    support: full
    details: Reports the cluster, and whether it would switch over; switches nothing.
  diff_mode:
    support: none
options:
  stack:
    description: The stack's name (its C(com.docker.stack.namespace) label).
    type: str
    required: true
  service:
    description: The members' service, without the stack prefix.
    type: str
    default: postgres-member
  state:
    description: Report the cluster (C(present)), or move its primary (C(switched_over)).
    type: str
    choices: [present, switched_over]
    default: present
  leader:
    description: With O(state=switched_over), the member to move the primary away from; nothing changes when
      another member leads.
    type: str
  candidate:
    description: With O(state=switched_over), the member to promote; default the replica Patroni finds best.
    type: str
  replicas:
    description: With O(state=present), also wait until this many replicas stream from the leader.
    type: int
  synchronous:
    description: With O(state=present), bring the cluster's synchronous mode (Patroni's C(synchronous_mode), kept in
      etcd) to this - a commit then waits for a replica. Left as it is when not given.
    type: bool
  parameters:
    description: With O(state=present), PostgreSQL's settings in the cluster's configuration (C(postgresql.parameters)
      in etcd), name to value - a setting there and not here is removed. Left as they are when not given.
    type: dict
  timeout:
    description: Seconds to wait for a leader (and the replicas), or for a switchover to complete.
    type: int
    default: 120
requirements:
  - the Python Docker SDK on the target
"""

EXAMPLES = r"""
- name: Fail unless the HA database has a leader, and say which member it is
  pliers.deploy.patroni_cluster:
    stack: pliers-production
  register: cluster

- name: Give every member more connections (a restart - replicas first, then the primary after a switchover)
  pliers.deploy.patroni_cluster:
    stack: pliers-production
    parameters:
      max_connections: 200
      wal_level: replica

- name: Move the primary off the node about to be serviced
  pliers.deploy.patroni_cluster:
    stack: pliers-production
    state: switched_over
    leader: db-2
"""

RETURN = r"""
cluster:
  description: The Patroni cluster's name (its scope).
  returned: always
  type: str
leader:
  description: The member that leads when the module returned.
  returned: always
  type: str
members:
  description: Each member, as C(patronictl list) saw it last.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The member's name (its node's hostname).
      type: str
    role:
      description: C(leader), C(sync_standby), C(replica), ...
      type: str
    state:
      description: C(running) (the primary), C(streaming), C(stopped), C(starting), C(creating replica), ...
      type: str
    timeline:
      description: Its timeline (one more at each promotion), when it runs.
      type: int
    pending_restart:
      description: Whether a changed setting waits for its restart.
      type: bool
    lag_mb:
      description: How far a replica is behind the primary, in MB (C(null) for the leader, or when unknown).
      type: float
switched_from:
  description: The member that led before a switchover (empty when none happened).
  returned: always
  type: str
parameters_changed:
  description: The settings O(parameters) changed, added or removed (their names).
  returned: when O(parameters) is given
  type: list
  elements: str
restarted:
  description: The members restarted for a setting, in their order (the old primary last, restarted by its
    demotion or after it; or first, in place, for a lowered setting).
  returned: when O(parameters) is given
  type: list
  elements: str
synchronous:
  description: The cluster's synchronous mode when the module returned (with O(synchronous) given).
  returned: when O(synchronous) is given
  type: bool
"""

import json
import re
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.pliers.deploy.plugins.module_utils._docker import DockerException, docker_client

SWARM_SERVICE_LABEL = "com.docker.swarm.service.name"
PATRONICTL = ["patroni-entrypoint.sh", "patronictl"]
# The cluster's configuration through the member's REST API (http.client: the member image's Python has it): a read
# needs no login; a change (a JSON document merged into it - a null removes a key: PATCH /config) is made with the
# login the member's environment names. No value passes through a shell or a YAML parser. A status other than 200
# is the script's failure, with Patroni's answer.
REST_API = (
    "import base64, http.client, os, sys\n"
    "body = sys.argv[1].encode() if len(sys.argv) > 1 else None\n"
    "headers = {}\n"
    "if body is not None:\n"
    "    secret = open(os.environ['PATRONI_RESTAPI_PASSWORD_FILE']).read().rstrip('\\n')\n"
    "    login = base64.b64encode((os.environ['PATRONI_RESTAPI_USERNAME'] + ':' + secret).encode()).decode()\n"
    "    headers = {'Content-Type': 'application/json', 'Authorization': 'Basic ' + login}\n"
    "connection = http.client.HTTPConnection('127.0.0.1', 8008, timeout=10)\n"
    "connection.request('PATCH' if body is not None else 'GET', '/config', body=body, headers=headers)\n"
    "answer = connection.getresponse()\n"
    "text = answer.read().decode(errors='replace')\n"
    "if answer.status != 200:\n"
    "    raise SystemExit(f'{answer.status} {answer.reason}: {text}')\n"
    "sys.stdout.write(text)\n"
)
CONFIG_API = ["python3", "-c", REST_API]
# What a hot standby may not hold lower than its primary (PostgreSQL refuses to start it): lowered, the primary
# restarts first.
NOT_LOWER_ON_REPLICAS = frozenset(
    (
        "max_connections",
        "max_worker_processes",
        "max_wal_senders",
        "max_prepared_transactions",
        "max_locks_per_transaction",
    )
)
# patronictl's words for a leader, and for a replica that follows it.
LEADER_ROLES = ("leader",)
FOLLOWING = ("streaming",)


class ClusterError(Exception):
    pass


def member_container(client, stack: str, service: str):
    """The running container of the members' service on this host."""
    containers = client.containers.list(
        filters={"label": f"{SWARM_SERVICE_LABEL}={stack}_{service}", "status": "running"}
    )
    if not containers:
        raise ClusterError(f"no member of {stack}_{service} runs on this host: run this on a node labelled db")
    return containers[0]


def exec_in(container, command: list[str], what: str) -> str:
    code, (out, err) = container.exec_run(command, demux=True)
    text = (out or b"").decode(errors="replace")
    if code != 0:
        problem = ((err or b"") + (out or b"")).decode(errors="replace").strip()
        raise ClusterError(f"{what} failed (exit {code}): {problem[-800:]}")
    return text


def patronictl(container, *args: str) -> str:
    return exec_in(container, [*PATRONICTL, *args], f"patronictl {' '.join(args[:1])}")


def dcs_config(container) -> dict:
    try:
        return json.loads(exec_in(container, CONFIG_API, "reading the cluster's configuration") or "{}")
    except ValueError as exc:
        raise ClusterError(f"the cluster's configuration is no JSON: {exc}") from exc


def normalize(entry: dict) -> dict:
    """One member of `patronictl list -f json` in this module's words."""
    lag = entry.get("Lag in MB")
    return {
        "name": str(entry.get("Member", "")),
        "role": str(entry.get("Role", "")).lower().replace(" ", "_"),
        "state": str(entry.get("State", "")),
        "timeline": entry.get("TL"),
        "lag_mb": lag if isinstance(lag, (int, float)) else None,
        "pending_restart": bool(str(entry.get("Pending restart", "")).strip()),
        "pending_reason": str(entry.get("Pending restart reason") or ""),
    }


def members(container) -> tuple[str, list[dict]]:
    listed = json.loads(patronictl(container, "list", "-f", "json") or "[]")
    cluster = str(listed[0].get("Cluster", "")) if listed else ""
    return cluster, [normalize(entry) for entry in listed]


def leader_of(listed: list[dict]) -> str:
    """The member that leads and runs as the primary, or ''."""
    leaders = [m["name"] for m in listed if m["role"] in LEADER_ROLES and m["state"] == "running"]
    return leaders[0] if len(leaders) == 1 else ""


def following(listed: list[dict]) -> list[str]:
    return [m["name"] for m in listed if m["role"] not in LEADER_ROLES and m["state"] in FOLLOWING]


def describe(listed: list[dict]) -> str:
    return ", ".join(f"{m['name']} {m['role'] or 'no role'} {m['state'] or 'unknown'}" for m in listed) or "no member"


def wait(find, settled, timeout: float, interval: float = 1.0) -> tuple[str, list[dict], bool]:
    """Poll the cluster, through the member find() returns, until settled(listed) or the deadline; (cluster,
    members, settled). A member that does not run here by the deadline fails, naming the service."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            cluster, listed = members(find())
        except (ClusterError, ValueError, DockerException):
            # The member may be starting (a first deploy), the DCS or a member may not answer for a moment (a
            # failover, etcd electing): asked again.
            if time.monotonic() >= deadline:
                find()
            cluster, listed = "", []
        if listed and settled(listed):
            return cluster, listed, True
        if time.monotonic() >= deadline:
            return cluster, listed, False
        time.sleep(interval)


def setting(value) -> str:
    """A setting's value as PostgreSQL reads it (YAML's true is on)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def edit_config(module, container, change: dict) -> None:
    """The cluster's configuration (in etcd) changed by change, merged into it (None: removed); every member applies
    it in its next loop."""
    if change and not module.check_mode:
        exec_in(container, [*CONFIG_API, json.dumps(change)], "changing the cluster's configuration")


def synchronous_on(config: dict) -> bool:
    return setting(config.get("synchronous_mode", False)).lower() in ("on", "true")


def synchronous_mode(module, container, config: dict, wanted: bool) -> dict:
    """The cluster's synchronous mode (config, in etcd) brought to wanted: {"changed", "synchronous"}."""
    current = synchronous_on(config)
    if current == wanted:
        return {"synchronous": current}
    edit_config(module, container, {"synchronous_mode": wanted})
    return {"changed": True, "synchronous": wanted}


def parameter_changes(current: dict, wanted: dict) -> dict:
    """The settings to set (their value) or to remove (None) that bring the cluster's to wanted."""
    changes: dict = {name: None for name in current if name not in wanted}
    changes.update(
        (name, value)
        for name, value in wanted.items()
        if name not in current or setting(current[name]) != setting(value)
    )
    return dict(sorted(changes.items()))


def restart(container, cluster: str, name: str) -> None:
    """A member restarted for its pending settings (Patroni's REST API answers once it ran again)."""
    answer = patronictl(container, "restart", cluster, name, "--pending", "--force")
    # patronictl says a failed restart on its output, and exits 0.
    if "failed" in answer.lower():
        raise ClusterError(f"the restart of {name} in {cluster} failed: {answer.strip()[-800:]}")


def decreases(name: str, old, new) -> bool:
    """Whether setting name goes down to new, one a replica may not hold lower than its primary."""
    if name not in NOT_LOWER_ON_REPLICAS:
        return False
    # One removed goes back to PostgreSQL's default, which may be lower: the safe order.
    if new is None:
        return True
    try:
        return int(str(new)) < int(str(old))
    except ValueError:
        return False


def lowered(changes: dict, current: dict) -> bool:
    """Whether this run's changes lower a setting a replica may not hold lower than its primary: then the primary
    restarts first (PostgreSQL's order for a decrease)."""
    return any(decreases(name, current.get(name), value) for name, value in changes.items())


def leader_lowered(listed: list[dict]) -> bool:
    """Whether the primary waits to restart for such a decrease (an earlier run's change, as its pending restart
    reason says: "name: old->new")."""
    return any(
        decreases(name, old, new)
        for m in listed
        if m["role"] in LEADER_ROLES
        for name, old, new in re.findall(r"(\w+): (\S+?)->(\S+)", m["pending_reason"])
    )


def rolled(
    module, find, cluster: str, listed: list[dict], loop_wait: int, synchronous: bool, lower: bool, timeout: int
) -> list[str]:
    """The members a changed setting waits to restart, restarted one at a time: the replicas, then the primary once
    it handed over (the cluster stays writable throughout) - or, with lower, the primary first, in place (writes
    pause while it restarts), then the replicas. The members restarted (or, the old primary, by its demotion), in
    order."""
    if loop_wait and not module.check_mode:
        # Each member applies the new configuration in its next loop (every loop_wait seconds): until then it cannot
        # say whether it needs a restart.
        time.sleep(2 * loop_wait + 1)
        listed = members(find())[1]
    lower = lower or leader_lowered(listed)
    pending = [m["name"] for m in listed if m["pending_restart"]]
    if module.check_mode or not pending:
        return pending if module.check_mode else []
    leader = leader_of(listed)
    replicas = sorted(name for name in pending if name != leader)
    primary = [leader] if leader in pending else []
    order = primary + replicas if lower else replicas + primary
    for name in order:
        still_pending = True
        if name == leader and not lower:
            # Demoted, the old primary restarts as a replica: with the new settings, most often (then nothing is
            # left to restart it for).
            listed = switch_over(find, cluster, leader, None, synchronous, timeout)
            still_pending = any(m["name"] == name and m["pending_restart"] for m in listed)
        if still_pending:
            restart(find(), cluster, name)

        def runs(listed, name=name):
            member = next((m for m in listed if m["name"] == name), None)
            if not member or not leader_of(listed):
                return False
            return leader_of(listed) == name if name == leader and lower else member["state"] in FOLLOWING

        def back(listed, name=name):
            return runs(listed) and not any(m["name"] == name and m["pending_restart"] for m in listed)

        if lower and name != leader:
            # A replica that started before it replayed its primary's lowered value keeps the higher one from its
            # control file (Patroni leaves it pending): streaming, it replays it, and a second restart takes it.
            wait(find, runs, timeout)
            now, settled = wait(find, back, 30)[1:]
            if not settled:
                restart(find(), cluster, name)
                now, settled = wait(find, back, timeout)[1:]
        else:
            now, settled = wait(find, back, timeout)[1:]
        if not settled:
            raise ClusterError(f"{name} did not run again within {timeout} s of its restart: {describe(now)}")
    return order


def switch_over(find, cluster: str, leader: str, candidate: str | None, synchronous: bool, timeout: int) -> list[dict]:
    """A planned switchover away from leader (to candidate, or Patroni's best replica), waited for until the new
    primary runs and the old one streams from it: the members then. Waits first for a replica that may take over (in
    synchronous mode, the synchronous standby: a replica that just restarted is one again after a loop or two)."""

    def takes_over(listed):
        able = [m for m in listed if m["role"] not in LEADER_ROLES and m["state"] in FOLLOWING]
        if synchronous:
            able = [m for m in able if m["role"] == "sync_standby"]
        return leader_of(listed) == leader and any(not candidate or m["name"] == candidate for m in able)

    listed, settled = wait(find, takes_over, timeout)[1:]
    if not settled:
        raise ClusterError(
            f"no {'synchronous standby' if synchronous else 'replica'} of {cluster} streams to take over from {leader}"
            f" within {timeout} s: {describe(listed)}"
        )
    answer = patronictl(
        find(), "switchover", cluster, "--leader", leader, *(["--candidate", candidate] if candidate else []), "--force"
    )
    # patronictl says a refused switchover on its output, and exits 0.
    if "failed" in answer.lower():
        raise ClusterError(f"the switchover of {cluster} away from {leader} was refused: {answer.strip()[-800:]}")

    def moved(listed):
        new = leader_of(listed)
        old = next((m for m in listed if m["name"] == leader), None)
        return (
            new not in ("", leader) and (not candidate or new == candidate) and bool(old) and old["state"] in FOLLOWING
        )

    listed, settled = wait(find, moved, timeout)[1:]
    if not settled:
        raise ClusterError(
            f"the switchover of {cluster} away from {leader} did not complete in {timeout} s: {describe(listed)}"
        )
    return listed


def run(module, client) -> dict:
    params = module.params
    replicas = params["replicas"] or 0

    def find():
        return member_container(client, params["stack"], params["service"])

    def ready(listed):
        return bool(leader_of(listed)) and len(following(listed)) >= replicas

    cluster, listed, settled = wait(find, ready, params["timeout"])
    name = cluster or params["stack"]
    if not settled:
        wanted = f" and {replicas} replicas streaming" if replicas else ""
        raise ClusterError(
            f"the HA database {name} has no leader{wanted} after {params['timeout']} s: {describe(listed)}"
        )
    leader = leader_of(listed)
    result = {"changed": False, "cluster": name, "leader": leader, "members": listed, "switched_from": ""}
    if params["state"] == "present":
        # Read once, when there is something to bring: this run's own changes are the only ones it acts on after.
        bringing = params["synchronous"] is not None or params["parameters"] is not None
        config = dcs_config(find()) if bringing else {}
        synchronous = synchronous_on(config)
        if params["synchronous"] is not None:
            result.update(synchronous_mode(module, find(), config, params["synchronous"]))
            synchronous = result["synchronous"]
        if params["parameters"] is not None:
            current = (config.get("postgresql") or {}).get("parameters") or {}
            changes = parameter_changes(current, params["parameters"])
            edit_config(module, find(), {"postgresql": {"parameters": changes}} if changes else {})
            loop_wait = int(config.get("loop_wait", 10)) if changes else 0
            restarted = rolled(
                module, find, name, listed, loop_wait, synchronous, lowered(changes, current), params["timeout"]
            )
            result.update(parameters_changed=list(changes), restarted=restarted)
            result["changed"] = result["changed"] or bool(changes or restarted)
            if restarted and not module.check_mode:
                result["members"] = members(find())[1]
                result["leader"] = leader_of(result["members"])
        return result

    away_from, candidate = params["leader"], params["candidate"]
    names = [m["name"] for m in listed]
    for role, asked in (("leader", away_from), ("candidate", candidate)):
        if asked and asked not in names:
            raise ClusterError(f"{role} {asked} is no member of {name} ({', '.join(names)})")
    # In synchronous mode Patroni promotes the synchronous standby only (no acknowledged write may be lost).
    standby = [m["name"] for m in listed if m["role"] == "sync_standby"]
    if candidate and candidate != leader and standby and candidate not in standby:
        raise ClusterError(
            f"candidate {candidate} is not the synchronous standby of {name} ({', '.join(standby)}): in synchronous "
            "mode only it may take over without losing a write"
        )
    if (away_from and leader != away_from) or (not away_from and candidate == leader):
        return result
    if module.check_mode:
        return {**result, "changed": True, "switched_from": leader}
    listed = switch_over(find, name, leader, candidate, synchronous_on(dcs_config(find())), params["timeout"])
    return {**result, "changed": True, "leader": leader_of(listed), "members": listed, "switched_from": leader}


def main():
    module = AnsibleModule(
        argument_spec=dict(
            stack=dict(type="str", required=True),
            service=dict(type="str", default="postgres-member"),
            state=dict(type="str", choices=["present", "switched_over"], default="present"),
            leader=dict(type="str"),
            candidate=dict(type="str"),
            replicas=dict(type="int"),
            synchronous=dict(type="bool"),
            parameters=dict(type="dict"),
            timeout=dict(type="int", default=120),
        ),
        supports_check_mode=True,
    )
    client = docker_client(module)
    try:
        module.exit_json(**run(module, client))
    except (ClusterError, DockerException) as exc:
        module.fail_json(msg=str(exc))


if __name__ == "__main__":
    main()
