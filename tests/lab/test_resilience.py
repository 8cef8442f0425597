"""Faults, injected as production would, on the deployed stacks of both modes (after the release tests), each
under a client that reads and writes through the edge (lab/traffic.py's Client): afterwards every write
the api acknowledged is still listed.

- a restarted, crashed, recreated or re-addressed container is served again within 10 s, with no deploy;
- drifted states (containers stopped, removed, unhealthy or recreated by hand, a stale edge, a missing network)
  are each repaired by one rerun, which reports what it repaired; the next rerun changes nothing;
- a deploy killed in the middle of a rollout (SIGINT, then SIGKILL): the rerun takes the dead run's lock over,
  records it in the history as interrupted, and converges to the requested release;
- PostgreSQL stopped while a release waits for its migrations: the play fails before any app container changes,
  the old release serves once PostgreSQL is back, and a rerun completes;
- a routed container crashed while a release runs: the release completes (or fails naming it), a rerun converges;
- the backup disk full during a backup (on the Compose stack: the backup script is the same in both modes): a
  clear failure, the earlier backups intact and verified, the failure in the backup status metric (BackupFailed's
  expression turns true);
- Swarm: the node holding a routed replica stopped during a release: the release completes on the other nodes
  or rolls back cleanly, and a rerun without the lost node converges (tests/lab/test_swarm_node_loss.py goes on
  from there, with that node still down).

One line per case (what was injected, what the client saw, how long recovery took) is printed at the end of the
run and written to .lab/reports/faults-<mode>.json.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time

import pytest

from lab import hosts as lab_hosts
from lab.common import ROOT, docker
from lab.traffic import Client

from .support import BACKUPS, MODES, STACK, http, output, recap_changed, report, wait_for

BACKUP_CONFIG = "/etc/pliers/backup-local.json"
STATUS = "/var/lib/prometheus/node-exporter/pliers_backup_local.prom"
RECOVERY_BOUND = 10.0  # seconds: a container restarted outside a deploy is served again within this


def on(target, command: str, host=None, check: bool = True) -> str:
    return lab_hosts.ssh(host or target.deployer, command, check=check).stdout.strip()


def compose(target, *args: str) -> str:
    return on(target, f"cd /opt/pliers/local && docker compose {' '.join(args)}")


def containers(target, service: str) -> list[str]:
    """The names of a Compose service's containers (one-off runs aside), running or not."""
    listing = on(target, f"docker ps -a --filter label=com.docker.compose.service={service} "
                         "--filter label=com.docker.compose.oneoff=False --format '{{.Names}}'")  # fmt: skip
    return sorted(listing.split())


def app_containers(target) -> dict[str, str]:
    """Each app container's name and id: what a failed release must leave as it was."""
    names = [name for service in ("api", "ai-service", "web") for name in containers(target, service)]
    ids = on(target, "docker inspect --format '{{.Id}}' " + " ".join(names)).split()
    return dict(zip(names, ids, strict=True))


# A running container without a health check (the nginx exporter's) counts as healthy, as in the rollout.
HEALTH = "{{if .State.Health}}{{.State.Health.Status}}{{else if .State.Running}}healthy{{else}}{{.State.Status}}{{end}}"


def healthy(target, service: str) -> bool:
    names = containers(target, service)
    states = on(target, f"docker inspect --format '{HEALTH}' " + " ".join(names), check=False)
    return bool(names) and states.split() == ["healthy"] * len(names)


def crash(target, container: str, host=None) -> None:
    """SIGKILL the container's main process from its host, as a crash or the OOM killer would."""
    on(target, f"kill -9 $(docker inspect --format '{{{{.State.Pid}}}}' {container})", host=host)


def deploy(target, *extra: str) -> subprocess.CompletedProcess:
    return target.play("deploy.yml", *extra)


def version(target) -> str:
    return target.version()


def served_again(client: Client, since: float, window: float = 15.0) -> float:
    """Watch `window` seconds after `since`; the failures must stop within RECOVERY_BOUND, then none."""
    time.sleep(max(0.0, since + window - client.now()))
    recovery = client.recovery(since)
    late = [moment for moment in client.failures() if moment > since + RECOVERY_BOUND]
    assert recovery <= RECOVERY_BOUND and not late, f"still failing {recovery}s after the fault: {client.summary()}"
    return recovery


# --- Compose: the edge follows the containers, with no deploy -------------------------------------------


def converged(target) -> None:
    """Deploy only when the stack does not serve (a case before this one failed midway)."""
    if not all(http(f"{target.edge}{path}")[0] == 200 for path in ("/api/health", "/ai/health", "/")):
        assert deploy(target).returncode == 0, "the stack must be converged before a fault is injected"


def the_other_release(target) -> tuple[str, str]:
    """(what runs, the release to roll to): a release case rolls whichever way needs no deploy to set it up."""
    running = target.version()
    return running, "1.0.0" if running == "1.1.0" else "1.1.0"


def at_release(target, release: str) -> None:
    if http(f"{target.edge}/api/health")[0] != 200 or target.version() != release:
        assert deploy(target, "-e", f"pliers_release={release}").returncode == 0


def in_mode(deployed, mode: str):
    """The deployed stack of that mode (the other mode skips the case), serving before a fault is injected."""
    if deployed.mode != mode:
        pytest.skip(f"a {mode} case")
    converged(deployed)
    return deployed


@pytest.fixture
def compose_stack(deployed):
    return in_mode(deployed, "compose")


def test_a_container_restarted_outside_a_deploy_is_served_again_within_10_s(compose_stack):
    target = compose_stack
    with Client(target.edge, "restarts") as client:
        time.sleep(2)
        # The case: the api stopped, one-off containers take its address, the api starts again elsewhere.
        api = containers(target, "api")[0]
        on(target, f"docker stop {api}")
        image = on(target, f"docker inspect --format '{{{{.Config.Image}}}}' {containers(target, 'web')[0]}")
        squatters = [f"pliers-fault-squatter-{n}" for n in range(3)]
        for squatter in squatters:
            on(target, f"docker run -d --rm --name {squatter} --network {STACK}_backend --entrypoint sleep {image} 120")
        started = client.now()
        on(target, f"docker start {api}")
        readdressed = served_again(client, started)
        on(target, "docker rm -f " + " ".join(squatters))
        # A crash (the process killed, restarted by its restart policy).
        crashed_at = client.now()
        crash(target, api)
        crashed = served_again(client, crashed_at)
        # docker restart, then the web container recreated by hand with docker compose.
        restarted_at = client.now()
        on(target, f"docker restart {containers(target, 'ai-service')[0]}")
        restarted = served_again(client, restarted_at)
        recreated_at = client.now()
        compose(target, "up", "--detach", "--force-recreate", "--no-deps", "web")
        recreated = served_again(client, recreated_at)
    figures = {"readdressed": readdressed, "crashed": crashed, "restarted": restarted, "recreated": recreated}
    report(target, "restarted containers, no deploy",
           "api stopped, its address taken, started; api crashed; ai-service restarted; web recreated by hand",
           client, recovery=max(figures.values()), **figures)  # fmt: skip
    assert not client.lost(), client.lost()[:10]


# --- Compose: drift repaired by one rerun -------------------------------------------------------------


def test_every_drifted_state_is_repaired_by_one_rerun_which_says_what_it_repaired(compose_stack):
    target = compose_stack
    compose_file = "/opt/pliers/local/compose.yaml"
    # The rerun deploys what runs (an earlier case may have left the other release): only the drift changes.
    release = ("-e", f"pliers_release={target.version()}")
    with Client(target.edge, "drift") as client:
        time.sleep(2)
        injected_at = client.now()
        # Stopped: the api. Removed: Redis's container. Unhealthy: the ai-service, frozen until its health check
        # has failed enough times.
        on(target, f"docker stop {containers(target, 'api')[0]} && docker rm -f {containers(target, 'redis')[0]}")
        ai = containers(target, "ai-service")[0]
        on(target, f"kill -STOP $(docker inspect --format '{{{{.State.Pid}}}}' {ai})")
        # Hand-edited: the web recreated by hand from an edited project file.
        on(target, f"cp {compose_file} /root/compose.yaml.orig && sed -i '/^  web:$/,/^  [a-z]/ "
                   f"s/DRAIN_SECONDS: .0./DRAIN_SECONDS: \"7\"/' {compose_file}")  # fmt: skip
        assert on(target, f"cmp -s {compose_file} /root/compose.yaml.orig || echo edited") == "edited"
        compose(target, "up", "--detach", "--no-deps", "web")
        # A stale edge: the web's upstream edited by hand (its follower obeys the file: / fails).
        on(target, "sed -i 's/server pliers-local-web-[0-9]*:/server nowhere:/' "
                   "/opt/pliers/local/configs/edge/upstreams/web.conf")  # fmt: skip
        # A missing network: the monitoring network removed while what it connects was stopped.
        monitored = on(target, f"docker network inspect {STACK}_monitoring --format "
                               "'{{range .Containers}}{{.Name}} {{end}}'")  # fmt: skip
        on(target, f"docker stop {monitored} && docker network rm {STACK}_monitoring")
        wait_for(lambda: on(target, f"docker inspect --format '{{{{.State.Health.Status}}}}' {ai}") == "unhealthy",
                 timeout=90, what="the frozen ai-service to turn unhealthy")  # fmt: skip
        repair = deploy(target, *release)
        repaired_at = client.now()
        time.sleep(3)
    assert repair.returncode == 0, output(repair)
    assert recap_changed(repair) and recap_changed(repair)[0] > 0, output(repair)
    said = repair.stdout
    for expected in ("api: repaired: pliers-local-api-", "ai-service: repaired", "is unhealthy", "web: rolled",
                     "redis: converged: no container", "prometheus: converged",
                     "network pliers-local_monitoring is gone", "edge: reloaded, the upstreams of"):  # fmt: skip
        assert expected in said, f"the rerun did not report {expected!r}:\n{output(repair)}"
    assert 'DRAIN_SECONDS: "7"' not in on(target, f"cat {compose_file}")
    assert "nowhere" not in on(target, "cat /opt/pliers/local/configs/edge/upstreams/web.conf")
    for service in ("api", "ai-service", "web", "redis", "prometheus", "edge-exporter"):
        assert healthy(target, service), f"{service} is not back"
    again = deploy(target, *release)
    assert again.returncode == 0 and recap_changed(again) == [0], output(again)
    late = [moment for moment in client.failures() if moment > repaired_at]
    assert not late, client.summary()
    report(target, "drifted states, one rerun",
           "api stopped, redis removed, ai-service unhealthy, web recreated from an edited file, web's upstream "
           "edited, monitoring network removed", client, recovery=round(repaired_at - injected_at, 1))  # fmt: skip
    assert not client.lost(), client.lost()[:10]


# --- Compose: faults during a deploy ---------------------------------------------------------------------


# The background deploys a case started: one left running by a failed case would hold the lock for the next.
BACKGROUND: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def no_deploy_left_running():
    yield
    while BACKGROUND:
        process = BACKGROUND.pop()
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


class Deploy:
    """deploy.yml in the background, its output read line by line (to act on a task's start)."""

    def __init__(self, target, *extra: str) -> None:
        self.process = subprocess.Popen(
            target.command("deploy.yml", *extra), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, start_new_session=True,
        )  # fmt: skip
        BACKGROUND.append(self.process)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)

    def reached(self, task: str) -> bool:
        return any(line.startswith("TASK [") and task in line for line in self.lines)

    def wait(self, timeout: float = 900) -> int:
        code = self.process.wait(timeout=timeout)
        self._reader.join()
        return code

    def text(self) -> str:
        return "".join(self.lines)[-6000:]


def test_a_deploy_killed_mid_rollout_is_taken_over_and_converged_by_the_rerun(deployed):
    target = deployed
    converged(target)
    running, release = the_other_release(target)
    service = "api" if target.mode == "compose" else f"{STACK}_api"
    with Client(target.edge, f"kill-{target.mode}") as client:
        time.sleep(2)
        run = Deploy(target, "-e", f"pliers_release={release}")
        if target.mode == "compose":
            # Mid-rollout: the new api containers run beside the old one.
            wait_for(lambda: len(containers(target, "api")) > 1 or run.process.poll() is not None, timeout=900,
                     interval=0.3, what="the rollout to start new api containers")  # fmt: skip
        else:
            wait_for(lambda: "updating" in on(target, f"docker service inspect {service} --format "
                                                      "'{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}'")
                     or run.process.poll() is not None, timeout=900, interval=0.3,
                     what="Swarm to start updating the api")  # fmt: skip
        assert run.process.poll() is None, f"the deploy ended before it could be killed:\n{run.text()}"
        killed_at = client.now()
        os.kill(run.process.pid, signal.SIGINT)
        time.sleep(1)
        os.killpg(run.process.pid, signal.SIGKILL)
        run.wait()
        holder = on(target, "cat /var/lib/pliers/local/deploy.lock", check=False)
        assert '"pid"' in holder, f"the killed run left no lock behind: {holder!r}"
        rerun = deploy(target, "-e", f"pliers_release={release}")
        converged_at = client.now()
        time.sleep(2)
    assert rerun.returncode == 0, output(rerun)
    said = rerun.stdout + rerun.stderr  # the takeover is a warning
    assert "took over the deploy lock" in said and "is gone" in said, output(rerun)
    assert version(target) == release
    if target.mode == "compose":
        assert len(containers(target, "api")) == 1, containers(target, "api")
    history = target.play("releases.yml")
    assert "interrupted" in history.stdout and "never finished" in history.stdout, history.stdout[-3000:]
    outside = [moment for moment in client.failures() if not killed_at - 1 <= moment <= killed_at + 5]
    assert not outside, client.summary()
    report(target, "deploy killed mid-rollout",
           f"SIGINT then SIGKILL to ansible-playbook during {running} -> {release}", client,
           recovery=round(converged_at - killed_at, 1))  # fmt: skip
    assert not client.lost(), client.lost()[:10]


def test_postgres_stopped_before_the_migrations_fails_the_release_before_any_app_container_changes(compose_stack):
    target = compose_stack
    at_release(target, "1.0.0")
    # A release with something to migrate (one with nothing pending rolls without stopping for its migrations): 1.1.0's
    # migration made pending again. It only adds a column, which 1.0.0 does not read.
    target.sql(
        "ALTER TABLE items DROP COLUMN IF EXISTS tags; DELETE FROM schema_migrations WHERE version = '0002_item_tags'"
    )
    assert target.sql("SELECT count(*) FROM schema_migrations WHERE version = '0002_item_tags'") == "0"
    before = app_containers(target)
    postgres = containers(target, "postgres")[0]
    with Client(target.edge, "postgres-stopped") as client:
        time.sleep(2)
        run = Deploy(target, "-e", "pliers_release=1.1.0")
        wait_for(lambda: run.reached("stop before the migrations") or run.process.poll() is not None,
                 timeout=900, interval=0.05, what="the release to reach its migrations")  # fmt: skip
        assert run.process.poll() is None, f"the release ended before its migrations:\n{run.text()}"
        # Frozen while PostgreSQL stops, so that the migrations, next, meet it stopped.
        os.killpg(run.process.pid, signal.SIGSTOP)
        on(target, f"docker stop {postgres}")
        stopped_at = client.now()
        os.killpg(run.process.pid, signal.SIGCONT)
        code = run.wait()
        assert code != 0, run.text()
        assert app_containers(target) == before, "an app container changed although the release failed"
        on(target, f"docker start {postgres}")
        wait_for(lambda: healthy(target, "postgres"), timeout=120, what="PostgreSQL to be back")
        wait_for(lambda: target.version() == "1.0.0", timeout=60, what="the old release to serve again")
        back_at = client.now()
        time.sleep(2)
    failure = [line for line in run.lines if line.startswith("fatal:")]
    assert failure and ("migrat" in run.text().lower()), run.text()
    rerun = deploy(target, "-e", "pliers_release=1.1.0")
    assert rerun.returncode == 0, output(rerun)
    assert version(target) == "1.1.0"
    report(target, "PostgreSQL stopped before the migrations",
           "postgres stopped while 1.0.0 -> 1.1.0 reached its migrations", client,
           recovery=round(back_at - stopped_at, 1), failure=failure[-1][:300])  # fmt: skip
    assert not client.lost(), client.lost()[:10]


def test_a_routed_container_crashed_during_a_release_does_not_stop_it(compose_stack):
    target = compose_stack
    running, release = the_other_release(target)
    with Client(target.edge, "crash-during-release") as client:
        time.sleep(2)
        run = Deploy(target, "-e", f"pliers_release={release}")
        # While the api rolls, the web (rolled last) crashes.
        wait_for(lambda: len(containers(target, "api")) > 1 or run.process.poll() is not None, timeout=900,
                 interval=0.3, what="the rollout to start new api containers")  # fmt: skip
        assert run.process.poll() is None, f"the release ended before the crash:\n{run.text()}"
        crashed_at = client.now()
        crash(target, containers(target, "web")[0])
        code = run.wait()
        done_at = client.now()
        time.sleep(2)
    if code != 0:
        assert "web" in run.text(), f"the release failed without naming the crashed web:\n{run.text()}"
        assert deploy(target, "-e", f"pliers_release={release}").returncode == 0
    assert version(target) == release
    assert healthy(target, "web"), on(target, "docker ps -a --filter label=com.docker.compose.service=web")
    rerun = deploy(target, "-e", f"pliers_release={release}")
    assert rerun.returncode == 0 and recap_changed(rerun) == [0], output(rerun)
    report(target, "routed container crashed during a release",
           f"web killed while {running} -> {release} rolled the api", client,
           recovery=client.recovery(crashed_at), release_rc=code,
           release_seconds=round(done_at - crashed_at, 1))  # fmt: skip
    assert not client.lost(), client.lost()[:10]


# --- The backup disk full (the same script in both modes) ---------------------------------------------


@pytest.mark.parametrize("deployed", ["compose"], indirect=True)  # the same script in both modes
def test_a_full_backup_disk_fails_the_backup_clearly_and_keeps_the_earlier_ones(deployed):
    target = deployed
    assert target.play("backup.yml").returncode == 0
    newest = on(target, f"ls {BACKUPS} | grep -v '^status' | tail -1", host=target.db)
    keep = "/root/pliers-fault-backups"
    # A small file system over the backup directory, holding the newest backup and nearly full.
    fill = (
        f"set -e; rm -rf {keep}; cp -a {BACKUPS} {keep}; size=$(du -sk {keep} | cut -f1); "
        f"mount -t tmpfs -o size=$((size + 1024))k,mode=0700 pliers-fault {BACKUPS}; "
        f"cp -a {keep}/{newest} {keep}/status.json {BACKUPS}/; "
        f"dd if=/dev/zero of={BACKUPS}/.filler bs=4k 2>/dev/null || true; truncate -s -8k {BACKUPS}/.filler"
    )
    on(target, fill, host=target.db)
    try:
        with Client(target.edge, f"backup-full-{target.mode}") as client:
            time.sleep(1)
            result = target.play("backup.yml")
            time.sleep(1)
        assert result.returncode != 0, output(result)
        assert "the backup disk is full" in result.stdout, output(result)
        assert "the earlier backups are untouched" in result.stdout
        listed = on(target, f"ls -A {BACKUPS}", host=target.db).split()
        assert sorted(listed) == sorted([".filler", newest, "status.json"]), listed
        verified = on(target, f"pliers-backup --config {BACKUP_CONFIG} verify {newest}", host=target.db)
        assert json.loads(verified)["name"] == newest
        status = on(target, f"cat {STATUS}", host=target.db)
        assert 'pliers_backup_last_attempt_success{environment="local"} 0' in status, status
        # BackupFailed's expression (roles/monitoring/files/rules/alerts.yml) turns true.
        fired = wait_for(lambda: target.promql("pliers_backup_last_attempt_success == 0"), timeout=90, interval=3,
                         what="Prometheus to see the failed backup")  # fmt: skip
        assert fired[0]["metric"]["environment"] == "local"
    finally:
        on(target, f"umount {BACKUPS}; rm -rf {keep}", host=target.db, check=False)
    assert target.play("backup.yml").returncode == 0, "a backup after the disk was freed"
    report(target, "backup disk full", "the backup directory's file system full during backup.yml", client,
           message=[line for line in result.stdout.splitlines() if "backup disk is full" in line][0][:300])  # fmt: skip
    assert not client.lost(), client.lost()[:10]


# --- Swarm: a node lost during a release, tasks replaced outside a deploy ----------------------------------


@pytest.fixture
def swarm_stack(deployed):
    return in_mode(deployed, "swarm")


def test_swarm_tasks_replaced_outside_a_deploy_are_served_again_within_10_s(swarm_stack):
    target = swarm_stack
    with Client(target.edge, "swarm-restarts") as client:
        time.sleep(2)
        killed_at = client.now()
        # Every api task's container, on every node: Swarm replaces them with new tasks, on new addresses.
        for name in lab_hosts.running_hosts(target.lab):
            node = lab_hosts.lab_host(target.lab, name)
            on(target, f"docker ps -q --filter label=com.docker.swarm.service.name={STACK}_api | xargs -r docker kill",
               host=node)  # fmt: skip
        recovery = served_again(client, killed_at, window=25)
    report(
        target, "every api task killed, no deploy", "docker kill of each api task container", client, recovery=recovery
    )
    assert not client.lost(), client.lost()[:10]


def test_a_node_stopped_during_a_release_leaves_the_release_completed_or_rolled_back(swarm_stack):
    target = swarm_stack
    running, release = the_other_release(target)
    lost = MODES["swarm"]["worker"]  # neither the leading manager, the edge nor the database's node
    tasks = "docker service ps {} --filter desired-state=running --format '{{{{.Node}}}}'"
    routed = {
        service: on(target, tasks.format(f"{STACK}_{service}")).split() for service in ("api", "ai-service", "web")
    }
    held = sorted(service for service, nodes in routed.items() if lost in nodes)
    assert held, f"no routed task on {lost}: {routed}"
    with Client(target.edge, "swarm-node-lost") as client:
        time.sleep(2)
        run = Deploy(target, "-e", f"pliers_release={release}")
        wait_for(lambda: run.reached("Swarm | deploy the stack") or run.process.poll() is not None, timeout=900,
                 interval=0.3, what="the release to deploy the stack")  # fmt: skip
        stopped_at = client.now()
        docker("stop", lost)
        code = run.wait()
        done_at = client.now()
        time.sleep(2)
    released = version(target)
    if code == 0:
        assert released == release
    else:
        assert re.search(r"rolled back|did not converge", run.text()), run.text()
        assert released in (running, release)
    # The node stays down (a lab host restarted may come back on another address): the rerun leaves it out.
    wait_for(lambda: on(target, f"docker node inspect {lost} --format '{{{{.Status.State}}}}'") == "down",
             timeout=120, interval=3, what=f"the managers to see {lost} down")  # fmt: skip
    rerun = deploy(target, "--limit", f"all:!{lost}", "-e", f"pliers_release={release}")
    assert rerun.returncode == 0, output(rerun)
    assert version(target) == release
    report(target, "node stopped during a release",
           f"{lost} (running {', '.join(held)}) stopped while {running} -> {release} rolled", client,
           recovery=client.recovery(stopped_at), release_rc=code,
           release_seconds=round(done_at - stopped_at, 1))  # fmt: skip
    assert not client.lost(), client.lost()[:10]
