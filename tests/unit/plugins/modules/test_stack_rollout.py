"""stack_rollout's decisions, on service and task data shaped as the Docker API returns them."""

from __future__ import annotations

from ansible_collections.pliers.deploy.plugins.modules import stack_rollout

SPEC = {"Image": "api:1.1.0", "Secrets": [{"SecretName": "s_api_db_new"}]}
OLD_SPEC = {"Image": "api:1.0.0", "Secrets": [{"SecretName": "s_api_db_old"}]}


class FakeService:
    def __init__(self, tasks, replicas=2, update=None, previous=None):
        self.attrs = {"Spec": {"Name": "s_api", "Mode": {"Replicated": {"Replicas": replicas}},
                               "TaskTemplate": {"ContainerSpec": SPEC}}}  # fmt: skip
        if update:
            self.attrs["UpdateStatus"] = update
        if previous:
            self.attrs["PreviousSpec"] = {"TaskTemplate": {"ContainerSpec": previous}}
        self._tasks = tasks

    def tasks(self, filters=None):
        return self._tasks


def task(state="running", spec=None, err=""):
    return {"Spec": {"ContainerSpec": spec or SPEC}, "Status": {"State": state, "Err": err}, "UpdatedAt": "2026"}


def test_converged_only_when_every_desired_task_runs_the_current_spec():
    assert stack_rollout.service_state(FakeService([task(), task()]), "s")["converged"] is True
    stale = stack_rollout.service_state(FakeService([task(), task(spec=OLD_SPEC)]), "s")
    assert (stale["running"], stale["desired"], stale["converged"]) == (1, 2, False)
    updating = FakeService([task(), task()], update={"State": "updating"})
    assert stack_rollout.service_state(updating, "s")["converged"] is False


def test_a_rollback_is_reported_with_its_message():
    state = stack_rollout.service_state(
        FakeService([task()], replicas=1, update={"State": "rollback_completed", "Message": "update rolled back"}),
        "s",
    )
    assert state["name"] == "api" and state["update_state"] in stack_rollout.FAILED_UPDATES
    assert state["message"] == "update rolled back"


def test_pruning_keeps_what_the_current_and_previous_specs_use():
    service = FakeService([task()], previous=OLD_SPEC)
    assert stack_rollout.referenced([service], "secrets") == {"s_api_db_new", "s_api_db_old"}
    assert stack_rollout.referenced([FakeService([task()])], "secrets") == {"s_api_db_new"}
