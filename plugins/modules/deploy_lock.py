#!/usr/bin/python
# Copyright (c) pliers.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: deploy_lock
short_description: Take or release an environment's deploy lock on its target
version_added: 0.2.0
description:
  - With O(state=present), takes the lock file O(path) atomically, recording who holds it (O(holder)) and since
    when, and returns a token. When another run holds it, fails naming the holder and since when, and how to
    break a stale lock (O(break_lock)).
  - With O(state=absent), releases the lock, if O(token) still holds it (a lock broken and taken by another
    run is left to that run).
  - A lock is a deployment's bookkeeping, so taking and releasing it never reports C(changed), and a deploy
    with nothing to do reports nothing changed.
author:
  - Pliers team (@pliers)
attributes:
  check_mode:
    support: full
    description: Reports whether the lock is free; takes, breaks and releases nothing.
  diff_mode:
    support: none
    description: Reports no diff.
options:
  path:
    description: The lock file. Its directory is created (mode 0700) when missing.
    type: path
    required: true
  state:
    description: Take (V(present)) or release (V(absent)) the lock.
    type: str
    choices: [present, absent]
    default: present
  holder:
    description: Who takes the lock (user, controller, playbook, release, ...), shown to a refused run.
    type: dict
    default: {}
  token:
    description: With O(state=absent), the token O(state=present) returned.
    type: str
  break_lock:
    description: Take the lock even when another run holds it (a stale lock left by a run that was killed).
    type: bool
    default: false
requirements:
  - none on the target beyond Python
"""

EXAMPLES = r"""
- name: Take the deploy lock
  pliers.deploy.deploy_lock:
    path: /var/lib/pliers/production/deploy.lock
    holder: {user: alice, controller: ops-1, playbook: deploy, release: 1.1.0}
  register: lock

- name: Release it
  pliers.deploy.deploy_lock:
    path: /var/lib/pliers/production/deploy.lock
    state: absent
    token: "{{ lock.token }}"
"""

RETURN = r"""
token:
  description: Identifies this run's hold on the lock (O(state=present)).
  returned: success
  type: str
holder:
  description: What the lock file records now (empty when free).
  returned: always
  type: dict
broken:
  description: The holder of the lock that O(break_lock) broke, or empty.
  returned: always
  type: dict
"""

import json
import os
import time
import uuid
from datetime import UTC, datetime

from ansible.module_utils.basic import AnsibleModule


def read(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return None
    except ValueError:
        return {"unreadable": True}


def shown(holder: dict | None) -> dict:
    """The holder as reported: without its token, which only the holding run uses."""
    return {key: value for key, value in (holder or {}).items() if key != "token"}


def describe(holder: dict) -> str:
    if holder.get("unreadable"):
        return "an unreadable lock file"
    who = f"{holder.get('user', '?')}@{holder.get('controller', '?')}"
    since = holder.get("since", "?")
    try:
        minutes = (time.time() - datetime.fromisoformat(since).timestamp()) / 60
        age = f", {minutes:.0f} min ago" if minutes >= 1 else ", under a minute ago"
    except (TypeError, ValueError):
        age = ""
    what = " ".join(str(holder[key]) for key in ("playbook", "release") if holder.get(key))
    return f"{who} ({what}) since {since}{age}" if what else f"{who} since {since}{age}"


def take(module, path: str) -> None:
    params = module.params
    current = read(path)
    broken: dict = {}
    if current is not None and not params["break_lock"]:
        module.fail_json(
            msg=f"another deploy holds the lock {path}: {describe(current)}. Wait for it to finish; if no deploy is "
            "running (a run that was killed), break the stale lock with -e pliers_deploy_lock_break=true",
            holder=shown(current),
            broken={},
        )
    if current is not None:
        broken = current
    if module.check_mode:
        module.exit_json(changed=False, token="", holder=shown(current), broken=shown(broken))
    holder = dict(params["holder"], since=datetime.now(UTC).isoformat(timespec="seconds"))
    holder["token"] = uuid.uuid4().hex
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    if broken:
        os.unlink(path)
    try:
        # O_EXCL: of two runs racing for a free lock, exactly one creates the file.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        module.fail_json(msg=f"another deploy took the lock {path} a moment ago: {describe(read(path) or {})}")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(holder, handle)
    module.exit_json(changed=False, token=holder["token"], holder=shown(holder), broken=shown(broken))


def release(module, path: str) -> None:
    current = read(path)
    if current is None:
        module.exit_json(changed=False, holder={}, broken={})
    if current.get("token") != module.params["token"]:
        module.warn(f"the lock {path} is no longer this run's (now {describe(current)}): left in place")
        module.exit_json(changed=False, holder=shown(current), broken={})
    if not module.check_mode:
        os.unlink(path)
    module.exit_json(changed=False, holder={}, broken={})


def main() -> None:
    argument_spec = dict(
        path=dict(type="path", required=True),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        holder=dict(type="dict", default={}),
        token=dict(type="str", no_log=False),
        break_lock=dict(type="bool", default=False),
    )
    module = AnsibleModule(
        argument_spec=argument_spec, supports_check_mode=True, required_if=[("state", "absent", ["token"])]
    )
    if module.params["state"] == "present":
        take(module, module.params["path"])
    else:
        release(module, module.params["path"])


if __name__ == "__main__":
    main()
