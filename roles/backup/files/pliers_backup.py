# Copyright (c) pliers.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pliers-backup: back up, verify, drill and restore the Pliers data services on this host.

Installed by pliers.deploy (role backup) as /usr/local/sbin/pliers-backup, run by its systemd timer and
by the backup and restore playbooks. Python's standard library and the docker CLI only.

    pliers-backup --config FILE backup [--drill]  pg_dump -Fc + Redis RDB (age-encrypted with recipients) + manifest;
                                                  retention; status
    pliers-backup --config FILE verify [NAME]     sizes and SHA-256 of every file against the manifest (and, when
                                                  encrypted, that each decrypts)
    pliers-backup --config FILE drill [NAME]      restore into a scratch database, compare row counts
    pliers-backup --config FILE restore-postgres [NAME]   replace the live database (writers stopped)
    pliers-backup --config FILE restore-redis [NAME]      replace Redis's data (Redis stopped)
    pliers-backup --config FILE list              the complete backups, newest last

NAME defaults to the newest complete backup. Each command prints one JSON document; on failure it
prints {"failed": true, "msg": ...} and exits 1.

With encryption recipients in the configuration (age public keys), each file of a backup is written encrypted
(<file>.age) and only its ciphertext touches the disk; drills and restores decrypt it with the identity file the
configuration names, into a root-only scratch directory removed afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import errno
import hashlib
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

MANIFEST = "manifest.json"
POSTGRES_FILE = "postgres.dump"
REDIS_FILE = "redis.rdb"
CHUNK = 1024 * 1024
NAME_FORMAT = "%Y%m%dT%H%M%SZ"
STATUS_STATE = "status.json"
# An encrypted file's suffix, and the manifest's word for how its files were encrypted.
AGE_SUFFIX = ".age"
AGE = "age"


class BackupError(Exception):
    """What went wrong, in words an operator can act on."""


# --- docker ------------------------------------------------------------------------------------


def run(*command: str, stdin=None, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(command, input=stdin, capture_output=True, check=False)
    if check and result.returncode != 0:
        error = result.stderr.decode().strip()
        raise BackupError(f"{' '.join(command[:4])}... failed (exit {result.returncode}): {error}")
    return result


def container(config: dict, service: str) -> str:
    """The id of the service's container on this host (a Compose container or a Swarm task)."""
    if config["mode"] == "swarm":
        label = f"com.docker.swarm.service.name={config['project']}_{service}"
        filters = ["--filter", f"label={label}"]
    else:
        filters = ["--filter", f"label=com.docker.compose.project={config['project']}",
                   "--filter", f"label=com.docker.compose.service={service}"]  # fmt: skip
    listing = run("docker", "ps", "-q", *filters).stdout.decode().split()
    if not listing:
        raise BackupError(f"no running container of service {service} ({config['project']}) on this host")
    return listing[0]


def pg_command(config: dict, pg: str, program: str, *args: str, stdin: bool = False, replica: bool = False) -> list:
    """A PostgreSQL client in the database's container (docker exec), logged in as the backups' user: on the
    server's own socket, or, for the HA database, through its proxy (config["postgres"]["proxy"]) - to the primary,
    or with replica to a streaming replica - with the password the member holds."""
    pgc = config["postgres"]
    docker_exec = ["docker", "exec", *(["-i"] if stdin else []), pg]
    proxy = pgc.get("proxy")
    if not proxy:
        return [*docker_exec, program, "-U", pgc["user"], *args]
    host, port = (proxy["replica_host"], proxy["replica_port"]) if replica else (proxy["host"], proxy["port"])
    login = 'PGPASSWORD="$(cat "$0")" exec "$@"'
    return [*docker_exec, "sh", "-c", login, proxy["password_file"], program, "-h", host, "-p", str(port),
            "-U", pgc["user"], *args]  # fmt: skip


def psql(config: dict, pg: str, query: str, database: str | None = None, replica: bool = False) -> str:
    command = pg_command(config, pg, "psql", "-X", "-v", "ON_ERROR_STOP=1", "-d",
                         database or config["postgres"]["database"], "-Atc", query, replica=replica)  # fmt: skip
    return run(*command).stdout.decode().strip()


def dump_source(config: dict, pg: str) -> str:
    """Where the backup's dump is read: the server (one PostgreSQL), or for the HA database a streaming replica when
    one answers through the proxy (the primary keeps its resources for the writes), the primary otherwise."""
    if not config["postgres"].get("proxy"):
        return "server"
    try:
        psql(config, pg, "SELECT 1", replica=True)
    except BackupError:
        return "primary"
    return "replica"


def redis_cli(config: dict, redis: str, *args: str) -> str:
    """redis-cli in the Redis container, logged in as the backups' ACL user (its password on stdin: never in a
    command line)."""
    script = 'REDISCLI_AUTH="$(cat)" exec redis-cli --no-auth-warning --user "$0" "$@"'
    user, password = config["redis"]["user"], config["redis"]["password"]
    answer = run("docker", "exec", "-i", redis, "sh", "-c", script, user, *args, stdin=password.encode())
    return answer.stdout.decode().strip()


def stream(command: list[str], destination: Path, recipients: list[str] | tuple = ()) -> tuple[int, str]:
    """Run command, writing its stdout to destination while hashing it: (size, sha256). With recipients (age public
    keys), the output goes through age first: what is written, sized and hashed is the ciphertext."""
    digest = hashlib.sha256()
    size = 0
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    with contextlib.ExitStack() as stack:
        handle = stack.enter_context(open(destination, "wb"))
        process = stack.enter_context(subprocess.Popen(command, **pipes))
        output, encryptor = process.stdout, None
        if recipients:
            age = ["age", *(word for recipient in recipients for word in ("-r", recipient))]
            encryptor = stack.enter_context(subprocess.Popen(age, stdin=process.stdout, **pipes))
            process.stdout.close()  # age holds it now: the command sees a closed pipe if age stops
            output = encryptor.stdout
        for chunk in iter(lambda: output.read(CHUNK), b""):
            handle.write(chunk)
            digest.update(chunk)
            size += len(chunk)
        error = process.stderr.read().decode().strip()
        handle.flush()
        os.fsync(handle.fileno())
        if encryptor:
            encryptor_error = encryptor.stderr.read().decode().strip()
            encryptor.wait()
    process.wait()
    # age first: when it stops, the command dies of the closed pipe, which says nothing of why.
    if encryptor and encryptor.returncode != 0:
        status = encryptor.returncode
        raise BackupError(f"encrypting {destination.name} with age failed (exit {status}): {encryptor_error}")
    if process.returncode != 0:
        raise BackupError(f"{' '.join(command[3:6])} failed (exit {process.returncode}): {error}")
    return size, digest.hexdigest()


def recipients_of(config: dict) -> list[str]:
    """The age public keys backups are encrypted to (none: backups are written as they are)."""
    return list((config.get("encryption") or {}).get("recipients") or [])


def check_identity(config: dict) -> None:
    """With recipients and an identity on this host, the identity must be one recipient's: else every backup from now
    on could not be drilled or restored here."""
    identity = (config.get("encryption") or {}).get("identity_file")
    recipients = recipients_of(config)
    if not (identity and recipients):
        return
    public = run("age-keygen", "-y", identity).stdout.decode().strip()
    if public not in recipients:
        raise BackupError(
            f"the age identity in {identity} (backup_encryption_identity, public key {public}) is none of "
            "backup_encryption_recipients: its backups could not be decrypted with it"
        )


def decrypt(config: dict, backup: Path, name: str, output: str) -> None:
    """Decrypt the encrypted backup's file `name` (name.age) to output; age authenticates what it decrypts, so a
    changed byte fails here."""
    identity = (config.get("encryption") or {}).get("identity_file")
    if not identity or not Path(identity).is_file():
        raise BackupError(
            f"backup {backup.name} is encrypted with age and this host has no identity to decrypt it "
            "(set backup_encryption_identity in the vault and deploy)"
        )
    result = run("age", "-d", "-i", identity, "-o", output, str(backup / (name + AGE_SUFFIX)), check=False)
    if result.returncode != 0:
        raise BackupError(
            f"backup {backup.name}: decrypting {name}{AGE_SUFFIX} failed: {result.stderr.decode().strip()}"
        )


def check_decrypts(config: dict, backup: Path, manifest: dict) -> None:
    """An encrypted backup's files decrypt with this host's identity (to nowhere): what a restore checks before it
    stops anything."""
    if manifest.get("encryption") == AGE:
        for entry in manifest["files"]:
            decrypt(config, backup, entry["name"].removesuffix(AGE_SUFFIX), os.devnull)


@contextlib.contextmanager
def plaintext(config: dict, backup: Path, manifest: dict, name: str):
    """The path of the backup's file `name` as it was dumped: the file itself, or, in an encrypted backup, its
    decryption into a root-only scratch directory beside the backups, removed on leaving."""
    if manifest.get("encryption") != AGE:
        yield backup / name
        return
    scratch = backup.parent / f".decrypted-{backup.name}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(mode=0o700)
    try:
        decrypt(config, backup, name, str(scratch / name))
        yield scratch / name
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --- backups on disk ---------------------------------------------------------------------------


def backups(root: Path) -> list[Path]:
    """Complete backups (a directory with its manifest), oldest first. Partial ones never count."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST).is_file()]
    return sorted(found, key=lambda p: p.name)


def pick(root: Path, name: str | None) -> Path:
    complete = backups(root)
    if name in (None, "", "latest"):
        if not complete:
            raise BackupError(f"no complete backup in {root}")
        return complete[-1]
    chosen = root / name
    if not chosen.is_dir() or "/" in name or name.startswith("."):
        known = ", ".join(p.name for p in complete[-5:]) or "none"
        raise BackupError(f"no backup named {name!r} in {root} (newest: {known})")
    return chosen


def verify(backup: Path, hash_files: bool = True) -> dict:
    """The manifest, once every file it lists has its size and SHA-256 (its size only, without hash_files);
    else BackupError naming the file."""
    manifest_path = backup / MANIFEST
    if not manifest_path.is_file():
        raise BackupError(f"backup {backup.name} is incomplete: it has no {MANIFEST}")
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except (ValueError, KeyError) as exc:
        raise BackupError(f"backup {backup.name}: {MANIFEST} is unreadable ({exc})") from exc
    for entry in files:
        path = backup / entry["name"]
        if not path.is_file():
            raise BackupError(f"backup {backup.name} is incomplete: {entry['name']} is missing")
        size = path.stat().st_size
        if size != entry["size"]:
            expected = entry["size"]
            raise BackupError(f"backup {backup.name}: {entry['name']} is {size} bytes, the manifest says {expected}")
        if hash_files and sha256(path) != entry["sha256"]:
            raise BackupError(f"backup {backup.name}: {entry['name']} does not match its SHA-256 (corrupted)")
    return manifest


def retained(names: list[str], daily: int, weekly: int) -> set[str]:
    """The backups retention keeps: the newest of each of the last `daily` days that have one, and the
    newest of each of the last `weekly` ISO weeks that have one. Names are UTC timestamps (NAME_FORMAT)."""
    keep: set[str] = set()
    days: dict[str, str] = {}
    weeks: dict[tuple[int, int], str] = {}
    for name in sorted(names):
        stamp = dt.datetime.strptime(name, NAME_FORMAT)
        days[stamp.strftime("%Y-%m-%d")] = name  # later names overwrite: the newest of the day
        weeks[tuple(stamp.isocalendar())[:2]] = name
    keep.update(days[day] for day in sorted(days)[-daily:] if daily > 0)
    keep.update(weeks[week] for week in sorted(weeks)[-weekly:] if weekly > 0)
    return keep


def write_atomically(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)  # a full disk leaves no half-written file behind
        raise


# --- the status the monitoring scrapes -----------------------------------------------------------


METRICS = (
    ("pliers_backup_last_success_timestamp_seconds", "When the last successful backup finished."),
    ("pliers_backup_last_size_bytes", "Size of the last successful backup."),
    ("pliers_backup_last_duration_seconds", "How long the last successful backup took."),
    ("pliers_backup_last_attempt_timestamp_seconds", "When the last backup attempt finished."),
    ("pliers_backup_last_attempt_success", "1 when the last backup attempt succeeded, else 0."),
    ("pliers_backup_count", "Complete backups on disk."),
    ("pliers_backup_offsite_last_success_timestamp_seconds", "When a backup last reached the offsite copy."),
    ("pliers_backup_offsite_last_attempt_success", "1 when the last offsite copy succeeded, else 0."),
    ("pliers_restore_drill_last_timestamp_seconds", "When the last restore drill finished."),
    ("pliers_restore_drill_last_success", "1 when the last restore drill passed, else 0."),
)


def render_status(state: dict, environment: str) -> str:
    """Prometheus text format, for node exporter's textfile collector."""
    lines = []
    for name, help_text in METRICS:
        if name in state:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge",
                      f'{name}{{environment="{environment}"}} {state[name]}']  # fmt: skip
    return "\n".join(lines) + "\n"


def update_status(config: dict, **values) -> None:
    root = Path(config["backup_dir"])
    state_path = root / STATUS_STATE
    try:
        state = json.loads(state_path.read_text())
    except (FileNotFoundError, ValueError):
        state = {}
    state.update(values)
    state["pliers_backup_count"] = len(backups(root))
    try:
        write_atomically(state_path, json.dumps(state, indent=2, sort_keys=True) + "\n", 0o600)
    except OSError as exc:
        # A full backup disk must not hide the failure from the monitoring, whose file lives elsewhere.
        print(f"pliers-backup: could not keep the status in {state_path}: {exc}", file=sys.stderr)
    if config.get("status_file"):
        write_atomically(Path(config["status_file"]), render_status(state, config["environment"]))


# --- commands ----------------------------------------------------------------------------------


def backup(config: dict) -> dict:
    root = Path(config["backup_dir"])
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    started = time.time()
    name = dt.datetime.now(dt.UTC).strftime(NAME_FORMAT)
    partial = root / f".partial-{name}"
    final = root / name
    if final.exists():
        raise BackupError(f"backup {name} already exists: one backup per second at most")
    recipients = recipients_of(config)
    suffix = AGE_SUFFIX if recipients else ""
    try:
        # Inside: a refusal is a failed attempt, in the status Prometheus reads like any other.
        check_identity(config)
        partial.mkdir(mode=0o700)
        pgc = config["postgres"]
        pg = container(config, pgc["service"])
        files = []
        source = dump_source(config, pg)
        dump = pg_command(config, pg, "pg_dump", "-Fc", "-d", pgc["database"], replica=source == "replica")
        size, digest = stream(dump, partial / (POSTGRES_FILE + suffix), recipients)
        files.append({"name": POSTGRES_FILE + suffix, "size": size, "sha256": digest, "format": "pg_dump custom"})
        versions = {"postgres": psql(config, pg, "SHOW server_version")}
        redis = container(config, config["redis"]["service"])
        rdb = redis_snapshot(config, redis)
        size, digest = stream(["docker", "exec", redis, "cat", rdb], partial / (REDIS_FILE + suffix), recipients)
        files.append({"name": REDIS_FILE + suffix, "size": size, "sha256": digest, "format": "redis rdb"})
        versions["redis"] = re.search(r"redis_version:(\S+)", redis_cli(config, redis, "INFO", "server")).group(1)
        persistence = {key: redis_cli(config, redis, "CONFIG", "GET", key).splitlines()[-1]
                       for key in ("appendonly", "appenddirname", "appendfilename")}  # fmt: skip
        manifest = {
            "name": name,
            "environment": config["environment"],
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "seconds": round(time.time() - started, 2),
            "database": pgc["database"],
            # server (one PostgreSQL), or the HA database's replica or primary.
            "postgres_from": source,
            "versions": versions,
            "redis": persistence,
            "files": files,
        }
        if recipients:
            manifest["encryption"] = AGE
        write_atomically(partial / MANIFEST, json.dumps(manifest, indent=2) + "\n", 0o600)
        # The rename is what makes a backup exist: a failed one never looks like a good one.
        os.rename(partial, final)
        directory = os.open(root, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except BaseException as exc:
        shutil.rmtree(partial, ignore_errors=True)
        update_status(config, pliers_backup_last_attempt_timestamp_seconds=round(time.time()),
                      pliers_backup_last_attempt_success=0)  # fmt: skip
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            free = shutil.disk_usage(root).free
            raise BackupError(
                f"the backup disk is full: no space left on the file system of {root} while writing backup {name} "
                f"({free} bytes free now that it was removed); the earlier backups are untouched"
            ) from exc
        raise
    removed = prune(config)
    total = sum(entry["size"] for entry in files)
    update_status(
        config,
        pliers_backup_last_success_timestamp_seconds=round(time.time()),
        pliers_backup_last_size_bytes=total,
        pliers_backup_last_duration_seconds=manifest["seconds"],
        pliers_backup_last_attempt_timestamp_seconds=round(time.time()),
        pliers_backup_last_attempt_success=1,
    )
    return {"changed": True, "name": name, "path": str(final), "size": total, "seconds": manifest["seconds"],
            "files": files, "removed": removed, "postgres_from": manifest["postgres_from"]}  # fmt: skip


def redis_snapshot(config: dict, redis: str, timeout: float = 600) -> str:
    """BGSAVE, and wait until that save has finished successfully; the RDB's path in the container."""
    deadline = time.monotonic() + timeout
    while "Background saving started" not in (answer := redis_cli(config, redis, "BGSAVE")):
        if "in progress" not in answer or time.monotonic() > deadline:
            raise BackupError(f"Redis refused BGSAVE: {answer}")
        time.sleep(0.5)  # another save runs: ours starts when it is over
    # From "started" on, rdb_bgsave_in_progress stays 1 until our save is over.
    while "rdb_bgsave_in_progress:0" not in (info := redis_cli(config, redis, "INFO", "persistence")):
        if time.monotonic() > deadline:
            raise BackupError(f"Redis's background save did not finish in {timeout:.0f}s")
        time.sleep(0.2)
    if "rdb_last_bgsave_status:ok" not in info:
        raise BackupError("Redis's background save failed (rdb_last_bgsave_status is not ok)")
    directory = redis_cli(config, redis, "CONFIG", "GET", "dir").splitlines()[-1]
    filename = redis_cli(config, redis, "CONFIG", "GET", "dbfilename").splitlines()[-1]
    return f"{directory}/{filename}"


def prune(config: dict) -> list[str]:
    root = Path(config["backup_dir"])
    complete = [p.name for p in backups(root)]
    keep = retained(complete, int(config["retention"]["daily"]), int(config["retention"]["weekly"]))
    keep.update(complete[-1:])  # never the backup just made
    removed = [name for name in complete if name not in keep]
    for name in removed:
        shutil.rmtree(root / name)
    # Partial backups older than a day are the leftovers of a killed run.
    for leftover in root.glob(".partial-*"):
        if time.time() - leftover.stat().st_mtime > 86400:
            shutil.rmtree(leftover, ignore_errors=True)
    return removed


def offsite(config: dict, backup_path: Path) -> dict:
    """Copy one backup into the restic repository on the SFTP server, then apply the same retention there."""
    settings = config["offsite"]
    match = re.match(r"^sftp:([^:]+):(/.+)$", settings["repository"])
    if not match:
        raise BackupError(f"offsite repository must read sftp:<user>@<host>:/<path>, got {settings['repository']}")
    environment = dict(
        os.environ, RESTIC_REPOSITORY=settings["repository"], RESTIC_PASSWORD_FILE=settings["password_file"]
    )
    ssh = ["-o", f"sftp.command=ssh -F {settings['ssh_config']} {match.group(1)} -s sftp"]
    started = time.time()

    def restic(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(["restic", *ssh, *args], capture_output=True, text=True, env=environment, check=False)
        if check and result.returncode != 0:
            raise BackupError(f"restic {args[0]} ({settings['repository']}) failed: {result.stderr.strip()[-500:]}")
        return result

    try:
        if restic("cat", "config", check=False).returncode != 0:
            restic("init")
        host = f"pliers-{config['environment']}"
        snapshot = json.loads(
            restic("backup", "--json", "--host", host, "--tag", "pliers", str(backup_path)).stdout.splitlines()[-1]
        )
        retention = config["retention"]
        restic("forget", "--host", host, "--keep-daily", str(retention["daily"]),
               "--keep-weekly", str(retention["weekly"]), "--prune")  # fmt: skip
    except BackupError:
        update_status(config, pliers_backup_offsite_last_attempt_success=0)
        raise
    update_status(config, pliers_backup_offsite_last_success_timestamp_seconds=round(time.time()),
                  pliers_backup_offsite_last_attempt_success=1)  # fmt: skip
    return {"repository": settings["repository"], "snapshot": snapshot.get("snapshot_id", ""),
            "seconds": round(time.time() - started, 2)}  # fmt: skip


def dump_row_counts(pg: str, dump: Path) -> dict[str, int]:
    """Rows per table in the dump itself: the lines of each COPY block of its SQL form."""
    counts: dict[str, int] = {}
    with open(dump, "rb") as source:
        process = subprocess.Popen(["docker", "exec", "-i", pg, "pg_restore", "--data-only", "-f", "-"],
                                   stdin=source, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        table = None
        for raw in process.stdout:
            if table is None:
                if raw.startswith(b"COPY "):
                    table = raw.split()[1].decode()
                    counts[table] = 0
            elif raw == b"\\.\n":
                table = None
            else:
                counts[table] += 1
        error = process.stderr.read().decode().strip()
        process.wait()
    if process.returncode != 0:
        raise BackupError(f"reading the dump failed: {error}")
    return counts


def table_row_counts(config: dict, pg: str, database: str) -> dict[str, int]:
    query = (
        "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables "
        "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1"
    )
    tables = psql(config, pg, query, database)
    counts = {}
    for table in tables.split():
        counts[table] = int(psql(config, pg, f"SELECT count(*) FROM {table}", database))  # noqa: S608 - catalog names
    return counts


def restore_into(config: dict, pg: str, dump: Path, database: str, sha256_expected: str = "") -> None:
    """Restore the dump into a fresh database (dropped first, connections closed).

    With sha256_expected, the dump is hashed while it streams into pg_restore (one read, not two): a dump
    that does not match fails the restore, and the database restored from it must not be used.
    """
    pgc = config["postgres"]
    psql(config, pg, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)', "postgres")
    psql(config, pg, f'CREATE DATABASE "{database}" OWNER "{pgc["user"]}"', "postgres")
    command = pg_command(config, pg, "pg_restore", "--exit-on-error", "--single-transaction", "--no-owner",
                         "--role", pgc["user"], "-d", database, stdin=True)  # fmt: skip
    digest = hashlib.sha256()
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE}
    with open(dump, "rb") as source, subprocess.Popen(command, **pipes) as process:
        try:
            for chunk in iter(lambda: source.read(CHUNK), b""):
                digest.update(chunk)
                process.stdin.write(chunk)
        except BrokenPipeError:
            pass  # pg_restore stopped early: its exit status and message say why
        finally:
            process.stdin.close()
        error = process.stderr.read().decode().strip()
    if process.returncode != 0:
        raise BackupError(f"pg_restore into {database} failed: {error}")
    if sha256_expected and digest.hexdigest() != sha256_expected:
        raise BackupError(f"{dump.parent.name}: {dump.name} does not match its SHA-256 (corrupted)")


def drill(config: dict, name: str | None) -> dict:
    """Restore into a scratch database beside the live one; every table must hold the dump's rows."""
    root = Path(config["backup_dir"])
    started = time.time()
    chosen = None
    try:
        chosen = pick(root, name)
        manifest = verify(chosen)
        pg = container(config, config["postgres"]["service"])
        scratch = f"pliers_drill_{int(started)}"
        with plaintext(config, chosen, manifest, POSTGRES_FILE) as dump:
            try:
                restore_into(config, pg, dump, scratch)
                restored = table_row_counts(config, pg, scratch)
            finally:
                psql(config, pg, f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)', "postgres")
            expected = dump_row_counts(pg, dump)
        different = {t: (expected.get(t), restored.get(t)) for t in sorted(set(expected) | set(restored))
                     if expected.get(t) != restored.get(t)}  # fmt: skip
        if different:
            raise BackupError(f"backup {chosen.name}: restored row counts differ from the dump: {different}")
    except BackupError:
        update_status(config, pliers_restore_drill_last_timestamp_seconds=round(time.time()),
                      pliers_restore_drill_last_success=0)  # fmt: skip
        raise
    update_status(config, pliers_restore_drill_last_timestamp_seconds=round(time.time()),
                  pliers_restore_drill_last_success=1)  # fmt: skip
    return {"changed": False, "name": chosen.name, "tables": restored, "seconds": round(time.time() - started, 2)}


def restore_postgres(config: dict, name: str | None) -> dict:
    """Restore into a new database, then swap it for the live one: a failed restore leaves the live data as it was.

    The dump's checksum is verified as it streams (restore.yml verified the whole backup before it stopped
    anything); the new database is swapped in only when it matched.
    """
    chosen = pick(Path(config["backup_dir"]), name)
    manifest = verify(chosen, hash_files=False)
    encrypted = manifest.get("encryption") == AGE
    if encrypted:
        # The ciphertext is what the manifest hashes: checked whole before it is decrypted (age then authenticates).
        verify(chosen)
        expected = ""
    else:
        expected = next(entry["sha256"] for entry in manifest["files"] if entry["name"] == POSTGRES_FILE)
    started = time.time()
    pg = container(config, config["postgres"]["service"])
    live = config["postgres"]["database"]
    restoring, previous = f"{live}_restoring", f"{live}_before_restore"
    try:
        with plaintext(config, chosen, manifest, POSTGRES_FILE) as dump:
            restore_into(config, pg, dump, restoring, expected)
    except BackupError:
        psql(config, pg, f'DROP DATABASE IF EXISTS "{restoring}" WITH (FORCE)', "postgres")
        raise
    psql(config, pg, f'DROP DATABASE IF EXISTS "{previous}" WITH (FORCE)', "postgres")
    # The writers are stopped; whatever is still connected (an exporter) is disconnected for the rename. The live
    # database refuses new connections first: the exporter reconnected between the two and failed the rename.
    disconnect = f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{live}'"  # noqa: S608
    psql(config, pg, f'ALTER DATABASE "{live}" WITH ALLOW_CONNECTIONS false', "postgres")
    try:
        psql(config, pg, disconnect, "postgres")
        psql(config, pg, f'ALTER DATABASE "{live}" RENAME TO "{previous}"', "postgres")
    except BackupError:
        psql(config, pg, f'ALTER DATABASE "{live}" WITH ALLOW_CONNECTIONS true', "postgres")
        psql(config, pg, f'DROP DATABASE IF EXISTS "{restoring}" WITH (FORCE)', "postgres")
        raise
    psql(config, pg, f'ALTER DATABASE "{restoring}" RENAME TO "{live}"', "postgres")
    psql(config, pg, f'DROP DATABASE "{previous}" WITH (FORCE)', "postgres")
    return {"changed": True, "name": chosen.name, "seconds": round(time.time() - started, 2)}


def restore_redis(config: dict, name: str | None) -> dict:
    """Replace Redis's data (its volume) with the backup's RDB; Redis must be stopped.

    With the append-only file on, Redis 7 loads the AOF, not dump.rdb: the RDB becomes the base of a new
    multi-part AOF (its manifest naming the base and an empty increment), as Redis itself writes one.
    """
    chosen = pick(Path(config["backup_dir"]), name)
    manifest = verify(chosen)
    try:
        running = container(config, config["redis"]["service"])
    except BackupError:
        running = None  # stopped, as it must be
    if running:
        raise BackupError("Redis is running: stop it before its data is replaced")
    persistence = manifest.get("redis") or {}
    aof = persistence.get("appendonly") == "yes"
    aof_dir = base = ""
    if aof:
        # Names Redis reported at backup time: a plain name each, never a path out of the volume.
        aof_dir = plain_name(persistence.get("appenddirname"), "appenddirname")
        base = plain_name(persistence.get("appendfilename"), "appendfilename")
    # The volume, not a container: in swarm mode a service scaled to zero leaves no container behind.
    volume = json.loads(run("docker", "volume", "inspect", config["redis"]["volume"]).stdout)[0]
    data = Path(volume["Mountpoint"])
    # Everything below is done relative to the volume's directory, whose content Redis's user controls: a link it
    # left there is replaced or removed, never followed, and what is written is owned like the directory.
    data_fd = os.open(data, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        with plaintext(config, chosen, manifest, REDIS_FILE) as rdb:
            written = restore_redis_files(rdb, data, data_fd, aof, aof_dir, base)
    finally:
        os.close(data_fd)
    return {"changed": True, "name": chosen.name, "written": [str(path) for path in written]}


def restore_redis_files(rdb: Path, data: Path, data_fd: int, aof: bool, aof_dir: str, base: str) -> list[Path]:
    """Install the RDB into Redis's volume (data, open as data_fd) and, with the append-only file on, a new AOF whose
    base it is; the paths written."""
    owner = os.fstat(data_fd)
    written = [data / "dump.rdb"]
    install(rdb, "dump.rdb", data_fd, owner)
    if aof:
        staging = f".{aof_dir}.restoring"
        remove(staging, data_fd)
        os.mkdir(staging, 0o700, dir_fd=data_fd)
        staging_fd = os.open(staging, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=data_fd)
        try:
            os.fchown(staging_fd, owner.st_uid, owner.st_gid)
            install(rdb, f"{base}.1.base.rdb", staging_fd, owner)
            install_text("", f"{base}.1.incr.aof", staging_fd, owner)
            manifest_text = f"file {base}.1.base.rdb seq 1 type b\nfile {base}.1.incr.aof seq 1 type i\n"
            install_text(manifest_text, f"{base}.manifest", staging_fd, owner)
        finally:
            os.close(staging_fd)
        remove(aof_dir, data_fd)
        os.rename(staging, aof_dir, src_dir_fd=data_fd, dst_dir_fd=data_fd)
        written.append(data / aof_dir)
    return written


PLAIN_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}$")


def plain_name(value, what: str) -> str:
    if not isinstance(value, str) or not PLAIN_NAME.match(value) or ".." in value:
        raise BackupError(f"the backup's manifest gives Redis's {what} as {value!r}: not a plain file name")
    return value


def remove(name: str, dir_fd: int) -> None:
    """Remove name in the directory dir_fd, whatever it is: a link is removed, never followed."""
    try:
        found = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(found.st_mode):
        os.unlink(name, dir_fd=dir_fd)
        return
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
    try:
        for entry in os.listdir(fd):
            remove(entry, fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=dir_fd)


def install(source: Path, name: str, dir_fd: int, owner: os.stat_result) -> None:
    """Copy source (a file of the backup) to name in the directory dir_fd atomically, owned like the directory."""
    with open(source, "rb") as handle:
        _install(name, dir_fd, owner, lambda target: shutil.copyfileobj(handle, target))


def install_text(text: str, name: str, dir_fd: int, owner: os.stat_result) -> None:
    _install(name, dir_fd, owner, lambda target: target.write(text.encode()))


def _install(name: str, dir_fd: int, owner: os.stat_result, fill) -> None:
    tmp = f".{name}.restoring"
    remove(tmp, dir_fd)
    # O_EXCL and O_NOFOLLOW: a file of our own, created here, whatever was planted under its name.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dir_fd)
    with open(fd, "wb") as target:
        fill(target)
        target.flush()
        os.fsync(target.fileno())
        os.fchown(target.fileno(), owner.st_uid, owner.st_gid)
    os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


def exit_on_termination() -> None:
    """SIGTERM (systemd stopping the unit, its timeout) and SIGHUP end the run as a failure would: the way out removes
    a decrypted file's scratch directory and a partial backup, which a bare signal would leave behind."""

    def leave(signum, _frame):
        raise SystemExit(128 + signum)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, leave)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pliers-backup", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="the JSON configuration the backup role wrote")
    parser.add_argument("command", choices=["backup", "verify", "drill", "restore-postgres", "restore-redis", "list"])
    parser.add_argument("name", nargs="?", help="a backup's name (default: the newest)")
    parser.add_argument("--drill", action="store_true", help="backup: then run a restore drill on it")
    args = parser.parse_args(argv)
    # Dumps hold every row and every Redis key: whatever this run creates is root's alone (0600, directories 0700);
    # the status node exporter reads is made readable explicitly.
    os.umask(0o077)
    exit_on_termination()
    try:
        config = json.loads(Path(args.config).read_text())
        root = Path(config["backup_dir"])
        if args.command == "backup":
            result = backup(config)
            if args.drill:
                result["drill"] = drill(config, result["name"])
            if config.get("offsite"):
                result["offsite"] = offsite(config, Path(result["path"]))
        elif args.command == "verify":
            chosen = pick(root, args.name)
            manifest = verify(chosen)
            check_decrypts(config, chosen, manifest)
            result = {"changed": False, "name": chosen.name, "manifest": manifest}
        elif args.command == "drill":
            result = drill(config, args.name)
        elif args.command == "restore-postgres":
            result = restore_postgres(config, args.name)
        elif args.command == "restore-redis":
            result = restore_redis(config, args.name)
        else:
            result = {"changed": False, "backups": [p.name for p in backups(root)]}
    except (BackupError, OSError, KeyError, ValueError) as exc:
        print(json.dumps({"failed": True, "msg": str(exc)}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
