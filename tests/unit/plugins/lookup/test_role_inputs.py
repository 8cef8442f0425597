"""role_inputs: the collection's roles' argument specs, each option reduced to what the preflight's checks read."""

from __future__ import annotations

import pytest
import yaml
from ansible.errors import AnsibleLookupError
from ansible_collections.pliers.deploy.plugins.filter.inputs import declared_variables, type_problems
from ansible_collections.pliers.deploy.plugins.lookup.role_inputs import ROLES, LookupModule, reduced


def test_each_option_keeps_its_type_elements_and_no_log_only():
    document = {
        "argument_specs": {
            "main": {
                "short_description": "The role",
                "options": {
                    "web_names": {"type": "list", "elements": "str", "description": "Names", "default": []},
                    "web_secret": {"type": "str", "no_log": True, "description": "A password"},
                    "web_mode": {"choices": ["a", "b"]},
                },
            },
            "host": {"options": None},
        }
    }
    assert reduced(document) == {
        "argument_specs": {
            "main": {
                "options": {
                    "web_names": {"type": "list", "elements": "str"},
                    "web_secret": {"type": "str", "no_log": True},
                    "web_mode": {},
                }
            },
            "host": {"options": {}},
        }
    }


def test_the_roles_declare_what_their_specs_do_and_the_type_check_reads_it():
    roles = sorted(path.name for path in ROLES.iterdir() if (path / "meta" / "argument_specs.yml").exists())
    documents = LookupModule().run(roles)
    full = [yaml.safe_load((ROLES / role / "meta" / "argument_specs.yml").read_text()) for role in roles]
    assert declared_variables(documents) == declared_variables(full)
    assert declared_variables(documents, ["list", "dict"]) == declared_variables(full, ["list", "dict"])
    assert type_problems({"pliers_server_names": "a.example,b.example"}, documents) == [
        "pliers_server_names must be a list ([a, b] in YAML, or one '- a' a line), got a string \"a.example,b.example\""
    ]


def test_a_role_without_specs_is_named():
    with pytest.raises(AnsibleLookupError, match="the argument specs of role nonesuch could not be read"):
        LookupModule().run(["nonesuch"])
