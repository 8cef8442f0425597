"""patroni_cluster's decisions, against a member whose patronictl answers from a script: when it waits, when it
fails and what it names, when a switchover happens and when it is already done. (The lab's HA tests run it against a
real cluster: tests/lab/test_database_ha.py.)"""

from __future__ import annotations

import json

import pytest
from ansible_collections.pliers.deploy.plugins.modules import patroni_cluster
from ansible_collections.pliers.deploy.plugins.modules.patroni_cluster import ClusterError, run


def member(name: str, role: str, state: str, timeline: int = 2, lag=0) -> dict:
    entry = {"Cluster": "pliers-prod", "Member": name, "Host": "10.0.0.1", "Role": role, "State": state, "TL": timeline}
    if role != "Leader":
        entry["Lag in MB"] = lag
    return entry


HEALTHY = [member("db-1", "Leader", "running"), member("db-2", "Sync Standby", "streaming"),
           member("db-3", "Replica", "streaming")]  # fmt: skip
SWITCHED = [member("db-1", "Replica", "streaming", 3), member("db-2", "Leader", "running", 3),
            member("db-3", "Replica", "streaming", 3)]  # fmt: skip


class FakeMember:
    """A member container: `patronictl list` answers each listing in turn (the last one again), `show-config` the
    cluster's configuration, `switchover` what Patroni said; every command is kept."""

    def __init__(self, *listings: list[dict], config: str = "synchronous_mode: true\nttl: 20\n",
                 switchover: bytes = b"Successfully switched over") -> None:  # fmt: skip
        self.listings = list(listings)
        self.config = config
        self.switchover = switchover
        self.commands: list[list[str]] = []

    def exec_run(self, command, demux=False):
        self.commands.append(command)
        if command[2] == "list":
            listing = self.listings.pop(0) if len(self.listings) > 1 else self.listings[0]
            return 0, (json.dumps(listing).encode(), b"")
        if command[2] == "switchover":
            return 0, (self.switchover, b"")
        if command[2] == "show-config":
            return 0, (self.config.encode(), b"")
        if command[2] == "edit-config":
            return 0, (b"", b"")
        return 1, (b"", b"unknown command")

    def switched(self) -> bool:
        return any(command[2] == "switchover" for command in self.commands)


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
                    "candidate": None, "replicas": None, "synchronous": None, "timeout": 5}  # fmt: skip
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
                                    "lag_mb": 0}  # fmt: skip
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
    target = FakeMember(HEALTHY, stopping, SWITCHED)
    result = run(FakeModule(state="switched_over", candidate="db-2"), FakeClient(target))
    switchover = ["switchover", "pliers-prod", "--leader", "db-1", "--candidate", "db-2", "--force"]
    assert target.commands[1] == ["patroni-entrypoint.sh", "patronictl", *switchover]
    assert (result["changed"], result["switched_from"], result["leader"]) == (True, "db-1", "db-2")
    assert len([c for c in target.commands if c[2] == "list"]) == 3


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
    target = FakeMember(HEALTHY, SWITCHED)
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
        ("synchronous_mode: true\n", True, False),
        ("synchronous_mode: false\n", True, True),
        ("loop_wait: 5\n", True, True),  # not set: off
        ("synchronous_mode: on\n", False, True),
        ("loop_wait: 5\n", False, False),
    ],
)
def test_the_synchronous_mode_is_brought_to_the_inventorys_and_only_then_changed(config, wanted, changes):
    target = FakeMember(HEALTHY, config=config)
    result = run(FakeModule(synchronous=wanted), FakeClient(target))
    edits = [command for command in target.commands if command[2] == "edit-config"]
    assert (result["changed"], result["synchronous"]) == (changes, wanted)
    expected = ["edit-config", "pliers-prod", "--force", "--quiet", "--set", f"synchronous_mode={str(wanted).lower()}"]
    assert edits == ([["patroni-entrypoint.sh", "patronictl", *expected]] if changes else [])
    # Check mode says so and edits nothing.
    target = FakeMember(HEALTHY, config=config)
    assert run(FakeModule(check_mode=True, synchronous=wanted), FakeClient(target))["changed"] is changes
    assert not [command for command in target.commands if command[2] == "edit-config"]
