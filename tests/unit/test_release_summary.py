"""A run's last words: the stack role's own lock and release tasks (tasks/lock.yml, tasks/release_end.yml and the
last play's tasks/after_release.yml), run for real on this machine (a local connection), end the output with the
attempt as the history records it - the release, its duration, each service's version from and to - and the addresses
the stack is served at."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from ..paths import ROOT

PLAYBOOK = [{
    "name": "A release's end",
    "hosts": "deployer",
    "gather_facts": False,
    "tasks": [
        {"name": "Take the lock", "ansible.builtin.import_role": {
            "name": "pliers.deploy.stack", "tasks_from": "lock", "rolespec_validate": False}},
        {"name": "Record the release and release the lock", "ansible.builtin.import_role": {
            "name": "pliers.deploy.stack", "tasks_from": "release_end", "rolespec_validate": False},
         "vars": {"_stack_result": "ok"}},
        {"name": "Whether the lock is held", "ansible.builtin.stat": {"path": "{{ pliers_state_dir }}/deploy.lock"},
         "register": "held"},
        {"name": "The lock after the release's end", "ansible.builtin.debug": {"msg": "held={{ held.stat.exists }}"}},
        {"name": "Say what the run did", "ansible.builtin.import_role": {
            "name": "pliers.deploy.stack", "tasks_from": "after_release", "rolespec_validate": False}},
    ],
}]  # fmt: skip


def release(tmp_path: Path, version: str, *extra: str, repositories: dict | None = None) -> subprocess.CompletedProcess:
    (tmp_path / "end.yml").write_text(yaml.safe_dump(PLAYBOOK, sort_keys=False))
    host = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump({"all": {"hosts": {"deployer": host}}}))
    plan = {"versions": {"api": version, "web": version}, "repositories": repositories or {}}
    command = [str(Path(sys.executable).parent / "ansible-playbook"), str(tmp_path / "end.yml"),
               "-i", str(tmp_path / "hosts.yml"), "-e", json.dumps({
                   "pliers_environment": "staging", "pliers_mode": "compose", "pliers_playbook": "deploy",
                   "pliers_release": version, "pliers_state_dir": str(tmp_path / "state"),
                   "pliers_stack_plan": plan, "pliers_stack_services": {}}), *extra]  # fmt: skip
    # No engine answers here: a prune (tasks/prune.yml) fails to list the images, and warns.
    env = dict(os.environ, DOCKER_HOST="unix:///nonexistent/docker.sock")
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False, env=env)


def summary(result: subprocess.CompletedProcess) -> list[str]:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    shown = result.stdout.split("TASK [pliers.deploy.stack : Release | summary]", 1)[1]
    return json.loads("{" + shown.split("{", 1)[1].split("\n}", 1)[0] + "\n}")["msg"]


def test_the_run_ends_with_what_changed_how_long_it_took_and_where_it_is_served(tmp_path):
    summary(release(tmp_path, "1.0.0", "-e", '{"pliers_server_names": ["pliers.example.com"]}'))
    headline, served = summary(release(tmp_path, "1.1.0", "-e", '{"pliers_server_names": ["pliers.example.com"]}'))
    assert headline.startswith("staging: #2 ") and " deploy 1.1.0: ok " in headline, headline
    assert headline.endswith("s (api 1.0.0->1.1.0, web 1.0.0->1.1.0)"), headline
    assert served == "served at http://pliers.example.com/"
    # An edge on another port than its scheme's own.
    edge = {"pliers_stack_services": {"edge": {"entrypoint": {"scheme": "https", "port": 8443}}},
            "pliers_server_names": ["a.example.com", "b.example.com"]}  # fmt: skip
    served = summary(release(tmp_path, "1.1.0", "-e", json.dumps(edge)))[1]
    assert served == "served at https://a.example.com:8443/ https://b.example.com:8443/"


def test_without_server_names_it_is_served_at_the_edges_address_and_check_mode_says_nothing_was_recorded(tmp_path):
    lines = summary(release(tmp_path, "1.0.0", "--check"))
    assert lines[1] == "served at http://127.0.0.1:80/"
    assert lines[2] == "check mode: nothing was deployed or recorded"
    assert not (tmp_path / "state" / "releases.log").exists()


def test_a_release_that_changes_a_version_keeps_the_lock_until_the_hosts_pruned(tmp_path):
    repositories = {"api": "registry.example.com/pliers/api", "web": "registry.example.com/pliers/web"}
    lock = tmp_path / "state" / "deploy.lock"
    first = release(tmp_path, "1.0.0", repositories=repositories)
    summary(first)
    # Kept through the release's end (a deploy taking it then could lose the images it pulled), released after.
    assert '"msg": "held=True"' in first.stdout and not lock.exists()
    assert "old app images not all pruned (the release stands) on deployer" in first.stdout + first.stderr
    same = release(tmp_path, "1.0.0", repositories=repositories)
    assert summary(same)[0].endswith("s (api 1.0.0, web 1.0.0)")
    assert '"msg": "held=False"' in same.stdout and "Release | remove the app images" not in same.stdout
    assert not lock.exists()


def test_a_lock_left_by_a_run_that_had_recorded_its_release_is_taken_over_without_calling_it_interrupted(tmp_path):
    summary(release(tmp_path, "1.0.0"))
    # A run that recorded 1.1.0 and kept the lock to prune, then died: its lease long expired.
    stale = "2026-01-01T00:00:00+00:00"
    state = tmp_path / "state"
    (state / "deploy.lock").write_text(json.dumps({"user": "alice", "controller": "ops-1", "playbook": "deploy",
                                                   "release": "1.1.0", "since": stale, "renewed": stale, "lease": 60,
                                                   "token": "alices", "recorded": 2}))  # fmt: skip
    taken = release(tmp_path, "1.2.0")
    assert "took over the deploy lock" in taken.stdout + taken.stderr, taken.stdout[-3000:]
    results = [json.loads(line)["result"] for line in (state / "releases.log").read_text().splitlines()]
    assert results == ["ok", "ok"], "a run that recorded its release is no interrupted one"
