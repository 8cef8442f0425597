"""Backups and restores on the real lab (the `deployed` stacks the release tests use too): in both modes,
items written through the api survive a backup, their deletion and a restore byte for byte, and so does
Redis's data. On the Compose stack only (the backup script and its checks are the same in both modes): a
backup with one flipped byte is refused by restore (naming the file) and live data is not touched; the restore
drill passes on a good backup and fails on a corrupted one; the timer runs both; with an offsite repository,
each backup also lands in restic on another lab host over SFTP; with age recipients, a backup holds no readable
byte, drills and restores with the identity on the host, and without it is refused before anything stops."""

from __future__ import annotations

import json
import subprocess

import pytest

from lab import hosts as lab_hosts

from .support import BACKUPS, MODES, http, items, newest_backup, output

STATUS = "/var/lib/prometheus/node-exporter/pliers_backup_local.prom"
DRILL_PASSED = 'pliers_restore_drill_last_success{environment="local"} 1'
DRILL_FAILED = 'pliers_restore_drill_last_success{environment="local"} 0'
# A key pair made for the lab's tests only (age-keygen).
AGE_RECIPIENT = "age1qyt97qsa7dcpfq4cdk658tg8kk0dlwlycxj44upgwwrxh2h404cs7hxnsy"
AGE_IDENTITY = "AGE-SECRET-KEY-1QDX7X57DYYP6ZX6DRMCM944259QR83RHW0S8EXR34FKTSPN85ACQCV3SE8"
FIND_POSTGRES = (
    "docker ps -q --filter label=com.docker.compose.service=postgres; "
    "docker ps -q --filter label=com.docker.swarm.service.name=pliers-local_postgres"
)


def flip_a_byte(target, backup: str, file: str = "postgres.dump") -> None:
    path = f"{BACKUPS}/{backup}/{file}"
    flip = f"python3 -c \"f=open('{path}','r+b'); f.seek(100); b=f.read(1); f.seek(100); f.write(bytes([b[0]^1]))\""
    lab_hosts.ssh(target.db, flip)


def test_a_restore_brings_back_the_items_and_redis_data_byte_for_byte(deployed):
    for name in ("first", "second, with a comma", "third: ünïcode"):
        status, body = http(f"{deployed.edge}/api/items", method="POST", body={"name": name})
        assert status == 201, body
    deployed.redis("SET", "pliers:test:restore", "kept")
    before = items(deployed)
    assert len(json.loads(before)) >= 3

    backup = deployed.play("backup.yml")
    assert backup.returncode == 0, output(backup)
    assert f"{BACKUPS}/" in lab_hosts.ssh(deployed.db, f"ls -d {BACKUPS}/*/ | tail -1").stdout
    assert lab_hosts.ssh(deployed.db, f"stat -c %a {BACKUPS}").stdout.strip() == "700"
    # Every dump, manifest and directory of the backup is root's alone.
    modes = lab_hosts.ssh(deployed.db, f"find {BACKUPS}/{newest_backup(deployed)} -printf '%m %y %p\\n'").stdout
    assert all(line.split()[0] == ("700" if line.split()[1] == "d" else "600") for line in modes.splitlines()), modes

    status, _ = http(f"{deployed.edge}/api/items", method="DELETE")
    assert status == 200 and json.loads(items(deployed)) == []
    deployed.redis("DEL", "pliers:test:restore")

    restore = deployed.play("restore.yml")
    assert restore.returncode == 0, output(restore)
    assert items(deployed) == before
    assert deployed.redis("GET", "pliers:test:restore") == "kept"
    # The restore is in the release history, beside the releases.
    last = json.loads(lab_hosts.ssh(deployed.deployer, "tail -1 /var/lib/pliers/local/releases.log").stdout)
    assert (last["playbook"], last["result"], last["release"]) == ("restore", "ok", f"backup {newest_backup(deployed)}")


@pytest.mark.parametrize("deployed", ["compose"], indirect=True)  # the same script in both modes
def test_a_corrupted_backup_is_refused_naming_the_file_and_live_data_is_untouched(deployed):
    backup = deployed.play("backup.yml")
    assert backup.returncode == 0, output(backup)
    name = newest_backup(deployed)
    flip_a_byte(deployed, name)
    status, _ = http(f"{deployed.edge}/api/items", method="POST", body={"name": "written after the backup"})
    assert status == 201
    before = items(deployed)

    refused = deployed.play("restore.yml", "-e", f"backup={name}")
    assert refused.returncode != 0, output(refused)
    assert f"backup {name}: postgres.dump does not match its SHA-256 (corrupted)" in refused.stdout, output(refused)
    assert items(deployed) == before, "a refused restore must not touch live data"
    assert deployed.version()  # the api kept serving


@pytest.mark.parametrize("deployed", ["compose"], indirect=True)  # the same script in both modes
def test_the_drill_passes_on_a_good_backup_and_fails_on_a_corrupted_one(deployed):
    good = deployed.play("backup.yml", "-e", "drill=true")
    assert good.returncode == 0, output(good)
    assert DRILL_PASSED in lab_hosts.ssh(deployed.db, f"cat {STATUS}").stdout
    before = items(deployed)

    name = newest_backup(deployed)
    flip_a_byte(deployed, name)
    drill = deployed.play("restore.yml", "-e", "drill=true", "-e", f"backup={name}")
    assert drill.returncode != 0, output(drill)
    assert "postgres.dump does not match its SHA-256" in drill.stdout, output(drill)
    assert DRILL_FAILED in lab_hosts.ssh(deployed.db, f"cat {STATUS}").stdout
    assert items(deployed) == before, "a drill never touches live data"
    postgres = lab_hosts.ssh(deployed.db, FIND_POSTGRES).stdout.split()[0]
    list_databases = f"docker exec {postgres} psql -U pliers -d postgres -Atc 'SELECT datname FROM pg_database'"  # noqa: S608
    databases = lab_hosts.ssh(deployed.db, list_databases).stdout
    assert "pliers_drill" not in databases, "the scratch database must be dropped"


@pytest.mark.parametrize("deployed", ["compose"], indirect=True)  # the same script in both modes
def test_an_encrypted_backup_holds_no_readable_byte_and_restores_only_with_its_identity(deployed, tmp_path):
    def settings(**values) -> str:
        path = tmp_path / "encryption.json"
        path.write_text(json.dumps({"backup_encryption_recipients": [AGE_RECIPIENT], **values}))
        return f"@{path}"

    with_identity = settings(backup_encryption_identity=AGE_IDENTITY)
    configured = deployed.play("deploy.yml", "-e", "pliers_release=1.0.0", "-e", with_identity)
    assert configured.returncode == 0, output(configured)
    status, body = http(f"{deployed.edge}/api/items", method="POST", body={"name": "sealed in the backup"})
    assert status == 201, body
    before = items(deployed)
    backup = deployed.play("backup.yml", "-e", with_identity, "-e", "drill=true")
    assert backup.returncode == 0, output(backup)
    name = newest_backup(deployed)
    # Only ciphertext: each file is age's format from its first byte (a dump would start PGDMP, a snapshot REDIS).
    assert lab_hosts.ssh(deployed.db, f"ls {BACKUPS}/{name}").stdout.split() == [
        "manifest.json", "postgres.dump.age", "redis.rdb.age"]  # fmt: skip
    for file in ("postgres.dump.age", "redis.rdb.age"):
        header = lab_hosts.ssh(deployed.db, f"head -c 21 {BACKUPS}/{name}/{file}").stdout
        assert header == "age-encryption.org/v1", (file, header)
    assert DRILL_PASSED in lab_hosts.ssh(deployed.db, f"cat {STATUS}").stdout

    status, _ = http(f"{deployed.edge}/api/items", method="DELETE")
    assert status == 200
    restored = deployed.play("restore.yml", "-e", with_identity)
    assert restored.returncode == 0, output(restored)
    assert items(deployed) == before

    # The identity kept off the host (no drill then): the backups are written, and a restore is refused naming what
    # is missing, before the writers stop.
    without_identity = settings(backup_drill_after_backup=False)
    configured = deployed.play("deploy.yml", "-e", "pliers_release=1.0.0", "-e", without_identity)
    assert configured.returncode == 0, output(configured)
    assert lab_hosts.ssh(deployed.db, "ls /etc/pliers").stdout.count("age-identity") == 0
    refused = deployed.play("restore.yml", "-e", without_identity)
    assert refused.returncode != 0, output(refused)
    assert "no identity to decrypt it (set backup_encryption_identity" in refused.stdout, output(refused)
    assert deployed.version()  # the api kept serving
    plain = deployed.play("deploy.yml", "-e", "pliers_release=1.0.0")
    assert plain.returncode == 0, output(plain)


def status_values(target) -> dict[str, float]:
    """The backup status file's metrics (all of environment "local"), by name."""
    lines = lab_hosts.ssh(target.db, f"cat {STATUS}").stdout.splitlines()
    return {line.split("{")[0]: float(line.split()[-1]) for line in lines if line and not line.startswith("#")}


@pytest.mark.parametrize("deployed", ["compose"], indirect=True)  # the same script in both modes
def test_the_timer_schedules_the_backup_and_its_drill(deployed):
    assert lab_hosts.ssh(deployed.db, "systemctl is-active pliers-backup-local.timer").stdout.strip() == "active"
    # The host's clock: the scheduled run's backup and drill must both be stamped from now on, and both pass,
    # whatever an earlier backup or drill left in the status.
    started = int(lab_hosts.ssh(deployed.db, "date +%s").stdout.strip())
    run = lab_hosts.ssh(deployed.db, "systemctl start pliers-backup-local.service", check=False)
    journal = lab_hosts.ssh(deployed.db, "journalctl -u pliers-backup-local.service --no-pager | tail -5").stdout
    assert run.returncode == 0, run.stderr + journal
    status = lab_hosts.ssh(deployed.db, f"cat {STATUS}").stdout
    assert DRILL_PASSED in status and 'pliers_backup_last_attempt_success{environment="local"} 1' in status, status
    values = status_values(deployed)
    assert values["pliers_backup_last_attempt_timestamp_seconds"] >= started, status
    assert values["pliers_restore_drill_last_timestamp_seconds"] >= started, status


@pytest.mark.parametrize("deployed", ["compose"], indirect=True)  # the same script in both modes
def test_an_offsite_copy_lands_in_restic_on_another_host_over_sftp(deployed, tmp_path):
    server = lab_hosts.lab_host(deployed.lab, MODES[deployed.mode]["offsite"])
    key = tmp_path / "offsite_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "pliers-offsite", "-f", str(key)], check=True)
    # The SFTP server, as an operator would prepare it: an account that holds the repository.
    public_key = key.with_suffix(".pub").read_text().strip()
    prepare = (
        "id restic || useradd --create-home --shell /bin/sh restic; "
        "install -d -o restic -m 0700 /home/restic/.ssh /srv/restic; "
        f"echo '{public_key}' > /home/restic/.ssh/authorized_keys; "
        "chown restic /home/restic/.ssh/authorized_keys; chmod 0600 /home/restic/.ssh/authorized_keys"
    )
    lab_hosts.ssh(server, prepare)
    host_key = lab_hosts.ssh(server, "cat /etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[:2]
    settings = tmp_path / "offsite.yml"
    settings.write_text(json.dumps({
        "backup_offsite_repository": f"sftp:restic@{server.address}:/srv/restic/pliers-local",
        "backup_offsite_password": "a-restic-password-for-the-lab",
        "backup_offsite_ssh_key": key.read_text(),
        "backup_offsite_known_hosts": f"{server.address} {' '.join(host_key)}",
    }))  # fmt: skip

    configured = deployed.play("deploy.yml", "-e", "pliers_release=1.0.0", "-e", f"@{settings}")
    assert configured.returncode == 0, output(configured)
    backup = deployed.play("backup.yml", "-e", f"@{settings}")
    assert backup.returncode == 0, output(backup)
    name = newest_backup(deployed)

    snapshots = lab_hosts.ssh(deployed.db, "RESTIC_PASSWORD_FILE=/etc/pliers/offsite-local/password restic "
                                           f"-r sftp:restic@{server.address}:/srv/restic/pliers-local "
                                           "-o 'sftp.command=ssh -F /etc/pliers/offsite-local/ssh_config "
                                           f"restic@{server.address} -s sftp' ls latest")  # fmt: skip
    assert f"{BACKUPS}/{name}/postgres.dump" in snapshots.stdout, snapshots.stdout + snapshots.stderr
    assert "pliers_backup_offsite_last_attempt_success{environment=\"local\"} 1" in lab_hosts.ssh(
        deployed.db, f"cat {STATUS}").stdout  # fmt: skip
    assert lab_hosts.ssh(server, "test -f /srv/restic/pliers-local/config && echo ok").stdout.strip() == "ok"
