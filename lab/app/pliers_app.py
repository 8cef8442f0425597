#!/usr/bin/env python3
"""The reference Pliers app: what docs/app-contract.md asks of a deployable image.

One program, two roles (PLIERS_ROLE): the Core API on :3000 and the AI service
on :3001. Commands:
    pliers serve               run the HTTP server of this role
    pliers migrate status      print applied and pending migrations (JSON)
    pliers migrate up          apply pending migrations, print what was applied (JSON)
    pliers healthcheck         exit 0 when this container's /health answers 200 (lab/app/pliers, in bash)

Secrets come from *_FILE variables (the plain variable is accepted as a
fallback for development). Version "broken" starts but never reports healthy.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

VERSION = os.environ.get("PLIERS_VERSION", "0.0.0-dev")
ROLE = os.environ.get("PLIERS_ROLE", "api")
PORT = int(os.environ.get("PORT", "3000" if ROLE == "api" else "3001"))
MIGRATIONS_DIR = Path(os.environ.get("PLIERS_MIGRATIONS_DIR", Path(__file__).resolve().parent / "migrations"))
# "broken" ships 1.1.0's schema: deploying it has nothing to migrate, it just never turns healthy.
SCHEMA_OF_VERSION = {"broken": "1.1.0"}
MIGRATION_LOCK_ID = 7272711
STARTED = time.time()


def setting(name: str, default: str | None = None) -> str | None:
    """NAME_FILE's content when set (the contract), else NAME, else default."""
    path = os.environ.get(f"{name}_FILE")
    if path:
        return Path(path).read_text().strip()
    return os.environ.get(name, default)


def version_key(version: str) -> tuple[int, ...]:
    version = SCHEMA_OF_VERSION.get(version, version)
    return tuple(int(part) for part in version.split("-")[0].split(".") if part.isdigit())


# --- PostgreSQL and Redis ---------------------------------------------------------------


def db_connect():
    import psycopg2

    return psycopg2.connect(
        host=setting("DATABASE_HOST", "postgres"),
        port=int(setting("DATABASE_PORT", "5432")),
        dbname=setting("DATABASE_NAME", "pliers"),
        user=setting("DATABASE_USER", "pliers"),
        password=setting("DATABASE_PASSWORD"),
        connect_timeout=3,
        application_name=f"pliers-{ROLE}-{VERSION}",
    )


# A few connections kept open and reused: a new one per request costs PostgreSQL a backend process and both sides
# a SCRAM authentication, which under a client's load was most of the lab's CPU.
IDLE_CONNECTIONS: list = []
IDLE_CONNECTIONS_LOCK = threading.Lock()
MAX_IDLE_CONNECTIONS = 4


def in_transaction(work):
    """work(cursor) in one transaction, on a kept connection or a new one; returns what it returns. A kept
    connection the server has closed meanwhile (PostgreSQL restarted) is dropped and the work tried once more on a
    new one, so only a database that is down fails a request."""
    import psycopg2

    while True:
        with IDLE_CONNECTIONS_LOCK:
            conn = IDLE_CONNECTIONS.pop() if IDLE_CONNECTIONS else None
        kept = conn is not None
        conn = conn or db_connect()
        try:
            with conn, conn.cursor() as cur:
                result = work(cur)
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            conn.close()
            if kept:
                continue
            raise
        except Exception:
            keep(conn)  # `with conn` rolled the transaction back: the connection itself is fine
            raise
        keep(conn)
        return result


def keep(conn) -> None:
    with IDLE_CONNECTIONS_LOCK:
        if len(IDLE_CONNECTIONS) < MAX_IDLE_CONNECTIONS:
            IDLE_CONNECTIONS.append(conn)
            return
    conn.close()


def redis_client():
    import redis

    return redis.Redis(
        host=setting("REDIS_HOST", "redis"),
        port=int(setting("REDIS_PORT", "6379")),
        # Its own ACL user (REDIS_USERNAME), or Redis's default user when none is given.
        username=setting("REDIS_USERNAME"),
        password=setting("REDIS_PASSWORD"),
        socket_timeout=2,
        socket_connect_timeout=2,
    )


def check(probe) -> str:
    try:
        probe()
        return "ok"
    except Exception as exc:  # noqa: BLE001 - any failure is reported, not raised
        return f"error: {type(exc).__name__}: {str(exc).strip()[:200]}"


def probe_database() -> None:
    in_transaction(lambda cur: cur.execute("SELECT 1"))


def probe_redis() -> None:
    redis_client().ping()


def probe_api() -> None:
    url = setting("API_URL", "http://api:3000").rstrip("/") + "/health"
    with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - internal URL from config
        if response.status != 200:
            raise RuntimeError(f"{url} answered {response.status}")


# --- Migrations ---------------------------------------------------------------------------


def available_migrations() -> list[tuple[str, str]]:
    """(version, sql) of every migration this build ships, oldest first."""
    mine = version_key(VERSION)
    found = []
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        sql = path.read_text()
        since = next((line.split(":", 1)[1].strip() for line in sql.splitlines() if line.startswith("-- since:")), "0")
        if version_key(since) <= mine:
            found.append((path.stem, sql))
    return found


def migrate(apply: bool) -> dict:
    conn = db_connect()
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_ID,))
            cur.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now(), applied_by text NOT NULL)"
            )
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT version FROM schema_migrations ORDER BY version")
                applied = [row[0] for row in cur.fetchall()]
            conn.commit()
            pending = [(name, sql) for name, sql in available_migrations() if name not in applied]
            applied_now = []
            if apply:
                for name, sql in pending:
                    with conn, conn.cursor() as cur:  # one transaction per migration
                        cur.execute(sql)
                        cur.execute(
                            "INSERT INTO schema_migrations (version, applied_by) VALUES (%s, %s)", (name, VERSION)
                        )
                    applied_now.append(name)
            return {
                "version": VERSION,
                "applied": applied + applied_now,
                "pending": [name for name, _ in pending if name not in applied_now],
                "applied_now": applied_now,
            }
        finally:
            with conn, conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_ID,))
    finally:
        conn.close()


# --- HTTP ---------------------------------------------------------------------------------


class Metrics:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: dict[tuple[str, str, int], int] = {}
        self.seconds: dict[tuple[str, str], float] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        with self.lock:
            self.requests[(method, route, status)] = self.requests.get((method, route, status), 0) + 1
            self.seconds[(method, route)] = self.seconds.get((method, route), 0.0) + seconds

    def render(self) -> str:
        service = "api" if ROLE == "api" else "ai-service"
        lines = [
            "# HELP pliers_build_info The running build of this Pliers service.",
            "# TYPE pliers_build_info gauge",
            f'pliers_build_info{{service="{service}",version="{VERSION}"}} 1',
            "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.",
            "# TYPE process_start_time_seconds gauge",
            f"process_start_time_seconds {STARTED:.3f}",
            "# HELP http_requests_total HTTP requests served, by method, route and status.",
            "# TYPE http_requests_total counter",
        ]
        with self.lock:
            for (method, route, status), count in sorted(self.requests.items()):
                lines.append(f'http_requests_total{{method="{method}",route="{route}",status="{status}"}} {count}')
            lines += [
                "# HELP http_request_duration_seconds_sum Time spent serving requests, by method and route.",
                "# TYPE http_request_duration_seconds_sum counter",
            ]
            for (method, route), seconds in sorted(self.seconds.items()):
                lines.append(f'http_request_duration_seconds_sum{{method="{method}",route="{route}"}} {seconds:.6f}')
        return "\n".join(lines) + "\n"


METRICS = Metrics()


class HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def health() -> tuple[int, dict]:
    if ROLE == "api":
        checks = {"database": check(probe_database), "redis": check(probe_redis)}
        body: dict = {"service": "api", "version": VERSION, "checks": checks}
    else:
        checks = {"redis": check(probe_redis), "api": check(probe_api)}
        providers = {
            name: "configured" if setting(var) else "missing"
            for name, var in (("openai", "OPENAI_API_KEY"), ("anthropic", "ANTHROPIC_API_KEY"))
        }
        body = {"service": "ai-service", "version": VERSION, "checks": checks, "providers": providers}
    healthy = all(value == "ok" for value in checks.values())
    if VERSION == "broken":
        healthy = False
        body["reason"] = "this build is deliberately broken: it never reports healthy"
    body["status"] = "ok" if healthy else "failing"
    return (200 if healthy else 503), body


def list_items() -> list[dict]:
    with_tags = version_key(VERSION) >= (1, 1, 0)
    columns = "id, name, created_at" + (", tags" if with_tags else "")

    def select(cur) -> list[tuple]:
        cur.execute(f"SELECT {columns} FROM items ORDER BY id")  # noqa: S608 - fixed column list
        return cur.fetchall()

    rows = in_transaction(select)
    items = []
    for row in rows:
        item = {"id": row[0], "name": row[1], "created_at": row[2].isoformat()}
        if with_tags:
            item["tags"] = list(row[3])
        items.append(item)
    return items


def create_item(payload: object) -> dict:
    if not isinstance(payload, dict) or not isinstance(payload.get("name"), str):
        raise HTTPError(400, 'expected a JSON object with a string "name"')
    name = payload["name"].strip()
    if not 1 <= len(name) <= 200:
        raise HTTPError(400, '"name" must be 1 to 200 characters')

    def insert(cur) -> tuple:
        cur.execute("INSERT INTO items (name) VALUES (%s) RETURNING id, created_at", (name,))
        return cur.fetchone()

    item_id, created = in_transaction(insert)
    return {"id": item_id, "name": name, "created_at": created.isoformat()}


def delete_items() -> dict:

    def delete(cur) -> int:
        cur.execute("DELETE FROM items")
        return cur.rowcount

    return {"deleted": in_transaction(delete)}


def complete(payload: object) -> dict:
    """A stand-in for the provider call: deterministic, no network (none is reachable here)."""
    if not isinstance(payload, dict) or not isinstance(payload.get("prompt"), str):
        raise HTTPError(400, 'expected a JSON object with a string "prompt"')
    provider = next(
        (n for n, v in (("openai", "OPENAI_API_KEY"), ("anthropic", "ANTHROPIC_API_KEY")) if setting(v)), None
    )
    if provider is None:
        raise HTTPError(503, "no AI provider key is configured")
    count = redis_client().incr("pliers:ai:completions")
    return {"provider": provider, "completion": payload["prompt"][::-1], "served": count}


class Handler(BaseHTTPRequestHandler):
    server_version = f"pliers-{ROLE}/{VERSION}"

    def do_GET(self) -> None:
        self.dispatch("GET")

    def do_POST(self) -> None:
        self.dispatch("POST")

    def do_DELETE(self) -> None:
        self.dispatch("DELETE")

    def routes(self) -> dict[tuple[str, str], object]:
        prefix = "/api" if ROLE == "api" else "/ai"
        table = {
            ("GET", "/health"): health,
            ("GET", f"{prefix}/health"): health,
            ("GET", "/metrics"): None,
        }
        if ROLE == "api":
            table[("GET", "/api/items")] = lambda: (200, list_items())
            table[("POST", "/api/items")] = lambda: (201, create_item(self.json_body()))
            table[("DELETE", "/api/items")] = lambda: (200, delete_items())
        else:
            table[("POST", "/ai/complete")] = lambda: (200, complete(self.json_body()))
        return table

    def json_body(self) -> object:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            return json.loads(self.rfile.read(length) or b"null")
        except ValueError as exc:
            raise HTTPError(400, f"request body is not JSON: {exc}") from exc

    def dispatch(self, method: str) -> None:
        started = time.monotonic()
        path = self.path.split("?", 1)[0]
        table = self.routes()
        route = path if (method, path) in table else "other"
        try:
            if (method, path) == ("GET", "/metrics"):
                self.send(200, METRICS.render().encode(), "text/plain; version=0.0.4")
                status = 200
            elif (method, path) in table:
                status, body = table[(method, path)]()
                self.send(status, (json.dumps(body) + "\n").encode(), "application/json")
            elif any(p == path for _, p in table):
                raise HTTPError(405, f"{method} is not allowed on {path}")
            else:
                raise HTTPError(404, f"no route for {path}")
        except HTTPError as exc:
            status = exc.status
            self.send(status, (json.dumps({"error": str(exc)}) + "\n").encode(), "application/json")
        except Exception as exc:  # noqa: BLE001 - a request never kills the server
            status = 500
            message = {"error": f"{type(exc).__name__}: {str(exc).strip()[:300]}"}
            self.send(status, (json.dumps(message) + "\n").encode(), "application/json")
        METRICS.observe(method, route, status, time.monotonic() - started)

    def send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        sys.stdout.write(f"{self.address_string()} {format % args}\n")


class Server(ThreadingHTTPServer):
    daemon_threads = False  # on SIGTERM, finish the requests in flight before exiting
    allow_reuse_address = True


def serve() -> int:
    server = Server(("0.0.0.0", PORT), Handler)  # noqa: S104 - a container listens on all its interfaces

    # Load balancers that resolve the service by DNS may still send requests for a while after the
    # task left DNS: keep serving them that long, then finish the requests in flight and exit.
    drain = float(setting("DRAIN_SECONDS", "0") or 0)

    def drain_then_shutdown() -> None:
        time.sleep(drain)
        server.shutdown()

    def stop(signum: int, _frame) -> None:
        print(f"pliers-{ROLE}: signal {signum}, serving {drain:g}s more, then finishing requests in flight", flush=True)
        threading.Thread(target=drain_then_shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"pliers-{ROLE} {VERSION} listening on :{PORT}", flush=True)
    server.serve_forever(poll_interval=0.2)
    server.server_close()
    return 0


def main(argv: list[str]) -> int:
    command = argv[1:] or ["serve"]
    if command == ["serve"]:
        return serve()
    if command[0] == "migrate" and command[1:] in (["status"], ["up"]):
        if ROLE != "api":
            print("migrations belong to the api image", file=sys.stderr)
            return 2
        try:
            result = migrate(apply=command[1] == "up")
        except Exception as exc:  # noqa: BLE001 - reported as a failed command
            print(f"migrate {command[1]} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        print(json.dumps(result))
        return 0
    print(__doc__, file=sys.stderr)
    print(f"unknown command: {' '.join(command)}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
