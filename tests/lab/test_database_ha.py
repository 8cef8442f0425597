"""The HA database (#14) on a Swarm of three managers, each a node of the database, as `make demo MODE=swarm` runs it
(the local-swarm inventory: three members, synchronous replication), onto hosts hardened the usual way (root's SSH
login refused, a deploy user with sudo): deployed, then a rerun changes nothing; a planned
switchover and the loss of the primary's node, each under a client that writes through the edge (no acknowledged
write lost; the seconds of failed writes reported and bounded); the lost node's member rejoins as a replica by itself.
"""

from __future__ import annotations

import json
import shutil
import time

import pytest

from lab import hosts as lab_hosts
from lab.common import docker
from lab.topology import Lab
from lab.traffic import Client, http

from .support import (
    BACKUPS,
    ROOT,
    STACK,
    Target,
    items,
    lab_cli,
    newest_backup,
    output,
    recap_changed,
    report,
    wait_for,
)

LAB = Lab("pliers-ha")
# local-swarm's hosts: the first holds the edge (and leads the deploys); all three hold a member.
SPEC = {"lab": LAB, "deployer": LAB.host_name(1), "edge": LAB.host_name(1), "db": LAB.host_name(1)}
# Writes resume within this many seconds of the primary's node lost (Patroni's ttl is 20 s), and within this many of
# a planned switchover's start.
FAILOVER_BOUND = 30
SWITCHOVER_BOUND = 5


class HA(Target):
    def deploy(self, playbook: str = "deploy.yml", *extra: str):
        return self.play(playbook, "-e", f"@{LAB.credentials}", *extra)

    def cluster(self, **args) -> dict:
        """patroni_cluster's report (on the deployer, a node of the database)."""
        result = self.module("patroni_cluster", {"stack": STACK, **args})
        assert not result.get("failed"), result
        return result


@pytest.fixture(scope="module")
def ha(tmp_path_factory):
    """A three-host lab, the local-swarm inventory's stack deployed on it; removed at the end."""
    lab_cli("down", name=LAB.name)
    # Hardened hosts (root's SSH login refused, a deploy user with sudo): the Swarm is deployed through sudo.
    lab_cli("up", "--hosts", "3", "--deploy-user", "deploy", name=LAB.name)
    inventory = tmp_path_factory.mktemp("inventory-ha")
    shutil.copytree(ROOT / "inventories" / "local-swarm", inventory, dirs_exist_ok=True)
    hosts = inventory / "hosts.yml"
    hosts.write_text(hosts.read_text().replace("pliers-swarm-", f"{LAB.name}-"))
    # Its figures apart from the swarm lane's (.lab/reports/faults-swarm-ha.json).
    target = HA("swarm-ha", inventory, SPEC)
    first = target.deploy()
    assert first.returncode == 0, f"the first deploy failed:\n{output(first)}"
    yield target
    lab_cli("down", name=LAB.name, check=False)


def stack_gone(node: lab_hosts.Host) -> bool:
    return not lab_hosts.ssh(node, f"docker ps -aq --filter label=com.docker.stack.namespace={STACK}").stdout.strip()


def volumes_removed(node: lab_hosts.Host) -> bool:
    volumes = f"{STACK}_postgres_member_data {STACK}_postgres_etcd_data"
    return lab_hosts.ssh(node, f"docker volume rm -f {volumes}", check=False).returncode == 0


def leader(target: HA) -> str:
    return target.cluster()["leader"]


def failed_seconds(client: Client, since: float) -> float:
    """The seconds from the first to the last failed write sent after `since` (0.0 when none failed)."""
    moments = [sent for sent, _, _ in client.write_failures if sent >= since]
    return round(moments[-1] - moments[0], 1) if moments else 0.0


def test_the_ha_database_runs_a_primary_and_two_streaming_replicas_and_a_rerun_changes_nothing(ha):
    cluster = ha.cluster(replicas=2)
    roles = sorted(member["role"] for member in cluster["members"])
    # Synchronous replication: one of the replicas is the synchronous standby.
    assert roles == ["leader", "replica", "sync_standby"], cluster["members"]
    assert all(member["lag_mb"] in (None, 0) for member in cluster["members"]), cluster["members"]
    again = ha.deploy()
    assert again.returncode == 0, output(again)
    assert set(recap_changed(again)) == {0}, output(again)
    # etcd runs as postgres_etcd_uid (its upstream image's user is root), on a volume the deploy made for that user:
    # every file of it is the user's (the volume's top too, which Docker would have given the image's owner).
    etcd_data = f"$(docker volume inspect --format '{{{{.Mountpoint}}}}' {STACK}_postgres_etcd_data)"
    seen = (
        f"docker inspect --format '{{{{.Config.User}}}}' $(docker ps -q --filter name={STACK}_etcd-); "
        f"find {etcd_data} \\( ! -user 2379 -o ! -group 2379 \\) -print | head -3; ls {etcd_data}"
    )
    for name in lab_hosts.running_hosts(LAB):
        user, *rest = lab_hosts.ssh(lab_hosts.lab_host(LAB, name), seen).stdout.split()
        assert (user, rest) == ("2379:2379", [f"etcd-{name}"]), (name, user, rest)
    # Prometheus scrapes each member's Patroni: three run PostgreSQL, one of them the primary.
    for query, value in (("count(patroni_postgres_running == 1)", "3"), ("sum(patroni_primary)", "1")):
        wait_for(lambda query=query, value=value: [r for r in ha.promql(query) if r["value"][1] == value],
                 timeout=90, what=f"{query} = {value}")  # fmt: skip
    # A write through the edge (the api, through the proxy, to the primary) reaches every member.
    status, body = http(f"{ha.edge}/api/items", method="POST", body={"name": "on-every-member"})
    assert status == 201, body
    count = (
        "docker exec $(docker ps -q --filter label=com.docker.swarm.service.name=pliers-local_postgres-member) "
        "psql -U pliers -d pliers -tAc \"select count(*) from items where name = 'on-every-member'\""
    )
    for name in lab_hosts.running_hosts(LAB):
        node = lab_hosts.lab_host(LAB, name)
        wait_for(
            lambda node=node: lab_hosts.ssh(node, count).stdout.strip() == "1", timeout=10, what=f"the item on {name}"
        )


def test_a_switchover_moves_the_primary_while_the_services_write(ha):
    before = leader(ha)
    with Client(ha.edge, tag="switchover") as client:
        time.sleep(3)
        started = client.now()
        result = ha.deploy("switchover.yml")
        time.sleep(3)
    assert result.returncode == 0, output(result)
    after = leader(ha)
    assert after != before
    seconds = failed_seconds(client, started)
    report(ha, "switchover", f"switchover.yml from {before} to {after}", client, seconds, failed_seconds=seconds)
    assert client.lost() == [], client.summary()
    assert seconds <= SWITCHOVER_BOUND, client.summary()
    # Asked again to move it to where it is: nothing changes.
    again = ha.deploy("switchover.yml", "-e", f"pliers_switchover_to={after}")
    assert again.returncode == 0 and set(recap_changed(again)) == {0}, output(again)


def test_the_primarys_node_lost_writes_resume_with_none_lost_and_the_node_rejoins_as_a_replica(ha):
    # The edge's node stays up (losing it is the edge's case, not the database's).
    if leader(ha) == SPEC["edge"]:
        assert ha.deploy("switchover.yml").returncode == 0
    lost_node = leader(ha)
    assert lost_node != SPEC["edge"]
    with Client(ha.edge, tag="failover") as client:
        time.sleep(5)
        stopped = client.now()
        docker("kill", lost_node)
        time.sleep(FAILOVER_BOUND + 20)
    resumed = client.recovery(stopped)
    report(ha, "primary's node lost", f"docker kill {lost_node}", client, resumed,
           failed_seconds=failed_seconds(client, stopped))  # fmt: skip
    # Synchronous replication: every write acknowledged before, during and after is there.
    assert client.lost() == [], client.summary()
    assert resumed <= FAILOVER_BOUND, client.summary()
    assert leader(ha) != lost_node

    # The node back: its member rejoins the new primary as a replica (pg_rewind), with no operator step.
    docker("start", lost_node)
    cluster = ha.cluster(replicas=2, timeout=300)
    rejoined = next(member for member in cluster["members"] if member["name"] == lost_node)
    assert rejoined["state"] == "streaming" and rejoined["role"] in ("replica", "sync_standby"), cluster["members"]
    assert all(member["lag_mb"] in (None, 0) for member in cluster["members"]), cluster["members"]


def synchronous_standby(target: HA) -> str:
    standbys = [m["name"] for m in target.cluster(replicas=2)["members"] if m["role"] == "sync_standby"]
    assert len(standbys) == 1, standbys
    return standbys[0]


def test_the_synchronous_standbys_node_lost_the_other_replica_takes_its_place_and_the_node_rejoins(ha):
    """The worst replica to lose: the one each commit waits for. The primary stays where it is; Patroni names the
    other replica its synchronous standby, and the writes go on."""
    # The edge's node stays up: if its member is the standby, it becomes the primary (and another the standby).
    if synchronous_standby(ha) == SPEC["edge"]:
        moved = ha.deploy("switchover.yml", "-e", f"pliers_switchover_to={SPEC['edge']}")
        assert moved.returncode == 0, output(moved)
    primary, lost_node = leader(ha), synchronous_standby(ha)
    with Client(ha.edge, tag="standby lost") as client:
        time.sleep(5)
        stopped = client.now()
        docker("kill", lost_node)
        time.sleep(FAILOVER_BOUND + 20)
    resumed = client.recovery(stopped)
    report(ha, "synchronous standby's node lost", f"docker kill {lost_node}", client, resumed,
           failed_seconds=failed_seconds(client, stopped))  # fmt: skip
    assert client.lost() == [], client.summary()
    assert resumed <= FAILOVER_BOUND, client.summary()
    cluster = ha.cluster()
    assert cluster["leader"] == primary, cluster["members"]
    assert [m["name"] for m in cluster["members"] if m["role"] == "sync_standby"] not in ([], [lost_node]), cluster

    docker("start", lost_node)
    cluster = ha.cluster(replicas=2, timeout=300)
    rejoined = next(member for member in cluster["members"] if member["name"] == lost_node)
    assert rejoined["state"] == "streaming", cluster["members"]
    assert all(member["lag_mb"] in (None, 0) for member in cluster["members"]), cluster["members"]


def test_a_backup_read_from_a_replica_restores_into_a_fresh_cluster(ha):
    for name in ("before the backup", "a second one"):
        status, body = http(f"{ha.edge}/api/items", method="POST", body={"name": name})
        assert status == 201, body
    listed = items(ha)
    backup = ha.deploy("backup.yml")
    assert backup.returncode == 0, output(backup)
    name = newest_backup(ha)
    manifest = json.loads(lab_hosts.ssh(ha.db, f"cat {BACKUPS}/{name}/manifest.json").stdout)
    # A replica streamed: the dump was read from it, not from the primary.
    assert manifest["postgres_from"] == "replica", manifest

    # A fresh cluster: the stack removed, with the members' and etcd's volumes on every node, then deployed again.
    lab_hosts.ssh(ha.deployer, f"docker stack rm {STACK}")
    for host in lab_hosts.running_hosts(LAB):
        node = lab_hosts.lab_host(LAB, host)
        wait_for(lambda node=node: stack_gone(node), timeout=120, what=f"the stack's containers gone from {host}")
        wait_for(lambda node=node: volumes_removed(node), timeout=60, what=f"the database's volumes removed on {host}")
    fresh = ha.deploy()
    assert fresh.returncode == 0, output(fresh)
    assert json.loads(items(ha)) == []

    restore = ha.deploy("restore.yml", "-e", f"backup={name}")
    assert restore.returncode == 0, output(restore)
    assert items(ha) == listed
    # Restored through the primary, replicated to every member.
    cluster = ha.cluster(replicas=2)
    assert all(member["lag_mb"] in (None, 0) for member in cluster["members"]), cluster["members"]


def on_member(host: str, sql: str) -> str:
    """What one member's PostgreSQL answers (on its own node, through its socket)."""
    node = lab_hosts.lab_host(LAB, host)
    return lab_hosts.ssh(node, f'{MEMBER_PSQL} "{sql}"').stdout.strip()


MEMBER_PSQL = (
    f"docker exec $(docker ps -q --filter label=com.docker.swarm.service.name={STACK}_postgres-member) "
    "psql -U pliers -d pliers -tAc"
)


def restarted_with(cluster: dict, setting: str, value: str) -> dict[str, float]:
    """Each member's start time (epoch seconds), every member asserted to run with setting at value, none pending."""
    assert not any(member["pending_restart"] for member in cluster["members"]), cluster
    started_at = {}
    for member in cluster["members"]:
        assert on_member(member["name"], f"show {setting}") == value, member
        started_at[member["name"]] = float(
            on_member(member["name"], "select extract(epoch from pg_postmaster_start_time())")
        )
    # Every member restarted during the deploy.
    assert all(moment > time.time() - 600 for moment in started_at.values()), started_at
    return started_at


# A setting PostgreSQL reads only at start: each member must restart for it.
RESTART_SETTING = {"postgres_parameters": {"max_connections": 150}}


def test_a_setting_that_needs_a_restart_rolls_the_replicas_first_then_the_primary_after_a_switchover(ha):
    before = leader(ha)
    with Client(ha.edge, tag="rolling restart") as client:
        time.sleep(3)
        started = client.now()
        result = ha.deploy("deploy.yml", "-e", json.dumps(RESTART_SETTING))
        time.sleep(3)
    assert result.returncode == 0, output(result)
    seconds = failed_seconds(client, started)
    report(ha, "rolling restart", "postgres_parameters max_connections 150", client, seconds, failed_seconds=seconds)
    assert client.lost() == [], client.summary()
    # The only pause is the switchover's.
    assert seconds <= SWITCHOVER_BOUND, client.summary()
    cluster = ha.cluster(replicas=2)
    assert cluster["leader"] != before, cluster
    started_at = restarted_with(cluster, "max_connections", "150")
    # The old primary restarted last (after the replicas, once it handed over).
    assert max(started_at, key=started_at.get) == before, started_at
    again = ha.deploy("deploy.yml", "-e", json.dumps(RESTART_SETTING))
    assert again.returncode == 0 and set(recap_changed(again)) == {0}, output(again)


def test_rotated_member_passwords_are_the_databases_before_the_members_use_them(ha):
    rotated = {
        **RESTART_SETTING,
        **{
            f"postgres_{login}_password": f"rotated-{login}-7c1e9a40b2d35f86"
            for login in ("replication", "rewind", "restapi")
        },
    }
    result = ha.deploy("deploy.yml", "-e", json.dumps(rotated))
    assert result.returncode == 0, output(result)
    # Every member restarted with the new passwords (their secrets changed): the replicas stream, logged in with it.
    cluster = ha.cluster(replicas=2, timeout=300)
    assert all(member["lag_mb"] in (None, 0) for member in cluster["members"]), cluster["members"]
    senders = on_member(cluster["leader"], "select count(*) from pg_stat_replication where usename = 'replicator'")
    assert senders == "2", cluster
    # The REST API's new login: a switchover goes through.
    moved = ha.deploy("switchover.yml", "-e", json.dumps(rotated))
    assert moved.returncode == 0, output(moved)
    assert leader(ha) != cluster["leader"]


def test_one_etcd_member_lost_the_primary_still_moves_and_the_member_rejoins(ha):
    """etcd keeps its majority with two of three: Patroni still reads and writes its keys (a switchover goes through
    under the client), and the member back catches up."""
    host = leader(ha)
    etcd = f"{STACK}_etcd-{host}"
    node = lab_hosts.lab_host(LAB, host)
    running = f"docker ps -q --filter label=com.docker.swarm.service.name={etcd}"
    lab_hosts.ssh(ha.deployer, f"docker service scale --detach {etcd}=0")
    wait_for(lambda: not lab_hosts.ssh(node, running).stdout.strip(), timeout=60, what=f"{etcd} stopped")
    try:
        with Client(ha.edge, tag="etcd member lost") as client:
            time.sleep(3)
            started = client.now()
            result = ha.deploy("switchover.yml")
            time.sleep(3)
    finally:
        lab_hosts.ssh(ha.deployer, f"docker service scale --detach {etcd}=1")
    assert result.returncode == 0, output(result)
    seconds = failed_seconds(client, started)
    report(ha, "etcd member lost", f"{etcd} scaled to 0, then switchover.yml", client, seconds, failed_seconds=seconds)
    assert client.lost() == [], client.summary()
    assert seconds <= SWITCHOVER_BOUND, client.summary()
    assert leader(ha) != host
    # Back: the three members of etcd answer, each healthy.
    health = f"docker exec $({running}) etcdctl endpoint health --cluster 2>&1"
    wait_for(lambda: lab_hosts.ssh(node, health, check=False).stdout.count("is healthy") == 3,
             timeout=90, what="the three etcd members healthy")  # fmt: skip


def test_a_changed_member_spec_rolls_the_members_one_at_a_time_with_none_lost(ha):
    """A change of the members' service itself (here their memory limit; an image upgrade the same) is Swarm's
    rolling update, one member at a time, each ready before the next: when the primary's turn comes Patroni hands its
    leadership over as it stops. Measured, and bounded as a failover."""
    before = leader(ha)
    with Client(ha.edge, tag="member roll") as client:
        time.sleep(3)
        started = client.now()
        # The settings as the tests before left them: the spec alone changes.
        result = ha.deploy("deploy.yml", "-e", json.dumps({**RESTART_SETTING, "postgres_memory": "600M"}))
        time.sleep(3)
    assert result.returncode == 0, output(result)
    seconds = failed_seconds(client, started)
    report(
        ha, "member spec rolled", f"postgres_memory 600M (primary {before})", client, seconds, failed_seconds=seconds
    )
    assert client.lost() == [], client.summary()
    # The writes fail only while the primary's member stops and another takes over.
    assert seconds <= FAILOVER_BOUND, client.summary()
    cluster = ha.cluster(replicas=2, timeout=300)
    assert all(member["lag_mb"] in (None, 0) for member in cluster["members"]), cluster["members"]


# A lowered max_connections (from RESTART_SETTING's 150), the member spec as the test before left it: a replica may
# not run with less than its primary, so the primary restarts first, in place; writes pause while it restarts.
LOWERED_SETTING = {"postgres_parameters": {"max_connections": 100}, "postgres_memory": "600M"}
RESTART_IN_PLACE_BOUND = 10


def test_a_lowered_setting_restarts_the_primary_first_in_place_then_the_replicas(ha):
    before = leader(ha)
    with Client(ha.edge, tag="lowered setting") as client:
        time.sleep(3)
        started = client.now()
        result = ha.deploy("deploy.yml", "-e", json.dumps(LOWERED_SETTING))
        time.sleep(3)
    assert result.returncode == 0, output(result)
    seconds = failed_seconds(client, started)
    report(ha, "lowered setting", "postgres_parameters max_connections 150 -> 100", client, seconds,
           failed_seconds=seconds)  # fmt: skip
    assert client.lost() == [], client.summary()
    assert seconds <= RESTART_IN_PLACE_BOUND, client.summary()
    cluster = ha.cluster(replicas=2, timeout=300)
    # No switchover: the primary restarted where it was.
    assert cluster["leader"] == before, cluster
    started_at = restarted_with(cluster, "max_connections", "100")
    # The primary restarted first.
    assert min(started_at, key=started_at.get) == before, started_at
    again = ha.deploy("deploy.yml", "-e", json.dumps(LOWERED_SETTING))
    assert again.returncode == 0 and set(recap_changed(again)) == {0}, output(again)


# A node cut off from the others: every packet between it and another address of the lab's network dropped, in both
# directions (the test's own address, the network's gateway, stays: SSH to it works).
PARTITION = """
table inet pliers_partition {{
  chain input {{ type filter hook input priority -1; ip saddr {subnet} ip saddr != {gateway} drop; }}
  chain forward {{ type filter hook forward priority -1; ip saddr {subnet} ip saddr != {gateway} drop;
                   ip daddr {subnet} ip daddr != {gateway} drop; }}
  chain output {{ type filter hook output priority -1; ip daddr {subnet} ip daddr != {gateway} drop; }}
}}
"""
# Writes resume within this many seconds of the primary's node cut off: the leader key's expiry as when it is lost,
# and the Swarm's own time to see the node gone (until then the edge may still try the services' tasks there).
PARTITION_BOUND = 45


def test_the_primarys_node_cut_off_a_replica_takes_over_and_the_node_rejoins_when_the_network_heals(ha):
    if leader(ha) == SPEC["edge"]:
        assert ha.deploy("switchover.yml").returncode == 0
    cut = leader(ha)
    subnet, gateway = docker(
        "network", "inspect", "-f", "{{(index .IPAM.Config 0).Subnet}} {{(index .IPAM.Config 0).Gateway}}", LAB.network
    ).stdout.split()
    node = lab_hosts.lab_host(LAB, cut)
    try:
        with Client(ha.edge, tag="partition") as client:
            time.sleep(5)
            started = client.now()
            lab_hosts.ssh(node, "nft -f -", input=PARTITION.format(subnet=subnet, gateway=gateway))
            time.sleep(PARTITION_BOUND + 15)
        resumed = client.recovery(started)
        # The majority's side: a member there leads.
        promoted = leader(ha)
    finally:
        lab_hosts.ssh(node, "nft delete table inet pliers_partition", check=False)
    report(ha, "primary's node cut off", f"nft on {cut}: no packet to or from the other nodes", client, resumed,
           failed_seconds=failed_seconds(client, started))  # fmt: skip
    assert client.lost() == [], client.summary()
    assert resumed <= PARTITION_BOUND, client.summary()
    assert promoted != cut

    # Healed: the cut-off member, demoted while it could not reach etcd, follows the new primary by itself.
    cluster = ha.cluster(replicas=2, timeout=300)
    rejoined = next(member for member in cluster["members"] if member["name"] == cut)
    assert rejoined["state"] == "streaming", cluster["members"]
    assert all(member["lag_mb"] in (None, 0) for member in cluster["members"]), cluster["members"]
