#!/usr/bin/python
# Copyright (c) pliers.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: migrate
short_description: Report and apply the Pliers API's database migrations
version_added: 0.1.0
description:
  - Runs the API image's migration command (see docs/app-contract.md) as a one-off container on the stack's
    database network, with the stack's secrets mounted read-only as files.
  - The container is hardened as the stack's services are, as the image's user; every capability dropped, a read-only
    root file system with a C(tmpfs) C(/tmp), no new privileges, at most 256 processes.
  - Always reports the pending migrations first; applies them only outside check mode, and with O(apply).
  - Reports C(changed) only when a migration was applied (in check mode, or without O(apply), when one would be).
  - Pulls the image when the target does not have it, except in check mode, where its migrations are then
    reported as not known (RV(known)).
  - Idempotent; the API serialises concurrent runs with a database lock.
  - A start that fails because the container's attachment to a Swarm overlay timed out (a busy manager) is tried
    again with a new container, up to three times, with a warning; no other failure is retried.
author:
  - Pliers team (@pliers)
extends_documentation_fragment:
  - pliers.deploy._attributes
  - pliers.deploy._attributes.actiongroup_deploy
attributes:
  check_mode:
    support: full
    details: Reports pending migrations and applies none; pulls no image.
  diff_mode:
    support: none
  action_group:
    version_added: 0.2.0
options:
  image:
    description: The API image to migrate with (the NEW release's image).
    type: str
    required: true
  network:
    description: The Docker network on which the database answers (the stack's database network).
    type: str
    required: true
  env:
    description: Plain environment variables for the container (no secrets here; see O(secrets)).
    type: dict
    default: {}
  secrets:
    description:
      - Files on the target mounted read-only into the container, in the shape of the stack's service model, so a
        service's secrets can be passed as they are.
    type: list
    elements: dict
    default: []
    suboptions:
      file:
        description: Path of the file on the target.
        type: path
        required: true
      target:
        description: Path inside the container; a relative one is under C(/run/secrets/), as in Compose.
        type: str
        required: true
      name:
        description: The secret's name in the stack (for messages only).
        type: str
      uid:
        description: Accepted from the service model and unused (the file on the target already belongs to its reader).
        type: str
      gid:
        description: Accepted from the service model and unused.
        type: str
      mode:
        description: Accepted from the service model and unused.
        type: str
      version:
        description: Accepted from the service model and unused.
        type: str
  status_command:
    description: The command that prints the migration status as JSON.
    type: list
    elements: str
    default: [pliers, migrate, status]
  up_command:
    description: The command that applies pending migrations and prints the result as JSON.
    type: list
    elements: str
    default: [pliers, migrate, up]
  timeout:
    description: Seconds one command may run.
    type: int
    default: 300
  apply:
    description: Apply the pending migrations; V(false) only reports them (as check mode would, but pulling the image).
    type: bool
    default: true
    version_added: 0.2.0
requirements:
  - the Python Docker SDK on the target
"""

EXAMPLES = r"""
- name: Apply the new release's migrations
  pliers.deploy.migrate:
    image: registry.example.com/pliers/api:1.1.0
    network: pliers-production_database
    env:
      DATABASE_HOST: postgres
      DATABASE_NAME: pliers
      DATABASE_USER: pliers
      DATABASE_PASSWORD_FILE: /run/secrets/database_password
    secrets:
      - file: /opt/pliers/production/secrets/api/database_password
        target: database_password
  register: migrations
"""

RETURN = r"""
pending:
  description: Migrations pending before this run.
  returned: always
  type: list
  elements: str
  sample: [0002_item_tags]
applied_now:
  description: Migrations this run applied (empty in check mode).
  returned: always
  type: list
  elements: str
applied:
  description: Every migration applied once this run is over.
  returned: always
  type: list
  elements: str
version:
  description: The version the API image reports.
  returned: always
  type: str
known:
  description: Whether the pending migrations are known; false in check mode when the image is not on the target (it
    is not pulled then), and RV(pending) is then empty.
  returned: always
  type: bool
  version_added: 0.2.0
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.pliers.deploy.plugins.module_utils._docker import (
    DockerException,
    NotFound,
    docker_client,
    image_here,
)
from ansible_collections.pliers.deploy.plugins.module_utils._migrations import (
    STATUS_COMMAND,
    UP_COMMAND,
    MigrationError,
    run_json,
)


def run_once(module, client, command: list[str]) -> dict:
    """Run command in a one-off container; its stdout must be one JSON document."""
    params = module.params
    try:
        return run_json(
            module,
            client,
            command,
            image=params["image"],
            network=params["network"],
            env=params["env"],
            secrets=params["secrets"],
            timeout=params["timeout"],
        )
    except MigrationError as exc:
        module.fail_json(msg=str(exc))


def main() -> None:
    argument_spec = dict(
        image=dict(type="str", required=True),
        network=dict(type="str", required=True),
        env=dict(type="dict", default={}),
        secrets=dict(
            type="list",
            elements="dict",
            default=[],
            # Paths of the secret files, never their values.
            no_log=False,
            options=dict(
                file=dict(type="path", required=True),
                target=dict(type="str", required=True),
                # The rest of the service model's secret entry, accepted so it can be passed as it is.
                **{key: dict(type="str") for key in ("name", "uid", "gid", "mode", "version")},
            ),
        ),
        status_command=dict(type="list", elements="str", default=list(STATUS_COMMAND)),
        up_command=dict(type="list", elements="str", default=list(UP_COMMAND)),
        timeout=dict(type="int", default=300),
        apply=dict(type="bool", default=True),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    client = docker_client(module, timeout=module.params["timeout"] + 30)
    try:
        client.networks.get(module.params["network"])
    except NotFound:
        module.fail_json(
            msg=f"network {module.params['network']} does not exist: start the stack's data services first"
        )
    try:
        if not image_here(module, client, module.params["image"]):
            # Check mode pulls nothing: what the image would migrate is not known until a real run.
            module.exit_json(changed=True, known=False, pending=[], applied=[], applied_now=[], version="")
        status = run_once(module, client, module.params["status_command"])
        pending = list(status.get("pending", []))
        result = dict(
            pending=pending,
            applied=list(status.get("applied", [])),
            applied_now=[],
            version=str(status.get("version", "")),
            known=True,
        )
        if module.check_mode or not module.params["apply"] or not pending:
            module.exit_json(changed=bool(pending), **result)
        applied = run_once(module, client, module.params["up_command"])
    except DockerException as exc:
        module.fail_json(msg=f"running migrations with {module.params['image']} failed: {exc}")
    result.update(applied=list(applied.get("applied", [])), applied_now=list(applied.get("applied_now", [])))
    module.exit_json(changed=bool(result["applied_now"]), **result)


if __name__ == "__main__":
    main()
