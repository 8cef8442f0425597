"""make bench: how fast pliers.deploy deploys, against raw Docker doing the same work on the same lab, in one run.

    python -m bench [--runs 3] [--swarm-runs 3] [--rows 1000000] [--only first,noop,...]

On a lab of its own (pliers-bench, five hosts), each figure the median of several runs:
  docker_host   the role on a bare host (install and configure the engine);
  first         deploy.yml on a host with the engine installed ÷ raw `docker compose up -d --wait` of the
                identical rendered project on an identical host;
  noop          deploy.yml with nothing to change ÷ one Ansible round trip running `docker compose up -d`;
  release       1.0.0 → 1.1.0 through deploy.yml ÷ raw `docker compose up -d --wait` of the changed services,
                each under a steady stream of requests through its edge (dropped requests are counted);
  backup        pliers-backup backup / restore ÷ raw pg_dump / pg_restore (bench/backup.py);
  swarm         deploy.yml on 1, 3 and 5 Swarm nodes with the engine installed.
Writes bench/results.json and bench/results.md. Not part of `make test`; the lab is removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from lab import acme
from lab import hosts as lab_hosts
from lab.common import PLAYBOOK_BIN, ROOT, VAULT, LabError, docker
from lab.images import Builder
from lab.registry import CA_DIR
from lab.topology import Lab
from lab.traffic import Probe, route_edge

from . import backup as backup_bench

LAB = Lab("pliers-bench")
HOSTS = 5
SWARM_SIZES = (1, 3, 5)
PROJECT_DIR = "/opt/pliers/local"  # both local inventories deploy there
ENGINE_IMAGE = "pliers-bench/engine-host"
TARGETS = {"first_deploy_ratio": 1.3, "noop_redeploy_ratio": 3.0, "release_ratio": 2.5}
RESULTS = Path(__file__).parent
# Raw Compose's first deploy of the rendered project: the data services, the accounts the services log in as (from
# copy_accounts), then everything.
RAW_FIRST_DEPLOY = f"""set -e; cd {PROJECT_DIR}
docker compose up -d --wait postgres redis
docker compose exec -T postgres sh -c 'psql -q -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d "$POSTGRES_DB"' \\
  < /var/tmp/roles.sql
docker compose exec -T redis sh -c 'cat > /data/users.acl && REDISCLI_AUTH="$(cat /run/secrets/admin_password)" \\
  redis-cli ACL LOAD' < /var/tmp/users.acl
docker compose up -d --wait"""
CHANGED = re.compile(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", re.MULTILINE)
PROFILED = re.compile(r"^(.+? -+ \d+\.\d+s)$", re.MULTILINE)  # profile_tasks' summary: "<role> : <task> ---- 1.23s"


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def seconds_of(action: Callable[..., object], *args, **kwargs) -> float:
    started = time.monotonic()
    action(*args, **kwargs)
    return round(time.monotonic() - started, 2)


def edge_url(host: lab_hosts.Host) -> str:
    """The stack as its clients see it, served from host: https://<the lab's name>, trusting the lab's ACME root only
    (the raw side serves the certificate copied with the project)."""
    route_edge(acme.domain(LAB), host.address, str(acme.root_file(LAB)))
    return f"https://{acme.domain(LAB)}"


@contextlib.contextmanager
def paused(host: lab_hosts.Host):
    """The host frozen meanwhile (docker pause), so that its stack does not take CPU from what is measured."""
    docker("pause", host.name)
    try:
        yield
    finally:
        docker("unpause", host.name)


def summary(samples: list[float]) -> dict:
    return {"median": round(statistics.median(samples), 2), "samples": samples}


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.bare_image = Builder().build_all()["host"]
        self.engine_image = ""
        self.results: dict = {}

    # --- hosts and inventories -------------------------------------------------------------------------

    def host(self, index: int) -> lab_hosts.Host:
        name = LAB.host_name(index)
        return lab_hosts.lab_host(LAB, name)

    def reset(self, count: int, image: str) -> None:
        """Hosts 1..count recreated from image (bare, or with the engine installed); the lab's inventory follows."""
        names = [LAB.host_name(i) for i in range(1, count + 1)]
        lab_hosts.reset_hosts(LAB, names, image)
        lab_hosts.write_inventory(LAB, [self.host(i) for i in range(1, count + 1)], CA_DIR / "ca.crt")

    def inventory(self, mode: str, nodes: int, index: int = 1) -> Path:
        """An inventory of the local (compose) or local-swarm environment on lab hosts index.. (nodes of them)."""
        path = self.workdir / f"{mode}-{nodes}-{index}"
        if path.exists():
            return path
        source = "local" if mode == "compose" else "local-swarm"
        shutil.copytree(ROOT / "inventories" / source / "group_vars", path / "group_vars")
        shutil.copy(ROOT / "molecule/default/inventory/group_vars/pliers_hosts.yml", path / "group_vars")
        if mode == "swarm":
            # One PostgreSQL, on one node, as the earlier runs measured (the swarm demo runs the HA database).
            with (path / "group_vars" / "pliers_hosts.yml").open("a") as group_vars:
                group_vars.write("pliers_database_replicas: 1\npliers_database_synchronous: false\n")
        names = [LAB.host_name(i) for i in range(index, index + nodes)]
        if mode == "compose":
            layout = "pliers_hosts:\n  hosts:\n" + "".join(f"    {name}:\n" for name in names)
        else:
            # One manager (the edge, and the database when alone); the database on the first worker.
            manager_labels = '{edge: "true"' + (', db: "true"}' if nodes == 1 else "}")
            layout = "pliers_hosts:\n  children:\n    swarm_managers:\n      hosts:\n"
            layout += f"        {names[0]}: {{docker_host_node_labels: {manager_labels}}}\n"
            if nodes > 1:
                layout += "    swarm_workers:\n      hosts:\n"
                layout += f'        {names[1]}: {{docker_host_node_labels: {{db: "true"}}}}\n'
                layout += "".join(f"        {name}: {{docker_host_node_labels: {{}}}}\n" for name in names[2:])
        (path / "hosts.yml").write_text(layout)
        return path

    def play(
        self, playbook: str, inventory: Path, *extra: str, expect_changed: int | None = None, profile: str = ""
    ) -> str:
        """Run a playbook; fail naming it when it fails, or when it changed something it should not have. With
        profile (never a timed run: the callback costs time per task), its slowest tasks (profile_tasks) are kept
        under profiles/<profile> in results.json."""
        command = [str(PLAYBOOK_BIN), playbook, "-i", str(inventory), "-i", str(LAB.inventory)]
        command += ["--vault-password-file", VAULT, *extra]
        environment = dict(os.environ)
        if profile:
            environment["ANSIBLE_CALLBACKS_ENABLED"] = "ansible.posix.profile_tasks"
            environment["PROFILE_TASKS_TASK_OUTPUT_LIMIT"] = "25"
        result = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            output = result.stdout[-4000:] + result.stderr[-2000:]
            raise LabError(f"{playbook} failed (exit {result.returncode}):\n{output}")
        if expect_changed is not None:
            changed = {host: int(count) for host, count in CHANGED.findall(result.stdout)}
            if any(count != expect_changed for count in changed.values()):
                raise LabError(f"{playbook} was to change {expect_changed} things; its recap says {changed}")
        if profile:
            self.results.setdefault("profiles", {})[profile] = PROFILED.findall(result.stdout)[-25:]
        return result.stdout

    def ansible_command(self, inventory: Path, host: str, command: str) -> None:
        """One Ansible round trip: an ad-hoc command on one host."""
        ansible = PLAYBOOK_BIN.with_name("ansible")
        argv = [str(ansible), host, "-i", str(inventory), "-i", str(LAB.inventory), "--vault-password-file", VAULT]
        argv += ["-m", "ansible.builtin.command", "-a", command]
        result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise LabError(f"ansible {host} {command!r} failed:\n{result.stdout[-2000:]}{result.stderr[-1000:]}")

    def copy_project(self, source: lab_hosts.Host, target: lab_hosts.Host, only: str = "") -> None:
        """The rendered project (compose file, configuration and secret files), as deploy.yml left it."""
        what = f"{PROJECT_DIR.lstrip('/')}/{only}" if only else PROJECT_DIR.lstrip("/")
        ssh = ["ssh", "-i", str(lab_hosts.SSH_KEY), *lab_hosts.SSH_OPTIONS]
        tar = subprocess.run(
            [*ssh, f"root@{source.address}", f"tar -C / -cf - {what}"], capture_output=True, check=True
        )
        subprocess.run([*ssh, f"root@{target.address}", "tar -C / -xf -"], input=tar.stdout, check=True)

    def copy_accounts(self, source: lab_hosts.Host, target: lab_hosts.Host) -> None:
        """The services' database roles and Redis users as deploy.yml left them on SOURCE, for RAW_FIRST_DEPLOY
        on TARGET: a hand-written deploy has its own script for them."""
        compose = f"cd {PROJECT_DIR} && docker compose exec -T"
        roles = lab_hosts.ssh(source, f"""{compose} postgres sh -c 'pg_dumpall --roles-only -U "$POSTGRES_USER"'""")
        admin = re.search(r"^ALTER ROLE (\S+) WITH SUPERUSER", roles.stdout, re.MULTILINE)
        sql = roles.stdout.replace(f"CREATE ROLE {admin.group(1)};\n", "") if admin else roles.stdout
        users = lab_hosts.ssh(source, f"{compose} redis cat /data/users.acl").stdout
        lab_hosts.ssh(target, "cat > /var/tmp/roles.sql", input=sql)
        lab_hosts.ssh(target, "cat > /var/tmp/users.acl", input=users)

    # --- the measurements ------------------------------------------------------------------------------

    def docker_host(self) -> None:
        """The docker_host role on a bare host, as deploy.yml runs it (--tags docker_host: the preflight, the lock,
        the role and the host files the stack writes for it, the history), several times; the last host becomes the
        engine image."""
        samples = []
        inventory = self.inventory("compose", 1)
        for run in range(self.args.runs):
            self.reset(1, self.bare_image)
            samples.append(seconds_of(self.play, "playbooks/deploy.yml", inventory, "--tags", "docker_host"))
            log(f"docker_host run {run + 1}: {samples[-1]}s")
        # Hosts "with the engine installed" start from this one: docker_host's work, kept in an image.
        host = LAB.host_name(1)
        image_id = docker("commit", "--change", f"LABEL {LAB.label}", host, f"{ENGINE_IMAGE}:{os.getpid()}").stdout
        self.engine_image = f"{ENGINE_IMAGE}:{os.getpid()}"
        log(f"engine host image {self.engine_image} ({image_id.strip()[:19]})")
        self.results["docker_host_seconds"] = summary(samples)

    def first_deploy(self) -> None:
        ours, raw = [], []
        inventory = self.inventory("compose", 1)
        for run in range(self.args.runs):
            self.reset(2, self.engine_image)
            deployed, bare = self.host(1), self.host(2)
            with paused(bare):
                ours.append(seconds_of(self.play, "playbooks/deploy.yml", inventory))
            self.copy_project(deployed, bare)
            self.copy_accounts(deployed, bare)
            with paused(deployed):
                raw.append(seconds_of(lab_hosts.ssh, bare, RAW_FIRST_DEPLOY))
            log(f"first deploy run {run + 1}: pliers {ours[-1]}s, raw compose {raw[-1]}s")
        self.results["first_deploy"] = {"pliers_seconds": summary(ours), "raw_compose_seconds": summary(raw)}
        self.results["first_deploy_ratio"] = round(statistics.median(ours) / statistics.median(raw), 2)

    def noop_redeploy(self) -> None:
        """On host 1 as first_deploy left it."""
        ours, floor = [], []
        inventory = self.inventory("compose", 1)
        up = f"docker compose --project-directory {PROJECT_DIR} up -d"
        for run in range(self.args.runs):
            with paused(self.host(2)):
                ours.append(seconds_of(self.play, "playbooks/deploy.yml", inventory, expect_changed=0))
                floor.append(seconds_of(self.ansible_command, inventory, LAB.host_name(1), up))
            log(f"no-op redeploy run {run + 1}: pliers {ours[-1]}s, floor {floor[-1]}s")
        with paused(self.host(2)):
            self.play("playbooks/deploy.yml", inventory, expect_changed=0, profile="noop")
        self.results["noop_redeploy"] = {"pliers_seconds": summary(ours), "floor_seconds": summary(floor)}
        self.results["noop_redeploy_seconds"] = round(statistics.median(ours), 2)
        self.results["noop_redeploy_ratio"] = round(statistics.median(ours) / statistics.median(floor), 2)

    def release(self) -> None:
        """1.0.0 → 1.1.0 on host 1 (deploy.yml) and host 2 (raw compose), each under requests; back after each run."""
        inventory = self.inventory("compose", 1)
        ours, raw = [], []
        deployed, bare = self.host(1), self.host(2)
        up = f"cd {PROJECT_DIR} && docker compose up -d --wait api ai-service web"
        for run in range(self.args.runs):
            with paused(bare), Probe(edge_url(deployed)) as probe:
                seconds = seconds_of(self.play, "playbooks/deploy.yml", inventory, "-e", "pliers_release=1.1.0")
            ours.append({"seconds": seconds, "requests": probe.sent, "failed": len(probe.failures)})
            # The raw side gets the compose file deploy.yml rendered for 1.1.0: the new images, nothing else.
            lab_hosts.ssh(bare, f"cp {PROJECT_DIR}/compose.yaml /var/tmp/compose-1.0.0.yaml")
            self.copy_project(deployed, bare, only="compose.yaml")
            with paused(deployed), Probe(edge_url(bare)) as probe:
                seconds = seconds_of(lab_hosts.ssh, bare, up)
            raw.append({"seconds": seconds, "requests": probe.sent, "failed": len(probe.failures)})
            log(f"release run {run + 1}: pliers {ours[-1]}, raw compose {raw[-1]}")
            self.play("playbooks/deploy.yml", inventory, "-e", "pliers_release=1.0.0", profile="release back to 1.0.0")
            # Back, and the raw edge restarted: it resolved the replaced containers' addresses when it started.
            lab_hosts.ssh(bare, f"cp /var/tmp/compose-1.0.0.yaml {PROJECT_DIR}/compose.yaml && {up}")
            lab_hosts.ssh(bare, f"cd {PROJECT_DIR} && docker compose restart edge && docker compose up -d --wait")

        def side(samples: list[dict]) -> dict:
            seconds = [s["seconds"] for s in samples]
            return {
                **summary(seconds),
                "requests": sum(s["requests"] for s in samples),
                "failed_requests": sum(s["failed"] for s in samples),
            }

        self.results["release"] = {"pliers": side(ours), "raw_compose": side(raw)}
        self.results["release_ratio"] = round(
            self.results["release"]["pliers"]["median"] / self.results["release"]["raw_compose"]["median"], 2
        )

    def backup(self) -> None:
        """On host 1, deployed in compose mode (bench/backup.py)."""
        self.results["backup"] = backup_bench.measure(LAB, rows=self.args.rows, runs=self.args.runs)

    def swarm(self) -> None:
        figures = {}
        for nodes in SWARM_SIZES:
            inventory = self.inventory("swarm", nodes)
            samples = []
            for run in range(self.args.swarm_runs):
                # The nodes fresh; the hosts left out stopped, so that they take no CPU.
                for index in range(nodes + 1, HOSTS + 1):
                    docker("stop", "--time", "1", LAB.host_name(index))
                self.reset(nodes, self.engine_image)
                # The same stack on every size: no cap on api replicas per node (one node holds all three).
                same_stack = ("-e", "api_max_replicas_per_node=0")
                samples.append(seconds_of(self.play, "playbooks/deploy.yml", inventory, *same_stack))
                log(f"swarm on {nodes} nodes run {run + 1}: {samples[-1]}s")
            figures[str(nodes)] = summary(samples)
        self.results["swarm_deploy_seconds"] = figures


STEPS = ("docker_host", "first", "noop", "release", "backup", "swarm")


def markdown(results: dict) -> str:
    def row(name: str, ours: dict | float, floor: str, ratio: str, note: str = "") -> str:
        value = ours["median"] if isinstance(ours, dict) else ours
        return f"| {name} | {value} | {floor} | {ratio} | {note} |"

    lines = [
        "# pliers.deploy benchmarks",
        "",
        f"{results['date']}, commit {results['commit']}, {results['machine']}; medians of {results['runs']} runs "
        f"({results['swarm_runs']} for Swarm). Written by `make bench` (bench/__main__.py); times in seconds.",
        "",
        "| measurement | pliers.deploy | raw Docker (floor) | ratio | notes |",
        "|---|---|---|---|---|",
    ]
    if "first_deploy" in results:
        first = results["first_deploy"]
        lines.append(row(
            "first deploy (engine installed)", first["pliers_seconds"], str(first["raw_compose_seconds"]["median"]),
            f"**{results['first_deploy_ratio']}** (target ≤ {TARGETS['first_deploy_ratio']})",
            "raw: `docker compose up -d --wait` of the same rendered project",
        ))  # fmt: skip
    if "noop_redeploy" in results:
        noop = results["noop_redeploy"]
        lines.append(row(
            "no-op redeploy", noop["pliers_seconds"], str(noop["floor_seconds"]["median"]),
            f"**{results['noop_redeploy_ratio']}** (target ≤ {TARGETS['noop_redeploy_ratio']})",
            "floor: one Ansible round trip running `docker compose up -d`; every run changed=0",
        ))  # fmt: skip
    if "release" in results:
        rel = results["release"]
        lines.append(row(
            "release 1.0.0 → 1.1.0", rel["pliers"], str(rel["raw_compose"]["median"]),
            f"**{results['release_ratio']}** (target ≤ {TARGETS['release_ratio']})",
            f"failed requests: pliers {rel['pliers']['failed_requests']} of {rel['pliers']['requests']}, "
            f"raw {rel['raw_compose']['failed_requests']} of {rel['raw_compose']['requests']}",
        ))  # fmt: skip
    if "backup" in results:
        bk = results["backup"]
        size = f"{bk['database_bytes'] / 1e6:.0f} MB database"
        lines.append(row("backup", bk["backup_seconds"]["pliers"], str(bk["backup_seconds"]["raw_pg_dump"]),
                         str(bk["backup_ratio"]), f"{size}; raw: `pg_dump -Fc`"))  # fmt: skip
        lines.append(row("restore", bk["restore_seconds"]["pliers"], str(bk["restore_seconds"]["raw_pg_restore"]),
                         str(bk["restore_ratio"]), "raw: `pg_restore` into a new database"))  # fmt: skip
    if "docker_host_seconds" in results:
        lines.append(row("docker_host on a bare host", results["docker_host_seconds"], "", "",
                         "Debian 13's docker.io, docker-compose, python3-docker"))  # fmt: skip
    for nodes, figure in results.get("swarm_deploy_seconds", {}).items():
        lines.append(row(f"Swarm deploy, {nodes} node{'s' if nodes != '1' else ''}", figure, "", "",
                         "engine installed; forms the Swarm, deploys the stack"))  # fmt: skip
    status = "" if results["complete"] else " (incomplete: the run stopped early)"
    lines += ["", f"Whole run: {results['total_seconds']} s{status}.", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--swarm-runs", type=int, default=3, help="runs per Swarm size")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the backup bench (~270 bytes each)")
    parser.add_argument("--only", default=",".join(STEPS), help=f"comma-separated subset of {','.join(STEPS)}")
    parser.add_argument("--keep", action="store_true", help="leave the lab up afterwards")
    args = parser.parse_args()
    steps = [step.strip() for step in args.only.split(",") if step.strip()]
    unknown = sorted(set(steps) - set(STEPS))
    if unknown or args.runs < 1 or args.swarm_runs < 1:
        parser.error(f"unknown steps {unknown} (known: {', '.join(STEPS)})" if unknown else "runs must be 1 or more")
    started = time.monotonic()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)

    def save(bench: Bench, complete: bool) -> dict:
        """Both files, after every step: a run that fails later keeps what it measured."""
        results = {
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": commit.stdout.strip(),
            "machine": f"{os.cpu_count()} cores",
            "runs": args.runs,
            "swarm_runs": args.swarm_runs,
            "targets": TARGETS,
            "complete": complete,
            **bench.results,
            "total_seconds": round(time.monotonic() - started, 1),
        }
        (RESULTS / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        (RESULTS / "results.md").write_text(markdown(results))
        return results

    with tempfile.TemporaryDirectory(prefix="pliers-bench-") as workdir:
        lab = [sys.executable, "-m", "lab", "--name", LAB.name]
        subprocess.run([*lab, "down"], cwd=ROOT, check=True)
        subprocess.run([*lab, "up", "--hosts", str(HOSTS)], cwd=ROOT, check=True)
        bench = Bench(args, Path(workdir))
        try:
            # Everything after docker_host starts from hosts with the engine installed.
            bench.docker_host()
            for step, measure in (
                ("first", bench.first_deploy), ("noop", bench.noop_redeploy), ("release", bench.release),
                ("backup", bench.backup), ("swarm", bench.swarm),
            ):  # fmt: skip
                if step in steps:
                    measure()
                    save(bench, complete=False)
        finally:
            if not args.keep:
                subprocess.run([*lab, "down"], cwd=ROOT, check=False)
            if bench.engine_image and not args.keep:
                docker("rmi", bench.engine_image, check=False)
    print(markdown(save(bench, complete=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
