#!/usr/bin/python
# Copyright (c) pliers.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: redis_access
short_description: Bring the stack's Redis ACL users to their definition
version_added: 0.2.0
description:
  - Connects as Redis's admin user - through C(docker exec) in Redis's own Compose container when one runs on the
    target (the commands on the standard input), otherwise from a one-off container of the Redis image on the
    stack's network (hardened as the migrations' container is) - reads the ACL users (C(ACL LIST)) and changes only
    the users that differ from O(accounts), then saves the ACL file (C(ACL SAVE)), so that a restart keeps them.
  - M(pliers.deploy.compose_rollout) runs the same code for its O(pliers.deploy.compose_rollout#module:stores).
  - A C(readwrite) account may use every key and every command but the dangerous ones (C(-@dangerous) -
    C(FLUSHALL), C(CONFIG), C(KEYS), C(DEBUG), C(SHUTDOWN), C(ACL) ...). A C(monitor) account may read the server's
    statistics (C(INFO), C(CONFIG GET), C(CLIENT LIST), C(SLOWLOG GET) and C(LEN), C(LATENCY LATEST) and C(HISTOGRAM)),
    no key and no reset (C(SLOWLOG GET) shows the slow commands' first arguments). A C(backup) account may
    start and follow a snapshot (C(BGSAVE), C(LASTSAVE), C(INFO), C(CONFIG GET)) and no key.
  - Passwords are given to Redis as their SHA-256 hashes (no password in any command) and compared with the hashes
    Redis holds. A changed password is added beside the ones the user has, so that the containers still using the old
    one keep working; with O(prune), once every service rolled, each user keeps its account's password only.
  - Users that O(accounts) does not name are left as they are (the admin user, a service this run does not deploy).
author:
  - Pliers team (@pliers)
extends_documentation_fragment:
  - pliers.deploy._attributes
  - pliers.deploy._attributes.actiongroup_deploy
attributes:
  check_mode:
    support: full
    details: Reads the users and reports what would change; changes nothing and pulls no image.
  diff_mode:
    support: none
options:
  image:
    description: The Redis image (the stack's, which has C(redis-cli)).
    type: str
    required: true
  network:
    description: The Docker network on which Redis answers.
    type: str
    required: true
  host:
    description: Redis's name on that network.
    type: str
    default: redis
  port:
    description: Its port.
    type: int
    default: 6379
  admin_user:
    description: The ACL user to connect as, which may run C(ACL) commands.
    type: str
    default: default
  admin_password_file:
    description: The file on the target that holds the admin user's password (the stack's secret file); the container
      runs as the file's owner, which reads it.
    type: path
    required: true
  accounts:
    description: The users the stack's services log in as.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: The ACL user.
        type: str
        required: true
      password:
        description: Its password.
        type: str
        required: true
      privileges:
        description: What it may do.
        type: str
        required: true
        choices: [readwrite, monitor, backup]
      service:
        description: The service that logs in as it (for messages only).
        type: str
  prune:
    description: Leave each user only its account's password (the old one of a rotation dropped).
    type: bool
    default: false
  missing_ok:
    description: When O(network) does not exist (Redis was never started, e.g. before a first deploy) or Redis does
      not answer (stopped, loading its data), change nothing and report RV(reached) false instead of failing.
    type: bool
    default: false
  wait:
    description:
      - Seconds to keep asking Redis again (every few seconds) while it does not answer (starting, or its Swarm
        task placed again after its node's engine restarted) before failing.
      - Not with O(missing_ok), nor in check mode - both report it at once.
    type: int
    default: 60
  timeout:
    description: Seconds one C(redis-cli) run may take.
    type: int
    default: 120
requirements:
  - the Python Docker SDK on the target, and the docker CLI there when Redis's container runs on it
"""

EXAMPLES = r"""
- name: The api's user, the exporter's and the backup's
  pliers.deploy.redis_access:
    image: registry.example.com/library/redis:7.0.15-bookworm
    network: pliers-production_backend
    admin_password_file: /opt/pliers/production/secrets/redis/admin_password
    accounts:
      - {name: pliers-api, password: "{{ vault_api_redis_password }}", privileges: readwrite}
      - {name: pliers-exporter, password: "{{ vault_exporter_redis_password }}", privileges: monitor}
      - {name: pliers-backup, password: "{{ vault_backup_redis_password }}", privileges: backup}
  no_log: true
"""

RETURN = r"""
reached:
  description: Whether Redis was reached (false only with O(missing_ok), when O(network) does not exist or Redis
    does not answer).
  returned: always
  type: bool
actions:
  description: What this run changed (or, in check mode, would change), one line each; no password is in them.
  returned: always
  type: list
  elements: str
  sample: ["create user pliers-api (readwrite)", "add a password to pliers-api (rotation)"]
notes:
  description: What was left as it is, and why (Redis did not answer).
  returned: always
  type: list
  elements: str
prunable:
  description: Without O(prune), the users that hold a password besides their account's (a rotation's old one), which
    a run with O(prune) would drop; empty when it would have nothing to do.
  returned: when Redis was reached
  type: list
  elements: str
  sample: ["pliers-api"]
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.pliers.deploy.plugins.module_utils._redis_access import account_problems, bring
from ansible_collections.pliers.deploy.plugins.module_utils._store import access_main, store_argument_spec


def main() -> None:
    module = AnsibleModule(
        argument_spec=store_argument_spec(
            host="redis",
            port=6379,
            accounts=dict(
                name=dict(type="str", required=True),
                password=dict(type="str", required=True, no_log=True),
                privileges=dict(type="str", required=True, choices=["readwrite", "monitor", "backup"]),
                service=dict(type="str"),
            ),
            admin_user=dict(type="str", default="default"),
        ),
        supports_check_mode=True,
    )
    access_main(module, account_problems, bring, "user")


if __name__ == "__main__":
    main()
