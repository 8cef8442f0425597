#!/usr/bin/python
# Copyright (c) pliers.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: release_log
short_description: An environment's release history on its target - record an attempt, read it, pick a rollback
version_added: 0.1.0
description:
  - The history is a file of JSON lines, one per release attempt - id, time, user, controller, playbook, the
    release and the service versions it went from and to, the result (V(ok), V(failed), or V(interrupted) for
    a run whose deploy lock was taken over, which never finished) and its message.
  - With O(record), appends one attempt (the id, time and the versions it went from are filled in).
  - Always returns the history, the V(current) release (the last successful one) and, with O(rollback_to), the
    release a rollback returns to - V(previous) (the last successful release whose versions differ from the
    current ones), or one named by its id or its release.
  - The history is a deployment's record, not its state - recording never reports C(changed), so that a deploy
    with nothing to do reports nothing changed.
author:
  - Pliers team (@pliers)
extends_documentation_fragment:
  - pliers.deploy._attributes
  - pliers.deploy._attributes.actiongroup_deploy
attributes:
  check_mode:
    support: full
    details: Reads; records nothing.
  diff_mode:
    support: none
  action_group:
    version_added: 0.2.0
options:
  path:
    description: The history file. Its directory is created (mode 0700) when missing.
    type: path
    required: true
  record:
    description: The attempt to append - C(user), C(controller), C(playbook), C(release), C(versions) (service
      to version), C(result) (V(ok), V(failed) or, since 0.2.0, V(interrupted)), C(message), C(seconds).
    type: dict
  rollback_to:
    description: V(previous), or the id or release name of a successful release in the history.
    type: str
  last:
    description: How many of the newest entries to return in RV(entries).
    type: int
    default: 20
requirements:
  - none on the target beyond Python
"""

EXAMPLES = r"""
- name: Record a successful release
  pliers.deploy.release_log:
    path: /var/lib/pliers/production/releases.log
    record: {user: alice, controller: ops-1, playbook: deploy, release: 1.1.0, started: "2026-11-27T09:00:00+00:00",
             versions: {api: 1.1.0, ai-service: 1.1.0, web: 1.1.0}, result: ok}

- name: Which release would a rollback return to
  pliers.deploy.release_log:
    path: /var/lib/pliers/production/releases.log
    rollback_to: previous
  register: history
"""

RETURN = r"""
entries:
  description: The newest O(last) entries, oldest first.
  returned: always
  type: list
  elements: dict
current:
  description: The last successful release (empty when none).
  returned: always
  type: dict
target:
  description: The release O(rollback_to) names.
  returned: when O(rollback_to) is given
  type: dict
lines:
  description: RV(entries), one readable line each.
  returned: always
  type: list
  elements: str
recorded:
  description: The entry O(record) appended (in check mode, the one it would have appended).
  returned: when O(record) is given
  type: dict
"""

import getpass
import json
import os
from datetime import datetime, timezone

from ansible.module_utils.basic import AnsibleModule

# interrupted: a run whose deploy lock was taken over (it was found dead) never finished.
RESULTS = ("ok", "failed", "interrupted")
# Targets may run Python 3.9 or 3.10, which have no datetime.UTC.
UTC = timezone.utc  # noqa: UP017


def read(module, path: str) -> list[dict]:
    entries = []
    try:
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    entries.append(json.loads(line))
                except ValueError:
                    module.warn(f"{path} line {number} is not a JSON record: skipped")
    except FileNotFoundError:
        pass
    return entries


def line(entry: dict) -> str:
    """One entry, readable: #id time user@controller playbook release result seconds, then what changed."""
    versions = entry.get("versions") or {}
    before = entry.get("from") or {}
    moves = ", ".join(
        f"{name} {before[name]}->{version}" if before.get(name) not in (None, version) else f"{name} {version}"
        for name, version in sorted(versions.items())
    )
    seconds = f" {entry['seconds']}s" if entry.get("seconds") is not None else ""
    text = (
        f"#{entry.get('id')} {entry.get('time')} {entry.get('user')}@{entry.get('controller')} "
        f"{entry.get('playbook')} {entry.get('release')}: {entry.get('result')}{seconds} ({moves})"
    )
    return text + (f" - {str(entry['message'])[:300]}" if entry.get("message") else "")


def succeeded(entries: list[dict]) -> list[dict]:
    return [entry for entry in entries if entry.get("result") == "ok"]


def rollback_target(module, entries: list[dict], wanted: str) -> dict:
    good = succeeded(entries)
    if not good:
        module.fail_json(msg="no successful release in the history: there is nothing to roll back to")
    current = good[-1]
    if wanted == "previous":
        for entry in reversed(good):
            if entry.get("versions") != current.get("versions"):
                return entry
        module.fail_json(msg=f"every successful release in the history is the current one ({current.get('release')})")
    for entry in reversed(good):
        if wanted in (str(entry.get("id")), str(entry.get("release"))):
            return entry
    known = ", ".join(f"{e.get('id')} ({e.get('release')})" for e in good[-10:])
    module.fail_json(msg=f"no successful release {wanted!r} in the history; the latest are: {known}")


def append(module, path: str, entries: list[dict]) -> dict:
    record = dict(module.params["record"])
    if record.get("result") not in RESULTS:
        module.fail_json(msg=f"record.result must be one of {', '.join(RESULTS)}, got {record.get('result')!r}")
    good = succeeded(entries)
    entry = {
        "id": (entries[-1].get("id", len(entries)) if entries else 0) + 1,
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "user": record.pop("user", None) or getpass.getuser(),
        "from": good[-1].get("versions", {}) if good else {},
    }
    started = record.pop("started", None)
    if started:
        try:
            entry["seconds"] = round(datetime.now(UTC).timestamp() - datetime.fromisoformat(started).timestamp(), 1)
        except ValueError:
            module.fail_json(msg=f"record.started must be an ISO 8601 time, got {started!r}")
    entry.update(record)
    if not module.check_mode:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        # One write of one line, appended: a reader never sees half an entry.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, (json.dumps(entry, sort_keys=True) + "\n").encode())
        finally:
            os.close(fd)
        entries.append(entry)
    return entry


def main() -> None:
    argument_spec = dict(
        path=dict(type="path", required=True),
        record=dict(type="dict"),
        rollback_to=dict(type="str"),
        last=dict(type="int", default=20),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    path = module.params["path"]
    entries = read(module, path)
    result: dict = {"changed": False}
    if module.params["rollback_to"]:
        result["target"] = rollback_target(module, entries, module.params["rollback_to"])
    if module.params["record"]:
        result["recorded"] = append(module, path, entries)
    good = succeeded(entries)
    result["current"] = good[-1] if good else {}
    result["entries"] = entries[-module.params["last"] :] if module.params["last"] > 0 else []
    result["lines"] = [line(entry) for entry in result["entries"]]
    module.exit_json(**result)


if __name__ == "__main__":
    main()
