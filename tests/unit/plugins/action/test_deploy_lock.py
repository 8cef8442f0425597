"""deploy_lock's action plugin: which holder of the lock is dead, judged from a fake /proc."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
from ansible_collections.pliers.deploy.plugins.action import deploy_lock

from ..clock import Clock

# Above the kernel's largest pid (PID_MAX_LIMIT, 2**22): no process has it, on this machine either.
DEAD = 2**22 + 1


def stat_line(pid: int, starttime: int, command: str = "ansible-playboo") -> str:
    """/proc/<pid>/stat: pid (command) state, then fields 4 to 52; field 22 is the start time."""
    fields = [str(n) for n in range(4, 53)]
    fields[22 - 4] = str(starttime)
    return f"{pid} ({command}) S " + " ".join(fields) + "\n"


@pytest.fixture
def proc(tmp_path):
    root = tmp_path / "proc"
    root.mkdir()

    def process(pid: int, starttime: int, command: str = "ansible-playboo") -> None:
        (root / str(pid)).mkdir()
        (root / str(pid) / "stat").write_text(stat_line(pid, starttime, command))

    process.root = str(root)
    return process


def holder(pid, started="5000", host="ops-1") -> dict:
    return {"user": "alice", "controller": "ops-1", "controller_host": host, "pid": pid, "pid_started": started}


def test_the_start_time_is_field_22_even_when_the_command_has_spaces_and_parentheses(proc):
    proc(4242, 123456, command="ansible (x) y")
    assert deploy_lock.process_started(4242, proc.root) == "123456"
    assert deploy_lock.process_started(DEAD, proc.root) is None


def test_a_dead_process_on_this_controller_is_gone(proc):
    reason = deploy_lock.holder_is_gone(holder(DEAD), "ops-1", proc.root)
    assert reason == f"its deploy process (pid {DEAD} on ops-1) is gone"


def test_a_live_process_with_its_start_time_is_alive(proc):
    proc(4242, 5000)
    assert deploy_lock.holder_is_gone(holder(4242, "5000"), "ops-1", proc.root) is None


def test_a_reused_pid_is_gone(proc):
    proc(4242, 9999)
    reason = deploy_lock.holder_is_gone(holder(4242, "5000"), "ops-1", proc.root)
    assert reason and reason.startswith("its deploy process (pid 4242 on ops-1) is gone")


def test_a_holder_on_another_controller_is_left_to_its_lease(proc):
    assert deploy_lock.holder_is_gone(holder(DEAD, host="ops-2"), "ops-1", proc.root) is None


@pytest.mark.parametrize(
    "record",
    [
        {"user": "alice", "since": "2026-01-01T00:00:00+00:00"},  # an older version's lock: no pid
        {"controller_host": "ops-1", "pid": "not-a-pid"},
        {"controller_host": "ops-1", "pid": 0},
        {"pid": DEAD},  # no controller_host
        {"unreadable": True},
    ],
)
def test_a_holder_that_cannot_be_judged_is_alive(proc, record):
    assert deploy_lock.holder_is_gone(record, "ops-1", proc.root) is None


def test_a_live_process_whose_start_time_is_unknown_is_alive(proc):
    proc(4242, 5000)
    assert deploy_lock.holder_is_gone(holder(4242, started=None), "ops-1", proc.root) is None


def test_without_a_proc_nothing_is_gone(tmp_path):
    assert deploy_lock.holder_is_gone(holder(DEAD), "ops-1", str(tmp_path / "no-proc")) is None


def test_a_process_that_proc_hides_but_the_kernel_knows_is_alive(proc):
    # /proc mounted with hidepid: this very process, absent from the fake /proc, still exists.
    assert deploy_lock.holder_is_gone(holder(os.getpid()), "ops-1", proc.root) is None


def test_this_run_is_the_playbook_process_on_this_controller():
    run = deploy_lock.this_run()
    assert run["controller_host"] and run["pid"] in (os.getpid(), os.getppid())
    if os.path.exists(f"/proc/{run['pid']}/stat"):
        assert run["pid_started"] == deploy_lock.process_started(run["pid"])
        assert deploy_lock.holder_is_gone(run, run["controller_host"]) is None


class Action(deploy_lock.ActionModule):
    """The action plugin without a connection: each module run answers from `answers`, and is recorded."""

    def __init__(self, args: dict, answers: list[dict]):  # no ActionBase.__init__: nothing to connect to
        self._task = SimpleNamespace(args=args, async_val=0, check_mode=False)
        self._connection = SimpleNamespace(_shell=SimpleNamespace(tmpdir=None))
        self._VALID_ARGS = frozenset()
        self.answers, self.calls = list(answers), []

    def _early_needs_tmp_path(self):
        return False

    def _execute_module(self, module_name=None, module_args=None, task_vars=None, **kwargs):
        self.calls.append((module_name, module_args))
        return self.answers.pop(0)

    def _remove_tmp_path(self, tmp_path, force=False):
        pass


HELD = {"failed": True, "msg": "another deploy holds the lock", "held": True, "holder_token": "theirs",
        "holder": {"user": "alice", "controller_host": "ops-1", "pid": 4242, "pid_started": "5000"}}  # fmt: skip


@pytest.fixture
def controller(monkeypatch):
    monkeypatch.setattr(deploy_lock, "this_run", lambda: {"controller_host": "ops-1", "pid": 77, "pid_started": "9"})


def test_the_holder_records_the_playbook_process_and_the_controller(controller):
    action = Action({"path": "/x/deploy.lock", "holder": {"user": "bob"}}, [{"token": "mine", "changed": False}])
    assert action.run(task_vars={})["token"] == "mine"
    ((module, args),) = action.calls
    assert module == "pliers.deploy.deploy_lock"
    assert args["holder"] == {"user": "bob", "controller_host": "ops-1", "pid": 77, "pid_started": "9"}


def test_a_hold_whose_process_is_gone_is_taken_over(controller, monkeypatch):
    monkeypatch.setattr(deploy_lock, "holder_is_gone", lambda holder, hostname: f"pid {holder['pid']} is gone")
    action = Action({"path": "/x/deploy.lock", "holder": {"user": "bob"}}, [HELD, {"token": "mine", "taken_over": {}}])
    assert action.run(task_vars={})["token"] == "mine"
    (_module, first), (_module_again, retry) = action.calls
    assert "take_over" not in first
    assert retry["take_over"] == "theirs" and retry["take_over_reason"] == "pid 4242 is gone"


def test_a_live_holder_still_refuses(controller, monkeypatch):
    monkeypatch.setattr(deploy_lock, "holder_is_gone", lambda holder, hostname: None)
    action = Action({"path": "/x/deploy.lock", "holder": {"user": "bob"}}, [HELD])
    result = action.run(task_vars={})
    assert result["failed"] and result["held"] and len(action.calls) == 1


def test_a_release_passes_through_untouched(controller):
    args = {"path": "/x/deploy.lock", "state": "absent", "token": "mine"}
    action = Action(dict(args), [{"changed": False, "holder": {}}])
    action.run(task_vars={})
    assert action.calls == [("pliers.deploy.deploy_lock", args)]


def test_a_holder_of_the_same_name_but_another_boot_is_left_to_its_lease(proc, tmp_path):
    (tmp_path / "proc" / "sys" / "kernel" / "random").mkdir(parents=True)
    (tmp_path / "proc" / "sys" / "kernel" / "random" / "boot_id").write_text("boot-now\n")
    assert deploy_lock.holder_is_gone(dict(holder(DEAD), boot_id="boot-before"), "ops-1", proc.root) is None
    reason = deploy_lock.holder_is_gone(dict(holder(DEAD), boot_id="boot-now"), "ops-1", proc.root)
    assert reason == f"its deploy process (pid {DEAD} on ops-1) is gone"


def test_a_holder_in_another_pid_namespace_of_this_machine_is_left_to_its_lease(proc, tmp_path):
    # Two controllers in containers on one machine: same boot id, and maybe the same host name; not the same pids.
    (tmp_path / "proc" / "self" / "ns").mkdir(parents=True)
    os.symlink("pid:[4026532001]", tmp_path / "proc" / "self" / "ns" / "pid")
    other = dict(holder(DEAD), pid_ns="pid:[4026532999]")
    assert deploy_lock.holder_is_gone(other, "ops-1", proc.root) is None
    same = dict(holder(DEAD), pid_ns="pid:[4026532001]")
    assert deploy_lock.holder_is_gone(same, "ops-1", proc.root) == f"its deploy process (pid {DEAD} on ops-1) is gone"


@pytest.fixture
def clock(monkeypatch, controller):
    monkeypatch.setattr(deploy_lock, "holder_is_gone", lambda holder, hostname: None)
    ticking = Clock(1000.0)
    monkeypatch.setattr(deploy_lock.time, "monotonic", ticking.monotonic)
    monkeypatch.setattr(deploy_lock.time, "sleep", ticking.sleep)
    return ticking


def test_a_run_that_waits_takes_the_lock_once_the_live_holder_releases_it(clock):
    action = Action({"path": "/x/deploy.lock", "wait": "60"}, [HELD, HELD, {"token": "mine", "changed": False}])
    result = action.run(task_vars={})
    assert result["token"] == "mine" and result["waited"] == 10.0 and clock.slept == [5, 5]
    # The module never sees wait (the action plugin waits), and each attempt is the same.
    assert all("wait" not in args for _module, args in action.calls) and len(action.calls) == 3


def test_a_run_that_waited_its_time_is_refused_saying_so(clock):
    action = Action({"path": "/x/deploy.lock", "wait": 12}, list(map(dict, [HELD] * 10)))
    result = action.run(task_vars={})
    assert result["failed"] and result["held"] and clock.slept == [5, 5, 2]
    assert result["msg"] == "after waiting 12 s for it, another deploy holds the lock" and result["waited"] == 12.0


def test_without_wait_or_in_check_mode_a_live_holder_refuses_at_once(clock):
    assert Action({"path": "/x/deploy.lock"}, [dict(HELD)]).run(task_vars={})["msg"] == "another deploy holds the lock"
    checking = Action({"path": "/x/deploy.lock", "wait": 60}, [dict(HELD)])
    checking._task.check_mode = True
    result = checking.run(task_vars={})
    assert result["held"] and result["msg"] == "another deploy holds the lock" and result["waited"] == 0.0
    assert clock.slept == []


@pytest.mark.parametrize("wait", [-1, "soon"])
def test_a_wait_that_is_no_number_of_seconds_is_refused(clock, wait):
    action = Action({"path": "/x/deploy.lock", "wait": wait}, [])
    assert action.run(task_vars={})["msg"] == "wait must be a whole number of seconds, 0 or more"
    assert action.calls == []
