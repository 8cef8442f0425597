# Copyright (c) pliers.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: role_inputs
short_description: What the collection's roles declare of their inputs - each option's type, elements and no_log
version_added: 0.2.0
description:
  - Reads the C(meta/argument_specs.yml) of each role named, in this collection, and returns one argument_specs
    document per role, each option reduced to its C(type), C(elements) and C(no_log) - what
    P(pliers.deploy.declared_variables#filter) and P(pliers.deploy.type_problems#filter) read.
  - The stack's preflight checks every run's inputs with them; read and reduced in Python, the specs cost the
    templating a tenth of what the whole documents (descriptions included) would.
options:
  _terms:
    description: The names of the collection's roles.
    type: list
    elements: str
    required: true
author:
  - Pliers team (@pliers)
"""

EXAMPLES = r"""
- name: Warn about the variables no role declares
  ansible.builtin.debug:
    msg: >-
      {{ query('ansible.builtin.varnames', '^pliers_')
         | pliers.deploy.undeclared_variables(query('pliers.deploy.role_inputs', 'stack', 'web')
                                              | pliers.deploy.declared_variables, ['pliers_']) }}
"""

RETURN = r"""
_raw:
  description: One document per role, in the order named - C(argument_specs), each entry point with its C(options),
    each option with only C(type), C(elements) and C(no_log) (those it declares).
  type: list
  elements: dict
"""

from pathlib import Path

import yaml
from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

ROLES = Path(__file__).resolve().parents[2] / "roles"
KEPT = ("type", "elements", "no_log")
# libyaml's loader when PyYAML has it: a tenth of the time.
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def reduced(document: dict) -> dict:
    """The argument_specs document with each option's type, elements and no_log only."""
    entries = (document or {}).get("argument_specs") or {}
    return {
        "argument_specs": {
            entry: {
                "options": {
                    str(name): {key: spec[key] for key in KEPT if key in (spec or {})}
                    for name, spec in ((body or {}).get("options") or {}).items()
                }
            }
            for entry, body in entries.items()
        }
    }


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        documents = []
        for role in terms:
            path = ROLES / str(role) / "meta" / "argument_specs.yml"
            try:
                documents.append(reduced(yaml.load(path.read_text(encoding="utf-8"), Loader=SAFE_LOADER)))  # noqa: S506
            except (OSError, yaml.YAMLError) as exc:
                raise AnsibleLookupError(
                    f"role_inputs: the argument specs of role {role} could not be read: {exc}"
                ) from exc
        return documents
