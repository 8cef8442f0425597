# Copyright (c) pliers.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Redis's side of the stores' access (private to this collection): read the ACL users, plan the ACL SETUSER commands
that bring them to the accounts, apply and save them. The redis_access module and compose_rollout's stores run it."""

from __future__ import annotations

import hashlib
import re
import shlex

from ansible_collections.pliers.deploy.plugins.module_utils._store import client_failure, run_as_admin

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
# redis-cli reads no standard input (</dev/null): the script may be on it.
RUNNER = (
    'REDISCLI_AUTH="$(cat "$PLIERS_ADMIN_PASSWORD_FILE")"; export REDISCLI_AUTH; '
    "while IFS= read -r line; do "
    'eval "set -- $line"; '
    'reply=$(redis-cli --no-auth-warning -h "$REDIS_HOST" -p "$REDIS_PORT" --user "$REDIS_USER" "$@" </dev/null 2>&1) '
    '|| { echo "$reply" >&2; exit 3; }; '
    'case "$reply" in ERR*|NOPERM*|WRONGPASS*|NOAUTH*|LOADING*|"Could not connect"*|*"Name or service"*) '
    'echo "$reply" >&2; exit 3;; esac; '
    'printf "%s\\n" "$reply"; '
    'done < "$PLIERS_SCRIPT"'
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


def old_passwords(users: dict, accounts: list[dict]) -> list[str]:
    """The accounts' users that hold a password other than their account's (a rotation's old one, until a prune)."""
    return [
        account["name"]
        for account in accounts
        if set((users.get(account["name"]) or {}).get("hashes", [])) - {password_hash(account["password"])}
    ]


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


def account_problems(accounts: list[dict], admin: str) -> list[str]:
    """What is wrong with the accounts, one line each (none: they can be brought)."""
    names = [a["name"] for a in accounts]
    problems = [f"user {n} is named more than once" for n in sorted({n for n in names if names.count(n) > 1})]
    for name in names:
        if name == admin:
            problems.append(f"user {name}: the admin user is not an account")
        elif not USER_NAME.match(name):
            problems.append(f"user {name!r}: letters, digits, '.', '_' and '-' only (at most 64), not first")
    problems += [
        f"user {a['name']}: privileges is one of {', '.join(RULES)}" for a in accounts if a["privileges"] not in RULES
    ]
    return problems


class RedisCli:
    """redis-cli in Redis's container (or a one-off one of its image), connected as the admin user, running commands in
    turn."""

    def __init__(self, module, client, store: dict) -> None:
        self.module, self.client, self.store = module, client, store

    def run(self, commands: list[list[str]]) -> str:
        store = self.store
        status, stdout, stderr = run_as_admin(
            self.module,
            self.client,
            store,
            "".join(" ".join(shlex.quote(arg) for arg in command) + "\n" for command in commands),
            RUNNER,
            environment={
                "REDIS_HOST": store["host"],
                "REDIS_PORT": str(store["port"]),
                "REDIS_USER": store["admin_user"],
            },
            host_variable="REDIS_HOST",
            role="redis-access",
        )
        if status != 0:
            where = f"{store['host']}:{store['port']}"
            raise client_failure("redis-cli", where, status, (stderr or stdout).strip(), NOT_ANSWERING)
        return stdout


def bring(module, client, store: dict, prune: bool) -> dict:
    """Redis's ACL users brought to the store's accounts (read, then changed and saved, unless in check mode): the
    module's result (changed, reached, actions, notes, prunable). Raises StoreNotAnswering when Redis does not answer,
    StoreError when it refuses."""
    cli = RedisCli(module, client, store)
    users = parse_users(cli.run([["ACL", "LIST"]]))
    commands, actions = plan_changes(users, store["accounts"], prune)
    if commands and not module.check_mode:
        cli.run([*commands, ["ACL", "SAVE"]])
    return dict(
        changed=bool(commands), reached=True, actions=actions, notes=[],
        prunable=[] if prune else old_passwords(users, store["accounts"]),
    )  # fmt: skip
