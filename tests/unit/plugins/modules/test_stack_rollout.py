"""stack_rollout's decisions, on service and task data shaped as the Docker API returns them."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

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


def test_a_rollback_is_reported_with_the_error_of_the_task_that_caused_it():
    # While it rolls back, Swarm's message names the task; the task's error says why.
    failed = dict(task("failed", err="task: non-zero exit (1)"), ID="t1")
    rolling_back = "update rolled back due to failure or early termination of task t1"
    update = {"State": "rollback_started", "Message": rolling_back}
    state = stack_rollout.service_state(FakeService([task(), failed], replicas=1, update=update), "s")
    assert state["message"] == f"{rolling_back}: task: non-zero exit (1)"
    assert state["blocked"] is False
    # Once rolled back, the message names no task, and the service runs the spec it had before: the error is the
    # newest of a task that ran the other one.
    update = {"State": "rollback_completed", "Message": "rollback completed"}
    failed = task("failed", spec=OLD_SPEC, err="task: non-zero exit (1)")
    older = task("failed", err="an earlier failure of the current spec")
    state = stack_rollout.service_state(FakeService([task(), failed, older], replicas=1, update=update), "s")
    assert state["message"] == "rollback completed: task: non-zero exit (1)"


def test_a_rollback_caused_by_a_task_that_ended_without_an_error_says_how_it_ended():
    update = {"State": "rollback_completed", "Message": "rollback completed"}
    ended = task("complete", spec=OLD_SPEC)
    ended["Status"]["Message"] = "finished"
    state = stack_rollout.service_state(FakeService([task(), ended], replicas=1, update=update), "s")
    assert state["message"] == "rollback completed: its task complete (finished)"


def test_a_rollback_that_no_node_up_can_run_is_blocked():
    # The previous spec was pinned to a node that went down: Swarm would wait for that node forever.
    update = {"State": "rollback_started", "Message": "update rolled back"}
    unplaceable = "no suitable node (scheduling constraints not satisfied on 3 nodes)"
    pending = FakeService([task("pending", spec=OLD_SPEC, err=unplaceable)], replicas=1, update=update)
    state = stack_rollout.service_state(pending, "s")
    assert state["blocked"] is True
    cannot_finish = f"the rollback cannot finish: no node can run its task ({unplaceable})"
    assert state["message"] == f"update rolled back; {cannot_finish}"
    assigned = FakeService([on_node("n1", "assigned", spec=OLD_SPEC)], replicas=1, update=update)
    state = stack_rollout.service_state(assigned, "s", down={"n1": "manager-1"})
    assert state["blocked"] is True and state["message"].endswith("its task waits on manager-1, which is down")
    # Waiting for resources (old tasks still stopping) is not blocked: they free up.
    busy = task("pending", spec=OLD_SPEC, err="no suitable node (insufficient resources on 3 nodes)")
    assert stack_rollout.service_state(FakeService([busy], replicas=1, update=update), "s")["blocked"] is False


def test_pruning_keeps_what_the_current_and_previous_specs_use():
    service = FakeService([task()], previous=OLD_SPEC)
    assert stack_rollout.referenced([service], "secrets") == {"s_api_db_new", "s_api_db_old"}
    assert stack_rollout.referenced([FakeService([task()])], "secrets") == {"s_api_db_new"}


def on_node(node, state="running", spec=None, created="2026-11-29T07:40:00.123456789Z"):
    return dict(task(state, spec), NodeID=node, CreatedAt=created)


def test_an_update_waiting_for_a_task_on_a_lost_node_is_to_be_resumed():
    # Swarm's updater waits for a task assigned to a node that went down: it would wait forever.
    update = {"State": "updating", "StartedAt": "2026-11-29T07:39:52.825958181Z"}
    service = FakeService([on_node("n1"), on_node("n3", "assigned")], update=update)
    state = stack_rollout.service_state(service, "s", down={"n3": "worker-3"})
    assert state["resume"] == "its update waited for a task on worker-3, which is down"
    # A task on that node from before this update is not this update's.
    earlier = FakeService([on_node("n1"), on_node("n3", "assigned", created="2026-11-29T07:00:00Z")], update=update)
    assert stack_rollout.service_state(earlier, "s", down={"n3": "worker-3"})["resume"] == ""


def test_tasks_of_an_older_spec_with_no_update_in_progress_are_to_be_resumed():
    half = FakeService([task(), task(spec=OLD_SPEC)])
    assert (
        stack_rollout.service_state(half, "s")["resume"]
        == "1 tasks of an older spec still ran with no update in progress"
    )
    assert stack_rollout.service_state(FakeService([task(), task()]), "s")["resume"] == ""


def test_a_service_changed_a_moment_ago_is_not_resumed_before_swarm_starts_its_update():
    # docker stack deploy has just changed it: the update is about to start (a forced one would replace it).
    def changed(seconds_ago):
        service = FakeService([task(), task(spec=OLD_SPEC)], update={"State": "completed"})
        moment = datetime.now(timezone.utc) - timedelta(seconds=seconds_ago)
        service.attrs["UpdatedAt"] = moment.strftime("%Y-%m-%dT%H:%M:%S.%f123Z")
        return service

    assert stack_rollout.service_state(changed(2), "s")["resume"] == ""
    assert stack_rollout.service_state(changed(60), "s")["resume"].startswith("1 tasks of an older spec")


def test_an_earlier_deploys_rollback_counts_as_converged_and_its_pause_is_to_be_resumed():
    since = stack_rollout.timestamp("2026-11-29T08:00:00+00:00")
    old = "2026-11-29T07:00:00.5Z"
    rolled_back = FakeService([task(), task()], update={"State": "rollback_completed", "StartedAt": old})
    assert stack_rollout.service_state(rolled_back, "s", since)["converged"] is True
    paused = stack_rollout.service_state(
        FakeService([task()], update={"State": "paused", "StartedAt": old}), "s", since
    )
    assert paused["stale"] and paused["resume"] == "its update was left paused by an earlier deploy"
    now = FakeService([task()], update={"State": "paused", "StartedAt": "2026-11-29T08:00:01Z"})
    assert stack_rollout.service_state(now, "s", since)["resume"] == "", "this deploy's own pause is a failure"
