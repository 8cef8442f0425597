"""Tasks whose results hold secrets are no_log. -vvv prints every result, and AWX keeps them as job events: a
contribution to the stack's model (pliers_stack_services) or to the host's files (pliers_host_files) returns the
whole of it, every role's secret files included, whichever role contributes (a directory added after the backups'
configuration prints their Redis password). (tests/lab/test_output_secrets.py searches a real -vvv deploy's output.)"""

from __future__ import annotations

import pytest
import yaml

from ..paths import ROOT


def tasks(entries):
    for task in entries or []:
        yield task
        for key in ("block", "rescue", "always"):
            yield from tasks(task.get(key))


@pytest.mark.parametrize(("shared", "at_least"), [("pliers_stack_services", 8), ("pliers_host_files", 4)])
def test_every_contribution_to_what_the_roles_share_is_no_log(shared, at_least):
    files = [*ROOT.glob("roles/*/tasks/*.yml"), *ROOT.glob("tests/roles/*/tasks/*.yml")]
    contributions = [
        (path.relative_to(ROOT), task)
        for path in files
        for task in tasks(yaml.safe_load(path.read_text()))
        if shared in (task.get("ansible.builtin.set_fact") or {})
    ]
    assert len(contributions) >= at_least, contributions
    logged = [f"{path}: {task['name']}" for path, task in contributions if task.get("no_log") is not True]
    assert not logged, f"these contributions print {shared}, secrets included:\n" + "\n".join(logged)
