#!/usr/bin/python
# Copyright (c) pliers.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: postgres_access
short_description: Bring the stack's PostgreSQL roles and privileges to their definition
version_added: 0.2.0
description:
  - Connects as the database's superuser - through C(docker exec) in the database's own Compose container when one
    runs on the target (the SQL on psql's standard input), otherwise from a one-off container of the PostgreSQL
    image on the stack's database network (hardened as the migrations' container is) - reads the roles and
    privileges of one database, and changes only what differs from O(accounts).
  - M(pliers.deploy.compose_rollout) runs the same code for its O(pliers.deploy.compose_rollout#module:stores).
  - An C(owner) account owns the database, its C(public) schema and every table, view and sequence in it (objects
    another role owns, e.g. the superuser's from before, are given to it); migrations run as it.
  - A C(dml) account is a login role in a group role (its O(accounts[].group)) that may only read and write the
    rows of the owner's tables and use their sequences, now and for every table the owner creates later; it cannot
    create anything (C(PUBLIC) keeps no privilege on the database and no C(CREATE) on the schema).
  - A C(monitor) account is a login role in C(pg_monitor), which may connect and read the statistics views.
  - A C(replication) account is a login role that may stream the WAL (C(REPLICATION)), a C(login) account one that
    may only log in; neither is given a privilege on the database.
  - Passwords are set as SCRAM-SHA-256 verifiers computed here (no password in any SQL text) and compared with the
    stored verifier without logging in.
  - With O(prune), the logins this module made in a C(dml) group (C(<group>_<8 hex digits>), see the
    C(pliers.deploy.rotating_login) filter) that O(accounts) no longer names are dropped once no session uses them
    (the group's old login after a password rotation, once the services using it were replaced).
author:
  - Pliers team (@pliers)
extends_documentation_fragment:
  - pliers.deploy._attributes
  - pliers.deploy._attributes.actiongroup_deploy
attributes:
  check_mode:
    support: full
    details: Reads the roles and reports what would change; changes nothing and pulls no image.
  diff_mode:
    support: none
options:
  image:
    description: The PostgreSQL image (the stack's, which has C(psql)).
    type: str
    required: true
  network:
    description: The Docker network on which the database answers.
    type: str
    required: true
  host:
    description: The database's name on that network.
    type: str
    default: postgres
  port:
    description: Its port.
    type: int
    default: 5432
  database:
    description: The database whose privileges are managed.
    type: str
    required: true
  admin_user:
    description: The superuser to connect as.
    type: str
    required: true
  admin_password_file:
    description: The file on the target that holds the superuser's password (the stack's secret file); the container
      runs as the file's owner, which reads it.
    type: path
    required: true
  accounts:
    description: The roles the stack's services log in as.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: The login role.
        type: str
        required: true
      password:
        description: Its password.
        type: str
        required: true
      privileges:
        description: What it may do - C(replication) and C(login) are the HA database's members' own logins (their
          replication, and C(pg_rewind)'s, whose function grants Patroni makes in the C(postgres) database) - only
          their attributes and password are brought here (before the members that use a changed one roll).
        type: str
        required: true
        choices: [owner, dml, monitor, replication, login]
      group:
        description: For C(dml), the group role that holds the privileges (required then).
        type: str
      service:
        description: The service that logs in as it (for messages only).
        type: str
  prune:
    description: Drop the login roles of a C(dml) group that O(accounts) does not name.
    type: bool
    default: false
  missing_ok:
    description: When O(network) does not exist (the database was never started, e.g. before a first deploy) or the
      database does not answer (stopped, starting), change nothing and report RV(reached) false instead of failing.
    type: bool
    default: false
  wait:
    description:
      - Seconds to keep asking the database again (every few seconds) while it does not answer (starting, or its Swarm
        task placed again after its node's engine restarted) before failing.
      - Not with O(missing_ok), nor in check mode - both report it at once.
    type: int
    default: 60
  timeout:
    description: Seconds one C(psql) run may take.
    type: int
    default: 120
requirements:
  - the Python Docker SDK on the target, and the docker CLI there when the database's container runs on it
"""

EXAMPLES = r"""
- name: The owner the migrations run as, the api's login, the exporter's
  pliers.deploy.postgres_access:
    image: registry.example.com/library/postgres:15-bookworm
    network: pliers-production_database
    database: pliers
    admin_user: pliers
    admin_password_file: /opt/pliers/production/secrets/postgres/postgres_password
    accounts:
      - {name: pliers_owner, password: "{{ vault_owner_password }}", privileges: owner}
      - {name: pliers_app_1f3a9c2e, group: pliers_app, password: "{{ vault_app_password }}", privileges: dml}
      - {name: pliers_monitor, password: "{{ vault_monitor_password }}", privileges: monitor}
  no_log: true
"""

RETURN = r"""
reached:
  description: Whether the database was reached (false only with O(missing_ok), when O(network) does not exist or
    the database does not answer).
  returned: always
  type: bool
actions:
  description: What this run changed (or, in check mode, would change), one line each; no password is in them.
  returned: always
  type: list
  elements: str
  sample: ["create login pliers_app_1f3a9c2e in pliers_app", "drop login pliers_app_0b71d44a"]
notes:
  description: What was left as it is, and why (an old login that sessions still use, a database that did not answer).
  returned: always
  type: list
  elements: str
prunable:
  description: Without O(prune), the logins a run with O(prune) would drop (or keep while sessions use them); empty
    when it would have nothing to do.
  returned: when the database was reached
  type: list
  elements: str
  sample: ["pliers_app_0b71d44a"]
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.pliers.deploy.plugins.module_utils._postgres_access import account_problems, bring
from ansible_collections.pliers.deploy.plugins.module_utils._store import access_main, store_argument_spec


def main() -> None:
    module = AnsibleModule(
        argument_spec=store_argument_spec(
            host="postgres",
            port=5432,
            accounts=dict(
                name=dict(type="str", required=True),
                password=dict(type="str", required=True, no_log=True),
                privileges=dict(type="str", required=True, choices=["owner", "dml", "monitor", "replication", "login"]),
                group=dict(type="str"),
                service=dict(type="str"),
            ),
            database=dict(type="str", required=True),
            admin_user=dict(type="str", required=True),
        ),
        supports_check_mode=True,
    )
    access_main(module, account_problems, bring, "role")


if __name__ == "__main__":
    main()
