"""postgres_access's plan: from the roles and privileges it read, only the statements that bring them to the accounts
(the lab's tests run it against PostgreSQL; these pin each rule)."""

from __future__ import annotations

import pytest
from ansible_collections.pliers.deploy.plugins.module_utils import _postgres_access as postgres_access
from ansible_collections.pliers.deploy.plugins.module_utils import _scram

OWNER = {"name": "pliers_owner", "password": "owner-password-1", "privileges": "owner"}
APP = {"name": "pliers_app_0000000a", "group": "pliers_app", "password": "app-password-1", "privileges": "dml"}
MONITOR = {"name": "pliers_monitor", "password": "monitor-password-1", "privileges": "monitor"}


def role(password=None, login=True, member_of=(), **attributes):
    return {
        "login": login,
        "super": False,
        "createdb": False,
        "createrole": False,
        "password": _scram.verifier(password) if password else None,
        "member_of": list(member_of),
        **attributes,
    }


def converged_state():
    """What the accounts look like once brought to their definition, one table and its sequence in the schema."""
    return {
        "roles": {
            "pliers": role("superuser-password", super=True),
            "pliers_owner": role(OWNER["password"]),
            "pliers_app": role(login=False),
            "pliers_app_0000000a": role(APP["password"], member_of=["pliers_app"]),
            "pliers_monitor": role(MONITOR["password"], member_of=["pg_monitor"]),
        },
        "database_owner": "pliers_owner",
        "database_acl": ["pliers_owner=CTc/pliers_owner", "pliers_app=c/pliers_owner", "pliers_monitor=c/pliers_owner"],
        "schema_owner": "pg_database_owner",
        "schema_acl": [
            "pg_database_owner=UC/pg_database_owner",
            "=U/pg_database_owner",
            "pliers_app=U/pg_database_owner",
        ],
        "relations": [
            {
                "name": "items",
                "kind": "r",
                "owner": "pliers_owner",
                "acl": ["pliers_app=arwd/pliers_owner"],
                "follows_table": False,
            },
            {
                "name": "items_id_seq",
                "kind": "S",
                "owner": "pliers_owner",
                "acl": ["pliers_app=rU/pliers_owner"],
                "follows_table": True,
            },
        ],  # fmt: skip
        "default_acl": [
            {"role": "pliers_owner", "type": "r", "acl": ["pliers_app=arwd/pliers_owner"]},
            {"role": "pliers_owner", "type": "S", "acl": ["pliers_app=rU/pliers_owner"]},
        ],
    }


def plan(state, accounts=(OWNER, APP, MONITOR), prune=False):
    return postgres_access.plan_changes(state, list(accounts), "pliers", prune)


def test_a_converged_database_needs_nothing():
    assert plan(converged_state()).actions == []


def test_a_new_database_gets_every_role_and_privilege_and_no_password_in_text():
    state = converged_state()
    state.update(
        roles={"pliers": role("superuser-password", super=True)},
        database_owner="pliers",
        database_acl=None,
        schema_acl=["pg_database_owner=UC/pg_database_owner", "=U/pg_database_owner"],
        relations=[{"name": "items", "kind": "r", "owner": "pliers", "acl": None, "follows_table": False}],
        default_acl=[],
    )
    result = plan(state)
    assert result.actions[:4] == [
        "create group pliers_app",
        "create login pliers_owner",
        "create login pliers_app_0000000a in pliers_app",
        "create login pliers_monitor in pg_monitor",
    ]
    assert "give database pliers to pliers_owner" in result.actions
    assert "give table items to pliers_owner" in result.actions
    assert "take every privilege on database pliers from PUBLIC" in result.actions
    statements = "\n".join(result.statements)
    assert "app-password-1" not in statements and "SCRAM-SHA-256$4096:" in statements
    assert 'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "pliers_app"' in statements
    assert (
        'ALTER DEFAULT PRIVILEGES FOR ROLE "pliers_owner" IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES'
        in statements
    )


def test_a_changed_password_is_set_as_a_verifier():
    result = plan(converged_state(), accounts=(OWNER, APP, {**MONITOR, "password": "monitor-password-2"}))
    assert result.actions == ["set the password of pliers_monitor"]
    assert result.statements[0].startswith('ALTER ROLE "pliers_monitor" PASSWORD \'SCRAM-SHA-256$')


ROTATED = {**APP, "name": "pliers_app_0000000b", "password": "app-password-2"}


def rotated_state(**old):
    state = converged_state()
    state["roles"]["pliers_app_0000000b"] = role("app-password-2", member_of=["pliers_app"])
    state["roles"]["pliers_app_0000000a"].update(old)
    return state


def test_a_rotated_dml_password_is_a_new_login_and_the_old_one_goes_only_with_prune():
    assert plan(converged_state(), accounts=(OWNER, ROTATED, MONITOR)).actions == [
        "create login pliers_app_0000000b in pliers_app"
    ]
    assert plan(rotated_state(), accounts=(OWNER, ROTATED, MONITOR)).actions == []
    assert plan(rotated_state(), accounts=(OWNER, ROTATED, MONITOR), prune=True).actions == [
        "drop login pliers_app_0000000a"
    ]


def test_only_a_login_a_prune_would_drop_makes_the_database_prunable():
    # A no-op deploy runs no prune pass: it has nothing to drop.
    assert postgres_access.stale_logins(converged_state(), [OWNER, APP, MONITOR]) == []
    # A rotation's old login, sessions or not (a prune keeps it while they last), until the prune dropped it.
    accounts = [OWNER, ROTATED, MONITOR]
    assert postgres_access.stale_logins(converged_state(), accounts) == ["pliers_app_0000000a"]
    assert postgres_access.stale_logins(rotated_state(sessions=2), accounts) == ["pliers_app_0000000a"]


def test_a_prune_keeps_an_old_login_sessions_still_use():
    result = plan(rotated_state(sessions=2), accounts=(OWNER, ROTATED, MONITOR), prune=True)
    assert result.actions == [] and result.notes == ["kept login pliers_app_0000000a: 2 session(s) still use it"]


@pytest.mark.parametrize(
    ("name", "attributes"),
    [
        ("pliers_app_reporting", {}),  # not a name rotating_login makes: someone's own login in the group
        ("pliers_app_0000000c", {"super": True}),
        ("pliers_app_0000000d", {"login": False}),
    ],
)
def test_a_prune_drops_only_the_plain_logins_it_made(name, attributes):
    state = converged_state()
    state["roles"][name] = role("whatever", member_of=["pliers_app"], **attributes)
    assert not [a for a in plan(state, prune=True).actions if a.startswith("drop")]


def test_a_login_in_a_role_it_should_not_be_in_is_taken_out():
    state = converged_state()
    state["roles"]["pliers_app_0000000a"]["member_of"].append("pg_write_all_data")
    state["roles"]["pliers_monitor"]["replication"] = True
    assert plan(state).actions == [
        "take pliers_app_0000000a out of pg_write_all_data",
        "make pliers_monitor a plain login",
    ]


@pytest.mark.parametrize(
    ("change", "action"),
    [
        (lambda s: s["database_acl"].append("=Tc/pliers_owner"), "take every privilege on database pliers from PUBLIC"),
        (lambda s: s["schema_acl"].append("=UC/pg_database_owner"), "take CREATE on schema public from PUBLIC"),
        (lambda s: s["relations"][0].update(acl=["pliers_app=arwdDxt/pliers_owner"]),
         "let pliers_app read and write the rows of items (and nothing else)"),
        (lambda s: s["roles"]["pliers_app_0000000a"].update(super=True), "make pliers_app_0000000a a plain login"),
        (lambda s: s["roles"]["pliers_monitor"].update(member_of=[]), "put pliers_monitor in pg_monitor"),
        (lambda s: s["roles"]["pliers_app"].update(login=True), "make pliers_app a group that cannot log in"),
        (lambda s: s.update(default_acl=[]),
         "let pliers_app use the tables pliers_owner creates later (and nothing else)"),
    ],
)  # fmt: skip
def test_each_drift_is_repaired(change, action):
    state = converged_state()
    change(state)
    assert action in plan(state).actions


def test_a_sequence_a_column_owns_follows_its_table():
    state = converged_state()
    state["relations"][1]["owner"] = "pliers"
    assert plan(state).actions == []


def test_a_partition_is_given_to_the_owner_as_a_table():
    state = converged_state()
    state["relations"].append({"name": "items_2026", "kind": "r", "owner": "pliers", "acl": ["pliers_app=arwd/pliers"],
                               "follows_table": False})  # fmt: skip
    assert plan(state).actions == ["give table items_2026 to pliers_owner"]


def test_the_state_query_reads_the_accounts_verifiers_only():
    query = postgres_access.state_query([OWNER, {**APP, "name": "o'brien"}])
    assert "ARRAY['pliers_owner', 'o''brien']::name[]" in query


# The HA database's members' own logins, as Patroni made them when the cluster was made.
REPLICATOR = {"name": "replicator", "password": "replication-password-1", "privileges": "replication"}
REWINDER = {"name": "rewinder", "password": "rewind-password-1", "privileges": "login"}


def members_state():
    state = converged_state()
    state["roles"]["replicator"] = role(REPLICATOR["password"], replication=True)
    state["roles"]["rewinder"] = role(REWINDER["password"])
    return state


def test_the_members_logins_as_patroni_made_them_need_nothing():
    assert plan(members_state(), accounts=(OWNER, APP, MONITOR, REPLICATOR, REWINDER)).actions == []


def test_a_rotated_member_password_is_set_and_the_replication_login_keeps_streaming():
    result = plan(
        members_state(),
        accounts=(OWNER, APP, MONITOR, {**REPLICATOR, "password": "replication-password-2"},
                  {**REWINDER, "password": "rewind-password-2"}),
    )  # fmt: skip
    assert result.actions == ["set the password of replicator", "set the password of rewinder"]
    # The password alone: its REPLICATION attribute is not touched, nothing is granted on the database.
    assert all(s.startswith('ALTER ROLE "replicator" PASSWORD') or "rewinder" in s for s in result.statements)


def test_the_member_logins_are_made_when_missing_and_repaired_when_drifted():
    state = members_state()
    del state["roles"]["rewinder"]
    state["roles"]["replicator"].update(replication=False)
    result = plan(state, accounts=(OWNER, APP, MONITOR, REPLICATOR, REWINDER))
    assert result.actions == ["make replicator a replication login", "create login rewinder"]
    assert result.statements[0] == (
        'ALTER ROLE "replicator" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE REPLICATION NOBYPASSRLS'
    )
    assert "NOREPLICATION" in result.statements[1] and "GRANT" not in " ".join(result.statements)


def test_an_application_login_that_may_replicate_is_made_plain():
    state = members_state()
    state["roles"]["pliers_monitor"].update(replication=True)
    assert plan(state, accounts=(OWNER, APP, MONITOR, REPLICATOR, REWINDER)).actions == [
        "make pliers_monitor a plain login"
    ]
