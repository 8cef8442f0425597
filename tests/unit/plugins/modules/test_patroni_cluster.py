"""patroni_cluster's decisions, against a member whose patronictl answers from a script: when it waits, when it
fails and what it names, when a switchover happens and when it is already done. (The lab's HA tests run it against a
real cluster: tests/lab/test_database_ha.py.)"""

from __future__ import annotations

import json

import pytest
from ansible_collections.pliers.deploy.plugins.modules import patroni_cluster
from ansible_collections.pliers.deploy.plugins.modules.patroni_cluster import ClusterError, run


def member(name: str, role: str, state: str, timeline: int = 2, lag=0, pending: bool = False) -> dict:
    entry = {"Cluster": "pliers-prod", "Member": name, "Host": "10.0.0.1", "Role": role, "State": state, "TL": timeline}
    if role != "Leader":
        entry["Lag in MB"] = lag
    if pending:
        entry["Pending restart"] = "*"
    return entry


HEALTHY = [member("db-1", "Leader", "running"), member("db-2", "Sync Standby", "streaming"),
           member("db-3", "Replica", "streaming")]  # fmt: skip
SWITCHED = [member("db-1", "Replica", "streaming", 3), member("db-2", "Leader", "running", 3),
            member("db-3", "Replica", "streaming", 3)]  # fmt: skip


class FakeMember:
    """A member container: `patronictl list` answers each listing in turn (the last one again), its REST API the
    cluster's configuration, `switchover` and `restart` what Patroni said; every command is kept."""

    def __init__(self, *listings: list[dict], config: dict | None = None,
                 switchover: bytes = b"Successfully switched over",
                 restart: bytes = b"Success: restart on member") -> None:  # fmt: skip
        self.listings = list(listings)
        self.config = {"synchronous_mode": True, "ttl": 20, "loop_wait": 5} if config is None else config
        self.answers = {"switchover": switchover, "restart": restart}
        self.commands: list[list[str]] = []
        self.patches: list[dict] = []

    def exec_run(self, command, demux=False):
        self.commands.append(command)
        if command[0] == "python3":
            if len(command) > 3:  # a change, the JSON document its argument
                self.patches.append(json.loads(command[3]))
                return 0, (b"{}", b"")
            return 0, (json.dumps(self.config).encode(), b"")
        if command[2] == "list":
            listing = self.listings.pop(0) if len(self.listings) > 1 else self.listings[0]
            return 0, (json.dumps(listing).encode(), b"")
        if command[2] in self.answers:
            return 0, (self.answers[command[2]], b"")
        return 1, (b"", b"unknown command")

    def ran(self, verb: str) -> list[list[str]]:
        return [command[2:] for command in self.commands if command[0] != "python3" and command[2] == verb]

    def switched(self) -> bool:
        return bool(self.ran("switchover"))


class FakeContainers:
    def __init__(self, container) -> None:
        self.container = container

    def list(self, filters):
        assert filters == {"label": "com.docker.swarm.service.name=pliers-prod_postgres-member", "status": "running"}
        return [self.container] if self.container else []


class FakeClient:
    def __init__(self, container) -> None:
        self.containers = FakeContainers(container)


class FakeModule:
    def __init__(self, check_mode: bool = False, **params) -> None:
        defaults = {"stack": "pliers-prod", "service": "postgres-member", "state": "present", "leader": None,
                    "candidate": None, "replicas": None, "synchronous": None, "parameters": None,
                    "timeout": 5}  # fmt: skip
        self.params = {**defaults, **params}
        self.check_mode = check_mode


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch):
    """Time passes a second per poll, without waiting for it."""
    clock = {"now": 0.0}
    monkeypatch.setattr(patroni_cluster.time, "monotonic", lambda: clock["now"])
    monkeypatch.setattr(patroni_cluster.time, "sleep", lambda seconds: clock.__setitem__("now", clock["now"] + seconds))


def test_it_reports_the_leader_and_each_member_and_changes_nothing():
    result = run(FakeModule(), FakeClient(FakeMember(HEALTHY)))
    assert result["changed"] is False and result["cluster"] == "pliers-prod" and result["leader"] == "db-1"
    assert result["members"][1] == {"name": "db-2", "role": "sync_standby", "state": "streaming", "timeline": 2,
                                    "lag_mb": 0, "pending_restart": False, "pending_reason": ""}  # fmt: skip
    assert result["members"][0]["lag_mb"] is None


def test_it_waits_for_a_leader_and_the_replicas_asked_for():
    electing = [member("db-1", "Replica", "running"), member("db-2", "Replica", "streaming")]
    rejoining = HEALTHY[:2] + [member("db-3", "Replica", "starting", lag="unknown")]
    target = FakeMember(electing, electing, rejoining, HEALTHY)
    result = run(FakeModule(replicas=2), FakeClient(target))
    assert result["leader"] == "db-1"
    assert len([c for c in target.commands if c[2] == "list"]) == 4


def test_no_leader_fails_naming_the_cluster_and_each_members_state():
    down = [member("db-1", "Replica", "stopped"), member("db-2", "Replica", "streaming")]
    with pytest.raises(ClusterError) as failure:
        run(FakeModule(), FakeClient(FakeMember(down)))
    assert str(failure.value) == (
        "the HA database pliers-prod has no leader after 5 s: db-1 replica stopped, db-2 replica streaming"
    )
    # A leader whose replicas are not back is not the cluster asked for either.
    with pytest.raises(ClusterError, match="no leader and 3 replicas streaming after 5 s"):
        run(FakeModule(replicas=3), FakeClient(FakeMember(HEALTHY)))


def test_it_runs_only_where_a_member_runs():
    with pytest.raises(ClusterError, match="no member of pliers-prod_postgres-member runs on this host"):
        run(FakeModule(), FakeClient(None))


def test_a_switchover_hands_the_primary_over_and_waits_until_the_old_one_follows():
    # The old primary is still stopping, then follows the new one.
    stopping = [member("db-1", "Replica", "stopped"), member("db-2", "Leader", "running", 3), HEALTHY[2]]
    # The synchronous standby restarting: not one again yet, then one.
    restarting = [HEALTHY[0], member("db-2", "Replica", "streaming"), HEALTHY[2]]
    target = FakeMember(HEALTHY, restarting, HEALTHY, stopping, SWITCHED)
    result = run(FakeModule(state="switched_over", candidate="db-2"), FakeClient(target))
    switchover = ["switchover", "pliers-prod", "--leader", "db-1", "--candidate", "db-2", "--force"]
    assert target.ran("switchover") == [switchover]
    assert (result["changed"], result["switched_from"], result["leader"]) == (True, "db-1", "db-2")
    # Asked until db-2 was the synchronous standby again, then until the old primary followed.
    assert len(target.ran("list")) == 5


def test_a_switchover_with_no_replica_that_may_take_over_fails_naming_each_members_state():
    alone = [HEALTHY[0], member("db-2", "Replica", "streaming"), member("db-3", "Replica", "stopped")]
    target = FakeMember(HEALTHY, alone)
    with pytest.raises(ClusterError) as failure:
        run(FakeModule(state="switched_over"), FakeClient(target))
    assert str(failure.value) == (
        "no synchronous standby of pliers-prod streams to take over from db-1 within 5 s: db-1 leader running, "
        "db-2 replica streaming, db-3 replica stopped"
    )
    assert not target.switched()


@pytest.mark.parametrize(
    ("params", "switches"),
    [
        ({"leader": "db-1"}, True),  # away from the leader
        ({"leader": "db-2"}, False),  # db-2 does not lead: already away from it
        ({"candidate": "db-1"}, False),  # the candidate leads already
        ({"candidate": "db-2"}, True),  # the synchronous standby
        ({}, True),  # away from whichever leads
    ],
)
def test_a_switchover_happens_only_when_the_primary_is_not_where_asked(params, switches):
    target = FakeMember(HEALTHY, HEALTHY, SWITCHED)
    result = run(FakeModule(state="switched_over", **params), FakeClient(target))
    assert target.switched() is switches
    assert result["changed"] is switches
    assert result["switched_from"] == ("db-1" if switches else "")


def test_check_mode_says_it_would_switch_over_and_switches_nothing():
    target = FakeMember(HEALTHY)
    result = run(FakeModule(check_mode=True, state="switched_over"), FakeClient(target))
    assert (result["changed"], result["switched_from"], target.switched()) == (True, "db-1", False)


def test_an_unknown_candidate_or_a_switchover_that_does_not_complete_fails_naming_it():
    with pytest.raises(ClusterError, match=r"candidate db-9 is no member of pliers-prod \(db-1, db-2, db-3\)"):
        run(FakeModule(state="switched_over", candidate="db-9"), FakeClient(FakeMember(HEALTHY)))
    with pytest.raises(ClusterError, match=r"leader db-0 is no member of pliers-prod \(db-1, db-2, db-3\)"):
        run(FakeModule(state="switched_over", leader="db-0"), FakeClient(FakeMember(HEALTHY)))
    with pytest.raises(ClusterError, match="the switchover of pliers-prod away from db-1 did not complete in 5 s"):
        run(FakeModule(state="switched_over"), FakeClient(FakeMember(HEALTHY)))


def test_a_refused_switchover_fails_at_once_with_what_patroni_said():
    # patronictl prints a refusal and exits 0.
    refused = FakeMember(HEALTHY, switchover=b"Switchover failed, details: 412, switchover is not possible")
    with pytest.raises(ClusterError, match="was refused: Switchover failed, details: 412, switchover is not possible"):
        run(FakeModule(state="switched_over"), FakeClient(refused))


def test_in_synchronous_mode_only_the_synchronous_standby_may_take_over():
    target = FakeMember(HEALTHY)
    with pytest.raises(ClusterError, match=r"candidate db-3 is not the synchronous standby of pliers-prod \(db-2\)"):
        run(FakeModule(state="switched_over", candidate="db-3"), FakeClient(target))
    assert not target.switched()


@pytest.mark.parametrize(
    ("config", "wanted", "changes"),
    [
        ({"synchronous_mode": True}, True, False),
        ({"synchronous_mode": False}, True, True),
        ({"loop_wait": 5}, True, True),  # not set: off
        ({"synchronous_mode": "on"}, False, True),
        ({"loop_wait": 5}, False, False),
    ],
)
def test_the_synchronous_mode_is_brought_to_the_inventorys_and_only_then_changed(config, wanted, changes):
    target = FakeMember(HEALTHY, config=config)
    result = run(FakeModule(synchronous=wanted), FakeClient(target))
    assert (result["changed"], result["synchronous"]) == (changes, wanted)
    assert target.patches == ([{"synchronous_mode": wanted}] if changes else [])
    # Check mode says so and edits nothing.
    target = FakeMember(HEALTHY, config=config)
    assert run(FakeModule(check_mode=True, synchronous=wanted), FakeClient(target))["changed"] is changes
    assert not target.patches


BASE = {"wal_level": "replica", "hot_standby_feedback": "on"}


def test_unchanged_settings_change_nothing_and_restart_nothing():
    target = FakeMember(HEALTHY, config={"loop_wait": 5, "postgresql": {"parameters": {**BASE, "max_wal_senders": 10}}})
    result = run(
        FakeModule(parameters={**BASE, "max_wal_senders": "10", "hot_standby_feedback": True}), FakeClient(target)
    )
    assert (result["changed"], result["parameters_changed"], result["restarted"]) == (False, [], [])
    assert not target.patches and not target.ran("restart")


def test_a_setting_that_needs_no_restart_is_set_and_one_no_longer_wanted_removed():
    target = FakeMember(HEALTHY, config={"loop_wait": 5, "postgresql": {"parameters": {**BASE, "work_mem": "4MB"}}})
    result = run(FakeModule(parameters={**BASE, "log_min_duration_statement": 1000}), FakeClient(target))
    assert result["changed"] is True and result["restarted"] == []
    assert result["parameters_changed"] == ["log_min_duration_statement", "work_mem"]
    assert target.patches == [{"postgresql": {"parameters": {"log_min_duration_statement": 1000, "work_mem": None}}}]


def pending(listing, *names):
    return [{**entry, "Pending restart": "*"} if entry["Member"] in names else entry for entry in listing]


def test_a_setting_that_needs_a_restart_restarts_the_replicas_then_the_primary_after_it_hands_over():
    target = FakeMember(
        HEALTHY,  # the leader found
        pending(HEALTHY, "db-1", "db-2", "db-3"),  # the members applied the change
        pending(HEALTHY, "db-1", "db-3"),  # db-2 restarted, streaming again
        pending(HEALTHY, "db-1", "db-3"),  # db-3 restarting
        pending(HEALTHY, "db-1"),  # db-3 back
        pending(HEALTHY, "db-1"),  # a synchronous standby may take over
        pending(SWITCHED, "db-1"),  # db-2 leads, db-1 follows, still pending
        SWITCHED,  # db-1 restarted, streaming again
        config={"loop_wait": 5, "postgresql": {"parameters": BASE}},
    )
    result = run(FakeModule(parameters={**BASE, "max_connections": 200}), FakeClient(target))
    assert result["restarted"] == ["db-2", "db-3", "db-1"] and result["changed"] is True
    verbs = [command[0] for command in target.ran("restart") + target.ran("switchover")]
    assert verbs == ["restart", "restart", "restart", "switchover"]
    # The order: each replica, then the switchover away from the primary, then the old primary.
    order = [c[2:4] for c in target.commands if c[0] != "python3" and c[2] in ("restart", "switchover")]
    assert order == [["restart", "pliers-prod"]] * 2 + [["switchover", "pliers-prod"], ["restart", "pliers-prod"]]
    restarted = [c[4] for c in target.commands if c[0] != "python3" and c[2] == "restart"]
    assert restarted == ["db-2", "db-3", "db-1"]
    assert result["leader"] == "db-2"
    # The cluster's configuration is read once, and changed once.
    assert len([c for c in target.commands if c[0] == "python3"]) == 2 and len(target.patches) == 1


def test_an_old_primary_its_demotion_restarted_with_the_new_settings_is_not_restarted_again():
    target = FakeMember(
        pending(HEALTHY, "db-1"),  # the leader found, the only one pending
        pending(HEALTHY, "db-1"),  # after the members applied the change
        pending(HEALTHY, "db-1"),  # a synchronous standby may take over
        SWITCHED,  # db-2 leads; db-1 follows, its demotion's restart took the setting
        config={"loop_wait": 5, "postgresql": {"parameters": BASE}},
    )
    result = run(FakeModule(parameters={**BASE, "max_connections": 200}), FakeClient(target))
    assert result["restarted"] == ["db-1"] and result["leader"] == "db-2"
    assert target.switched() and not target.ran("restart")


def test_a_member_an_earlier_run_left_pending_is_restarted_without_a_change():
    target = FakeMember(pending(HEALTHY, "db-3"), HEALTHY, config={"loop_wait": 5, "postgresql": {"parameters": BASE}})
    result = run(FakeModule(parameters=BASE), FakeClient(target))
    assert (result["parameters_changed"], result["restarted"]) == ([], ["db-3"])
    assert not target.ran("switchover")


def test_a_failed_restart_or_a_member_that_does_not_come_back_fails_naming_it():
    config = {"loop_wait": 5, "postgresql": {"parameters": BASE}}
    refused = FakeMember(
        pending(HEALTHY, "db-3"), config=config, restart=b"Failed: restart for member db-3, status code=503"
    )
    with pytest.raises(
        ClusterError, match="the restart of db-3 in pliers-prod failed: Failed: restart for member db-3"
    ):
        run(FakeModule(parameters=BASE), FakeClient(refused))
    stuck = FakeMember(pending(HEALTHY, "db-3"), config=config)
    with pytest.raises(ClusterError, match="db-3 did not run again within 5 s of its restart"):
        run(FakeModule(parameters=BASE), FakeClient(stuck))


def test_check_mode_says_what_would_change_and_restart_and_does_neither():
    target = FakeMember(pending(HEALTHY, "db-2"), config={"loop_wait": 5, "postgresql": {"parameters": BASE}})
    result = run(FakeModule(check_mode=True, parameters={**BASE, "max_connections": 200}), FakeClient(target))
    assert (result["changed"], result["parameters_changed"], result["restarted"]) == (
        True,
        ["max_connections"],
        ["db-2"],
    )
    assert not target.patches and not target.ran("restart") and not target.ran("switchover")


def test_a_lowered_setting_a_replica_may_not_hold_lower_restarts_the_primary_first_in_place():
    # PostgreSQL refuses a hot standby a lower max_connections than its primary's: the primary goes first.
    config = {"loop_wait": 5, "postgresql": {"parameters": {**BASE, "max_connections": 150}}}
    target = FakeMember(
        HEALTHY,  # the leader found
        pending(HEALTHY, "db-1", "db-2", "db-3"),  # the members applied the change
        pending(HEALTHY, "db-2", "db-3"),  # db-1 restarted in place, still the primary
        pending(HEALTHY, "db-3"),  # db-2 back
        HEALTHY,  # db-3 back
        config=config,
    )
    result = run(FakeModule(parameters={**BASE, "max_connections": 100}), FakeClient(target))
    assert result["restarted"] == ["db-1", "db-2", "db-3"] and result["leader"] == "db-1"
    assert [c[1] for c in target.ran("restart")] == ["pliers-prod"] * 3
    assert [c[2] for c in target.ran("restart")] == ["db-1", "db-2", "db-3"]
    assert not target.switched()


def test_a_replica_that_kept_its_primarys_earlier_value_is_restarted_once_more_once_it_streams():
    config = {"loop_wait": 5, "postgresql": {"parameters": {**BASE, "max_connections": 150}}}
    still = pending(HEALTHY, "db-2")
    target = FakeMember(HEALTHY, pending(HEALTHY, "db-1", "db-2"), still, *[still] * 40, HEALTHY, config=config)
    result = run(FakeModule(parameters={**BASE, "max_connections": 100}, timeout=60), FakeClient(target))
    assert result["restarted"] == ["db-1", "db-2"]
    assert [c[2] for c in target.ran("restart")] == ["db-1", "db-2", "db-2"]


def test_a_primary_left_pending_with_a_lowered_setting_restarts_first_too():
    reason = {**HEALTHY[0], "Pending restart": "*", "Pending restart reason": "max_connections: 150->100"}
    target = FakeMember([reason, *HEALTHY[1:]], HEALTHY, config={"loop_wait": 5, "postgresql": {"parameters": BASE}})
    result = run(FakeModule(parameters=BASE), FakeClient(target))
    assert result["restarted"] == ["db-1"] and not target.switched()
    # Raised, or any other setting: the replicas first, then a switchover (the tests above).
    assert patroni_cluster.lowered({"max_connections": 200}, {"max_connections": 100}) is False
    assert patroni_cluster.lowered({"work_mem": "1MB"}, {"work_mem": "4MB"}) is False
    assert patroni_cluster.lowered({"max_wal_senders": 5}, {"max_wal_senders": 10}) is True
    assert patroni_cluster.lowered({"max_connections": None}, {"max_connections": 150}) is True
    assert patroni_cluster.lowered({"work_mem": None}, {"work_mem": "8MB"}) is False
    assert patroni_cluster.leader_lowered([patroni_cluster.normalize(reason), *HEALTHY_MEMBERS[1:]]) is True
    raised = {**reason, "Pending restart reason": "max_connections: 100->150"}
    assert patroni_cluster.leader_lowered([patroni_cluster.normalize(raised), *HEALTHY_MEMBERS[1:]]) is False


HEALTHY_MEMBERS = [patroni_cluster.normalize(entry) for entry in HEALTHY]
