# Copyright (c) pliers.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""An environment's release history (private to this collection): one JSON line per attempt. The release_log
module reads and appends it; deploy_lock appends the attempt as it releases the lock."""

from __future__ import annotations

import getpass
import json
import os
from datetime import datetime, timezone

# interrupted: a run whose deploy lock was taken over (it was found dead) never finished.
RESULTS = ("ok", "failed", "interrupted")
# Targets may run Python 3.9 or 3.10, which have no datetime.UTC.
UTC = timezone.utc


def read(module, path: str) -> list[dict]:
    entries = []
    try:
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    entries.append(json.loads(line))
                except ValueError:
                    module.warn(f"{path} line {number} is not a JSON record: skipped")
    except FileNotFoundError:
        pass
    return entries


def line(entry: dict) -> str:
    """One entry, readable: #id time user@controller playbook release result seconds, then what changed."""
    versions = entry.get("versions") or {}
    before = entry.get("from") or {}
    moves = ", ".join(
        f"{name} {before[name]}->{version}" if before.get(name) not in (None, version) else f"{name} {version}"
        for name, version in sorted(versions.items())
    )
    seconds = f" {entry['seconds']}s" if entry.get("seconds") is not None else ""
    text = (
        f"#{entry.get('id')} {entry.get('time')} {entry.get('user')}@{entry.get('controller')} "
        f"{entry.get('playbook')} {entry.get('release')}: {entry.get('result')}{seconds} ({moves})"
    )
    return text + (f" - {str(entry['message'])[:300]}" if entry.get("message") else "")


def _user() -> str:
    """Who runs this, by name; by uid where no passwd entry names it (a minimal container)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


# Recorded too, but they change the data (restore) or the edge (maintenance), not the release that runs.
NOT_RELEASES = ("restore", "maintenance")


def succeeded(entries: list[dict]) -> list[dict]:
    """The releases that ran."""
    return [entry for entry in entries if entry.get("result") == "ok" and entry.get("playbook") not in NOT_RELEASES]


def rollback_target(module, entries: list[dict], wanted: str) -> dict:
    good = succeeded(entries)
    if not good:
        module.fail_json(msg="no successful release in the history: there is nothing to roll back to")
    current = good[-1]
    if wanted == "previous":
        for entry in reversed(good):
            if entry.get("versions") != current.get("versions"):
                return entry
        module.fail_json(msg=f"every successful release in the history is the current one ({current.get('release')})")
    for entry in reversed(good):
        if wanted in (str(entry.get("id")), str(entry.get("release"))):
            return entry
    known = ", ".join(f"{e.get('id')} ({e.get('release')})" for e in good[-10:])
    module.fail_json(msg=f"no successful release {wanted!r} in the history; the latest are: {known}")


def append(module, path: str, entries: list[dict], record: dict) -> dict:
    """Append the attempt record (outside check mode); the entry as written."""
    record = dict(record)
    if record.get("result") not in RESULTS:
        module.fail_json(msg=f"record.result must be one of {', '.join(RESULTS)}, got {record.get('result')!r}")
    good = succeeded(entries)
    entry = {
        "id": (entries[-1].get("id", len(entries)) if entries else 0) + 1,
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "user": record.pop("user", None) or _user(),
        "from": good[-1].get("versions", {}) if good else {},
    }
    started = record.pop("started", None)
    if started:
        try:
            entry["seconds"] = round(datetime.now(UTC).timestamp() - datetime.fromisoformat(started).timestamp(), 1)
        except ValueError:
            module.fail_json(msg=f"record.started must be an ISO 8601 time, got {started!r}")
    entry.update(record)
    if not module.check_mode:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        # One write of one line, appended: a reader never sees half an entry.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, (json.dumps(entry, sort_keys=True) + "\n").encode())
        finally:
            os.close(fd)
        entries.append(entry)
    return entry
