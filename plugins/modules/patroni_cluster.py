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
  - With O(state=present) and O(synchronous), also brings the cluster's synchronous mode to it (C(patronictl
    edit-config), which every member applies without a restart); reports C(changed) when it did.
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
    lag_mb:
      description: How far a replica is behind the primary, in MB (C(null) for the leader, or when unknown).
      type: float
switched_from:
  description: The member that led before a switchover (empty when none happened).
  returned: always
  type: str
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


def patronictl(container, *args: str) -> str:
    code, (out, err) = container.exec_run([*PATRONICTL, *args], demux=True)
    text = (out or b"").decode(errors="replace")
    if code != 0:
        problem = ((err or b"") + (out or b"")).decode(errors="replace").strip()
        raise ClusterError(f"patronictl {' '.join(args[:1])} failed (exit {code}): {problem[-800:]}")
    return text


def normalize(entry: dict) -> dict:
    """One member of `patronictl list -f json` in this module's words."""
    lag = entry.get("Lag in MB")
    return {
        "name": str(entry.get("Member", "")),
        "role": str(entry.get("Role", "")).lower().replace(" ", "_"),
        "state": str(entry.get("State", "")),
        "timeline": entry.get("TL"),
        "lag_mb": lag if isinstance(lag, (int, float)) else None,
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


def synchronous_mode(module, container, cluster: str, wanted: bool) -> dict:
    """The cluster's synchronous mode (in etcd) brought to wanted: {"changed", "synchronous"}."""
    shown = re.search(r"^synchronous_mode:\s*(\S+)", patronictl(container, "show-config", cluster), re.MULTILINE)
    current = bool(shown) and shown.group(1).lower() in ("true", "on")
    if current == wanted:
        return {"synchronous": current}
    if not module.check_mode:
        patronictl(
            container, "edit-config", cluster, "--force", "--quiet", "--set", f"synchronous_mode={str(wanted).lower()}"
        )
    return {"changed": True, "synchronous": wanted}


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
        if params["synchronous"] is None:
            return result
        return {**result, **synchronous_mode(module, find(), name, params["synchronous"])}

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
    answer = patronictl(
        find(), "switchover", name, "--leader", leader, *(["--candidate", candidate] if candidate else []), "--force"
    )
    # patronictl says a refused switchover on its output, and exits 0.
    if "failed" in answer.lower():
        raise ClusterError(f"the switchover of {name} away from {leader} was refused: {answer.strip()[-800:]}")

    def moved(listed):
        new = leader_of(listed)
        old = next((m for m in listed if m["name"] == leader), None)
        return (
            new not in ("", leader) and (not candidate or new == candidate) and bool(old) and old["state"] in FOLLOWING
        )

    cluster, listed, settled = wait(find, moved, params["timeout"])
    if not settled:
        raise ClusterError(
            f"the switchover of {name} away from {leader} did not complete in {params['timeout']} s: {describe(listed)}"
        )
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
