#!/usr/bin/python
# Copyright (c) pliers.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: redis_access
short_description: Bring the stack's Redis ACL users to their definition
version_added: 0.2.0
description:
  - Connects as Redis's admin user, from a one-off container of the Redis image on the stack's network (hardened as
    the migrations' container is), reads the ACL users (C(ACL LIST)) and changes only the users that differ from
    O(accounts), then saves the ACL file (C(ACL SAVE)), so that a restart keeps them.
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
  timeout:
    description: Seconds one C(redis-cli) run may take.
    type: int
    default: 120
requirements:
  - the Python Docker SDK on the target
"""

EXAMPLES = r"""
- name: The api's user, the exporter's and the backup's
  pliers.deploy.redis_access:
    image: registry.example.com/pliers/redis:7.0
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
"""

import hashlib
import re
import shlex

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.pliers.deploy.plugins.module_utils._docker import DockerException
from ansible_collections.pliers.deploy.plugins.module_utils._store import (
    ADMIN_PASSWORD,
    WORKDIR,
    run_as_admin,
    store_argument_spec,
    store_client,
)

# The key and channel patterns and the command rules of each kind of account, after ACL SETUSER's "reset" (which
# leaves a user no key, no channel, no command and no password).
RULES = {
    "readwrite": ["~*", "&*", "+@all", "-@dangerous"],
    # Not +@connection: it holds CLIENT KILL.
    # The reads redis_exporter makes; not SLOWLOG RESET or LATENCY RESET, which would erase what others look at.
    "monitor": ["+auth", "+hello", "+ping", "+select", "+client|setname", "+client|list", "+info", "+config|get",
                "+slowlog|get", "+slowlog|len", "+latency|latest", "+latency|histogram"],
    "backup": ["+auth", "+hello", "+ping", "+bgsave", "+lastsave", "+info", "+config|get"],
}  # fmt: skip
# What redis-cli says when Redis is not there to answer (stopped, starting, its name not resolved yet), or does not
# take the admin's password yet.
NOT_ANSWERING = (
    "Could not connect to Redis",
    "Name or service not known",
    "Temporary failure in name resolution",
    "Connection refused",
    "LOADING",
    # Not as its admin: a Redis started before the admin's password changed (it restarts with the data services).
    "AUTH failed",
    "WRONGPASS",
)
# A user's line in ACL LIST, e.g. "user pliers-api on #<sha256> ~* &* +@all -@dangerous".
ACL_LINE = re.compile(r"^user (\S+) (.*)$")
# The user names this module accepts: what Redis takes in an ACL file without quoting.
USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# The script run in the one-off container: each line of the script file is one redis-cli command, its arguments
# shell-quoted; its replies are printed one per line, a failed command stops the run.
RUNNER = (
    f'REDISCLI_AUTH="$(cat {ADMIN_PASSWORD})"; export REDISCLI_AUTH; '
    f"while IFS= read -r line; do "
    f'eval "set -- $line"; '
    f'reply=$(redis-cli --no-auth-warning -h "$REDIS_HOST" -p "$REDIS_PORT" --user "$REDIS_USER" "$@" 2>&1) || '
    f'{{ echo "$reply" >&2; exit 3; }}; '
    f'case "$reply" in ERR*|NOPERM*|WRONGPASS*|NOAUTH*|LOADING*|"Could not connect"*|*"Name or service"*) '
    f'echo "$reply" >&2; exit 3;; esac; '
    f'printf "%s\\n" "$reply"; '
    f"done < {WORKDIR}/script"
)


def password_hash(password: str) -> str:
    """The hash Redis keeps of a password (its ACL #<hash> form)."""
    return hashlib.sha256(password.encode()).hexdigest()


def parse_users(acl_list: str) -> dict[str, dict]:
    """name -> {on, hashes, rules}, from ACL LIST's lines."""
    users = {}
    for line in acl_list.splitlines():
        found = ACL_LINE.match(line.strip())
        if not found:
            continue
        name, tokens = found.group(1), found.group(2).split()
        users[name] = {
            "on": "on" in tokens,
            "nopass": "nopass" in tokens,
            "hashes": sorted(token[1:] for token in tokens if token.startswith("#")),
            "rules": [token for token in tokens if token not in ("on", "off", "nopass") and not token.startswith("#")],
        }
    return users


def canonical(rules: list[str]) -> tuple[list[str], list[str]]:
    """A user's rules as compared: its key and channel patterns, and its command rules but for the "-@all" every user
    starts from (Redis 7 prints its rules in an order of its own, and adds sanitize-payload)."""
    patterns = sorted(rule for rule in rules if rule[0] in "~%&")
    commands = sorted(rule for rule in rules if rule[0] in "+-" and rule != "-@all")
    return patterns, commands


def plan_changes(users: dict, accounts: list[dict], prune: bool) -> tuple[list[list[str]], list[str]]:
    """The ACL SETUSER commands that bring the users to the accounts, and a line saying each (see DOCUMENTATION)."""
    commands, actions = [], []
    for account in accounts:
        name, privileges = account["name"], account["privileges"]
        wanted_hash = password_hash(account["password"])
        current = users.get(name)
        if current is None:
            hashes = [wanted_hash]
            actions.append(f"create user {name} ({privileges})")
        else:
            keep = [] if prune else [h for h in current["hashes"] if h != wanted_hash]
            hashes = keep + [wanted_hash]
            why = []
            if not current["on"] or current["nopass"]:
                why.append("enable it with a password")
            if wanted_hash not in current["hashes"]:
                why.append(
                    "add its new password (the old one kept until the services rolled)" if keep else "set its password"
                )
            elif prune and len(current["hashes"]) > 1:
                why.append("drop its old password")
            if canonical(current["rules"]) != canonical(RULES[privileges]):
                why.append(f"give it the {privileges} rules")
            if not why:
                continue
            actions.append(f"{name}: {', '.join(why)}")
        commands.append(["ACL", "SETUSER", name, "reset", "on", *(f"#{h}" for h in hashes), *RULES[privileges]])
    return commands, actions


def check_accounts(module, accounts: list[dict], admin: str) -> None:
    names = [a["name"] for a in accounts]
    problems = [f"user {n} is named more than once" for n in sorted({n for n in names if names.count(n) > 1})]
    for name in names:
        if name == admin:
            problems.append(f"user {name}: the admin user is not an account")
        elif not USER_NAME.match(name):
            problems.append(f"user {name!r}: letters, digits, '.', '_' and '-' only (at most 64), not first")
    if problems:
        module.fail_json(msg="; ".join(problems))


class RedisCli:
    """redis-cli in a one-off container of the image, connected as the admin user, running commands in turn."""

    def __init__(self, module, client) -> None:
        self.module, self.client = module, client

    def run(self, commands: list[list[str]]) -> str:
        params = self.module.params
        status, stdout, stderr = run_as_admin(
            self.module,
            self.client,
            "".join(" ".join(shlex.quote(arg) for arg in command) + "\n" for command in commands),
            RUNNER,
            environment={
                "REDIS_HOST": params["host"],
                "REDIS_PORT": str(params["port"]),
                "REDIS_USER": params["admin_user"],
            },
            role="redis-access",
        )
        if status != 0:
            where = f"{params['host']}:{params['port']}"
            said = (stderr or stdout).strip()
            if params["missing_ok"] and any(sign in said for sign in NOT_ANSWERING):
                self.module.exit_json(
                    changed=False, reached=False, actions=[], notes=[f"{where} does not answer: {said[-300:]}"]
                )
            self.module.fail_json(msg=f"redis-cli on {where} failed (exit {status}): {said[-1500:]}")
        return stdout


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
    params = module.params
    check_accounts(module, params["accounts"], params["admin_user"])
    client = store_client(module, "user")
    try:
        cli = RedisCli(module, client)
        users = parse_users(cli.run([["ACL", "LIST"]]))
        commands, actions = plan_changes(users, params["accounts"], params["prune"])
        if commands and not module.check_mode:
            cli.run([*commands, ["ACL", "SAVE"]])
    except DockerException as exc:
        module.fail_json(msg=f"reaching {params['host']} with {params['image']} failed: {exc}")
    module.exit_json(changed=bool(commands), reached=True, actions=actions, notes=[])


if __name__ == "__main__":
    main()
