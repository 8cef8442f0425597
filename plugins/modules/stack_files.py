#!/usr/bin/python
# Copyright (c) pliers.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: stack_files
short_description: Write a role's configuration and secret files, and their directories, in one round trip
version_added: 0.2.0
description:
  - Ensures each directory in O(directories) exists with its mode and owner, then each file in O(files) holds
    exactly its content, mode and owner; in one module run, where C(ansible.builtin.file), C(copy) and
    C(template) take one or two runs per path.
  - A file is replaced atomically (a temporary file in the same directory, then renamed), so a reader never sees
    half a file; with O(files[].validate), the new content must pass a command first, or the file is left as it
    was.
  - A file is secret unless O(files[].secret=false); a secret's content is never logged, returned or diffed. The
    task needs no C(no_log) for it, so what changed stays visible.
  - Removes what O(absent) lists first, installs the O(packages) that are missing, and, once the files are written,
    brings each of O(units) to its state (systemd reloaded first when a unit file under C(/etc/systemd/system/) was
    written), then runs O(commands).
  - Reports C(changed) when a package was installed, a directory or file was created or removed, or its content,
    mode or owner changed, a unit was enabled, disabled, started or stopped, or a command printed anything but
    C(ok).
author:
  - Pliers team (@pliers)
extends_documentation_fragment:
  - pliers.deploy._attributes
  - pliers.deploy._attributes.actiongroup_deploy
  - pliers.deploy._files
attributes:
  check_mode:
    support: full
    details: Reports which paths would change; writes nothing.
  diff_mode:
    support: partial
    details: Shows a diff of each file that is not secret (O(files[].secret=false)); RV(updated) names every path
      that changed.
options:
  absent:
    description: Paths that must not exist - a file, or a directory with everything it holds.
    type: list
    elements: path
    default: []
  packages:
    description:
      - Debian packages the files and units need (the program a unit runs, for instance), installed with
        C(apt-get) when missing (without what they recommend), before the files are written. The package lists are
        refreshed only when the install fails without it, so that a host that has them all costs one
        C(dpkg-query).
    type: list
    elements: str
    default: []
  commands:
    description:
      - Commands (each an argv list, run without a shell) run in order once the files and units are, not in check
        mode; a command that fails fails the module, naming it. A command reports no change by printing C(ok).
    type: list
    elements: list
    default: []
  units:
    description: systemd units to bring to a state once the files are written.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: The unit (C(pliers-backup-production.timer)).
        type: str
        required: true
      enabled:
        description: Whether it starts at boot.
        type: bool
        default: true
      state:
        description: Whether it runs now.
        type: str
        choices: [started, stopped]
        default: started
"""

EXAMPLES = r"""
- name: Write the api's secret files, readable by the image's user only
  pliers.deploy.stack_files:
    directories:
      - {path: /opt/pliers/production/secrets/api, mode: "0700"}
    files:
      - {path: /opt/pliers/production/secrets/api/database_password, content: "{{ vault_postgres_password }}",
         mode: "0400", owner: "10001", group: "10001"}

- name: Write a configuration that may be shown in a diff, checked before it replaces the old one
  pliers.deploy.stack_files:
    files:
      - {path: /etc/nginx/conf.d/pliers.conf, content: "{{ lookup('ansible.builtin.template', 'pliers.conf.j2') }}",
         mode: "0644", secret: false, validate: nginx -t -c %s}
"""

RETURN = r"""
updated:
  description: The paths removed, the directories and files created or changed, and the units acted on (as
    C(<unit> - enable, start)), or that would be in check mode, in order.
  returned: always
  type: list
  elements: str
  sample: [/opt/pliers/production/secrets/api/database_password]
commands:
  description: Each of O(commands) that ran, with what it printed.
  returned: always
  type: list
  elements: dict
  sample: [{argv: [/opt/pliers/production/tls/pliers-edge-certificate, ready], stdout: ok}]
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.pliers.deploy.plugins.module_utils._files import (
    DIRECTORY_OPTIONS,
    FILE_OPTIONS,
    UNIT_OPTIONS,
    FilesError,
    Writer,
    reveal_non_secrets,
)


def main() -> None:
    argument_spec = dict(
        directories=dict(type="list", elements="dict", default=[], options=DIRECTORY_OPTIONS),
        files=dict(type="list", elements="dict", default=[], options=FILE_OPTIONS),
        absent=dict(type="list", elements="path", default=[]),
        units=dict(type="list", elements="dict", default=[], options=UNIT_OPTIONS),
        packages=dict(type="list", elements="str", default=[]),
        commands=dict(type="list", elements="list", default=[]),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    reveal_non_secrets(module, module.params["files"])
    writer = Writer(module)
    try:
        writer.remove(module.params["absent"])
        writer.packages(module.params["packages"])
        writer.apply(module.params["directories"], module.params["files"])
        writer.units(module.params["units"])
        ran = writer.commands([[str(arg) for arg in argv] for argv in module.params["commands"]])
    except (FilesError, OSError) as exc:
        module.fail_json(msg=str(exc))
    result = dict(changed=bool(writer.changed), updated=writer.changed, commands=ran)
    if module._diff and writer.diffs:
        result["diff"] = writer.diffs
    module.exit_json(**result)


if __name__ == "__main__":
    main()
