"""compose_rollout's decisions and their orchestration, on fakes shaped as the Docker SDK and the compose CLI answer:
no engine, no CLI (the rollouts themselves run on the real lab: tests/lab/test_releases.py)."""

from __future__ import annotations

import os
import threading
import types

import pytest
from ansible_collections.pliers.deploy.plugins.module_utils import _nginx_edge, _store
from ansible_collections.pliers.deploy.plugins.module_utils._docker import (
    COMPOSE_PROJECT_LABEL,
    COMPOSE_SERVICE_LABEL,
    DockerException,
    ImageNotFound,
    NotFound,
)
from ansible_collections.pliers.deploy.plugins.module_utils._nginx_edge import Edge, EdgeError, upstream
from ansible_collections.pliers.deploy.plugins.modules import compose_rollout
from ansible_collections.pliers.deploy.plugins.modules.compose_rollout import HASH_LABEL, ONEOFF_LABEL, RolloutError

OLD = "hash-of-the-previous-definition"
NEW = "hash-of-the-current-definition"
HEALTHCHECK = {"test": ["CMD", "curl", "-f", "http://localhost/health"], "interval": "2s"}


class FakeContainer:
    """A container as the Docker SDK returns it.

    health: a status, None (no health check), or a list of the statuses successive reload()s find (the last
    one stays). stop/remove/restart are recorded in `calls`, and in the project's `events` once it holds it.
    """

    def __init__(
        self, name, status="running", health="healthy", last="ok", *, config_hash=NEW, service=None, exit_code=1
    ):
        self.id = f"id-{name}"
        self.name = name
        self.status = status
        service = service or name.split("-", 1)[1].rsplit("-", 1)[0]  # p-ai-service-2 -> ai-service
        self.labels = {COMPOSE_PROJECT_LABEL: "p", COMPOSE_SERVICE_LABEL: service, HASH_LABEL: config_hash}
        self.to_come = list(health) if isinstance(health, list) else []
        self.attrs = {"State": {"Status": status, "ExitCode": exit_code}}
        if health is not None:
            first = self.to_come[0] if self.to_come else health
            self.attrs["State"]["Health"] = {"Status": first, "Log": [{"Output": last}]}
        self.calls = []
        self.events = []
        self.engine = None
        self.fail_start = False

    def health_status(self):
        return self.attrs["State"].get("Health", {}).get("Status")

    def set_health(self, status):
        if status != self.health_status():
            self.attrs["State"]["Health"]["Status"] = status
            self.events.append(("health", self.name, status))

    def reload(self):
        if self.to_come:
            self.set_health(self.to_come.pop(0))

    def stop(self):
        self.calls.append("stop")
        self.events.append(("stop", self.name))
        self.status = self.attrs["State"]["Status"] = "exited"

    def remove(self, force=False):
        self.calls.append("remove --force" if force else "remove")
        self.events.append(("remove", self.name))
        if self.engine is not None:
            self.engine.remove(self)

    def start(self):
        if self.fail_start:
            raise DockerException("driver failed programming external connectivity: port is already allocated")
        self.calls.append("start")
        self.events.append(("start", self.name))
        self.status = self.attrs["State"]["Status"] = "running"

    def restart(self):
        self.calls.append("restart")
        self.events.append(("restart", self.name))
        self.set_health("healthy")


class FakeEngine:
    """client.containers: every container of the host, found by their labels."""

    def __init__(self):
        self.containers = []

    def list(self, all=False, filters=None):
        assert all, "stopped containers count too"
        labels = filters["label"]
        wanted = {tuple(label.split("=", 1)) for label in ([labels] if isinstance(labels, str) else labels)}
        return [c for c in self.containers if wanted <= set(c.labels.items())]


class FakeNetworks:
    def __init__(self, ids):
        self.ids = ids

    def list(self):
        return [types.SimpleNamespace(id=network_id) for network_id in self.ids]


class FakeImages:
    """client.images: the images the host has (a pull adds them) and those its registries hold."""

    def __init__(self, here=(), registry=()):
        self.here = set(here)
        self.registry = set(registry)

    def get(self, name):
        if name not in self.here:
            raise ImageNotFound(f"No such image: {name}")

    def get_registry_data(self, name):
        if name not in self.registry:
            raise DockerException(f"manifest for {name} not found: manifest unknown")


class FakeCompose(compose_rollout.Compose):
    """The real Compose's reading of the project model, over a fake CLI and engine.

    run() records each command; `up` creates what Compose would: with --scale, new containers of the current
    definition up to the count (created, not started, with --no-start); without, the service's containers that
    differ or are stopped recreated. fail_up: services whose up fails; fail_start: whose new containers fail to start.
    `pull` adds the services' images to client.images (on_pull(services) called first, if set; fail_pull: services
    whose pull fails).
    """

    def __init__(self, services, containers=(), *, new_health=None, fail_up=(), fail_start=(), fail_pull=()):
        # Not Compose.__init__: there is no CLI to ask for the model.
        self.model = {"name": "p", "services": services}
        self.project = "p"
        self.desired = dict.fromkeys(services, NEW)
        self.new_health = new_health or {}
        self.fail_up = set(fail_up)
        self.fail_start = set(fail_start)
        self.engine = FakeEngine()
        self.images = FakeImages()
        self.fail_pull = set(fail_pull)
        self.on_pull = None
        self.client = types.SimpleNamespace(
            containers=self.engine, networks=FakeNetworks(["net-backend"]), images=self.images
        )
        self.network_ids = None
        self.initial_hashes = {}
        self.commands = []
        self.events = []
        self.created = []
        self.last_number = {}
        for container in containers:
            self.add(container)

    def add(self, container):
        container.engine = self.engine.containers
        container.events = self.events
        self.engine.containers.append(container)
        service = container.labels[COMPOSE_SERVICE_LABEL]
        number = int(container.name.rsplit("-", 1)[1])
        self.last_number[service] = max(self.last_number.get(service, 0), number)
        return container

    def create(self, service, status="running"):
        self.last_number[service] = self.last_number.get(service, 0) + 1
        name = f"p-{service}-{self.last_number[service]}"
        health = self.new_health.get(service, "healthy")
        container = FakeContainer(name, status=status, health=health, config_hash=self.desired[service])
        container.fail_start = service in self.fail_start
        self.created.append(self.add(container))

    def hashes(self, services):
        return {service: self.desired[service] for service in services}

    def run(self, *args):
        self.commands.append(" ".join(args))
        self.events.append(("compose", " ".join(args)))
        if args[:2] == ("pull", "--quiet"):
            if self.on_pull:
                self.on_pull(args[2:])
            if set(args[2:]) & self.fail_pull:
                raise RolloutError(f"docker compose {' '.join(args)} failed (exit 18): connection reset by peer")
            self.images.here.update(self.definition(service)["image"] for service in args[2:])
            return ""
        assert args[:2] in (("up", "--detach"), ("up", "--no-start")), args
        status = "created" if args[1] == "--no-start" else "running"
        scale, services, words = {}, [], iter(args[2:])
        for word in words:
            if word == "--scale":
                service, count = next(words).split("=")
                scale[service] = int(count)
            elif not word.startswith("--"):
                services.append(word)
        if set(services) & self.fail_up:
            raise RolloutError(f"docker compose {' '.join(args)} failed (exit 1): port is already allocated")
        for service in services:
            if service in scale:
                for _count in range(scale[service] - len(self.containers(service))):
                    self.create(service, status)
                continue
            for container in self.containers(service):
                if container.labels[HASH_LABEL] != self.desired[service] or container.status != "running":
                    container.remove(force=True)
            for _count in range(self.replicas(service) - len(self.containers(service))):
                self.create(service)
        return ""


class FakeModule:
    def __init__(self, check_mode=False, **params):
        self.check_mode = check_mode
        self._diff = False
        self.params = {
            "timeout": 30,
            "drain": 0,
            "edge": None,
            "upstreams_dir": None,
            "routes": {},
            "sync_command": ["sh", "/etc/nginx/conf.d/pliers-edge.sh", "sync"],
            "drain_command": ["sh", "/etc/nginx/conf.d/pliers-edge.sh", "drained"],
            **params,
        }


class FakeEdge:
    """What roll() asks of the edge, recorded among the project's events."""

    def __init__(self, events):
        self.events = events
        self.reloaded = False
        self.loads = []

    def sync(self, force=False):
        self.events.append(("sync",))
        return False

    def point(self, service, names):
        self.events.append(("point", service, sorted(names)))
        return True

    def flush(self):
        self.events.append(("flush",))

    def load(self, *services):
        self.loads.append(services)
        self.flush()

    def drain(self, seconds):
        self.events.append(("drain", seconds))


class FakeClock:
    """compose_rollout's time: sleep() returns at once and moves the clock on (recorded among `events`)."""

    def __init__(self):
        self.now = 1000.0
        self.slept = []
        self.events = []

    def monotonic(self):
        return self.now

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.events.append(("sleep", seconds))
        self.now += seconds


@pytest.fixture(autouse=True)
def clock(monkeypatch):
    # The modules' references to `time` only: pytest's own clock is left alone.
    clock = FakeClock()
    monkeypatch.setattr(compose_rollout, "time", clock)
    monkeypatch.setattr(_nginx_edge, "time", clock)
    return clock


def names(containers):
    return [c.name for c in containers]


def api(*containers, replicas=2, **kwargs):
    """A project whose api service, behind the edge, runs these containers."""
    return FakeCompose({"api": {"healthcheck": HEALTHCHECK, "deploy": {"replicas": replicas}}}, containers, **kwargs)


def roll_api(compose, check_mode=False, **params):
    """roll() of the api alone: its report."""
    (report,) = compose_rollout.roll(
        FakeModule(check_mode, **params), compose, FakeEdge(compose.events), ["api"], {"api": NEW}, set()
    )
    return report


# --- health and waits -------------------------------------------------------------------------------------------


def test_the_upstream_names_each_container_and_is_never_empty():
    text = upstream("api", 3000, ["p-api-3", "p-api-4"])
    assert "upstream api {" in text and "least_conn;" in text
    assert "server p-api-3:3000 max_fails=3" in text and "server p-api-4:3000" in text
    assert "server 127.0.0.1:9 down;" in upstream("api", 3000, [])


def test_healthy_containers_pass():
    compose_rollout.wait_healthy([FakeContainer("p-api-2")], "api", timeout=1)


def test_a_running_container_without_health_check_counts_as_healthy():
    assert compose_rollout.health(FakeContainer("p-cache-1", health=None)) == ("healthy", "running (no health check)")


def test_an_unhealthy_container_fails_at_once_with_what_its_check_said(clock):
    sick = FakeContainer("p-api-2", health="unhealthy", last="HTTP Error 503: Service Unavailable\n")
    with pytest.raises(RolloutError) as error:
        compose_rollout.wait_healthy([FakeContainer("p-api-3"), sick], "api", timeout=60)
    assert str(error.value) == (
        "the container p-api-2 is unhealthy (its health check last said: HTTP Error 503: Service Unavailable)"
    )
    assert clock.slept == []


def test_an_exited_container_fails_with_its_exit_code():
    with pytest.raises(RolloutError, match=r"^the container p-web-2 is exited \(.*container exited \(exit code 1\)"):
        compose_rollout.wait_healthy([FakeContainer("p-web-2", status="exited")], "web", timeout=60)


def test_a_container_still_starting_at_the_deadline_fails_naming_it():
    starting = FakeContainer("p-ai-service-2", health="starting", last="connection refused")
    with pytest.raises(RolloutError) as error:
        compose_rollout.wait_healthy([starting], "ai-service", timeout=0)
    assert str(error.value) == (
        "the container p-ai-service-2 did not turn healthy in 0s "
        "(still starting; its health check last said: connection refused)"
    )


def test_a_container_starting_is_read_again_every_quarter_second(clock):
    late = FakeContainer("p-api-2", health=["starting", "starting", "starting", "healthy"])
    compose_rollout.wait_healthy([late], "api", timeout=60)
    assert clock.slept == [0.25, 0.25, 0.25]


def test_wait_all_healthy_returns_only_the_services_that_failed_with_their_health_output():
    failures = compose_rollout.wait_all_healthy(
        {
            "db": [FakeContainer("p-db-1")],
            "cache": [FakeContainer("p-cache-1"), FakeContainer("p-cache-2", health="unhealthy", last="PONG missing")],
        },
        timeout=60,
    )
    assert failures == {"cache": "the container p-cache-2 is unhealthy (its health check last said: PONG missing)"}


def test_wait_all_healthy_gives_up_on_a_starting_container_at_the_deadline_but_waits_for_the_others(clock):
    failures = compose_rollout.wait_all_healthy(
        {
            "db": [FakeContainer("p-db-1", health=["starting", "starting", "healthy"])],
            "search": [FakeContainer("p-search-1", health="starting", last="no health check has run yet")],
        },
        timeout=3,
    )
    assert failures == {
        "search": "the container p-search-1 did not turn healthy in 3s "
        "(still starting; its health check last said: no health check has run yet)"
    }
    assert clock.slept == [0.25] * 12  # side by side: the timeout once, not once per service


def test_a_reload_is_tried_again_while_the_edge_starts_then_its_failure_is_kept(clock):
    class FakeExec:
        def __init__(self, exit_codes):
            self.exit_codes = list(exit_codes)
            self.calls = 0

        def exec_run(self, command):
            self.calls += 1
            return types.SimpleNamespace(exit_code=self.exit_codes.pop(0), output=b"invalid PID number")

    starting = FakeExec([1, 1, 0])
    assert _nginx_edge.exec_with_tries(starting, ["nginx", "-s", "reload"], 5).exit_code == 0
    assert starting.calls == 3
    broken = FakeExec([1, 1])
    assert _nginx_edge.exec_with_tries(broken, ["nginx", "-s", "reload"], 2).exit_code == 1
    assert broken.calls == 2
    assert clock.slept == [1, 1, 1]  # a second between tries, none after the last


# --- roll: the services behind the edge -------------------------------------------------------------------------


def test_an_up_to_date_healthy_service_is_unchanged_and_no_compose_command_runs():
    compose = api(FakeContainer("p-api-1"), FakeContainer("p-api-2"))
    report = roll_api(compose)
    assert (report["action"], report["reason"], report["old"]) == ("unchanged", "", [])
    assert report["new"] == ["p-api-1", "p-api-2"]
    assert compose.commands == []
    assert [c.calls for c in compose.engine.containers] == [[], []]
    # Its upstream is still written (the edge may have lost it); loading it is left to the caller.
    assert compose.events == [("point", "api", ["p-api-1", "p-api-2"])]


def test_a_new_definition_starts_new_containers_beside_the_old_and_retires_the_old_after_the_edge_moved(clock):
    old = [FakeContainer("p-api-1", config_hash=OLD), FakeContainer("p-api-2", config_hash=OLD)]
    compose = api(*old)
    clock.events = compose.events
    report = roll_api(compose, drain=1.5)
    assert (report["action"], report["reason"]) == ("rolled", "a new definition")
    assert (report["old"], report["new"]) == (["p-api-1", "p-api-2"], ["p-api-3", "p-api-4"])
    # The old ones keep serving while the new ones start: the scale counts both.
    assert compose.commands == ["up --no-start --no-recreate --scale api=4 api"]
    assert names(compose.containers("api")) == ["p-api-3", "p-api-4"]
    assert [c.calls for c in old] == [["stop", "remove"], ["stop", "remove"]]
    # The edge is repaired first (its follower synced); what the new containers reach through it is loaded before
    # they start (the first flush); the edge serves the new containers, and the drain passes, before an old one stops.
    # The new containers are created in one command, then started side by side.
    assert compose.events[:3] == [("sync",), ("flush",), ("compose", "up --no-start --no-recreate --scale api=4 api")]
    assert sorted(compose.events[3:5]) == [("start", "p-api-3"), ("start", "p-api-4")]
    assert compose.events[5:8] == [("point", "api", ["p-api-3", "p-api-4"]), ("flush",), ("drain", 1.5)]
    # The old ones stop side by side, each removed once stopped.
    retired = compose.events[8:]
    assert sorted(retired) == [("remove", "p-api-1"), ("remove", "p-api-2"), ("stop", "p-api-1"), ("stop", "p-api-2")]
    assert all(retired.index(("stop", name)) < retired.index(("remove", name)) for name in ("p-api-1", "p-api-2"))


def test_a_stopped_replica_is_replaced_by_one_new_container_and_the_healthy_one_kept():
    healthy, stopped = FakeContainer("p-api-1"), FakeContainer("p-api-2", status="exited")
    compose = api(healthy, stopped)
    report = roll_api(compose)
    assert (report["action"], report["reason"]) == ("repaired", "p-api-2 is exited")
    assert compose.commands == ["up --no-start --no-recreate --scale api=2 api"]  # the running one + 1
    assert names(compose.created) == ["p-api-3"]
    assert (report["old"], report["new"]) == (["p-api-2"], ["p-api-1", "p-api-3"])
    assert healthy.calls == []
    assert stopped.calls == ["remove --force"]


def test_an_unhealthy_container_is_replaced_once_its_successor_is_healthy():
    healthy = FakeContainer("p-api-1")
    sick = FakeContainer("p-api-2", health="unhealthy", last="HTTP Error 503: Service Unavailable")
    compose = api(healthy, sick)
    report = roll_api(compose)
    assert report["action"] == "repaired"
    assert report["reason"] == "p-api-2 is unhealthy (HTTP Error 503: Service Unavailable)"
    assert compose.commands == ["up --no-start --no-recreate --scale api=3 api"]
    assert (report["old"], report["new"]) == (["p-api-2"], ["p-api-1", "p-api-3"])
    assert (healthy.calls, sick.calls) == ([], ["stop", "remove"])
    assert compose.events.index(("point", "api", ["p-api-1", "p-api-3"])) < compose.events.index(("stop", "p-api-2"))


def test_a_missing_replica_is_started():
    compose = api(FakeContainer("p-api-1"))
    report = roll_api(compose)
    assert (report["action"], report["reason"]) == ("repaired", "1 of 2 containers missing")
    assert compose.commands == ["up --no-start --no-recreate --scale api=2 api"]
    assert report["new"] == ["p-api-1", "p-api-2"]


def test_an_interrupted_rollout_keeps_the_two_current_containers_and_removes_the_two_old_ones():
    old = [FakeContainer("p-api-1", config_hash=OLD), FakeContainer("p-api-2", config_hash=OLD)]
    current = [FakeContainer("p-api-3"), FakeContainer("p-api-4")]
    compose = api(*old, *current)
    report = roll_api(compose)
    # Old containers of another definition still run: the module calls that a rollout to finish.
    assert (report["action"], report["reason"]) == ("rolled", "a new definition")
    assert compose.commands == []  # enough current containers: none started
    assert (report["old"], report["new"]) == (["p-api-1", "p-api-2"], ["p-api-3", "p-api-4"])
    assert [c.calls for c in current] == [[], []]
    assert [c.calls for c in old] == [["stop", "remove"], ["stop", "remove"]]
    assert names(compose.containers("api")) == ["p-api-3", "p-api-4"]


def test_containers_beyond_the_replicas_are_retired_without_starting_any():
    compose = api(FakeContainer("p-api-1"), FakeContainer("p-api-2"), FakeContainer("p-api-3"))
    report = roll_api(compose)
    assert report["action"] == "repaired"
    assert report["reason"] == "3 containers for 2 replicas"
    assert compose.commands == []
    assert (report["old"], report["new"]) == (["p-api-3"], ["p-api-1", "p-api-2"])


def test_new_containers_that_turn_unhealthy_are_removed_and_the_old_ones_keep_serving():
    old = [FakeContainer("p-api-1", config_hash=OLD), FakeContainer("p-api-2", config_hash=OLD)]
    compose = api(*old, new_health={"api": "unhealthy"})
    report = roll_api(compose)
    assert report["action"] == "failed"
    assert report["reason"] == "the container p-api-3 is unhealthy (its health check last said: ok)"
    assert report["new"] == [], "nothing of the current definition serves"
    assert [c.calls for c in compose.created] == [["start", "remove --force"], ["start", "remove --force"]]
    assert names(compose.containers("api")) == ["p-api-1", "p-api-2"]
    assert [c.calls for c in old] == [[], []]
    assert not [event for event in compose.events if event[0] == "point"]  # the edge never moved


def test_new_containers_still_starting_at_the_deadline_are_removed(clock):
    compose = api(FakeContainer("p-api-1", config_hash=OLD), replicas=1, new_health={"api": "starting"})
    report = roll_api(compose, timeout=5)
    assert report["action"] == "failed"
    assert report["reason"].startswith("the container p-api-2 did not turn healthy in 5s (still starting")
    assert [c.calls for c in compose.created] == [["start", "remove --force"]]
    assert names(compose.containers("api")) == ["p-api-1"]
    assert clock.slept == [0.25] * 20


def test_containers_of_the_current_definition_still_starting_are_waited_for_not_replaced():
    compose = api(FakeContainer("p-api-1", health=["starting", "healthy"]), replicas=1)
    report = roll_api(compose)
    assert (report["action"], report["reason"]) == ("started", "its containers were starting")
    assert compose.commands == []
    # What it reaches through the edge is loaded before it is waited for; its own upstream, loaded, once it is
    # healthy.
    assert compose.events == [
        ("sync",),
        ("flush",),
        ("health", "p-api-1", "healthy"),
        ("point", "api", ["p-api-1"]),
        ("flush",),
    ]


def test_a_service_without_health_check_is_not_rolled():
    compose = FakeCompose({"api": {"healthcheck": {"test": ["NONE"], "disable": True}}}, [FakeContainer("p-api-1")])
    report = roll_api(compose)
    assert report["action"] == "failed" and "no health check" in report["reason"]
    assert compose.commands == []


@pytest.mark.parametrize(
    ("containers", "action"),
    [
        ([FakeContainer("p-api-1", config_hash=OLD), FakeContainer("p-api-2", config_hash=OLD)], "would roll"),
        ([FakeContainer("p-api-1"), FakeContainer("p-api-2", status="exited")], "would repair"),
        ([FakeContainer("p-api-1"), FakeContainer("p-api-2", health="unhealthy")], "would repair"),
    ],
)
def test_check_mode_says_what_would_be_done_and_does_nothing(containers, action):
    compose = api(*containers)
    report = roll_api(compose, check_mode=True)
    assert (report["action"], report["seconds"]) == (action, 0.0)
    assert compose.commands == []
    assert compose.events == []  # nothing stopped, removed or pointed
    assert names(compose.containers("api")) == ["p-api-1", "p-api-2"]


# --- describe_drift ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("containers", "reason"),
    [
        ([FakeContainer("p-api-1", config_hash=OLD), FakeContainer("p-api-2")], "a new definition"),
        ([FakeContainer("p-api-1"), FakeContainer("p-api-2", status="created")], "p-api-2 is created"),
        (
            [FakeContainer("p-api-1"), FakeContainer("p-api-2", health="unhealthy", last="  timed out\n")],
            "p-api-2 is unhealthy (timed out)",
        ),
        ([], "2 of 2 containers missing"),
        (
            [FakeContainer(f"p-api-{n}") for n in (1, 2, 3, 4)],
            "4 containers for 2 replicas",
        ),
    ],
)
def test_the_reason_names_what_differs(containers, reason):
    assert roll_api(api(*containers), check_mode=True)["reason"] == reason


def test_describe_drift_names_every_difference_and_cuts_long_health_output():
    running = [FakeContainer("p-api-1", config_hash=OLD), FakeContainer("p-api-2", health="unhealthy", last="x" * 300)]
    stopped = [FakeContainer("p-api-3", status="exited")]
    states = {c.id: compose_rollout.health(c) for c in running}
    reason = compose_rollout.describe_drift(running, stopped, states, NEW, replicas=2, keep=[])
    assert reason == f"a new definition; p-api-3 is exited; p-api-2 is unhealthy ({'x' * 120})"


def test_describe_drift_counts_missing_containers_only_when_nothing_else_explains_it():
    one = FakeContainer("p-api-1")
    states = {one.id: compose_rollout.health(one)}
    assert compose_rollout.describe_drift([one], [], states, NEW, replicas=3, keep=[one]) == "2 of 3 containers missing"
    stopped = FakeContainer("p-api-2", status="exited")
    assert compose_rollout.describe_drift([one], [stopped], states, NEW, replicas=3, keep=[one]) == "p-api-2 is exited"


# --- converge_in_place: data services, the edge, exporters ------------------------------------------------------

IN_PLACE = {
    "db": {"healthcheck": HEALTHCHECK},
    "cache": {},
    "edge": {},
    "api": {"healthcheck": HEALTHCHECK},
    "queue": {"depends_on": {"api": {"condition": "service_healthy"}}},
    "worker": {"depends_on": {"queue": {"condition": "service_started"}}},
}


def in_place(*containers, **kwargs):
    return FakeCompose(IN_PLACE, containers, **kwargs)


def converge(compose, services, failed=(), check_mode=False, **params):
    module = FakeModule(check_mode, **params)
    reports = compose_rollout.converge_in_place(module, compose, services, compose.desired, set(failed))
    assert [r["name"] for r in reports] == services  # in order, one each
    return {r["name"]: r for r in reports}


def test_missing_services_are_brought_up_by_one_compose_command():
    compose = in_place(FakeContainer("p-edge-1", health=None))
    reports = converge(compose, ["db", "edge", "cache"])
    assert compose.commands == ["up --detach db cache"]
    assert [reports[s]["action"] for s in ("db", "edge", "cache")] == ["converged", "unchanged", "converged"]
    assert reports["db"]["reason"] == reports["cache"]["reason"] == "no container"
    assert (reports["db"]["new"], reports["edge"]["new"]) == (["p-db-1"], ["p-edge-1"])


def test_a_service_of_a_new_definition_is_recreated():
    compose = in_place(FakeContainer("p-db-1", config_hash=OLD))
    reports = converge(compose, ["db"])
    assert (reports["db"]["action"], reports["db"]["reason"]) == ("converged", "a new definition")
    assert compose.commands == ["up --detach db"]
    assert reports["db"]["new"] == ["p-db-2"]


def test_an_unhealthy_container_of_the_current_definition_is_restarted_not_recreated():
    sick = FakeContainer("p-db-1", health="unhealthy", last="pg_isready: no response")
    compose = in_place(sick)
    reports = converge(compose, ["db"])
    assert (reports["db"]["action"], reports["db"]["reason"]) == (
        "restarted",
        "p-db-1 was unhealthy (pg_isready: no response)",
    )
    assert sick.calls == ["restart"]
    assert compose.commands == []


def test_a_service_to_converge_whose_dependency_failed_is_skipped():
    compose = in_place()
    # worker -> queue -> api: the dependency that failed is found through another.
    reports = converge(compose, ["worker"], failed={"api"})
    assert reports["worker"]["action"] == "skipped"
    assert reports["worker"]["reason"] == "no container, but it depends on api, which could not be brought back"
    assert (reports["worker"]["new"], compose.commands) == ([], [])


def test_a_service_that_needs_nothing_is_not_skipped_though_its_dependency_failed():
    compose = in_place(FakeContainer("p-worker-1", health=None))
    reports = converge(compose, ["worker"], failed={"api"})
    assert (reports["worker"]["action"], reports["worker"]["new"]) == ("unchanged", ["p-worker-1"])
    assert compose.commands == []


def test_a_failing_batch_is_tried_service_by_service_and_only_the_failing_one_fails():
    compose = in_place(fail_up={"cache"})
    reports = converge(compose, ["db", "cache"])
    assert compose.commands == ["up --detach db cache", "up --detach db", "up --detach cache"]
    assert (reports["db"]["action"], reports["db"]["new"]) == ("converged", ["p-db-1"])
    assert reports["cache"]["action"] == "failed"
    assert reports["cache"]["reason"].startswith("docker compose up --detach cache failed (exit 1): port is")


def test_a_converged_service_that_does_not_turn_healthy_fails_with_what_its_check_said():
    compose = in_place(new_health={"db": "unhealthy"})
    reports = converge(compose, ["db", "cache"])
    assert reports["db"]["action"] == "failed"
    assert reports["db"]["reason"] == "the container p-db-1 is unhealthy (its health check last said: ok)"
    assert reports["cache"]["action"] == "converged"


def test_check_mode_converges_and_restarts_nothing():
    sick = FakeContainer("p-cache-1", health="unhealthy", last="LOADING")
    compose = in_place(sick)
    reports = converge(compose, ["db", "cache"], check_mode=True)
    assert (reports["db"]["action"], reports["cache"]["action"]) == ("would converge", "would restart")
    assert reports["cache"]["reason"] == "p-cache-1 was unhealthy (LOADING)"
    assert compose.commands == []
    assert sick.calls == []


@pytest.mark.parametrize(
    ("containers", "reason"),
    [
        ([FakeContainer("p-db-1", config_hash=OLD)], "a new definition"),
        ([FakeContainer("p-db-1", status="exited")], "p-db-1 is exited"),
        ([FakeContainer("p-db-1"), FakeContainer("p-db-2")], "2 containers for 1 replicas"),
    ],
)
def test_the_in_place_reason_names_what_differs(containers, reason):
    reports = converge(in_place(*containers), ["db"], check_mode=True)
    assert (reports["db"]["action"], reports["db"]["reason"]) == ("would converge", reason)


# --- the edge's upstream files ----------------------------------------------------------------------------------


class FakeEdgeContainer(FakeContainer):
    """The edge's container: exec_run answers with (exit code, output), the last answer again and again."""

    def __init__(self, name, answers):
        super().__init__(name, health=None)
        self.answers = list(answers)
        self.commands = []

    def exec_run(self, command):
        self.commands.append(command)
        exit_code, output = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return types.SimpleNamespace(exit_code=exit_code, output=output)


DRAINED = ("sh", "/etc/nginx/conf.d/pliers-edge.sh", "drained")


def edge_for(tmp_path, *containers, check_mode=False, drain_command=DRAINED, in_place=("edge",), fail_up=()):
    """The edge as compose_rollout makes it: its running containers and its start through the project."""
    services = {
        "api": {"healthcheck": HEALTHCHECK},
        "web": {},
        "edge": {},
        "edge-exporter": {"depends_on": {"edge": {}}},
    }
    compose = FakeCompose(services, containers, fail_up=fail_up)
    edge = Edge(
        "edge", str(tmp_path / "edge" / "upstreams"), {"api": 3000}, ["sh", "/etc/nginx/conf.d/pliers-edge.sh", "sync"],
        check_mode, running=lambda: [c for c in compose.containers("edge") if c.status == "running"],
        start=lambda: compose_rollout.start_edge(compose, "edge", list(in_place)), drain_command=drain_command,
    )  # fmt: skip
    return compose, edge


def test_the_drain_ends_when_each_edge_container_says_its_retired_workers_are_done(tmp_path, clock):
    containers = [
        FakeEdgeContainer("p-edge-1", [(0, b"drained\n")]),
        FakeEdgeContainer("p-edge-2", [(0, b"drained\n")]),
    ]
    _compose, edge = edge_for(tmp_path, *containers)
    edge.drain(2.0)
    assert [c.commands for c in containers] == [[[*DRAINED, "20"]], [[*DRAINED, "20"]]]
    assert clock.slept == []


@pytest.mark.parametrize("answer", [(2, b"usage: pliers-edge.sh start | sync [--force]\n"), None])
def test_an_edge_that_cannot_say_is_given_the_whole_drain(tmp_path, clock, answer):
    # An edge container still running an older script, or no drain command: the whole time passes.
    container = FakeEdgeContainer("p-edge-1", [answer or (0, b"")])
    _compose, edge = edge_for(tmp_path, container, drain_command=DRAINED if answer else ())
    edge.drain(1.5)
    assert clock.slept == [1.5]
    assert container.commands == ([[*DRAINED, "15"]] if answer else [])


def test_an_upstream_file_is_written_only_when_it_changes(tmp_path):
    _compose, edge = edge_for(tmp_path)
    serving = ["p-api-4", "p-api-3"]
    assert edge.point("api", serving) is True
    path = tmp_path / "edge" / "upstreams" / "api.conf"
    assert path.read_text() == upstream("api", 3000, ["p-api-3", "p-api-4"])
    assert oct(path.stat().st_mode & 0o777) == "0o644"  # the edge's nginx reads it as another user
    assert os.listdir(path.parent) == ["api.conf"]  # no temporary file left
    edge.pending = False
    assert edge.point("api", serving) is False
    assert edge.pending is False
    assert edge.point("web", serving) is False  # not routed
    assert not (path.parent / "web.conf").exists()


def test_check_mode_tells_an_upstream_would_change_and_writes_nothing(tmp_path):
    _compose, edge = edge_for(tmp_path, check_mode=True)
    assert edge.point("api", ["p-api-3"]) is True
    assert not (tmp_path / "edge").exists()


def test_the_upstream_files_of_0_1_0_beside_the_edge_configuration_are_removed(tmp_path):
    _compose, edge = edge_for(tmp_path)
    (tmp_path / "edge").mkdir()
    (tmp_path / "edge" / "upstream-api.conf").write_text("upstream api {}\n")
    (tmp_path / "edge" / "edge.conf").write_text("server {}\n")
    assert edge.remove_legacy() is True
    assert os.listdir(tmp_path / "edge") == ["edge.conf"]
    assert edge.remove_legacy() is False


def test_a_first_deploy_starts_the_edge_on_placeholder_upstreams(tmp_path):
    compose, edge = edge_for(tmp_path)
    assert edge.ensure_running() is True
    assert compose.commands == ["up --detach --no-recreate edge"]
    assert (tmp_path / "edge" / "upstreams" / "api.conf").read_text() == upstream("api", 3000, [])
    assert edge.pending is False  # the edge loaded them as it started


def test_a_first_deploy_starts_what_depends_on_the_edge_beside_it(tmp_path):
    compose, edge = edge_for(tmp_path, in_place=("edge", "edge-exporter"))
    assert edge.ensure_running() is True
    assert compose.commands == ["up --detach --no-recreate edge edge-exporter"]


def test_the_edge_starts_alone_when_what_depends_on_it_fails_to_start(tmp_path):
    compose, edge = edge_for(tmp_path, in_place=("edge", "edge-exporter"), fail_up={"edge-exporter"})
    assert edge.ensure_running() is True
    assert compose.commands == ["up --detach --no-recreate edge edge-exporter", "up --detach --no-recreate edge"]
    assert names(compose.containers("edge")) == ["p-edge-1"]


def test_a_running_edge_is_not_started_again(tmp_path):
    compose, edge = edge_for(tmp_path, FakeEdgeContainer("p-edge-1", [(0, b"unchanged")]))
    assert edge.ensure_running() is True  # the placeholder upstream was written
    assert edge.ensure_running() is False
    assert compose.commands == []


@pytest.mark.parametrize(
    ("output", "acted"),
    [(b"unchanged\n", False), (b"reloaded\n", True), (b"unchanged\nfollower started\n", True)],
)
def test_sync_tells_whether_the_edge_reloaded_or_its_follower_was_started(tmp_path, output, acted):
    edge_container = FakeEdgeContainer("p-edge-1", [(0, output)])
    _compose, edge = edge_for(tmp_path, edge_container)
    assert edge.sync() is acted
    assert edge_container.commands == [["sh", "/etc/nginx/conf.d/pliers-edge.sh", "sync"]]


def test_sync_forced_reloads_and_only_when_upstreams_are_pending_on_flush(tmp_path):
    edge_container = FakeEdgeContainer("p-edge-1", [(0, b"reloaded")])
    _compose, edge = edge_for(tmp_path, edge_container)
    edge.flush()
    assert edge_container.commands == []  # nothing written: nothing to load
    edge.point("api", ["p-api-1"])
    edge.flush()
    assert (edge.reloaded, edge.pending) == (True, False)
    assert edge.sync(force=True) is True
    assert edge_container.commands[-1] == ["sh", "/etc/nginx/conf.d/pliers-edge.sh", "sync", "--force"]


def test_an_edge_that_refuses_its_upstreams_fails_with_what_it_said(tmp_path, clock):
    edge_container = FakeEdgeContainer("p-edge-1", [(1, b"nginx: [emerg] host not found in upstream\n")])
    _compose, edge = edge_for(tmp_path, edge_container)
    with pytest.raises(EdgeError) as error:
        edge.sync()
    assert str(error.value) == (
        "the edge p-edge-1 could not load its upstreams (sh /etc/nginx/conf.d/pliers-edge.sh sync): "
        "nginx: [emerg] host not found in upstream"
    )
    assert len(edge_container.commands) == _nginx_edge.SYNC_TRIES


def test_check_mode_runs_nothing_in_the_edge(tmp_path):
    edge_container = FakeEdgeContainer("p-edge-1", [(0, b"reloaded")])
    compose, edge = edge_for(tmp_path, edge_container, check_mode=True)
    assert (edge.sync(force=True), edge.ensure_running(), edge.remove_legacy()) == (False, False, False)
    assert (edge_container.commands, compose.commands) == ([], [])


# --- remove_orphans ---------------------------------------------------------------------------------------------


def test_the_containers_of_services_no_longer_defined_are_removed_but_not_one_off_runs():
    orphan = FakeContainer("p-old-worker-1")
    one_off = FakeContainer("p-old-worker-run-1", service="old-worker")
    one_off.labels[ONEOFF_LABEL] = "True"
    compose = api(FakeContainer("p-api-1"), orphan, one_off)
    assert compose_rollout.remove_orphans(FakeModule(check_mode=True), compose) == ["p-old-worker-1"]
    assert orphan.calls == []
    assert compose_rollout.remove_orphans(FakeModule(), compose) == ["p-old-worker-1"]
    assert orphan.calls == ["remove --force"]
    assert (one_off.calls, names(compose.engine.containers)) == ([], ["p-api-1", "p-old-worker-run-1"])


def test_a_stopped_container_whose_network_was_removed_is_recreated_not_restarted():
    # Compose would create the network anew, then fail to start the container still attached to the old one.
    stranded = FakeContainer("p-db-1", status="exited", service="db")
    stranded.attrs["NetworkSettings"] = {"Networks": {"p_backend": {"NetworkID": "net-removed"}}}
    compose = FakeCompose({"db": {}}, [stranded])
    reports = compose_rollout.converge_in_place(FakeModule(), compose, ["db"], compose.desired, set())
    assert reports[0]["action"] == "converged"
    assert "p-db-1's network p_backend is gone" in reports[0]["reason"]
    assert stranded.calls == ["remove --force"]
    assert "up --detach db" in compose.commands


# --- The decision core: what a rolled service needs, from what runs ---------------------------------------------


def decision(*containers, replicas=2):
    states = {c.id: compose_rollout.health(c) for c in containers if c.status == "running"}
    return compose_rollout.Decision("api", list(containers), states, NEW, replicas)


@pytest.mark.parametrize(
    ("containers", "action", "keep", "missing", "retire"),
    [
        ((FakeContainer("p-api-1"), FakeContainer("p-api-2")), "unchanged", ["p-api-1", "p-api-2"], 0, []),
        ((FakeContainer("p-api-1", health="starting"),), "repaired", ["p-api-1"], 1, []),
        ((FakeContainer("p-api-1", config_hash=OLD), FakeContainer("p-api-2")), "rolled", ["p-api-2"], 1, ["p-api-1"]),
        ((FakeContainer("p-api-1", health="unhealthy"), FakeContainer("p-api-2")), "repaired", ["p-api-2"], 1,
         ["p-api-1"]),
        ((FakeContainer("p-api-1", status="exited"), FakeContainer("p-api-2")), "repaired", ["p-api-2"], 1, []),
        # The healthy containers are kept first; the one still starting is the one too many.
        ((FakeContainer("p-api-1", health="starting"), FakeContainer("p-api-2"), FakeContainer("p-api-3")),
         "repaired", ["p-api-2", "p-api-3"], 0, ["p-api-1"]),
        ((), "repaired", [], 2, []),
    ],
)  # fmt: skip
def test_the_decision_keeps_the_healthy_current_containers_and_counts_what_is_missing(
    containers, action, keep, missing, retire
):
    made = decision(*containers)
    assert (made.action, names(made.keep), made.missing, names(made.retire)) == (action, keep, missing, retire)
    assert made.acts is (action in ("rolled", "repaired"))


def test_containers_of_the_current_definition_all_starting_are_waited_for():
    made = decision(FakeContainer("p-api-1", health="starting"), FakeContainer("p-api-2", health="starting"))
    assert (made.action, made.acts, names(made.starting)) == ("started", False, ["p-api-1", "p-api-2"])


# --- Rolling several services together --------------------------------------------------------------------------


def app(*containers, **kwargs):
    """A project whose api and web, behind the edge, run these containers (one replica each)."""
    services = {name: {"healthcheck": HEALTHCHECK} for name in ("api", "web")}
    return FakeCompose(services, containers, **kwargs)


def roll_app(compose, services=("api", "web"), failed=(), **params):
    module = FakeModule(**params)
    reports = compose_rollout.roll(module, compose, FakeEdge(compose.events), list(services), compose.desired,
                                   set(failed))  # fmt: skip
    return {r["name"]: r for r in reports}


def test_services_roll_together_each_routed_when_healthy_then_one_drain_and_the_old_ones_stop(clock):
    compose = app(FakeContainer("p-api-1", config_hash=OLD), FakeContainer("p-web-1", config_hash=OLD),
                  new_health={"api": ["starting", "healthy"], "web": "healthy"})  # fmt: skip
    clock.events = compose.events
    reports = roll_app(compose, drain=2.0)
    assert {name: r["action"] for name, r in reports.items()} == {"api": "rolled", "web": "rolled"}
    # One compose command starts every new container.
    assert compose.commands == ["up --no-start --no-recreate --scale api=2 --scale web=2 api web"]
    events = [e for e in compose.events if e[0] in ("point", "sleep", "drain", "stop")]
    # The web, healthy first, is routed first; one drain for both; then the old containers stop (side by side).
    assert events[:4] == [
        ("point", "web", ["p-web-2"]),
        ("sleep", 0.25),
        ("point", "api", ["p-api-2"]),
        ("drain", 2.0),
    ]
    assert sorted(events[4:]) == [("stop", "p-api-1"), ("stop", "p-web-1")]


def test_services_healthy_at_the_same_reading_are_routed_in_one_reload():
    compose = app(FakeContainer("p-api-1", config_hash=OLD), FakeContainer("p-web-1", config_hash=OLD))
    edge = FakeEdge(compose.events)
    compose_rollout.roll(FakeModule(), compose, edge, ["api", "web"], compose.desired, set())
    assert edge.loads == [("api", "web")]


def test_one_service_failing_to_roll_does_not_stop_the_others():
    compose = app(FakeContainer("p-api-1", config_hash=OLD), FakeContainer("p-web-1", config_hash=OLD),
                  new_health={"api": "unhealthy"})  # fmt: skip
    reports = roll_app(compose)
    assert reports["api"]["action"] == "failed" and reports["web"]["action"] == "rolled"
    assert names(compose.containers("api")) == ["p-api-1"], "the old api keeps serving, its new one removed"
    assert names(compose.containers("web")) == ["p-web-2"]


def test_a_creation_that_fails_is_tried_service_by_service():
    compose = app(FakeContainer("p-api-1", config_hash=OLD), FakeContainer("p-web-1", config_hash=OLD),
                  fail_up={"web"})  # fmt: skip
    reports = roll_app(compose)
    assert compose.commands == [
        "up --no-start --no-recreate --scale api=2 --scale web=2 api web",
        "up --no-start --no-recreate --scale api=2 api",
        "up --no-start --no-recreate --scale web=2 web",
    ]
    assert reports["api"]["action"] == "rolled"
    assert reports["web"]["action"] == "failed" and "port is already allocated" in reports["web"]["reason"]
    assert names(compose.containers("web")) == ["p-web-1"]


def test_a_new_container_that_fails_to_start_is_removed_and_its_service_failed_the_others_rolled():
    compose = app(FakeContainer("p-api-1", config_hash=OLD), FakeContainer("p-web-1", config_hash=OLD),
                  fail_start={"web"})  # fmt: skip
    reports = roll_app(compose)
    assert reports["api"]["action"] == "rolled"
    assert reports["web"]["action"] == "failed"
    assert reports["web"]["reason"] == (
        "its new container did not start: driver failed programming external connectivity: port is already allocated"
    )
    assert names(compose.containers("web")) == ["p-web-1"], "the old web keeps serving, its new one removed"
    assert names(compose.containers("api")) == ["p-api-2"]


def chain(*containers, **kwargs):
    """A project whose ai-service waits, in Compose, for the api to be healthy."""
    services = {
        "api": {"healthcheck": HEALTHCHECK},
        "ai-service": {"healthcheck": HEALTHCHECK, "depends_on": {"api": {"condition": "service_healthy"}}},
    }
    return FakeCompose(services, containers, **kwargs)


def test_a_service_whose_dependency_still_serves_healthy_starts_beside_its_new_containers():
    # Compose would start the new ai-service only once the new api is healthy: one health wait more.
    compose = chain(FakeContainer("p-api-1", config_hash=OLD), FakeContainer("p-ai-service-1", config_hash=OLD))
    reports = roll_app(compose, services=("api", "ai-service"))
    assert compose.commands == ["up --no-start --no-recreate --scale ai-service=2 --scale api=2 ai-service api"]
    assert sorted(event for event in compose.events if event[0] == "start") == [
        ("start", "p-ai-service-2"),
        ("start", "p-api-2"),
    ]
    assert {name: r["action"] for name, r in reports.items()} == {"api": "rolled", "ai-service": "rolled"}


@pytest.mark.parametrize(
    "api_containers",
    [
        pytest.param([], id="no api yet"),
        pytest.param([FakeContainer("p-api-1", health="unhealthy", config_hash=OLD)], id="its api unhealthy"),
    ],
)
def test_a_service_whose_dependency_has_nothing_healthy_is_started_in_compose_order(api_containers):
    compose = chain(*api_containers, FakeContainer("p-ai-service-1", config_hash=OLD))
    roll_app(compose, services=("api", "ai-service"))
    up = f"up --detach --no-recreate --scale ai-service=2 --scale api={len(api_containers) + 1} ai-service api"
    assert compose.commands == [up]


def test_a_service_whose_dependency_it_does_not_roll_is_stopped_is_started_in_compose_order():
    # Compose starts the stopped api, and waits for it, before the new ai-service.
    compose = chain(FakeContainer("p-api-1", status="exited"), FakeContainer("p-ai-service-1", config_hash=OLD))
    roll_app(compose, services=("ai-service",))
    assert compose.commands == ["up --detach --no-recreate --scale ai-service=2 ai-service"]


def test_a_service_compose_does_something_for_as_it_starts_is_started_by_compose():
    compose = chain(FakeContainer("p-api-1", config_hash=OLD), FakeContainer("p-ai-service-1", config_hash=OLD))
    compose.model["services"]["api"]["post_start"] = [{"command": ["pliers", "warm"]}]
    roll_app(compose, services=("api", "ai-service"))
    assert compose.commands == ["up --detach --no-recreate --scale ai-service=2 --scale api=2 ai-service api"]


@pytest.mark.parametrize("source", ["content", "environment"])
def test_a_service_with_an_inline_config_is_started_by_compose(source):
    compose = chain(FakeContainer("p-api-1", config_hash=OLD))
    compose.model["configs"] = {"api_settings": {source: "x"}, "api_file": {"file": "/opt/p/api.json"}}
    compose.model["services"]["api"]["configs"] = [{"source": "api_settings", "target": "/etc/api.json"}]
    roll_app(compose, services=("api",))
    assert compose.commands == ["up --detach --no-recreate --scale api=2 api"]
    compose = chain(FakeContainer("p-api-1", config_hash=OLD))
    compose.model["configs"] = {"api_file": {"file": "/opt/p/api.json"}}
    compose.model["services"]["api"]["configs"] = [{"source": "api_file", "target": "/etc/api.json"}]
    roll_app(compose, services=("api",))
    assert compose.commands == ["up --no-start --no-recreate --scale api=2 api"], "a file Compose bind-mounts"


def test_a_service_whose_dependency_failed_is_not_rolled():
    compose = FakeCompose({"api": {"healthcheck": HEALTHCHECK, "depends_on": {"postgres": {}}}, "postgres": {}},
                          [FakeContainer("p-api-1", config_hash=OLD)])  # fmt: skip
    reports = roll_app(compose, services=("api",), failed={"postgres"})
    assert reports["api"]["action"] == "skipped"
    assert reports["api"]["reason"] == "a new definition, but it depends on postgres, which could not be brought back"
    assert compose.commands == []


# --- One run: the data services first, then the migrations' hold, then the rollout -------------------------------


def rollout(compose, check_mode=False, client=None, **params):
    module = FakeModule(check_mode, **{"first": [], "services": [], "in_place": [], "hold": [], "pull": False,
                                       "remove_orphans": False, "reload_edge": False,
                                       "write": {"directories": [], "files": []}, "verify": [], "stores": [],
                                       "owned_volumes": [], "accounts_brought": {}, "migrations": [],
                                       **params})  # fmt: skip
    run = compose_rollout.Rollout(module, client=client)
    run.converge(compose)
    return run


def stack(*containers, **kwargs):
    services = {
        "db": {"healthcheck": HEALTHCHECK},
        "api": {"healthcheck": HEALTHCHECK, "depends_on": {"db": {}}},
        "web": {"healthcheck": HEALTHCHECK},
    }
    return FakeCompose(services, containers, **kwargs)


def test_a_service_whose_migrations_must_run_first_holds_the_run_after_the_data_services():
    compose = stack(FakeContainer("p-db-1"), FakeContainer("p-api-1", config_hash=OLD), FakeContainer("p-web-1"))
    run = rollout(compose, first=["db"], services=["api", "web"], hold=["api"])
    assert run.held == ["api"]
    assert [r["name"] for r in run.reports] == ["db"], "nothing rolled: the migrations run first"
    assert compose.commands == []


API_MIGRATIONS = {
    "service": "api",
    "image": "registry/pliers/api:1.1.0",
    "network": "backend",
    "environment": {"DATABASE_HOST": "db"},
    "secrets": [{"file": "/opt/p/secrets/api_database_password", "target": "database_password"}],
    "status_command": ["pliers", "migrate", "status"],
    "backup_first": True,
}


@pytest.fixture
def asked(monkeypatch):
    """The migrations' status compose_rollout asks for: each call recorded; `answer` is what it prints (or raises)."""
    calls = []

    def run_json(module, client, command, **container):
        calls.append((command, container))
        asked.threads.append("main" if threading.current_thread() is threading.main_thread() else "beside")
        answer = asked.answers.pop(0) if asked.answers else asked.answer
        if isinstance(answer, Exception):
            raise answer
        return answer

    asked = types.SimpleNamespace(calls=calls, threads=[], answers=[], answer={"pending": [], "applied": ["001_items"]})
    monkeypatch.setattr(compose_rollout, "run_json", run_json)
    return asked


def test_a_release_whose_image_has_no_pending_migration_rolls_on_in_the_same_run(asked):
    compose = stack(FakeContainer("p-db-1"), FakeContainer("p-api-1", config_hash=OLD), FakeContainer("p-web-1"))
    run = rollout(compose, first=["db"], services=["api", "web"], hold=["api"], migrations=[API_MIGRATIONS])
    assert run.held == []
    assert run.migration_status == {"api": {"pending": [], "applied": ["001_items"]}}
    assert [r["name"] for r in run.reports if r["action"] == "rolled"] == ["api"]
    assert asked.calls == [
        (
            ["pliers", "migrate", "status"],
            {
                "image": "registry/pliers/api:1.1.0",
                "network": "p_backend",
                "env": {"DATABASE_HOST": "db"},
                "secrets": [{"file": "/opt/p/secrets/api_database_password", "target": "database_password"}],
                "timeout": 30,
            },
        )
    ]


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param({"pending": ["002_tags"], "applied": ["001_items"]}, id="a migration pending"),
        pytest.param(compose_rollout.MigrationError("'pliers migrate status' failed (exit 1)"), id="no answer"),
        pytest.param(DockerException("network p_backend not found"), id="no container"),
    ],
)
def test_a_release_with_a_pending_migration_or_no_answer_holds(asked, answer):
    asked.answer = answer
    compose = stack(FakeContainer("p-db-1"), FakeContainer("p-api-1", config_hash=OLD), FakeContainer("p-web-1"))
    run = rollout(compose, first=["db"], services=["api", "web"], hold=["api"], migrations=[API_MIGRATIONS])
    assert run.held == ["api"]
    assert [r["name"] for r in run.reports] == ["db"], "nothing rolled: the migrations run first"


def test_a_release_asks_the_image_beside_the_data_services_and_the_accounts(asked, fake_store):
    compose = stack(FakeContainer("p-db-1"), FakeContainer("p-api-1", config_hash=OLD), FakeContainer("p-web-1"))
    fake_store.compose = compose
    run = rollout(compose, first=["db"], services=["api", "web"], hold=["api"], stores=[STORE],
                  migrations=[API_MIGRATIONS])  # fmt: skip
    assert (run.held, asked.threads) == ([], ["beside"])


def test_an_early_answer_that_failed_is_asked_for_again_once_the_accounts_are_brought(asked, fake_store):
    # A rotated owner password: the new one works once the accounts are brought.
    asked.answers = [compose_rollout.MigrationError("password authentication failed for user pliers_api_owner")]
    compose = stack(FakeContainer("p-db-1"), FakeContainer("p-api-1", config_hash=OLD), FakeContainer("p-web-1"))
    fake_store.compose = compose
    run = rollout(compose, first=["db"], services=["api", "web"], hold=["api"], stores=[STORE],
                  migrations=[API_MIGRATIONS])  # fmt: skip
    assert (run.held, asked.threads) == ([], ["beside", "main"])


def test_a_first_deploy_asks_the_image_once_the_database_runs(asked, fake_store):
    compose = stack(new_health={"db": ["starting", "healthy"]})
    fake_store.compose = compose
    run = rollout(compose, first=["db"], services=["api", "web"], hold=["api"], stores=[STORE],
                  migrations=[API_MIGRATIONS])  # fmt: skip
    assert asked.threads == ["main"]
    assert run.migration_status == {"api": {"pending": [], "applied": ["001_items"]}}


def test_the_image_is_not_asked_when_its_service_needs_nothing(asked):
    compose = stack(FakeContainer("p-db-1"), FakeContainer("p-api-1"), FakeContainer("p-web-1"))
    run = rollout(compose, first=["db"], services=["api", "web"], hold=["api"], migrations=[API_MIGRATIONS])
    assert (run.held, asked.calls) == ([], [])


def monitored(*containers, **kwargs):
    """stack() with a monitoring service beside the data services, which nothing rolled depends on."""
    compose = stack(*containers, **kwargs)
    compose.model["services"]["prom"] = {"healthcheck": HEALTHCHECK}
    compose.desired["prom"] = NEW
    return compose


def test_what_nothing_rolled_depends_on_starts_with_the_data_services_and_is_waited_for_after_the_rollout():
    compose = monitored(FakeContainer("p-db-1"), FakeContainer("p-api-1", config_hash=OLD),
                        new_health={"prom": ["starting", "starting", "healthy"]})  # fmt: skip
    run = rollout(compose, first=["db", "prom"], services=["api"])
    events = [e for e in compose.events if e[0] in ("compose", "health")]
    assert events.index(("compose", "up --detach prom")) < events.index(
        ("compose", "up --no-start --no-recreate --scale api=2 api")
    )
    assert events.index(("compose", "up --no-start --no-recreate --scale api=2 api")) < events.index(
        ("health", "p-prom-1", "healthy")
    )
    assert {r["name"]: r["action"] for r in run.reports} == {"db": "unchanged", "prom": "converged", "api": "rolled"}


def test_what_nothing_rolled_depends_on_failing_its_health_is_reported_and_the_release_goes_on():
    def unhealthy_monitoring():
        return monitored(FakeContainer("p-db-1"), FakeContainer("p-api-1", config_hash=OLD),
                         new_health={"prom": "unhealthy"})  # fmt: skip

    run = rollout(unhealthy_monitoring(), first=["db", "prom"], services=["api"], hold=["api"])
    assert run.held == ["api"], "the migrations do not wait for its health"
    run = rollout(unhealthy_monitoring(), first=["db", "prom"], services=["api"])
    reports = {r["name"]: r for r in run.reports}
    assert reports["api"]["action"] == "rolled"
    assert reports["prom"]["action"] == "failed"
    assert reports["prom"]["reason"] == "the container p-prom-1 is unhealthy (its health check last said: ok)"


def test_nothing_holds_when_the_services_with_migrations_need_nothing():
    compose = stack(FakeContainer("p-db-1"), FakeContainer("p-api-1"), FakeContainer("p-web-1", config_hash=OLD))
    run = rollout(compose, first=["db"], services=["api", "web"], hold=["api"])
    assert run.held == []
    assert {r["name"]: r["action"] for r in run.reports} == {"db": "unchanged", "api": "unchanged", "web": "rolled"}


def images_to_pull(*containers, here=(), **kwargs):
    """monitored(), each service with an image its registry holds, which the host lacks unless in HERE."""
    compose = monitored(*containers, **kwargs)
    for service, definition in compose.model["services"].items():
        definition["image"] = f"registry/{service}:1"
    compose.images.registry = {f"registry/{service}:1" for service in compose.model["services"]}
    compose.images.here = {f"registry/{service}:1" for service in here}
    compose.on_pull = lambda services: compose.events.append(("pulled", *services))
    return compose


def test_a_first_deploy_pulls_the_data_services_images_then_the_others_beside_their_start():
    compose = images_to_pull()
    db_started = threading.Event()

    def on_pull(services):
        if "api" in services:
            # Not before the data services are started: this pull runs beside them.
            assert db_started.wait(5), "the other images were pulled before the data services started"
            compose.events.append(("pulled", *services))

    compose.on_pull = on_pull
    run_up = compose.run

    def run(*args):
        result = run_up(*args)
        if args[:3] == ("up", "--detach", "db"):
            db_started.set()
        return result

    compose.run = run
    run = rollout(compose, first=["db", "prom"], services=["api"], pull=True)
    assert compose.commands[0] == "pull --quiet db"
    assert compose.events.index(("pulled", "api", "prom")) < compose.events.index(("compose", "up --detach prom"))
    assert run.pulled == ["registry/api:1", "registry/db:1", "registry/prom:1"]
    assert [(r["name"], r["action"]) for r in run.reports] == [("db", "converged"), ("prom", "converged"),
                                                               ("api", "repaired")]  # fmt: skip


def test_what_depends_on_an_image_still_pulling_starts_once_it_is_here():
    compose = images_to_pull(here=["db", "api", "graf"])
    compose.model["services"]["graf"] = {"image": "registry/graf:1", "healthcheck": HEALTHCHECK,
                                         "depends_on": {"prom": {}}}  # fmt: skip
    compose.desired["graf"] = NEW
    rollout(compose, first=["db", "prom", "graf"], services=["api"], pull=True)
    events = [e for e in compose.events if e[0] in ("compose", "pulled")]
    assert events[:3] == [("compose", "pull --quiet prom"), ("pulled", "prom"), ("compose", "up --detach db")] or (
        events.index(("compose", "up --detach db")) < events.index(("pulled", "prom"))
    )
    assert events.index(("pulled", "prom")) < events.index(("compose", "up --detach prom graf"))


def test_what_waited_for_its_image_and_turns_unhealthy_is_reported_failed():
    compose = images_to_pull(new_health={"prom": "unhealthy"})
    run = rollout(compose, first=["db", "prom"], services=["api"], pull=True)
    assert {r["name"]: r["action"] for r in run.reports}["prom"] == "failed"


def test_what_waited_for_its_image_is_skipped_when_a_data_service_it_depends_on_failed():
    compose = images_to_pull(fail_up=["db"])
    compose.model["services"]["prom"]["depends_on"] = {"db": {}}
    run = rollout(compose, first=["db", "prom"], services=["api"], pull=True)
    actions = {r["name"]: r["action"] for r in run.reports}
    assert (actions["db"], actions["prom"]) == ("failed", "skipped")


def test_a_release_asks_its_new_image_once_the_pull_brought_it(monkeypatch):
    compose = images_to_pull(FakeContainer("p-db-1"), FakeContainer("p-api-1", config_hash=OLD), here=["db"])
    compose.images.here.add("registry/prom:1")
    compose.add(FakeContainer("p-prom-1"))
    # The pull takes a while: an ask that did not wait for it would come first.
    compose.on_pull = lambda services: (threading.Event().wait(0.2), compose.events.append(("pulled", *services)))

    def run_json(module, client, command, **container):
        compose.events.append(("asked", container["image"]))
        return {"pending": [], "applied": ["001_items"]}

    monkeypatch.setattr(compose_rollout, "run_json", run_json)
    migrations = [dict(API_MIGRATIONS, image="registry/api:1")]
    run = rollout(compose, first=["db", "prom"], services=["api"], hold=["api"], migrations=migrations, pull=True)
    assert compose.events.index(("pulled", "api")) < compose.events.index(("asked", "registry/api:1"))
    assert run.held == []


def test_an_image_its_registry_does_not_hold_fails_the_run_before_anything_changes():
    compose = images_to_pull()
    compose.images.registry.discard("registry/api:1")
    with pytest.raises(RolloutError) as failure:
        rollout(compose, first=["db", "prom"], services=["api"], pull=True)
    assert str(failure.value) == (
        "cannot pull registry/api:1 (for api): manifest for registry/api:1 not found: manifest unknown"
    )
    assert compose.commands == []


def test_a_pull_that_fails_beside_the_data_services_fails_the_run_before_anything_rolls():
    compose = images_to_pull(fail_pull=["api"])
    with pytest.raises(RolloutError, match=r"docker compose pull --quiet api prom failed \(exit 18\)"):
        rollout(compose, first=["db", "prom"], services=["api"], pull=True)
    assert [c for c in compose.commands if c.startswith("up")] == ["up --detach db"]


def test_check_mode_says_which_images_it_would_pull_and_pulls_none():
    compose = images_to_pull()
    run = rollout(compose, check_mode=True, first=["db", "prom"], services=["api"], pull=True)
    assert run.pulled == ["registry/api:1", "registry/db:1", "registry/prom:1"]
    assert compose.commands == []


@pytest.fixture
def fake_store(monkeypatch):
    """A postgres store whose passes are recorded in the compose events (prune or not), answering as the test says."""

    class Store:
        prunable = []
        unreachable = False

        def bring(self, module, client, store, prune):
            self.compose.events.append(f"access {store['host']} on {store['network']}" + (" prune" if prune else ""))
            if self.unreachable:
                raise compose_rollout.StoreNotReached("db does not answer", "psql on db/app failed: refused")
            return dict(changed=False, reached=True, actions=["drop login app_0000000a"] if prune else [], notes=[],
                        prunable=[] if prune else self.prunable)  # fmt: skip

    store = Store()
    monkeypatch.setattr(_store, "reach", lambda *_: None)
    monkeypatch.setattr(compose_rollout, "STORE_KINDS", {"postgres": types.SimpleNamespace(bring=store.bring)})
    return store


STORE = {"service": "db", "kind": "postgres", "network": "backend", "accounts": []}


def accesses(compose):
    return [event for event in compose.events if isinstance(event, str) and event.startswith("access")]


def test_the_stores_accounts_are_brought_after_the_data_services_and_before_a_hold(fake_store):
    compose = stack(FakeContainer("p-db-1"), FakeContainer("p-api-1", config_hash=OLD), FakeContainer("p-web-1"))
    fake_store.compose = compose
    run = rollout(compose, first=["db"], services=["api", "web"], hold=["api"], stores=[STORE], remove_orphans=True)
    assert run.held == ["api"] and compose.events == ["access db on p_backend"]
    assert run.access_reports == [], "nothing to say: nothing changed"


def test_a_prune_pass_runs_once_everything_rolled_and_only_when_the_first_found_something(fake_store):
    compose = stack(FakeContainer("p-db-1"), FakeContainer("p-api-1", config_hash=OLD), FakeContainer("p-web-1"))
    fake_store.compose = compose
    run = rollout(compose, first=["db"], services=["api", "web"], stores=[STORE], remove_orphans=True)
    assert accesses(compose) == ["access db on p_backend"], "a no-op: no prune"
    compose.events.clear()
    fake_store.prunable = ["app_0000000a"]
    run = rollout(compose, first=["db"], services=["api", "web"], stores=[STORE], remove_orphans=True)
    assert accesses(compose) == ["access db on p_backend", "access db on p_backend prune"]
    # The prune came after the rollout's last step.
    assert compose.events.index("access db on p_backend prune") == len(compose.events) - 1
    assert run.access_reports == [{"store": "db", "prune": True, "actions": ["drop login app_0000000a"], "notes": []}]
    assert run.result(0.0)["changed"] is True


def test_the_run_after_the_migrations_brings_no_account_again_and_prunes_what_the_first_found(fake_store):
    compose = stack(FakeContainer("p-db-1"), FakeContainer("p-api-1", config_hash=OLD), FakeContainer("p-web-1"))
    fake_store.compose = compose
    first = rollout(compose, first=["db"], services=["api", "web"], hold=["api"], stores=[STORE], remove_orphans=True)
    assert first.result(0.0)["prunable"] == {"db": []}
    compose.events.clear()
    brought = {"db": ["app_0000000a"]}
    run = rollout(compose, services=["api", "web"], stores=[STORE], remove_orphans=True, accounts_brought=brought)
    assert accesses(compose) == ["access db on p_backend prune"]
    compose.events.clear()
    rollout(compose, services=["api", "web"], stores=[STORE], remove_orphans=True, accounts_brought={"db": []})
    assert accesses(compose) == [], "nothing to drop: no prune"
    assert run.result(0.0)["prunable"] == {"db": []}


def test_a_service_that_logs_in_to_a_store_converges_after_its_accounts_and_another_failure_skips_none(fake_store):
    services = {name: {"healthcheck": HEALTHCHECK} for name in ("db", "exporter", "cache", "api")}
    services["api"]["depends_on"] = {"db": {}}
    # A first deploy's: the store is started too.
    compose = FakeCompose(services, [FakeContainer("p-api-1")], new_health={"cache": "unhealthy"})
    fake_store.compose = compose
    # The store holds an account of its own too (the backups'): it starts first all the same.
    store = dict(STORE, accounts=[{"name": "monitor", "service": "exporter"}, {"name": "backup", "service": "db"}])
    rollout(compose, first=["db", "cache", "exporter"], services=["api"], stores=[store])
    access = compose.events.index("access db on p_backend")
    ups = {service: i for i, e in enumerate(compose.events) if e[0] == "compose" for service in e[1].split()[2:]}
    assert ups["exporter"] > access, "the exporter starts once its login exists"
    assert ups["db"] < access
    assert ups["cache"] < access, "cache failing skips no store's accounts"


def test_a_store_that_does_not_answer_stops_the_run_before_anything_rolls(fake_store):
    compose = stack(FakeContainer("p-db-1"), FakeContainer("p-api-1", config_hash=OLD))
    fake_store.compose, fake_store.unreachable = compose, True
    with pytest.raises(RolloutError, match="the accounts on db could not be brought: psql on db/app failed: refused"):
        rollout(compose, first=["db"], services=["api"], stores=[STORE])
    assert names(compose.containers("api")) == ["p-api-1"] and compose.commands == []


def test_a_hold_after_a_data_service_failed_stops_the_release_naming_it():
    compose = stack(FakeContainer("p-api-1", config_hash=OLD), new_health={"db": "unhealthy"})
    with pytest.raises(
        RolloutError,
        match="the release stops before the migrations of api, with no app container "
        "changed: could not bring back db: the container p-db-1 is unhealthy",
    ):
        rollout(compose, first=["db"], services=["api"], hold=["api"])
    assert names(compose.containers("api")) == ["p-api-1"]


def test_check_mode_does_not_hold_and_says_what_it_would_do():
    compose = stack(FakeContainer("p-db-1"), FakeContainer("p-api-1", config_hash=OLD), FakeContainer("p-web-1"))
    run = rollout(compose, check_mode=True, first=["db"], services=["api", "web"], hold=["api"])
    assert run.held == ["api"]
    assert {r["name"]: r["action"] for r in run.reports} == {"db": "unchanged", "api": "would roll", "web": "unchanged"}
    assert compose.commands == []


def worker_on(*api_containers, condition="service_healthy"):
    """A project whose worker depends on the api (healthy, by default), with these api containers."""
    services = {"api": {"healthcheck": HEALTHCHECK},
                "worker": {"healthcheck": HEALTHCHECK, "depends_on": {"api": {"condition": condition}}}}  # fmt: skip
    return FakeCompose(services, api_containers)


def test_a_dependency_unhealthy_for_a_moment_is_waited_for_before_compose_starts_what_depends_on_it(clock):
    # The api's health check failed while the database was down: it passes again at its next run.
    recovering = FakeContainer("p-api-1", health=["unhealthy", "unhealthy", "unhealthy", "healthy"])
    compose_rollout.dependencies_recovered(worker_on(recovering), ["worker"], timeout=180)
    assert recovering.health_status() == "healthy" and clock.slept == [1, 1, 1]


def test_a_dependency_that_stays_unhealthy_is_left_to_compose_after_a_few_health_checks(clock):
    broken = FakeContainer("p-api-1", health="unhealthy")
    compose_rollout.dependencies_recovered(worker_on(broken, FakeContainer("p-api-2")), ["worker"], timeout=180)
    assert sum(clock.slept) == compose_rollout.RECOVERY_WAIT == 30
    clock.slept.clear()
    compose_rollout.dependencies_recovered(worker_on(broken), ["worker"], timeout=10)
    assert sum(clock.slept) == 10


def test_only_an_unhealthy_running_container_of_a_dependency_that_must_be_healthy_is_waited_for(clock):
    # Starting (Compose waits for it itself), stopped, or depended on only to have started: nothing to wait for.
    starting = FakeContainer("p-api-1", health="starting")
    stopped = FakeContainer("p-api-3", status="exited", health="unhealthy")
    compose_rollout.dependencies_recovered(worker_on(starting, stopped), ["worker"], timeout=30)
    broken = FakeContainer("p-api-1", health="unhealthy")
    compose_rollout.dependencies_recovered(worker_on(broken, condition="service_started"), ["worker"], timeout=30)
    assert clock.slept == []


class FakeVolumes:
    """client.volumes: the project's volumes by name, each at a directory of the test's; a volume made is one more
    directory beside them (its labels recorded)."""

    def __init__(self, mountpoints):
        self.mountpoints = mountpoints
        self.labels = {}

    def get(self, name):
        if name not in self.mountpoints:
            raise NotFound(f"get {name}: no such volume")
        return types.SimpleNamespace(attrs={"Mountpoint": str(self.mountpoints[name])})

    def create(self, name, labels):
        assert name not in self.mountpoints, f"{name} made twice"
        top = next(iter(self.mountpoints.values())).parent / name
        top.mkdir()
        self.mountpoints[name], self.labels[name] = top, labels
        return self.get(name)


@pytest.fixture
def owned(tmp_path, monkeypatch):
    """A volume p_prom_data (a directory, a file, a symbolic link in it) owned by this test's user, a service prom
    that mounts it, and the paths lchown was called on (recorded, not done: the test need not run as root)."""
    top = tmp_path / "p_prom_data"
    (top / "wal").mkdir(parents=True)
    (top / "wal" / "00000001").write_text("samples")
    (top / "current").symlink_to("/etc/passwd")
    handed = []
    monkeypatch.setattr(compose_rollout.os, "lchown", lambda path, uid, gid: handed.append((path, uid, gid)))
    compose = FakeCompose({"prom": {"healthcheck": HEALTHCHECK}}, [FakeContainer("p-prom-1")])
    return types.SimpleNamespace(top=top, handed=handed, compose=compose, client=types.SimpleNamespace(
        volumes=FakeVolumes({"p_prom_data": top})))  # fmt: skip


def owned_by(uid, gid, volume="prom_data"):
    return [{"service": "prom", "volume": volume, "uid": uid, "gid": gid}]


def test_a_volume_with_a_file_of_another_owner_is_handed_over_its_service_stopped_then_started(owned):
    uid, gid = os.getuid() + 1, os.getgid()
    run = rollout(owned.compose, client=owned.client, in_place=["prom"], owned_volumes=owned_by(uid, gid))
    paths = {str(owned.top), *(str(path) for path in owned.top.rglob("*"))}
    assert {path for path, *_owner in owned.handed} == paths
    assert {tuple(owner) for _path, *owner in owned.handed} == {(uid, gid)}
    assert run.handed == [{"volume": "prom_data", "service": "prom", "owner": f"{uid}:{gid}", "found": str(owned.top)}]
    # Stopped before its files changed hands, started again by the converge.
    assert owned.compose.events[:2] == [("stop", "p-prom-1"), ("compose", "up --detach prom")]
    assert run.result(0.0)["changed"] is True


def test_a_file_of_another_group_deep_in_the_volume_is_found_and_one_removed_meanwhile_is_skipped():
    # Not the test's own files: the rule itself, on what lstat says of each path.
    stats = {"/v": (1, 1), "/v/wal": (1, 1), "/v/wal/0001": (1, 2)}
    walk = [("/v", ["wal"], []), ("/v/wal", [], ["0001"])]

    def lstat(path):
        if path not in stats:
            raise FileNotFoundError(path)
        return types.SimpleNamespace(st_uid=stats[path][0], st_gid=stats[path][1])

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(compose_rollout.os, "walk", lambda _top: iter(walk))
        patch.setattr(compose_rollout.os, "lstat", lstat)
        assert compose_rollout.foreign_file("/v", 1, 1) == "/v/wal/0001"
        stats["/v/wal/0001"] = (1, 1)
        assert compose_rollout.foreign_file("/v", 1, 1) is None
        # Removed by the running service between the listing and its reading.
        del stats["/v/wal/0001"]
        assert compose_rollout.foreign_file("/v", 1, 1) is None


def test_a_volume_all_its_users_is_left_alone_and_changes_nothing(owned):
    run = rollout(
        owned.compose, client=owned.client, in_place=["prom"], owned_volumes=owned_by(os.getuid(), os.getgid())
    )
    assert owned.handed == [] and run.handed == [] and owned.compose.events == []
    assert run.result(0.0)["changed"] is False


def test_a_volume_not_made_yet_is_made_for_its_user_as_compose_would_name_it_and_nothing_is_stopped(owned):
    run = rollout(owned.compose, client=owned.client, in_place=["prom"], owned_volumes=owned_by(7, 8, "new_data"))
    top = owned.client.volumes.mountpoints["p_new_data"]
    assert owned.client.volumes.labels == {
        "p_new_data": {"com.docker.compose.project": "p", "com.docker.compose.volume": "new_data"}
    }
    # Its top only (it is empty): the service mounts it without the image's content (nocopy).
    assert owned.handed == [(str(top), 7, 8)] and owned.compose.events == []
    assert run.handed == [{"volume": "new_data", "service": "prom", "owner": "7:8", "found": None}]
    assert run.result(0.0)["changed"] is True


def test_check_mode_says_which_volume_would_be_made_and_makes_none(owned):
    run = rollout(owned.compose, True, client=owned.client, in_place=["prom"], owned_volumes=owned_by(7, 8, "new_data"))
    assert run.handed == [{"volume": "new_data", "service": "prom", "owner": "7:8", "found": None}]
    assert "p_new_data" not in owned.client.volumes.mountpoints and owned.handed == []
    assert run.result(0.0)["changed"] is True


def test_check_mode_says_which_volume_would_be_handed_over_and_stops_nothing(owned):
    uid = os.getuid() + 1
    run = rollout(owned.compose, True, client=owned.client, in_place=["prom"], owned_volumes=owned_by(uid, 0))
    assert [entry["volume"] for entry in run.handed] == ["prom_data"] and run.result(0.0)["changed"] is True
    assert owned.handed == [] and owned.compose.events == [] and owned.compose.commands == []
