"""compose_rollout's decisions, on containers shaped as the Docker SDK returns them (the rollouts
themselves run on the real lab: tests/lab/test_releases.py)."""

from __future__ import annotations

import pytest
from ansible_collections.pliers.deploy.plugins.modules import compose_rollout


class FakeContainer:
    def __init__(self, name, status="running", health="healthy", last="ok"):
        self.name = name
        self.attrs = {
            "State": {"Status": status, "ExitCode": 1, "Health": {"Status": health, "Log": [{"Output": last}]}}
        }

    def reload(self):
        pass


def test_the_upstream_names_each_container_and_is_never_empty():
    text = compose_rollout.upstream("api", 3000, ["p-api-3", "p-api-4"])
    assert "upstream api {" in text and "least_conn;" in text
    assert "server p-api-3:3000 max_fails=3" in text and "server p-api-4:3000" in text
    assert "server 127.0.0.1:9 down;" in compose_rollout.upstream("api", 3000, [])


def test_healthy_containers_pass():
    compose_rollout.wait_healthy([FakeContainer("p-api-2")], "api", timeout=1)


def test_an_unhealthy_container_fails_at_once_with_what_its_check_said():
    sick = FakeContainer("p-api-2", health="unhealthy", last="HTTP Error 503: Service Unavailable")
    with pytest.raises(compose_rollout.RolloutError) as error:
        compose_rollout.wait_healthy([FakeContainer("p-api-3"), sick], "api", timeout=60)
    assert str(error.value) == (
        "service api: the new container p-api-2 is unhealthy; its health check last said: "
        "HTTP Error 503: Service Unavailable"
    )


def test_an_exited_container_fails_with_its_exit_code():
    with pytest.raises(compose_rollout.RolloutError, match=r"p-web-2 is exited.*exit code 1"):
        compose_rollout.wait_healthy([FakeContainer("p-web-2", status="exited")], "web", timeout=60)


def test_a_container_still_starting_at_the_deadline_fails_naming_it():
    starting = FakeContainer("p-ai-2", health="starting", last="connection refused")
    with pytest.raises(compose_rollout.RolloutError, match=r"did not turn healthy in 0s \(still starting\)"):
        compose_rollout.wait_healthy([starting], "ai-service", timeout=0)


class FakeExec:
    def __init__(self, exit_codes):
        self.exit_codes = list(exit_codes)
        self.calls = 0

    def exec_run(self, command):
        self.calls += 1
        return type("Result", (), {"exit_code": self.exit_codes.pop(0), "output": b"invalid PID number"})()


def test_a_reload_is_tried_again_while_the_edge_starts_then_its_failure_is_kept(monkeypatch):
    monkeypatch.setattr(compose_rollout.time, "sleep", lambda seconds: None)
    starting = FakeExec([1, 1, 0])
    assert compose_rollout.exec_with_tries(starting, ["nginx", "-s", "reload"], 5).exit_code == 0
    assert starting.calls == 3
    broken = FakeExec([1, 1])
    assert compose_rollout.exec_with_tries(broken, ["nginx", "-s", "reload"], 2).exit_code == 1
    assert broken.calls == 2
