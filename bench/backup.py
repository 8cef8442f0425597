"""Backup and restore: pliers-backup against raw pg_dump -Fc / pg_restore run by hand, in the same run, on the
first host of a lab where the stack is deployed (compose mode). `make bench` runs it (bench/__main__.py); alone:

    python3 -m bench.backup --lab pliers-bk [--rows 4000000] [--runs 1]

prints the figures (4M rows: a database of about 1.1 GB). Not part of `make test`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from lab import hosts as lab_hosts
from lab.topology import Lab

CONFIG = "/etc/pliers/backup-local.json"
FIND = "docker ps -q --filter label=com.docker.compose.service=postgres"


def timed(host: lab_hosts.Host, command: str) -> float:
    started = time.monotonic()
    lab_hosts.ssh(host, command, timeout=3600)
    return round(time.monotonic() - started, 2)


def measure(lab: Lab, *, rows: int, runs: int) -> dict:
    """Median seconds of each side and the ratios, on a table of rows filled for the purpose (dropped after)."""
    host = lab_hosts.lab_host(lab, f"{lab.name}-1")
    pg = lab_hosts.ssh(host, FIND).stdout.split()[0]
    psql = f"docker exec {pg} psql -U pliers -d pliers -Atc"
    lab_hosts.ssh(host, f"{psql} 'DROP TABLE IF EXISTS bench_rows'")
    payload = "md5(g::text) || repeat(md5(random()::text), 7)"
    table = f"CREATE TABLE bench_rows AS SELECT g AS id, {payload} AS payload FROM generate_series(1, {rows:d}) g"  # noqa: S608
    fill = f'{psql} "{table}"'
    print(f"filling {rows} rows: {timed(host, fill)}s")
    size = int(lab_hosts.ssh(host, f"{psql} \"SELECT pg_database_size('pliers')\"").stdout.strip())
    print(f"database size: {size / 1e9:.2f} GB")

    ours_backup, raw_backup, ours_restore, raw_restore = [], [], [], []
    for _ in range(runs):
        raw_backup.append(timed(host, f"docker exec {pg} pg_dump -Fc -U pliers -d pliers > /var/tmp/raw.dump"))
        ours_backup.append(timed(host, f"pliers-backup --config {CONFIG} backup > /dev/null"))
        raw_restore.append(timed(host, (
            f"{psql} 'DROP DATABASE IF EXISTS bench_raw WITH (FORCE)' -d postgres && "
            f"{psql} 'CREATE DATABASE bench_raw' -d postgres && "
            f"docker exec -i {pg} pg_restore --exit-on-error --single-transaction --no-owner -U pliers -d bench_raw "
            "< /var/tmp/raw.dump")))  # fmt: skip
        ours_restore.append(timed(host, f"pliers-backup --config {CONFIG} restore-postgres latest > /dev/null"))
    lab_hosts.ssh(host, f"{psql} 'DROP DATABASE IF EXISTS bench_raw WITH (FORCE)' -d postgres; rm -f /var/tmp/raw.dump")
    lab_hosts.ssh(host, f"{psql} 'DROP TABLE IF EXISTS bench_rows'")
    results = {
        "database_bytes": size,
        "runs": runs,
        "backup_seconds": {"pliers": statistics.median(ours_backup), "raw_pg_dump": statistics.median(raw_backup)},
        "restore_seconds": {
            "pliers": statistics.median(ours_restore),
            "raw_pg_restore": statistics.median(raw_restore),
        },
    }
    results["backup_ratio"] = round(results["backup_seconds"]["pliers"] / results["backup_seconds"]["raw_pg_dump"], 3)
    results["restore_ratio"] = round(
        results["restore_seconds"]["pliers"] / results["restore_seconds"]["raw_pg_restore"], 3
    )
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lab", default="pliers-bk")
    parser.add_argument("--rows", type=int, default=4_000_000, help="rows of ~270 bytes (4M: about 1.1 GB)")
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    print(json.dumps(measure(Lab(args.lab), rows=args.rows, runs=args.runs), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
