# Copyright (c) pliers.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The controller side of pliers.deploy.deploy_lock: records which ansible-playbook process on which controller
holds the lock, takes over a hold whose process on this controller is gone, and waits (wait) for a live one."""

from __future__ import annotations

import multiprocessing
import os
import socket
import time

from ansible.plugins.action import ActionBase

MODULE = "pliers.deploy.deploy_lock"
# How often a run that waits (wait) asks again whether the lock is free.
WAIT_POLL = 5


def process_started(pid, proc_root: str = "/proc") -> str | None:
    """When process pid started (field 22 of /proc/<pid>/stat, in clock ticks since boot), or None if unreadable.
    With the pid, it names a process: a pid reused by another process has another start time."""
    try:
        with open(os.path.join(proc_root, str(pid), "stat"), encoding="utf-8", errors="replace") as handle:
            stat = handle.read()
    except OSError:
        return None
    # Field 2, the command, is in parentheses and may hold spaces and parentheses: count from after the last ')'.
    fields = stat[stat.rfind(")") + 1 :].split()
    # fields[0] is field 3 (the state), so field 22 is fields[19].
    return fields[19] if len(fields) > 19 else None


def process_exists(pid: int, proc_root: str = "/proc") -> bool:
    if os.path.exists(os.path.join(proc_root, str(pid))):
        return True
    # /proc mounted with hidepid hides other users' processes: ask the kernel before calling one gone.
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, as another user's
    except (OSError, OverflowError):
        return True  # cannot tell: alive, to be safe
    return True


def holder_is_gone(holder: dict, hostname: str, proc_root: str = "/proc") -> str | None:
    """Why the run that holds the lock (the holder the lock file records) is dead, or None when it is alive or
    this cannot be told from here: only a holder on this controller (hostname) is judged, by its pid and the
    start time of that pid's process."""
    host = holder.get("controller_host")
    if not host or host != hostname or not os.path.isdir(proc_root):
        return None
    # Another machine of the same name, this one since a restart, or another container on it (another pid
    # namespace): its processes cannot be judged from here.
    if holder.get("boot_id") != boot_id(proc_root) or holder.get("pid_ns") != pid_namespace(proc_root):
        return None
    try:
        pid = int(holder.get("pid"))
    except (TypeError, ValueError):
        return None
    if pid <= 0:
        return None
    gone = f"its deploy process (pid {pid} on {host}) is gone"
    if not process_exists(pid, proc_root):
        return gone
    recorded = holder.get("pid_started")
    started = process_started(pid, proc_root)
    if recorded is None or started is None:
        return None
    if str(recorded) != started:
        return f"{gone} (the pid is now another process's)"
    return None


def boot_id(proc_root: str = "/proc") -> str | None:
    """This machine's boot id: with the host name, it says which machine, since which boot."""
    try:
        with open(os.path.join(proc_root, "sys/kernel/random/boot_id"), encoding="utf-8") as handle:
            return handle.read().strip() or None
    except OSError:
        return None


def pid_namespace(proc_root: str = "/proc") -> str | None:
    """This process's pid namespace (two containers on one machine share its boot id, not their pids)."""
    try:
        return os.readlink(os.path.join(proc_root, "self/ns/pid"))
    except OSError:
        return None


def this_run(proc_root: str = "/proc") -> dict:
    """controller_host, pid and pid_started of the ansible-playbook process this action runs for."""
    # An action runs in a worker process forked from ansible-playbook (unless it runs in the main process).
    pid = os.getpid() if multiprocessing.current_process().name == "MainProcess" else os.getppid()
    run = {
        "controller_host": socket.gethostname(),
        "boot_id": boot_id(proc_root),
        "pid_ns": pid_namespace(proc_root),
        "pid": pid,
    }
    started = process_started(pid, proc_root)
    if started is not None:
        run["pid_started"] = started
    return run


class ActionModule(ActionBase):
    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp  # no longer has any effect
        args = dict(self._task.args)
        try:
            if args.get("state", "present") != "present":
                result.update(self._execute_module(module_name=MODULE, module_args=args, task_vars=task_vars))
                return result
            try:
                wait = int(args.pop("wait", 0) or 0)
            except (TypeError, ValueError):
                wait = -1
            if wait < 0:
                return {**result, "failed": True, "msg": "wait must be a whole number of seconds, 0 or more"}
            run = this_run()
            holder = args.get("holder")
            if holder is None or isinstance(holder, dict):
                args["holder"] = {**(holder or {}), **run}
            started = time.monotonic()
            while True:
                outcome = self.take(args, run, task_vars)
                left = wait - (time.monotonic() - started)
                # A live holder: asked again until the wait is over (check mode only says what it found).
                if not (outcome.get("failed") and outcome.get("held")) or left <= 0 or self._task.check_mode:
                    break
                time.sleep(min(WAIT_POLL, left))
            waited = round(time.monotonic() - started, 1) if wait and not self._task.check_mode else 0.0
            if waited and outcome.get("failed") and outcome.get("held"):
                outcome["msg"] = f"after waiting {waited:.0f} s for it, {outcome.get('msg', '')}"
            outcome["waited"] = waited
            result.update(outcome)
            return result
        finally:
            self._remove_tmp_path(self._connection._shell.tmpdir)

    def take(self, args: dict, run: dict, task_vars) -> dict:
        """One attempt at the lock: a hold whose process on this controller is gone is taken over at once."""
        outcome = self._execute_module(module_name=MODULE, module_args=args, task_vars=task_vars)
        if outcome.get("failed") and outcome.get("held") and outcome.get("holder_token") and not args.get("take_over"):
            reason = holder_is_gone(outcome.get("holder") or {}, run["controller_host"])
            if reason:
                retry = dict(args, take_over=outcome["holder_token"], take_over_reason=reason)
                outcome = self._execute_module(module_name=MODULE, module_args=retry, task_vars=task_vars)
        return outcome
