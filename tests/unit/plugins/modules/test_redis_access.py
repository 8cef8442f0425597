"""redis_access's plan: from the ACL users it read, only the ACL SETUSER commands that bring them to the accounts
(the lab's tests run it against Redis; these pin each rule)."""

from __future__ import annotations

import pytest
from ansible_collections.pliers.deploy.plugins.module_utils import _redis_access as redis_access

API = {"name": "pliers-api", "password": "api-password-1", "privileges": "readwrite"}
EXPORTER = {"name": "pliers-exporter", "password": "exporter-password-1", "privileges": "monitor"}
BACKUP = {"name": "pliers-backup", "password": "backup-password-1", "privileges": "backup"}


def acl_line(account, *extra_passwords):
    hashes = " ".join(f"#{redis_access.password_hash(p)}" for p in (account["password"], *extra_passwords))
    rules = {
        "readwrite": "~* &* +@all -@dangerous",
        "monitor": "sanitize-payload resetchannels -@all +ping +select +hello +auth +client|setname +client|list "
        "+info +config|get +slowlog|get +slowlog|len +latency|latest +latency|histogram",
        "backup": "sanitize-payload resetchannels -@all +bgsave +hello +auth +ping +lastsave +info +config|get",
    }[account["privileges"]]
    return f"user {account['name']} on {hashes} {rules}"


ADMIN = "user default on #" + "a" * 64 + " ~* &* +@all"


def users(*lines):
    return redis_access.parse_users("\n".join(lines))


def test_users_as_redis_prints_them_need_no_change():
    held = users(ADMIN, acl_line(API), acl_line(EXPORTER), acl_line(BACKUP))
    assert redis_access.plan_changes(held, [API, EXPORTER, BACKUP], prune=True) == ([], [])


def test_a_missing_user_is_created_with_its_rules_and_its_password_hash_only():
    commands, actions = redis_access.plan_changes(users(ADMIN), [EXPORTER], prune=False)
    assert actions == ["create user pliers-exporter (monitor)"]
    (command,) = commands
    assert command[:5] == ["ACL", "SETUSER", "pliers-exporter", "reset", "on"]
    assert f"#{redis_access.password_hash(EXPORTER['password'])}" in command
    assert EXPORTER["password"] not in " ".join(command)
    assert command[5:6] == [f"#{redis_access.password_hash(EXPORTER['password'])}"]
    assert command[6:] == redis_access.RULES["monitor"] and "+@connection" not in command


def test_a_rotated_password_is_added_beside_the_old_one_then_the_prune_drops_the_old_one():
    rotated = {**API, "password": "api-password-2"}
    held = users(ADMIN, acl_line(API))
    commands, actions = redis_access.plan_changes(held, [rotated], prune=False)
    hashes = [arg for arg in commands[0] if arg.startswith("#")]
    assert hashes == [f"#{redis_access.password_hash(p)}" for p in ("api-password-1", "api-password-2")]
    assert "old one kept" in actions[0]
    # Once the services rolled: only the new one.
    held = users(ADMIN, acl_line(rotated, "api-password-1"))
    commands, actions = redis_access.plan_changes(held, [rotated], prune=True)
    assert [arg for arg in commands[0] if arg.startswith("#")] == [f"#{redis_access.password_hash('api-password-2')}"]
    assert actions == ["pliers-api: drop its old password"]
    # Without the prune, a user holding its account's password and an old one is left as it is.
    assert redis_access.plan_changes(held, [rotated], prune=False) == ([], [])


def test_only_a_user_holding_an_old_password_makes_redis_prunable():
    rotated = {**API, "password": "api-password-2"}
    assert redis_access.old_passwords(users(ADMIN, acl_line(API), acl_line(EXPORTER)), [API, EXPORTER]) == []
    # Before the rotation's first pass, and after it (the old password kept beside the new one).
    assert redis_access.old_passwords(users(ADMIN, acl_line(API)), [rotated]) == ["pliers-api"]
    assert redis_access.old_passwords(users(ADMIN, acl_line(rotated, "api-password-1")), [rotated]) == ["pliers-api"]
    # A user the accounts do not name yet is created, not pruned.
    assert redis_access.old_passwords(users(ADMIN), [API]) == []


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("user pliers-api off #{hash} ~* &* +@all -@dangerous", "enable it with a password"),
        ("user pliers-api on nopass ~* &* +@all -@dangerous", "enable it with a password"),
        ("user pliers-api on #{hash} ~* &* +@all", "give it the readwrite rules"),
        ("user pliers-api on #{hash} ~cache:* &* +@all -@dangerous", "give it the readwrite rules"),
    ],
)
def test_a_user_that_drifted_is_reset_to_its_account(line, why):
    held = users(ADMIN, line.format(hash=redis_access.password_hash(API["password"])))
    commands, actions = redis_access.plan_changes(held, [API], prune=False)
    assert len(commands) == 1 and why in actions[0]
    assert commands[0][-4:] == ["~*", "&*", "+@all", "-@dangerous"]


def test_users_the_accounts_do_not_name_are_left_alone():
    held = users(ADMIN, acl_line(API), "user someone-else on nopass ~* &* +@all")
    assert redis_access.plan_changes(held, [API], prune=True) == ([], [])


def test_each_kind_of_account_may_not_flush_reconfigure_or_read_the_acl():
    for rules in redis_access.RULES.values():
        assert "+@all" not in rules or "-@dangerous" in rules
    assert not any(rule.startswith("~") for rule in redis_access.RULES["monitor"] + redis_access.RULES["backup"])
