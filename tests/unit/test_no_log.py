"""Tasks whose results hold secrets are no_log. -vvv prints every result, and AWX keeps them as job events: a
contribution to the stack's model (pliers_stack_services) returns the whole model, every role's secret files
included, whichever role contributes. (tests/lab/test_output_secrets.py searches a real -vvv deploy's output.)"""

from __future__ import annotations

import yaml

from ..paths import ROOT


def tasks(entries):
    for task in entries or []:
        yield task
        for key in ("block", "rescue", "always"):
            yield from tasks(task.get(key))


def test_every_contribution_to_the_stack_model_is_no_log():
    files = [*ROOT.glob("roles/*/tasks/*.yml"), *ROOT.glob("tests/roles/*/tasks/*.yml")]
    contributions = [
        (path.relative_to(ROOT), task)
        for path in files
        for task in tasks(yaml.safe_load(path.read_text()))
        if "pliers_stack_services" in (task.get("ansible.builtin.set_fact") or {})
    ]
    assert len(contributions) >= 8, contributions
    logged = [f"{path}: {task['name']}" for path, task in contributions if task.get("no_log") is not True]
    assert not logged, "these contributions print the model, secrets included:\n" + "\n".join(logged)
