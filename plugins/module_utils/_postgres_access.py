# Copyright (c) pliers.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PostgreSQL's side of the stores' access (private to this collection): read a database's roles and privileges,
plan what brings them to the accounts, apply it. The postgres_access module and compose_rollout's stores run it."""

from __future__ import annotations

import json
import re
import time

from ansible_collections.pliers.deploy.plugins.module_utils import _scram
from ansible_collections.pliers.deploy.plugins.module_utils._store import StoreError, client_failure, run_as_admin

# One JSON document: the roles (the verifiers of the accounts' roles only: only a superuser reads them, and nothing
# else's leaves the database), their open sessions, the database's and the public schema's owners and privileges,
# every relation of the schema, and the schema's default privileges. %s: the accounts' names, as an SQL array.
STATE_QUERY = r"""
SELECT json_build_object(
  'roles', (SELECT json_object_agg(a.rolname, json_build_object(
      'login', a.rolcanlogin, 'super', a.rolsuper, 'createdb', a.rolcreatedb, 'createrole', a.rolcreaterole,
      'replication', a.rolreplication, 'bypassrls', a.rolbypassrls,
      'password', CASE WHEN a.rolname = ANY(%s) THEN a.rolpassword END,
      'sessions', (SELECT count(*) FROM pg_stat_activity s WHERE s.usesysid = a.oid),
      'member_of', ARRAY(SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
                         WHERE m.member = a.oid ORDER BY 1)))
    FROM pg_authid a WHERE a.rolname !~ '^pg_'),
  'database_owner', (SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()),
  'database_acl', (SELECT datacl::text[] FROM pg_database WHERE datname = current_database()),
  'schema_owner', (SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'public'),
  'schema_acl', (SELECT nspacl::text[] FROM pg_namespace WHERE nspname = 'public'),
  'relations', (SELECT coalesce(json_agg(json_build_object(
      'name', c.relname, 'kind', c.relkind, 'owner', pg_get_userbyid(c.relowner), 'acl', c.relacl::text[],
      'follows_table', c.relkind = 'S' AND EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                               AND d.objid = c.oid AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')))
      ORDER BY c.relname), '[]')
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')),
  'default_acl', (SELECT coalesce(json_agg(json_build_object(
      'role', pg_get_userbyid(d.defaclrole), 'type', d.defaclobjtype, 'acl', d.defaclacl::text[])), '[]')
    FROM pg_default_acl d JOIN pg_namespace n ON n.oid = d.defaclnamespace WHERE n.nspname = 'public')
);
"""

# What psql says when the database is not there to answer (stopped, starting, its name not resolved yet).
NOT_ANSWERING = (
    "could not connect",
    "could not translate host name",
    "Connection refused",
    "timeout expired",
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
)

# The privileges a dml group holds, in PostgreSQL's ACL letters: rows of tables and views (a: INSERT, r: SELECT,
# w: UPDATE, d: DELETE), sequences (r: SELECT, U: USAGE).
TABLE_PRIVILEGES = frozenset("arwd")
SEQUENCE_PRIVILEGES = frozenset("rU")
# What an account may be: also, for the HA database's members, a replication login (it streams the WAL) and a
# login with no privilege here (pg_rewind's: Patroni grants it what it reads, in the postgres database).
PRIVILEGES = ("owner", "dml", "monitor", "replication", "login")
# Every login the accounts get: it may log in, and nothing more (a replication login: and stream the WAL).
PLAIN_LOGIN = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
REPLICATION_LOGIN = PLAIN_LOGIN.replace("NOREPLICATION", "REPLICATION")
# What rotating_login adds to a group's name.
ROTATED_LOGIN = re.compile(r"^_[0-9a-f]{8}$")
# Seconds a prune waits for the sessions of an old login to end (its containers draining) before it keeps it.
SESSIONS_WAIT = 60
KINDS = {"r": "TABLE", "p": "TABLE", "f": "FOREIGN TABLE", "v": "VIEW", "m": "MATERIALIZED VIEW", "S": "SEQUENCE"}


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def state_query(accounts: list[dict]) -> str:
    names = ", ".join(literal(a["name"]) for a in accounts)
    return STATE_QUERY % (f"ARRAY[{names}]::name[]",)


def acl(items: list | None) -> dict[str, frozenset]:
    """grantee -> privilege letters, from aclitem texts ("grantee=letters/grantor"; an empty grantee is PUBLIC)."""
    held: dict[str, frozenset] = {}
    for item in items or []:
        grantee, rest = item.partition("=")[::2]
        grantee = grantee.strip('"')
        letters = rest.split("/", 1)[0].replace("*", "")
        held[grantee] = held.get(grantee, frozenset()) | frozenset(letters)
    return held


class Plan:
    """The statements that bring the state to the accounts, a line saying each, and what was left as it is."""

    def __init__(self) -> None:
        self.statements: list[str] = []
        self.actions: list[str] = []
        self.notes: list[str] = []

    def add(self, action: str, *statements: str) -> None:
        self.actions.append(action)
        self.statements.extend(statements)


def _role(plan: Plan, roles: dict, account: dict) -> None:
    """The account's login role: created, or its attributes, password and group set."""
    name, privileges = account["name"], account["privileges"]
    current = roles.get(name)
    memberships = {"dml": [account.get("group")], "monitor": ["pg_monitor"]}.get(privileges, [])
    replication = privileges == "replication"
    attributes = REPLICATION_LOGIN if replication else PLAIN_LOGIN
    if current is None:
        plan.add(
            f"create {'replication ' if replication else ''}login {name}"
            + (f" in {', '.join(memberships)}" if memberships else ""),
            f"CREATE ROLE {ident(name)} {attributes} PASSWORD "
            f"'{_scram.verifier(account['password'])}'"
            + (f" IN ROLE {', '.join(map(ident, memberships))}" if memberships else ""),
        )
        return
    if (
        not current["login"]
        or bool(current.get("replication")) != replication
        or any(current.get(flag) for flag in ("super", "createdb", "createrole", "bypassrls"))
    ):
        plan.add(
            f"make {name} a {'replication' if replication else 'plain'} login", f"ALTER ROLE {ident(name)} {attributes}"
        )
    if not _scram.matches(account["password"], current["password"]):
        verifier = _scram.verifier(account["password"])
        plan.add(f"set the password of {name}", f"ALTER ROLE {ident(name)} PASSWORD '{verifier}'")
    for group in memberships:
        if group not in current["member_of"]:
            plan.add(f"put {name} in {group}", f"GRANT {ident(group)} TO {ident(name)}")
    for group in sorted(set(current["member_of"]) - set(memberships)):
        plan.add(f"take {name} out of {group}", f"REVOKE {ident(group)} FROM {ident(name)}")


def stale_logins(state: dict, accounts: list[dict]) -> list[str]:
    """The logins this module made for a dml group (<group>_<8 hex digits>, plain ones) that the accounts no longer
    name: what a prune drops once no session uses them."""
    roles = state.get("roles") or {}
    groups = {a["group"] for a in accounts if a["privileges"] == "dml"}
    logins = {a["name"] for a in accounts}
    return [
        name
        for name, role in sorted(roles.items())
        if role["login"] and not role["super"] and name not in logins
        and any(g in role["member_of"] and name.startswith(g) and ROTATED_LOGIN.match(name[len(g) :]) for g in groups)
    ]  # fmt: skip


def plan_changes(state: dict, accounts: list[dict], database: str, prune: bool) -> Plan:
    """What to change so that the state matches the accounts (see DOCUMENTATION)."""
    plan = Plan()
    roles = state.get("roles") or {}
    owners = sorted({a["name"] for a in accounts if a["privileges"] == "owner"})
    groups = sorted({a["group"] for a in accounts if a["privileges"] == "dml"})
    owner = owners[0] if owners else state["database_owner"]
    db = ident(database)

    for group in groups:
        if group not in roles:
            plan.add(f"create group {group}", f"CREATE ROLE {ident(group)} NOLOGIN")
        elif roles[group]["login"] or roles[group]["super"]:
            plan.add(f"make {group} a group that cannot log in", f"ALTER ROLE {ident(group)} NOLOGIN NOSUPERUSER")
    for account in accounts:
        _role(plan, roles, account)

    # The owner's: the database, its public schema, every object in the schema (a sequence a column owns follows
    # its table).
    if owners and state["database_owner"] != owner:
        plan.add(f"give database {database} to {owner}", f"ALTER DATABASE {db} OWNER TO {ident(owner)}")
    if owners and state["schema_owner"] not in (owner, "pg_database_owner"):
        plan.add(f"give schema public to {owner}", f"ALTER SCHEMA public OWNER TO {ident(owner)}")
    for relation in state.get("relations") or []:
        if owners and relation["owner"] != owner and not relation["follows_table"]:
            kind = KINDS[relation["kind"]]
            plan.add(
                f"give {kind.lower()} {relation['name']} to {owner}",
                f"ALTER {kind} public.{ident(relation['name'])} OWNER TO {ident(owner)}",
            )

    # Nobody but the accounts connects; nobody creates in the schema but its owner.
    database_acl = acl(state.get("database_acl"))
    if state.get("database_acl") is None or "" in database_acl:
        plan.add(f"take every privilege on database {database} from PUBLIC", f"REVOKE ALL ON DATABASE {db} FROM PUBLIC")
    for grantee in groups + sorted({a["name"] for a in accounts if a["privileges"] == "monitor"}):
        if "c" not in database_acl.get(grantee, frozenset()):
            plan.add(f"let {grantee} connect to {database}", f"GRANT CONNECT ON DATABASE {db} TO {ident(grantee)}")
    schema_acl = acl(state.get("schema_acl"))
    if state.get("schema_acl") is None or "C" in schema_acl.get("", frozenset()):
        plan.add("take CREATE on schema public from PUBLIC", "REVOKE CREATE ON SCHEMA public FROM PUBLIC")

    # Each group: the rows of every table, the use of every sequence, now and for the owner's later ones.
    for group in groups:
        if "U" not in schema_acl.get(group, frozenset()):
            plan.add(f"let {group} use schema public", f"GRANT USAGE ON SCHEMA public TO {ident(group)}")
        tables, sequences = [], []
        for relation in state.get("relations") or []:
            held = acl(relation["acl"]).get(group, frozenset())
            wanted = SEQUENCE_PRIVILEGES if relation["kind"] == "S" else TABLE_PRIVILEGES
            if held != wanted:
                (sequences if relation["kind"] == "S" else tables).append(relation["name"])
        if tables:
            plan.add(
                f"let {group} read and write the rows of {', '.join(tables)} (and nothing else)",
                f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {ident(group)}",
                f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {ident(group)}",
            )
        if sequences:
            plan.add(
                f"let {group} use the sequences {', '.join(sequences)} (and nothing else)",
                f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {ident(group)}",
                f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {ident(group)}",
            )
        defaults = {
            (d["role"], d["type"]): acl(d["acl"]).get(group, frozenset()) for d in state.get("default_acl") or []
        }
        for kind, letters, objects, privileges in (
            ("r", TABLE_PRIVILEGES, "TABLES", "SELECT, INSERT, UPDATE, DELETE"),
            ("S", SEQUENCE_PRIVILEGES, "SEQUENCES", "USAGE, SELECT"),
        ):
            if defaults.get((owner, kind)) != letters:
                defaults_for = f"ALTER DEFAULT PRIVILEGES FOR ROLE {ident(owner)} IN SCHEMA public"
                plan.add(
                    f"let {group} use the {objects.lower()} {owner} creates later (and nothing else)",
                    f"{defaults_for} REVOKE ALL ON {objects} FROM {ident(group)}",
                    f"{defaults_for} GRANT {privileges} ON {objects} TO {ident(group)}",
                )

    # Only a login this module made that no session uses any more: one an old container still holds is dropped by a
    # later run.
    if prune:
        for name in stale_logins(state, accounts):
            role = roles[name]
            if role.get("sessions"):
                plan.notes.append(f"kept login {name}: {role['sessions']} session(s) still use it")
                continue
            plan.add(
                f"drop login {name}",
                f"REASSIGN OWNED BY {ident(name)} TO {ident(owner)}",
                f"DROP OWNED BY {ident(name)}",
                f"DROP ROLE {ident(name)}",
            )
    return plan


def account_problems(accounts: list[dict], admin: str) -> list[str]:
    """What is wrong with the accounts, one line each (none: they can be brought)."""
    names = [a["name"] for a in accounts]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    problems = [f"account {n} is named more than once" for n in duplicated]
    owners = sorted({a["name"] for a in accounts if a["privileges"] == "owner"})
    if len(owners) > 1:
        problems.append(f"one owner only, got {', '.join(owners)}")
    for account in accounts:
        if account["privileges"] not in PRIVILEGES:
            problems.append(f"account {account['name']}: privileges is one of {', '.join(PRIVILEGES)}")
        if account["privileges"] == "dml" and not account.get("group"):
            problems.append(f"account {account['name']}: a dml account needs its group")
        if account["name"] == admin or account.get("group") == admin:
            problems.append(f"account {account['name']}: the superuser {admin} is not an account")
    return problems


class Psql:
    """psql in the database's container (or a one-off one of its image), connected as the superuser, running one SQL
    file at a time."""

    def __init__(self, module, client, store: dict) -> None:
        self.module, self.client, self.store = module, client, store

    def run(self, sql: str) -> str:
        store = self.store
        status, stdout, stderr = run_as_admin(
            self.module,
            self.client,
            store,
            sql,
            'PGPASSWORD="$(cat "$PLIERS_ADMIN_PASSWORD_FILE")" '
            'exec psql -X -q -A -t -v ON_ERROR_STOP=1 -f "$PLIERS_SCRIPT"',
            environment={
                "PGHOST": store["host"],
                "PGPORT": str(store["port"]),
                "PGUSER": store["admin_user"],
                "PGDATABASE": store["database"],
                "PGCONNECT_TIMEOUT": "10",
                "PGAPPNAME": "pliers-deploy-access",
            },
            host_variable="PGHOST",
            role="postgres-access",
        )
        if status != 0:
            raise client_failure(
                "psql", f"{store['host']}/{store['database']}", status, stderr or stdout, NOT_ANSWERING
            )
        return stdout


def bring(module, client, store: dict, prune: bool) -> dict:
    """The database's roles and privileges brought to the store's accounts (read, then changed in one transaction,
    unless in check mode): the module's result (changed, reached, actions, notes, prunable). Raises StoreNotAnswering
    when the database does not answer, StoreError when it cannot be read or changed."""
    accounts = store["accounts"]
    psql = Psql(module, client, store)
    try:
        # An old login's last sessions close as its containers finish draining: a prune waits for them a while.
        deadline = time.monotonic() + (SESSIONS_WAIT if prune and not module.check_mode else 0)
        while True:
            state = json.loads(psql.run(state_query(accounts)).splitlines()[-1])
            plan = plan_changes(state, accounts, store["database"], prune)
            if not plan.notes or time.monotonic() > deadline:
                break
            time.sleep(2)
        if plan.statements and not module.check_mode:
            psql.run("BEGIN;\n" + "".join(f"{statement};\n" for statement in plan.statements) + "COMMIT;\n")
    except (ValueError, IndexError) as exc:
        raise StoreError(f"reading the roles of {store['database']} failed: {exc}") from exc
    return dict(
        changed=bool(plan.statements), reached=True, actions=plan.actions, notes=plan.notes,
        prunable=[] if prune else stale_logins(state, accounts),
    )  # fmt: skip
