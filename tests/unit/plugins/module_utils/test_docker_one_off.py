"""The modules' one-off containers (migrate, postgres_access): a start whose Swarm network attachment timed out is
tried again, nothing else."""

from __future__ import annotations

import pytest
from ansible_collections.pliers.deploy.plugins.module_utils import _docker
from ansible_collections.pliers.deploy.plugins.module_utils._docker import DockerException

ATTACH_TIMEOUT = (
    "attaching to network failed, make sure your network options are correct and check manager logs: "
    "context deadline exceeded"
)


class FakeContainer:
    def __init__(self, failure: str | None):
        self.failure = failure
        self.removed = False

    def start(self):
        if self.failure:
            raise DockerException(f"500 Server Error: Internal Server Error ({self.failure!r})")


class FakeClient:
    """Each create returns the next container, whose start fails with the next failure (None: it starts)."""

    def __init__(self, failures):
        self.failures = list(failures)
        self.created: list[FakeContainer] = []
        self.containers = self

    def create(self, **create):
        container = FakeContainer(self.failures.pop(0))
        container.remove = lambda force: setattr(container, "removed", True)
        self.created.append(container)
        return container


class FakeModule:
    def __init__(self):
        self.warnings: list[str] = []

    def warn(self, message):
        self.warnings.append(message)


@pytest.fixture(autouse=True)
def no_wait(monkeypatch):
    monkeypatch.setattr(_docker, "START_RETRY_SECONDS", 0)


def test_a_timed_out_network_attachment_is_started_again_in_a_new_container():
    client, module = FakeClient([ATTACH_TIMEOUT, ATTACH_TIMEOUT, None]), FakeModule()
    container = _docker._started(module, client, {"image": "api:1.0.0"})
    assert container is client.created[-1] and not container.removed
    assert [c.removed for c in client.created] == [True, True, False]
    assert len(module.warnings) == 2 and "attempt 1 of 3" in module.warnings[0]


def test_the_attachment_failing_every_time_fails_naming_it():
    client = FakeClient([ATTACH_TIMEOUT] * _docker.START_ATTEMPTS)
    with pytest.raises(DockerException, match="attaching to network failed"):
        _docker._started(FakeModule(), client, {"image": "api:1.0.0"})
    assert len(client.created) == _docker.START_ATTEMPTS and all(c.removed for c in client.created)


def test_any_other_start_failure_is_not_retried():
    client = FakeClient(["No such image: api:9.9.9"])
    with pytest.raises(DockerException, match="No such image"):
        _docker._started(FakeModule(), client, {"image": "api:9.9.9"})
    assert len(client.created) == 1 and client.created[0].removed
