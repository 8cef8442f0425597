"""postgres_access's plan: from the roles and privileges it read, only the statements that bring them to the accounts
(the lab's tests run it against PostgreSQL; these pin each rule)."""

from __future__ import annotations

import pytest
from ansible_collections.pliers.deploy.plugins.module_utils import _scram
from ansible_collections.pliers.deploy.plugins.modules import postgres_access

OWNER = {"name": "pliers_owner", "password": "owner-password-1", "privileges": "owner"}
APP = {"name": "pliers_app_1", "group": "pliers_app", "password": "app-password-1", "privileges": "dml"}
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
            "pliers_app_1": role(APP["password"], member_of=["pliers_app"]),
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
        "create login pliers_app_1 in pliers_app",
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


def test_a_rotated_dml_password_is_a_new_login_and_the_old_one_goes_only_with_prune():
    rotated = {**APP, "name": "pliers_app_2", "password": "app-password-2"}
    assert plan(converged_state(), accounts=(OWNER, rotated, MONITOR)).actions == [
        "create login pliers_app_2 in pliers_app"
    ]
    state = converged_state()
    state["roles"]["pliers_app_2"] = role("app-password-2", member_of=["pliers_app"])
    assert plan(state, accounts=(OWNER, rotated, MONITOR), prune=True).actions == ["drop login pliers_app_1"]


@pytest.mark.parametrize(
    ("change", "action"),
    [
        (lambda s: s["database_acl"].append("=Tc/pliers_owner"), "take every privilege on database pliers from PUBLIC"),
        (lambda s: s["schema_acl"].append("=UC/pg_database_owner"), "take CREATE on schema public from PUBLIC"),
        (lambda s: s["relations"][0].update(acl=["pliers_app=arwdDxt/pliers_owner"]),
         "let pliers_app read and write the rows of items (and nothing else)"),
        (lambda s: s["roles"]["pliers_app_1"].update(super=True), "make pliers_app_1 a plain login"),
        (lambda s: s["roles"]["pliers_monitor"].update(member_of=[]), "put pliers_monitor in pg_monitor"),
        (lambda s: s["roles"]["pliers_app"].update(login=True), "make pliers_app a group that cannot log in"),
        (lambda s: s.update(default_acl=[]), "let pliers_app use the tables pliers_owner creates later"),
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
