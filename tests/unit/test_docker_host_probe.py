"""The docker_host probe's reading of a Swarm manager's tasks, without an engine: which services are stuck on a
stale overlay device (moby/libnetwork#1765) and must have their node's engine restarted. (The unlock and the wait
for the tasks run on the Swarm lab: tests/lab/test_output_secrets.py.)"""

from __future__ import annotations

import datetime
import importlib.util
import json

from ..paths import ROOT

SPEC = importlib.util.spec_from_file_location("probe", ROOT / "roles/docker_host/files/probe.py")
probe = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(probe)

STARTED = datetime.datetime(2026, 12, 3, 20, 0, tzinfo=datetime.UTC)
STUCK = (
    'network sandbox join failed: subnet sandbox join failed for "10.0.2.0/24": '
    "error creating vxlan interface: file exists"
)


def task(service, slot, created, state, error="", stamp="2026-12-03T20:05:00.123456789Z", desired="running"):
    return {
        "ServiceID": service, "Slot": slot, "NodeID": "node-a", "CreatedAt": created, "DesiredState": desired,
        "Status": {"State": state, "Err": error, "Timestamp": stamp},
    }  # fmt: skip


def test_a_slot_whose_newest_task_failed_on_a_stale_overlay_device_is_stuck():
    tasks = [
        task("postgres", 1, "2026-12-03T20:01:00Z", "rejected", STUCK),
        task("postgres", 1, "2026-12-03T20:04:00Z", "rejected", STUCK),
        task("redis", 1, "2026-12-03T20:04:00Z", "running"),
    ]
    assert probe.stuck_overlay(tasks, STARTED) == ["postgres"]


def test_a_slot_running_again_or_a_failure_from_the_engines_earlier_life_is_not_stuck():
    tasks = [
        task("postgres", 1, "2026-12-03T20:01:00Z", "rejected", STUCK),
        task("postgres", 1, "2026-12-03T20:02:00Z", "running"),
        # A global service's slot is its node; this failure is older than the engine's start.
        task("node-exporter", 0, "2026-12-03T19:50:00Z", "rejected", STUCK, stamp="2026-12-03T19:50:00Z"),
        task("api", 2, "2026-12-03T20:03:00Z", "failed", "task: non-zero exit (1)"),
    ]
    assert probe.stuck_overlay(tasks, STARTED) == []


def test_a_slot_retried_here_after_a_stale_overlay_failure_is_stuck_one_moved_to_another_node_is_not():
    tasks = [
        # Pinned here (the database's node): Swarm tries again on this node, and its new task is not running yet.
        task("postgres", 1, "2026-12-03T20:01:00Z", "rejected", STUCK, desired="shutdown"),
        task("postgres", 1, "2026-12-03T20:01:05Z", "preparing", stamp="2026-12-03T20:01:05Z"),
        # Moved: this node's failed task is the slot's last here, and no longer meant to run (it runs elsewhere).
        task("web", 2, "2026-12-03T20:02:00Z", "rejected", STUCK, desired="shutdown"),
    ]
    assert probe.stuck_overlay(tasks, STARTED) == ["postgres"]


def test_a_slot_waiting_out_its_restart_delay_is_stuck_one_whose_last_task_ran_and_ended_otherwise_is_not():
    tasks = [
        # Swarm's replacement waits for the restart delay as "ready".
        task("postgres", 1, "2026-12-03T20:01:00Z", "rejected", STUCK, desired="shutdown"),
        task("postgres", 1, "2026-12-03T20:01:05Z", "ready", stamp="2026-12-03T20:01:05Z", desired="ready"),
        # The stale device once, then a task that ran and was shut down: the new one starting is not stuck.
        task("redis", 1, "2026-12-03T20:01:00Z", "rejected", STUCK, desired="shutdown"),
        task("redis", 1, "2026-12-03T20:02:00Z", "shutdown", desired="shutdown"),
        task("redis", 1, "2026-12-03T20:06:00Z", "starting"),
    ]
    assert probe.stuck_overlay(tasks, STARTED) == ["postgres"]


def test_the_engines_start_is_read_as_systemd_prints_it(monkeypatch):
    monkeypatch.setattr(probe, "output", lambda *argv: "Thu 2026-12-03 20:00:00 UTC")
    assert probe.engine_started() == STARTED
    monkeypatch.setattr(probe, "output", lambda *argv: "")
    assert probe.engine_started() == datetime.datetime.min.replace(tzinfo=datetime.UTC)


def test_the_engines_settings_someone_else_wrote_are_read_to_be_kept(tmp_path):
    daemon_json = tmp_path / "daemon.json"
    assert probe.daemon_settings(str(daemon_json)) == ({}, "")  # none yet
    theirs = {"data-root": "/srv/docker", "log-opts": {"max-size": "50m"}}
    daemon_json.write_text(json.dumps(theirs))
    assert probe.daemon_settings(str(daemon_json)) == (theirs, "")
    daemon_json.write_text("  \n")
    assert probe.daemon_settings(str(daemon_json)) == ({}, "")


def test_a_daemon_json_that_holds_no_settings_is_named_not_written_over(tmp_path):
    daemon_json = tmp_path / "daemon.json"
    daemon_json.write_text('{"data-root": "/srv/docker",}')
    settings, problem = probe.daemon_settings(str(daemon_json))
    assert settings == {} and problem.startswith(f"{daemon_json} is not JSON (")
    daemon_json.write_text('["debug"]')
    assert probe.daemon_settings(str(daemon_json))[1] == f"{daemon_json} holds a JSON list, not an object of settings"
