"""The CIS Docker Benchmark v1.6.0 on the stack each mode's Molecule scenario deployed: every engine of the stack (the
Compose host; every node of the Swarm) and every container running on it, judged by tests/lab/cis.py from what the
engine reports, against the allow-list (cis-allowlist.yml). No finding outside it, and no entry of the mode that
covered nothing on that mode's hosts: the list stays as short as the design. It only looks (one SSH round trip per
host); the findings of the run are kept in .lab/reports/cis-<mode>.json."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from lab import hosts as lab_hosts

from . import cis
from .support import ROOT

pytestmark = pytest.mark.lab

ALLOWLIST = Path(__file__).with_name("cis-allowlist.yml")
MARKER = "----- pliers-cis -----"
# Services both modes run in the lab (Grafana, Loki and Alloy cannot run there).
STACK_SERVICES = {"postgres", "redis", "api", "ai-service", "web", "edge", "prometheus", "prometheus-agent",
                  "alertmanager", "node-exporter", "postgres-exporter", "redis-exporter", "edge-exporter"}  # fmt: skip
# What the engine says of itself, its daemon.json, its command line and an inspect of every running container, in
# one round trip, a marker line between each.
REPORT = f"; echo '{MARKER}'; ".join(
    (
        "docker info --format '{{json .}}'",
        "cat /etc/docker/daemon.json 2>/dev/null || true",
        "ps -o args= -C dockerd || true",
        'ids=$(docker ps -q); if [ -n "$ids" ]; then docker inspect $ids; else echo "[]"; fi',
    )
)


def stack_hosts(target) -> list[lab_hosts.Host]:
    """The engines the stack runs on: the Compose host (the deployer), every node of the Swarm."""
    if target.mode == "compose":
        return [target.deployer]
    return [lab_hosts.lab_host(target.lab, name) for name in lab_hosts.running_hosts(target.lab)]


def engine_findings(host: lab_hosts.Host) -> tuple[list[cis.Finding], set[str]]:
    """The host's findings, and the services of the containers it runs."""
    result = lab_hosts.ssh(host, REPORT, check=False, timeout=120)
    assert result.returncode == 0, f"{host.name}: {result.stderr[-2000:]}"
    parts = result.stdout.split(f"{MARKER}\n")
    assert len(parts) == 4, f"{host.name}: expected 4 parts, got {len(parts)}:\n{result.stdout[-2000:]}"
    info, daemon_json, command_line, containers = parts
    inspected = json.loads(containers)
    findings = cis.check_host(
        json.loads(info), json.loads(daemon_json) if daemon_json.strip() else {}, inspected, command_line.strip()
    )
    return findings, {cis.subject(container) for container in inspected}


def test_no_cis_finding_outside_the_allowlist_and_no_stale_entry(deployed):
    allowlist = cis.load_allowlist(ALLOWLIST)
    hosts = stack_hosts(deployed)
    with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
        by_host = dict(zip((host.name for host in hosts), pool.map(engine_findings, hosts), strict=True))
    # The containers were seen: every host runs some (node exporter at least), and the stack's services all run.
    services = {name: running for name, (_, running) in by_host.items()}
    assert all(services.values()), f"a host reported no running container: {services}"
    assert set().union(*services.values()) >= STACK_SERVICES, f"services seen: {services}"
    seen = [(name, finding) for name, (findings, _) in by_host.items() for finding in findings]
    report = ROOT / ".lab" / "reports" / f"cis-{deployed.mode}.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps([{"host": name, **finding._asdict()} for name, finding in seen], indent=2) + "\n")

    outside = [(name, finding) for name, finding in seen if cis.outside_allowlist([finding], allowlist, deployed.mode)]
    stale = cis.stale_entries([finding for _, finding in seen], allowlist, deployed.mode)
    problems = []
    if outside:
        problems.append(
            f"{len(outside)} {cis.BENCHMARK} findings outside {ALLOWLIST.name} ({deployed.mode}):\n"
            + "\n".join(f"  {f.item} {name} {f.subject}: {f.detail}" for name, f in outside)
        )
    if stale:
        problems.append(
            f"{len(stale)} {ALLOWLIST.name} entries matched nothing on the {deployed.mode} hosts (remove them):\n"
            + "\n".join(f"  {entry}" for entry in stale)
        )
    print(f"[{deployed.mode}] CIS: {len(seen)} findings on {len(hosts)} hosts, {len(seen) - len(outside)} allowed")
    assert not problems, "\n\n".join(problems)
