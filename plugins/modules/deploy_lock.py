#!/usr/bin/python
# Copyright (c) pliers.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: deploy_lock
short_description: Take, renew or release an environment's deploy lock on its target
version_added: 0.1.0
description:
  - With O(state=present), takes the lock file O(path) atomically, recording who holds it (O(holder)), since
    when, when the hold was last renewed and for how long it lasts (O(lease)), and returns a token. When another
    run holds it, fails naming the holder, since when and, when the holder recorded them, its process and
    controller, and how to break a stale lock (O(break_lock)); the result then carries RV(held) and
    RV(holder_token).
  - A hold whose lease expired (it was neither renewed nor released for O(lease) seconds, as the lock file
    records it) is stale - its run was killed - and is taken over, with a warning naming whose lock it was.
  - With O(take_over), takes over the hold of a run the caller found dead, only if the lock file still holds
    that run's token.
  - With O(state=present) and O(token), renews this run's own hold. If the lock was taken over by another run
    meanwhile (or is gone), fails - a run whose lock was taken over must stop. With O(history), the attempt
    (O(record)) is appended to the release history first, in the same round trip - the attempt is recorded and the
    lock kept, for work the run still does under it (the lock file then says C(recorded), the attempt's id); if
    the lock is no longer this run's, a warning says so and RV(token) is empty (the attempt stands; the work is
    not to be done).
  - Taking the lock with O(history) (and no O(record)) returns the versions of the last successful release in it
    (RV(previous_versions)) - what this run's attempt will record as its C(from), as no other run records one
    while this run holds the lock.
  - With O(state=absent), releases the lock, if O(token) still holds it (a lock broken or taken over by
    another run is left to that run); with O(history), the attempt (O(record)) is appended to the release
    history first, in the same round trip, whoever holds the lock by then.
  - Every read and write of the lock file is serialized by an exclusive C(flock) on a guard file beside it
    (C(.<name>.guard)), and the lock file is replaced atomically, so of two runs taking the same free or stale
    lock exactly one wins.
  - On the controller, the action plugin of the same name adds the C(ansible-playbook) process (C(pid),
    C(pid_started)) and the controller's host name (C(controller_host)) to O(holder). When a refusing hold was
    taken on this same controller by a process that is gone (or whose pid now belongs to another process), it
    takes that hold over (O(take_over)) without waiting for its lease to expire.
  - A lock is a deployment's bookkeeping, so taking, renewing and releasing it never reports C(changed), and a
    deploy with nothing to do reports nothing changed.
author:
  - Pliers team (@pliers)
extends_documentation_fragment:
  - pliers.deploy._attributes
  - pliers.deploy._attributes.action
  - pliers.deploy._attributes.actiongroup_deploy
attributes:
  check_mode:
    support: full
    details: Reports whether the lock is free, or would be taken over; takes, renews, breaks and releases
      nothing.
  diff_mode:
    support: none
  action:
    support: full
    details: The action plugin records the controller process in O(holder) and takes over a hold whose process
      on this controller is gone.
    version_added: 0.2.0
  action_group:
    version_added: 0.2.0
options:
  path:
    description: The lock file. Its directory is created (mode 0700) when missing.
    type: path
    required: true
  state:
    description: Take or renew (V(present)) or release (V(absent)) the lock.
    type: str
    choices: [present, absent]
    default: present
  holder:
    description: Who takes the lock (user, controller, playbook, release, ...), shown to a refused run.
    type: dict
    default: {}
  token:
    description:
      - With O(state=absent), the token O(state=present) returned.
      - With O(state=present), renews the hold of this token (without O(take_over)).
    type: str
  break_lock:
    description: Take the lock even when another run holds it (a stale lock left by a run that was killed).
    type: bool
    default: false
  lease:
    description:
      - How long, in seconds, a hold lasts without being renewed. It is recorded in the lock file; a hold is
        judged by the lease it recorded (by this one when it recorded none).
      - A hold not renewed for its lease is stale, and taken over.
    type: int
    default: 900
    version_added: 0.2.0
  take_over:
    description:
      - The token of a holder the caller found dead (RV(holder_token) of a refusal). Takes the lock over only
        if the lock file still holds exactly this token; otherwise refuses as when the lock is held.
    type: str
    version_added: 0.2.0
  take_over_reason:
    description: Why the holder O(take_over) names is dead, for the warning and RV(taken_over).
    type: str
    version_added: 0.2.0
  history:
    description:
      - The release history (as M(pliers.deploy.release_log)'s O(path)).
      - With O(state=absent), or O(state=present) and O(token), the attempt O(record) is appended to it before the
        lock is released or renewed.
      - Taking the lock, it is read for RV(previous_versions).
    type: path
    version_added: 0.2.0
  record:
    description: With O(history), the attempt to record, as M(pliers.deploy.release_log)'s O(record). Required to
      release or renew with O(history).
    type: dict
    version_added: 0.2.0
  wait:
    description:
      - With O(state=present), how many seconds to wait for a live holder to release the lock, asking again every
        5 seconds, before refusing (a CI job queued behind another). V(0) refuses at once.
      - The action plugin waits, on the controller; check mode does not wait.
    type: int
    default: 0
    version_added: 0.2.0
requirements:
  - none on the target beyond Python (3.9 or later), on a system with C(flock)
notes:
  - The lock file records C(since) and C(renewed) in UTC, at seconds precision.
  - A lock file written by an earlier version (no C(renewed), no C(lease)) is judged by its C(since) and
    O(lease).
"""

EXAMPLES = r"""
- name: Take the deploy lock
  pliers.deploy.deploy_lock:
    path: /var/lib/pliers/production/deploy.lock
    holder: {user: alice, controller: ops-1, playbook: deploy, release: 1.1.0}
    lease: 900
  register: lock

- name: Renew it in a long deploy (fails if another run took it over)
  pliers.deploy.deploy_lock:
    path: /var/lib/pliers/production/deploy.lock
    token: "{{ lock.token }}"

- name: Take over the hold of a run found dead
  pliers.deploy.deploy_lock:
    path: /var/lib/pliers/production/deploy.lock
    holder: {user: alice, controller: ops-1, playbook: deploy, release: 1.1.0}
    take_over: "{{ refused.holder_token }}"
    take_over_reason: its deploy process is gone

- name: Record the attempt and keep the lock, for work still to do under it
  pliers.deploy.deploy_lock:
    path: /var/lib/pliers/production/deploy.lock
    token: "{{ lock.token }}"
    history: /var/lib/pliers/production/releases.log
    record: {user: alice, controller: ops-1, playbook: deploy, release: 1.1.0, result: ok, versions: {api: 1.1.0}}

- name: Record the attempt and release the lock
  pliers.deploy.deploy_lock:
    path: /var/lib/pliers/production/deploy.lock
    state: absent
    token: "{{ lock.token }}"
    history: /var/lib/pliers/production/releases.log
    record: {user: alice, controller: ops-1, playbook: deploy, release: 1.1.0, result: ok, versions: {api: 1.1.0}}
"""

RETURN = r"""
token:
  description: Identifies this run's hold on the lock (O(state=present)); empty in check mode, and when a renewal
    with O(history) finds the lock no longer this run's.
  returned: success
  type: str
holder:
  description: What the lock file records now, without its token (empty when free).
  returned: always
  type: dict
recorded:
  description: With O(history), the attempt as the history recorded it (in check mode, as it would, writing
    nothing).
  returned: always
  type: dict
  version_added: 0.2.0
recorded_line:
  description: With O(history), that attempt as M(pliers.deploy.release_log) prints it (the release, its duration,
    each service's version from and to); empty without O(history).
  returned: when releasing, or renewing with O(history)
  type: str
  sample: "#4 2026-11-27T01:02:17+00:00 root@vm deploy 1.1.0: ok 45.7s (api 1.0.0->1.1.0, web 1.0.0->1.1.0)"
  version_added: 0.2.0
broken:
  description: The holder of the lock that O(break_lock) broke, or empty.
  returned: always
  type: dict
taken_over:
  description: The holder of the lock this run took over (a stale lease, O(take_over) or O(break_lock)), with
    the C(reason), or empty.
  returned: success
  type: dict
  version_added: 0.2.0
previous_versions:
  description: Taking the lock with O(history), the versions of the last successful release in the history (the
    C(from) this run's attempt will record); empty when there is none.
  returned: when taking the lock
  type: dict
  sample: {api: 1.0.0, ai-service: 1.0.0, web: 1.0.0}
  version_added: 0.2.0
waited:
  description: How many seconds this run waited for the lock (O(wait)); V(0) without O(wait).
  returned: with O(state=present)
  type: float
  version_added: 0.2.0
held:
  description: V(true) when the lock was refused because another run holds it.
  returned: when refused
  type: bool
  version_added: 0.2.0
holder_token:
  description: The token of the run that holds the lock, for O(take_over) (a token only identifies a hold; it
    is no secret).
  returned: when refused
  type: str
  version_added: 0.2.0
"""

import fcntl
import json
import os
import tempfile
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.pliers.deploy.plugins.module_utils._history import append, line, succeeded
from ansible_collections.pliers.deploy.plugins.module_utils._history import read as read_history

# Targets may run Python 3.9 or 3.10, which have no datetime.UTC.
UTC = timezone.utc
GUARD_TIMEOUT = 60
# The lock file's mode: only its owner (the deploying user) reads it.
LOCK_MODE = 0o600


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def read(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
    except FileNotFoundError:
        return None
    except ValueError:
        return {"unreadable": True}
    return record if isinstance(record, dict) else {"unreadable": True}


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
    text = f"{who} ({what}) since {since}{age}" if what else f"{who} since {since}{age}"
    if holder.get("pid"):
        text += f", pid {holder['pid']}" + (f" on {holder['controller_host']}" if holder.get("controller_host") else "")
    return text


def seconds_since(stamp) -> float | None:
    try:
        return time.time() - datetime.fromisoformat(stamp).timestamp()
    except (TypeError, ValueError):
        return None


def lease_of(holder: dict, default: int) -> int:
    """The lease the hold recorded (the caller's for a lock file that recorded none)."""
    lease = holder.get("lease")
    if isinstance(lease, bool) or not isinstance(lease, (int, float)) or lease <= 0:
        return default
    return lease


def age_of(path: str, holder: dict) -> float | None:
    """Seconds since the hold was last renewed (taken, for a lock file that records no renewal)."""
    stamp = holder.get("renewed") or holder.get("since")
    if stamp:
        return seconds_since(stamp)
    # A lock file that records no time (unreadable: a run killed while writing it): its last write.
    try:
        return time.time() - os.stat(path).st_mtime
    except OSError:
        return None


def expired(path: str, holder: dict, default_lease: int) -> float | None:
    """How many seconds ago the hold's lease expired, or None while it lasts (or when it cannot be told)."""
    age = age_of(path, holder)
    lease = lease_of(holder, default_lease)
    if age is None or age <= lease:
        return None
    return age - lease


@contextmanager
def guard(module, path: str):
    """An exclusive flock on <dir>/.<name>.guard around a read-check-write of the lock file."""
    directory, name = os.path.split(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(directory, f".{name}.guard"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + GUARD_TIMEOUT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    module.fail_json(msg=f"the guard of the deploy lock {path} stayed taken for {GUARD_TIMEOUT}s")
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # releases the flock


def written(path: str, record: dict) -> str:
    """A temp file beside path holding record (mode 0600, mkstemp's), flushed to disk: its name."""
    directory, name = os.path.split(path)
    fd, temp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(record, handle)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        os.unlink(temp)
        raise
    return temp


def move(module, temp: str, path: str) -> None:
    """Rename temp over path with AnsibleModule.atomic_move. The lock file keeps the temp file's mode (0600) and
    owner, not those of the file it replaces (keep_dest_attrs=False, as a plain rename); a lock file that did not
    exist gets 0600 too, where atomic_move would apply the umask."""
    module.atomic_move(temp, path, keep_dest_attrs=False)
    if os.stat(path).st_mode & 0o7777 != LOCK_MODE:
        os.chmod(path, LOCK_MODE)


def replace(module, path: str, record: dict) -> None:
    """Write record to path atomically: a reader sees the old record or the new one, never half of one."""
    temp = written(path, record)
    try:
        move(module, temp, path)
    finally:
        if os.path.lexists(temp):
            os.unlink(temp)


def create(module, path: str, record: dict) -> bool:
    """Write record to path atomically if path does not exist (False when it does)."""
    temp = written(path, record)
    try:
        # link fails when path exists: of two racers (even one not taking the guard), exactly one creates it.
        os.link(temp, path)
    except FileExistsError:
        return False
    except OSError:
        # A filesystem without hard links: under the guard, a replace is as good.
        if os.path.lexists(path):
            return False
        move(module, temp, path)
        return True
    finally:
        if os.path.lexists(temp):
            os.unlink(temp)
    return True


def refuse(module, path: str, current: dict, prefix: str = "") -> None:
    age = age_of(path, current)
    lease = lease_of(current, module.params["lease"])
    if age is None:
        until = ""
    elif age <= lease:
        until = f" (its lease expires in {(lease - age) / 60:.0f} min unless renewed)"
    else:
        until = f" (its lease ran out {(age - lease) / 60:.0f} min ago, but its process on this controller runs)"
    module.fail_json(
        msg=f"{prefix}another deploy holds the lock {path}: {describe(current)}{until}. Wait for it to finish; if "
        "no deploy is running (a run that was killed), break the stale lock with -e pliers_deploy_lock_break=true",
        holder=shown(current),
        broken={},
        taken_over={},
        held=True,
        holder_token=str(current.get("token") or ""),
    )


def recorded(module) -> dict:
    """With history, the attempt record appended to it (whoever holds the lock by now: it happened), as the
    results say it."""
    if not module.params["history"]:
        return {}
    history = module.params["history"]
    entry = append(module, history, read_history(module, history), module.params["record"])
    return {"recorded": entry, "recorded_line": line(entry)}


def renew(module, path: str) -> None:
    token = module.params["token"]
    said = recorded(module)

    def check(current: dict | None) -> None:
        if current is None or current.get("token") != token:
            now_held = describe(current) if current is not None else "free"
            if said:
                # The attempt is recorded and stands; the work it kept the lock for is not done without it.
                module.warn(f"the deploy lock {path} is no longer this run's (now {now_held}): not kept")
                module.exit_json(changed=False, token="", holder=shown(current), broken={}, taken_over={}, **said)
            module.fail_json(
                msg=f"the deploy lock {path} is no longer this run's (now {now_held}): this run stops here",
                holder=shown(current),
                broken={},
                taken_over={},
                **said,
            )

    if module.check_mode:
        current = read(path)
        check(current)
        module.exit_json(changed=False, token=token, holder=shown(current), broken={}, taken_over={}, **said)
    with guard(module, path):
        current = read(path)
        check(current)
        record = dict(current, renewed=now())
        record.setdefault("lease", module.params["lease"])
        if said:
            # Its attempt is in the history: a run taking this hold over must not record it again (interrupted).
            record["recorded"] = said["recorded"].get("id")
        replace(module, path, record)
    module.exit_json(changed=False, token=token, holder=shown(record), broken={}, taken_over={}, **said)


def renews(params: dict) -> bool:
    """Whether O(state=present) renews this run's hold (its token, no take-over) rather than taking the lock."""
    return bool(params["token"]) and not params["take_over"]


def previous_versions(module) -> dict:
    """With history, the versions of the last successful release in it."""
    if not module.params["history"]:
        return {}
    good = succeeded(read_history(module, module.params["history"]))
    return good[-1].get("versions") or {} if good else {}


def judge(module, path: str, current: dict) -> tuple[str, str]:
    """Whether the held lock current may be taken over: (the reason, the warning's text after its verb), or
    refuses."""
    params = module.params
    whose = f"the deploy lock {path} from {describe(current)}"
    prefix = ""
    if params["take_over"]:
        if current.get("token") == params["take_over"]:
            reason = params["take_over_reason"] or "its holder was found dead"
            return reason, f"{whose}: {reason}"
        prefix = "the run to take over no longer holds the lock: "
    # A hold by a process on the caller's own controller (same host, same boot) is judged by that process, which
    # the action plugin can see, not by its lease: a live deploy longer than its lease still holds.
    mine = {key: (params["holder"] or {}).get(key) for key in ("controller_host", "boot_id", "pid_ns")}
    same_controller = (
        bool(current.get("pid"))
        and all(mine.values())
        and all(current.get(key) == value for key, value in mine.items())
    )
    ago = None if same_controller else expired(path, current, params["lease"])
    if ago is not None:
        minutes = round(ago / 60)
        reason = f"its lease expired {minutes} minute{'' if minutes == 1 else 's'} ago"
        return reason, f"{whose}: {reason}"
    if params["break_lock"]:
        reason = "broken on request (break_lock)"
        return reason, f"{whose}: {reason}"
    refuse(module, path, current, prefix=prefix)
    raise AssertionError("unreachable: refuse() exits")


def take(module, path: str) -> None:
    params = module.params
    if params["lease"] <= 0:
        module.fail_json(msg=f"lease must be a positive number of seconds, got {params['lease']}")
    if renews(params):
        renew(module, path)
    if module.check_mode:
        current = read(path)
        taken_over: dict = {}
        if current is not None:
            reason, what = judge(module, path, current)
            taken_over = dict(shown(current), reason=reason)
            module.warn(f"check mode: would take over {what}")
        broken = shown(current) if taken_over and params["break_lock"] else {}
        module.exit_json(
            changed=False,
            token="",
            holder=shown(current),
            broken=broken,
            taken_over=taken_over,
            previous_versions=previous_versions(module),
        )
    stamp = now()
    holder = dict(params["holder"], since=stamp, renewed=stamp, lease=params["lease"], token=uuid.uuid4().hex)
    with guard(module, path):
        current = read(path)
        taken_over = {}
        if current is None:
            if not create(module, path, holder):
                refuse(module, path, read(path) or {}, prefix="a moment ago, ")
        else:
            reason, what = judge(module, path, current)
            replace(module, path, holder)
            module.warn(f"took over {what}")
            taken_over = dict(shown(current), reason=reason)
    broken = shown(current) if taken_over and params["break_lock"] else {}
    module.exit_json(
        changed=False,
        token=holder["token"],
        holder=shown(holder),
        broken=broken,
        taken_over=taken_over,
        previous_versions=previous_versions(module),
    )


def release(module, path: str) -> None:
    said = recorded(module) or {"recorded": {}, "recorded_line": ""}

    def check(current: dict | None) -> None:
        if current is None:
            module.exit_json(changed=False, holder={}, broken={}, **said)
        if current.get("token") != module.params["token"]:
            module.warn(f"the lock {path} is no longer this run's (now {describe(current)}): left in place")
            module.exit_json(changed=False, holder=shown(current), broken={}, **said)

    if module.check_mode or not os.path.lexists(path):
        check(read(path))
        module.exit_json(changed=False, holder={}, broken={}, **said)
    with guard(module, path):
        check(read(path))
        os.unlink(path)
    module.exit_json(changed=False, holder={}, broken={}, **said)


def main() -> None:
    argument_spec = dict(
        path=dict(type="path", required=True),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        holder=dict(type="dict", default={}),
        token=dict(type="str", no_log=False),
        break_lock=dict(type="bool", default=False),
        lease=dict(type="int", default=900),
        take_over=dict(type="str", no_log=False),
        take_over_reason=dict(type="str"),
        history=dict(type="path"),
        record=dict(type="dict"),
        # Taken by the action plugin, which waits on the controller.
        wait=dict(type="int", default=0),
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        required_if=[("state", "absent", ["token"])],
        required_by={"record": "history"},
    )
    params = module.params
    releases_or_renews = params["state"] == "absent" or renews(params)
    if params["history"] and not params["record"] and releases_or_renews:
        module.fail_json(msg="history needs record to release or renew the lock: the attempt to record")
    if params["record"] and not releases_or_renews:
        module.fail_json(msg="record is recorded as the lock is released or renewed (with token), not as it is taken")
    if module.params["state"] == "present":
        take(module, module.params["path"])
    else:
        release(module, module.params["path"])


if __name__ == "__main__":
    main()
