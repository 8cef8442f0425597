"""pliers-backup's decisions on disk, without an engine: what retention keeps, what verification refuses,
what the status file says. (Backups, drills and restores of real data run on the lab: tests/lab/test_backups.py.)"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import signal
import subprocess

import pytest

from ..paths import ROOT

SPEC = importlib.util.spec_from_file_location("pliers_backup", ROOT / "roles/backup/files/pliers_backup.py")
pliers_backup = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(pliers_backup)


def make_backup(root, name, files=None, manifest=True):
    backup = root / name
    backup.mkdir(parents=True)
    entries = []
    for file_name, content in (files or {"postgres.dump": b"PGDMP-data", "redis.rdb": b"REDIS0011"}).items():
        (backup / file_name).write_bytes(content)
        entries.append({"name": file_name, "size": len(content), "sha256": hashlib.sha256(content).hexdigest()})
    if manifest:
        (backup / "manifest.json").write_text(json.dumps({"name": name, "files": entries}))
    return backup


def test_retention_keeps_the_newest_per_day_and_per_week():
    names = [f"202611{day:02d}T{hour:02d}0000Z" for day in range(1, 27) for hour in (3, 15)]
    keep = pliers_backup.retained(names, daily=3, weekly=2)
    # The last three days, each day's newest; the last two ISO weeks' newest (26 Nov is in the week of the 23rd).
    assert {"20261126T150000Z", "20261125T150000Z", "20261124T150000Z"} <= keep
    assert "20261122T150000Z" in keep  # the newest of the previous week (Sunday the 22nd)
    assert len(keep) == 4
    assert "20261126T030000Z" not in keep


def test_only_complete_backups_count_and_latest_is_the_newest(tmp_path):
    make_backup(tmp_path, "20261126T031500Z")
    make_backup(tmp_path, "20261127T031500Z")
    make_backup(tmp_path, "20261128T031500Z", manifest=False)  # interrupted before its manifest
    (tmp_path / ".partial-20261129T031500Z").mkdir()
    assert [p.name for p in pliers_backup.backups(tmp_path)] == ["20261126T031500Z", "20261127T031500Z"]
    assert pliers_backup.pick(tmp_path, "latest").name == "20261127T031500Z"
    with pytest.raises(pliers_backup.BackupError, match="no backup named '2025' .*newest: 20261126T031500Z"):
        pliers_backup.pick(tmp_path, "2025")


def test_a_good_backup_verifies(tmp_path):
    manifest = pliers_backup.verify(make_backup(tmp_path, "20261127T031500Z"))
    assert [entry["name"] for entry in manifest["files"]] == ["postgres.dump", "redis.rdb"]


def test_one_flipped_byte_is_refused_naming_the_file(tmp_path):
    backup = make_backup(tmp_path, "20261127T031500Z")
    data = bytearray((backup / "postgres.dump").read_bytes())
    data[3] ^= 0x01
    (backup / "postgres.dump").write_bytes(bytes(data))
    with pytest.raises(pliers_backup.BackupError, match=r"postgres.dump does not match its SHA-256 \(corrupted\)"):
        pliers_backup.verify(backup)


def test_a_truncated_or_missing_file_is_refused_naming_it(tmp_path):
    backup = make_backup(tmp_path, "20261127T031500Z")
    (backup / "redis.rdb").write_bytes(b"REDIS")
    with pytest.raises(pliers_backup.BackupError, match="redis.rdb is 5 bytes, the manifest says 9"):
        pliers_backup.verify(backup)
    (backup / "redis.rdb").unlink()
    with pytest.raises(pliers_backup.BackupError, match="incomplete: redis.rdb is missing"):
        pliers_backup.verify(backup)


def test_a_backup_without_its_manifest_is_incomplete(tmp_path):
    with pytest.raises(pliers_backup.BackupError, match="incomplete: it has no manifest.json"):
        pliers_backup.verify(make_backup(tmp_path, "20261127T031500Z", manifest=False))


def test_the_status_file_is_prometheus_text_with_the_environment(tmp_path):
    config = {
        "backup_dir": str(tmp_path / "backups"),
        "environment": "staging",
        "status_file": str(tmp_path / "s.prom"),
    }
    make_backup(tmp_path / "backups", "20261127T031500Z")
    pliers_backup.update_status(config, pliers_backup_last_success_timestamp_seconds=1795000000,
                                pliers_backup_last_attempt_success=1)  # fmt: skip
    pliers_backup.update_status(config, pliers_restore_drill_last_success=0)
    text = (tmp_path / "s.prom").read_text()
    assert 'pliers_backup_last_success_timestamp_seconds{environment="staging"} 1795000000' in text
    assert 'pliers_restore_drill_last_success{environment="staging"} 0' in text, "a drill keeps the backup's metrics"
    assert 'pliers_backup_count{environment="staging"} 1' in text
    assert "# TYPE pliers_backup_last_attempt_success gauge" in text


def test_a_command_that_fails_says_why_in_json(tmp_path, capsys):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"backup_dir": str(tmp_path / "none"), "environment": "x"}))
    assert pliers_backup.main(["--config", str(config), "verify"]) == 1
    assert json.loads(capsys.readouterr().out) == {"failed": True, "msg": f"no complete backup in {tmp_path / 'none'}"}


def test_a_full_backup_disk_fails_clearly_keeps_earlier_backups_and_records_the_failure(tmp_path, monkeypatch, capsys):
    root = tmp_path / "backups"
    earlier = make_backup(root, "20261127T031500Z")
    config = tmp_path / "config.json"
    status = tmp_path / "s.prom"
    config.write_text(json.dumps({"backup_dir": str(root), "environment": "x", "status_file": str(status),
                                  "postgres": {"service": "postgres", "user": "u", "database": "d"}}))  # fmt: skip
    monkeypatch.setattr(pliers_backup, "container", lambda config, service: "c")

    def disk_full(command, destination, recipients=()):
        raise OSError(28, "No space left on device")

    real_write = pliers_backup.write_atomically

    def state_not_writable(path, content, *args):
        if path.name == pliers_backup.STATUS_STATE:
            raise OSError(28, "No space left on device")
        real_write(path, content, *args)

    monkeypatch.setattr(pliers_backup, "stream", disk_full)
    monkeypatch.setattr(pliers_backup, "write_atomically", state_not_writable)
    assert pliers_backup.main(["--config", str(config), "backup"]) == 1
    message = json.loads(capsys.readouterr().out)["msg"]
    assert message.startswith(f"the backup disk is full: no space left on the file system of {root}")
    assert "the earlier backups are untouched" in message
    assert [p.name for p in root.iterdir()] == [earlier.name], "the partial backup is removed"
    assert 'pliers_backup_last_attempt_success{environment="x"} 0' in status.read_text()


@pytest.mark.parametrize("rename_fails", [False, True])
def test_the_live_database_refuses_connections_from_before_its_sessions_end_until_it_is_swapped(
    tmp_path, monkeypatch, rename_fails
):
    """An exporter reconnected between the sessions' end and the rename, and failed the restore (seen on the lab):
    the live database stops accepting connections first; when the swap fails, it accepts them again."""
    root = tmp_path / "backups"
    make_backup(root, "20261127T031500Z")
    config = {"backup_dir": str(root), "postgres": {"service": "postgres", "user": "u", "database": "pliers"}}
    statements = []

    def psql(config, pg, query, database=None):
        statements.append(query)
        if rename_fails and query == 'ALTER DATABASE "pliers" RENAME TO "pliers_before_restore"':
            raise pliers_backup.BackupError('database "pliers" is being accessed by other users')
        return ""

    monkeypatch.setattr(pliers_backup, "container", lambda config, service: "c")
    monkeypatch.setattr(pliers_backup, "restore_into", lambda *args: None)
    monkeypatch.setattr(pliers_backup, "psql", psql)
    if rename_fails:
        with pytest.raises(pliers_backup.BackupError, match="being accessed"):
            pliers_backup.restore_postgres(config, None)
    else:
        pliers_backup.restore_postgres(config, None)
    refuse = statements.index('ALTER DATABASE "pliers" WITH ALLOW_CONNECTIONS false')
    terminate = next(i for i, query in enumerate(statements) if "pg_terminate_backend" in query)
    assert refuse < terminate < statements.index('ALTER DATABASE "pliers" RENAME TO "pliers_before_restore"')
    if rename_fails:
        assert statements[-2:] == ['ALTER DATABASE "pliers" WITH ALLOW_CONNECTIONS true',
                                   'DROP DATABASE IF EXISTS "pliers_restoring" WITH (FORCE)']  # fmt: skip
    else:
        assert statements[-2:] == ['ALTER DATABASE "pliers_restoring" RENAME TO "pliers"',
                                   'DROP DATABASE "pliers_before_restore" WITH (FORCE)']  # fmt: skip


def redis_restore_setup(tmp_path, monkeypatch, appenddirname="appendonlydir"):
    """A backup whose manifest says Redis keeps an append-only file, and a Redis volume (stopped) at tmp/volume."""
    root = tmp_path / "backups"
    backup = make_backup(root, "20261201T000000Z")
    manifest = json.loads((backup / "manifest.json").read_text())
    manifest["redis"] = {"appendonly": "yes", "appenddirname": appenddirname, "appendfilename": "appendonly.aof"}
    (backup / "manifest.json").write_text(json.dumps(manifest))
    volume = tmp_path / "volume"
    volume.mkdir()
    inspected = json.dumps([{"Mountpoint": str(volume)}]).encode()
    monkeypatch.setattr(pliers_backup, "run", lambda *command, **_: subprocess.CompletedProcess(command, 0, inspected))

    def stopped(config, service):
        raise pliers_backup.BackupError(f"{service} is not running")

    monkeypatch.setattr(pliers_backup, "container", stopped)
    config = {"backup_dir": str(root), "mode": "compose", "project": "p", "redis": {"service": "redis", "volume": "v"}}
    return config, volume


def test_the_redis_restore_replaces_links_planted_in_the_volume_and_never_follows_them(tmp_path, monkeypatch):
    config, volume = redis_restore_setup(tmp_path, monkeypatch)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "kept").write_text("not Redis's")
    # What a compromised Redis could leave in its own volume: links where the restore writes and removes.
    for name in ("dump.rdb", ".dump.rdb.restoring", ".appendonlydir.restoring"):
        (volume / name).symlink_to(outside / "kept" if "rdb" in name else outside)
    (volume / "appendonlydir").symlink_to(outside)

    result = pliers_backup.restore_redis(config, None)

    assert (outside / "kept").read_text() == "not Redis's" and sorted(p.name for p in outside.iterdir()) == ["kept"]
    assert not (volume / "dump.rdb").is_symlink() and (volume / "dump.rdb").read_bytes() == b"REDIS0011"
    aof = volume / "appendonlydir"
    assert aof.is_dir() and not aof.is_symlink()
    assert sorted(p.name for p in aof.iterdir()) == ["appendonly.aof.1.base.rdb", "appendonly.aof.1.incr.aof",
                                                     "appendonly.aof.manifest"]  # fmt: skip
    assert (aof / "appendonly.aof.1.base.rdb").read_bytes() == b"REDIS0011"
    assert sorted(p.name for p in volume.iterdir()) == ["appendonlydir", "dump.rdb"]
    assert result["name"] == "20261201T000000Z"


# Every path resolves inside the test's own directory: a restore that wrongly followed one must not harm the machine
# running the tests (an absolute /etc once did, as root).
@pytest.mark.parametrize("appenddirname", ["../victim", "<absolute>", "..", "a/b", ""])
def test_the_redis_restore_refuses_a_manifest_naming_a_path_out_of_the_volume(tmp_path, monkeypatch, appenddirname):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "kept").write_text("kept")
    appenddirname = appenddirname.replace("<absolute>", str(victim))
    config, volume = redis_restore_setup(tmp_path, monkeypatch, appenddirname)
    with pytest.raises(pliers_backup.BackupError, match="appenddirname .* not a plain file name"):
        pliers_backup.restore_redis(config, None)
    assert list(volume.iterdir()) == [] and (victim / "kept").read_text() == "kept"


@pytest.fixture
def fake_age(tmp_path, monkeypatch):
    """An `age` on the PATH that "encrypts" by upper-casing and "decrypts" by lower-casing (or fails, with
    FAKE_AGE_FAILS), to follow the pipes."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "age").write_text('#!/bin/sh\n[ -z "$FAKE_AGE_FAILS" ] || { echo "no such recipient" >&2; exit 1; }\n'
                                 '[ "$1" != -d ] || exec tr A-Z a-z < "$6" > "$5"  # age -d -i IDENTITY -o OUT IN\n'
                                 "exec tr a-z A-Z\n")  # fmt: skip
    (bin_dir / "age").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")


def test_with_recipients_only_the_ciphertext_is_written_sized_and_hashed(tmp_path, fake_age):
    destination = tmp_path / "postgres.dump.age"
    size, digest = pliers_backup.stream(["printf", "rows of data"], destination, ["age1recipient"])
    assert destination.read_bytes() == b"ROWS OF DATA"
    assert (size, digest) == (12, hashlib.sha256(b"ROWS OF DATA").hexdigest())


def test_a_failing_encryption_fails_the_backup_naming_the_file(tmp_path, fake_age, monkeypatch):
    monkeypatch.setenv("FAKE_AGE_FAILS", "1")
    with pytest.raises(pliers_backup.BackupError, match="encrypting redis.rdb.age with age failed .*no such recipient"):
        pliers_backup.stream(["printf", "keys"], tmp_path / "redis.rdb.age", ["age1recipient"])


def test_age_stopping_is_reported_as_ages_failure_not_as_the_dumps_broken_pipe(tmp_path, fake_age, monkeypatch):
    monkeypatch.setenv("FAKE_AGE_FAILS", "1")
    # More than a pipe holds: the dump is killed by the closed pipe once age is gone.
    with pytest.raises(pliers_backup.BackupError, match="encrypting postgres.dump.age with age failed .*no such recip"):
        pliers_backup.stream(["head", "-c", "5000000", "/dev/zero"], tmp_path / "postgres.dump.age", ["age1recipient"])


def test_an_identity_that_is_no_recipients_fails_the_backup_as_an_attempt_prometheus_sees(tmp_path, monkeypatch,
                                                                                         capsys):  # fmt: skip
    root, status = tmp_path / "backups", tmp_path / "s.prom"
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"backup_dir": str(root), "environment": "x", "status_file": str(status),
                                  "encryption": {"recipients": ["age1recipient"], "identity_file": "/k"}}))  # fmt: skip
    public = subprocess.CompletedProcess([], 0, b"age1someoneelse\n")
    monkeypatch.setattr(pliers_backup, "run", lambda *command, **_: public)
    assert pliers_backup.main(["--config", str(config), "backup"]) == 1
    assert "is none of backup_encryption_recipients" in json.loads(capsys.readouterr().out)["msg"]
    assert 'pliers_backup_last_attempt_success{environment="x"} 0' in status.read_text()
    assert not [p for p in root.iterdir() if p.name != pliers_backup.STATUS_STATE], "no backup, partial or not"


def test_a_terminated_run_leaves_no_decrypted_file_behind(tmp_path, fake_age):
    """systemd stops a drill or a restore with SIGTERM: the decrypted copy is removed on the way out."""
    backup = make_backup(tmp_path, "20261127T031500Z", {"postgres.dump.age": b"ciphertext"})
    identity = tmp_path / "identity"
    identity.write_text("AGE-SECRET-KEY-1TEST\n")
    config = {"encryption": {"recipients": ["age1r"], "identity_file": str(identity)}}
    # The signal is sent to this process and handled here, where Python runs handlers (the main thread): no child
    # process to wait for, so nothing depends on how loaded the machine is.
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        signal.signal(signal.SIGTERM, lambda *_: pytest.fail("exit_on_termination left SIGTERM unhandled"))
        pliers_backup.exit_on_termination()
        with pytest.raises(SystemExit) as stopped, pliers_backup.plaintext(config, backup, {"encryption": "age"},
                                                                           "postgres.dump") as decrypted:  # fmt: skip
            assert decrypted.is_file() and decrypted.parent.name == f".decrypted-{backup.name}"
            os.kill(os.getpid(), signal.SIGTERM)  # the handler runs as os.kill returns
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    assert stopped.value.code == 128 + signal.SIGTERM
    assert not decrypted.parent.exists()


def test_an_encrypted_backup_cannot_be_read_without_the_identity_and_says_which_setting(tmp_path):
    backup = make_backup(tmp_path, "20261127T031500Z", {"postgres.dump.age": b"ciphertext"})
    manifest = {"encryption": "age"}
    config = {"encryption": {"recipients": ["age1recipient"], "identity_file": ""}}
    refused = pytest.raises(pliers_backup.BackupError, match="encrypted with age .* backup_encryption_identity")
    with refused, pliers_backup.plaintext(config, backup, manifest, "postgres.dump"):
        pass
    # A backup written before the encryption was turned on is read as it is.
    plain = make_backup(tmp_path, "20261126T031500Z")
    with pliers_backup.plaintext(config, plain, {}, "postgres.dump") as path:
        assert path == plain / "postgres.dump"


PROXY = {"host": "postgres", "port": 5432, "replica_host": "postgres-replicas", "replica_port": 5433,
         "password_file": "/run/secrets/postgres_password"}  # fmt: skip


def test_one_postgresql_is_reached_on_its_socket_and_the_ha_database_through_its_proxy():
    single = {"postgres": {"service": "postgres", "user": "u", "database": "d"}}
    assert pliers_backup.pg_command(single, "c", "pg_dump", "-Fc") == [
        "docker",
        "exec",
        "c",
        "pg_dump",
        "-U",
        "u",
        "-Fc",
    ]
    ha = {"postgres": {**single["postgres"], "service": "postgres-member", "proxy": PROXY}}
    login = ["sh", "-c", 'PGPASSWORD="$(cat "$0")" exec "$@"', "/run/secrets/postgres_password"]
    # Writes (a restore) go to the primary; a backup reads a replica; the password never is an argument.
    to_primary = ["pg_restore", "-h", "postgres", "-p", "5432", "-U", "u", "-d", "x"]
    assert pliers_backup.pg_command(ha, "c", "pg_restore", "-d", "x", stdin=True) == [
        "docker", "exec", "-i", "c", *login, *to_primary]  # fmt: skip
    to_replica = ["pg_dump", "-h", "postgres-replicas", "-p", "5433", "-U", "u", "-Fc"]
    assert pliers_backup.pg_command(ha, "c", "pg_dump", "-Fc", replica=True) == [
        "docker",
        "exec",
        "c",
        *login,
        *to_replica,
    ]


@pytest.mark.parametrize(("replica_answers", "source"), [(True, "replica"), (False, "primary")])
def test_the_ha_databases_backup_reads_a_replica_when_one_answers_and_the_primary_otherwise(
    tmp_path, monkeypatch, replica_answers, source
):
    root = tmp_path / "backups"
    config = tmp_path / "config.json"
    config.write_text(json.dumps({
        "backup_dir": str(root), "environment": "x", "status_file": "", "mode": "swarm", "project": "p",
        "postgres": {"service": "postgres-member", "user": "u", "database": "d", "proxy": PROXY},
        "redis": {"service": "redis", "volume": "v", "user": "b", "password": "pw"},
        "retention": {"daily": 7, "weekly": 4}, "offsite": None, "encryption": {"recipients": [], "identity_file": ""},
    }))  # fmt: skip
    dumped = []

    def run(*command, **_):
        if "SELECT 1" in command and "5433" in command and not replica_answers:
            raise pliers_backup.BackupError("no server on 5433")
        return subprocess.CompletedProcess(command, 0, b"17.2" if "SHOW server_version" in command else b"")

    def stream(command, destination, recipients=()):
        dumped.append(command)
        destination.write_bytes(b"data")
        return 4, hashlib.sha256(b"data").hexdigest()

    monkeypatch.setattr(pliers_backup, "run", run)
    monkeypatch.setattr(pliers_backup, "stream", stream)
    monkeypatch.setattr(pliers_backup, "container", lambda config, service: f"{service}-c")
    monkeypatch.setattr(pliers_backup, "redis_snapshot", lambda config, redis: "/data/dump.rdb")
    monkeypatch.setattr(
        pliers_backup,
        "redis_cli",
        lambda config, redis, *args: "redis_version:7.0.15\n" if args[0] == "INFO" else "x\nno",
    )
    result = pliers_backup.backup(json.loads(config.read_text()))
    assert result["postgres_from"] == source
    assert dumped[0][:3] == ["docker", "exec", "postgres-member-c"]
    assert dumped[0][dumped[0].index("-p") + 1] == ("5433" if replica_answers else "5432")
    manifest = json.loads((root / result["name"] / "manifest.json").read_text())
    assert manifest["postgres_from"] == source
