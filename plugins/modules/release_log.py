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

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.pliers.deploy.plugins.module_utils._history import (
    append,
    line,
    read,
    rollback_target,
    succeeded,
)


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
        result["recorded"] = append(module, path, entries, module.params["record"])
    good = succeeded(entries)
    result["current"] = good[-1] if good else {}
    result["entries"] = entries[-module.params["last"] :] if module.params["last"] > 0 else []
    result["lines"] = [line(entry) for entry in result["entries"]]
    module.exit_json(**result)


if __name__ == "__main__":
    main()
