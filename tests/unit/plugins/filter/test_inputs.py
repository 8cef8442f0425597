"""The input filters name the variable and what it expects, quote the bad value (never a secret's), and say nothing
of a good one; the roles' argument specs and the preflight's list of run-time variables agree with the roles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from ansible.errors import AnsibleFilterError
from ansible_collections.pliers.deploy.plugins.filter import inputs
from ansible_collections.pliers.deploy.plugins.filter.inputs import (
    FilterModule,
    declared_variables,
    format_problem,
    image_reference_problem,
    port_problem,
    resource_problems,
    single_line_problems,
    size_problem,
    type_problems,
    undeclared_variables,
    url_problem,
    warn,
)

# The collection's root: in the checkout, and in an installed copy (ansible-test units).
ROOT = Path(__file__).resolve().parents[4]
ROLES = ROOT / "roles"
needs_roles = pytest.mark.skipif(not (ROLES / "stack").is_dir(), reason="the roles are not beside these tests")


# --- single_line_problems -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["daily\nExecStartPre=/bin/sh", "a\rb", "a\tb", "a\x00b", "a\x1bb", "a\x7fb", "a\x85b", "a\u2028b", "trailing\n"],
)
def test_a_control_character_is_refused_and_shown_escaped(value):
    problems = single_line_problems({"backup_dir": value})
    assert len(problems) == 1 and problems[0].startswith("backup_dir must be a single line")
    assert json.dumps(value)[:20] in problems[0] and "\n" not in problems[0]


def test_lists_and_mappings_are_looked_into():
    values = {"names": ["a.example.com", "b\n.example.com"], "versions": {"api": "1.0\nx"}, "keys": {"a\nb": "1"}}
    assert [problem.split()[0] for problem in single_line_problems(values)] == ["names", "versions", "keys"]


@pytest.mark.parametrize("value", ["", None, "*-*-* 03:15:00", "x" * 500, 42, True, ["a", "b"], {"k": "v"}, "é ü"])
def test_one_line_values_have_no_problem(value):
    assert single_line_problems({"x": value}) == []


def test_a_secret_is_not_shown():
    problems = single_line_problems({"pw": "s3cret\nmore"}, secret=True)
    assert problems and "s3cret" not in problems[0] and "not shown" in problems[0]


def test_a_long_value_is_truncated():
    (problem,) = single_line_problems({"x": "\n" + "y" * 200})
    assert '"\\n' + "y" * 59 + '..."' in problem and "y" * 60 not in problem


def test_single_line_problems_wants_a_mapping():
    with pytest.raises(AnsibleFilterError):
        single_line_problems(["a"])


# --- format_problem -----------------------------------------------------------------------------------------------

GOOD_FORMATS = [
    ("version", "25.0"),
    ("version", "2.18.0"),
    ("version", "28"),
    ("calendar", "*-*-* 03:15:00"),
    ("calendar", "daily"),
    ("calendar", "Mon..Fri 02:00"),
    ("calendar", "Sat,Sun *-*-01..07 04:00:00 Europe/Berlin"),
    ("calendar", "*-*-* 00/6:00"),
    ("calendar", "*:0/15"),
    ("calendar", "Mon *-*-* 01:02:03 Etc/GMT+1"),
    ("calendar", "*-02~01"),
    ("nginx_time", "30s"),
    ("nginx_time", "1m30s"),
    ("nginx_time", "500ms"),
    ("nginx_time", "30"),
    ("identifier", "pliers"),
    ("identifier", "_x9"),
    ("identifier", "a" * 63),
    ("initdb_args", "--data-checksums"),
    ("initdb_args", "--data-checksums --locale=C.UTF-8"),
    ("initdb_args", "-E UTF8 --auth-local=peer"),
    ("interface", "eth0"),
    ("interface", "enp0s31f6"),
    ("interface", "br-1a2b.100"),
    ("host_port", "smtp.example.net:587"),
    ("host_port", "192.0.2.7:25"),
    ("host_port", "[2001:db8::1]:465"),
    ("registry", "registry.pliers.internal:5000"),
    ("registry", "localhost"),
    ("registry", "ghcr.io"),
    ("registry", "[::1]:5000"),
    ("address", "127.0.0.1"),
    ("address", "0.0.0.0"),  # noqa: S104 - a value to check, not a bind
    ("address", "::1"),
    ("address", "2001:db8::7"),
]
BAD_FORMATS = [
    ("version", "v2.18"),
    ("version", "25.0.1.2"),
    ("version", "latest"),
    ("version", ""),
    ("calendar", "daily\nExecStartPre=/bin/sh"),
    ("calendar", "daily; rm"),
    ("calendar", "%H:00"),
    ("calendar", " daily"),
    ("calendar", "daily "),
    ("calendar", '"daily"'),
    ("calendar", "a\\b"),
    ("calendar", "d" * 129),
    ("calendar", ""),
    ("nginx_time", "30s;"),
    ("nginx_time", "30 s"),
    ("nginx_time", "30s\n"),
    ("nginx_time", "s"),
    ("nginx_time", "1x"),
    ("identifier", "Pliers"),
    ("identifier", "9lives"),
    ("identifier", "a-b"),
    ("identifier", "a" * 64),
    ("identifier", "pliers\n"),
    ("initdb_args", "--data-checksums; rm -rf /"),
    ("initdb_args", "--locale=$(id)"),
    ("initdb_args", "--a  --b"),
    ("initdb_args", "--a 'b c'"),
    ("initdb_args", "UTF8"),
    ("interface", "eth0 "),
    ("interface", "a/b"),
    ("interface", "x" * 16),
    ("host_port", "smtp.example.net"),
    ("host_port", "smtp.example.net:0"),
    ("host_port", "smtp.example.net:99999"),
    ("host_port", "smtp example.net:25"),
    ("host_port", "2001:db8::1:465"),
    ("registry", "reg istry:5000"),
    ("registry", "registry:70000"),
    ("registry", "registry/path"),
    ("registry", "-registry"),
    ("registry", "registry.test:5000\n"),
    ("address", "localhost"),
    ("address", "999.1.1.1"),
    ("address", "10.0.0.0/8"),
    ("address", "::::"),
    ("address", "127.0.0.1 "),
    ("address", "fe80::1%eth0\nx"),
]


@pytest.mark.parametrize(("kind", "value"), GOOD_FORMATS)
def test_values_in_their_format_have_no_problem(kind, value):
    assert format_problem(value, "x", kind) == ""


@pytest.mark.parametrize(("kind", "value"), BAD_FORMATS)
def test_values_out_of_their_format_are_refused_naming_the_variable(kind, value):
    problem = format_problem(value, "the_variable", kind)
    assert problem.startswith(f"the_variable must be {inputs.FORMATS[kind][1]}, got ")
    assert json.dumps(value)[:30] in problem


@pytest.mark.parametrize("value", ["", None])
def test_an_empty_value_is_fine_when_optional(value):
    assert format_problem(value, "x", "calendar", optional=True) == ""
    assert format_problem(value, "x", "calendar").startswith("x must be a systemd calendar spec")
    assert ", or empty, got" in format_problem("bad;", "x", "calendar", optional=True)


def test_an_unknown_format_is_a_mistake_of_the_caller():
    with pytest.raises(AnsibleFilterError, match="unknown format 'colour'"):
        format_problem("x", "x", "colour")


# --- image_reference_problem --------------------------------------------------------------------------------------

DIGEST = "sha256:" + "a" * 64
# Most from github.com/distribution/reference's own tests.
GOOD_IMAGES = [
    "test_com",
    "test.com:tag",
    "test.com:5000",
    "test.com/repo:tag",
    "test:5000/repo",
    "test:5000/repo:tag",
    f"test:5000/repo@{DIGEST}",
    f"test:5000/repo:tag@{DIGEST}",
    "lowercase:Uppercase",
    "sub-dom1.foo.com/bar/baz/quux",
    "sub-dom1.foo.com/bar/baz/quux:some-long-tag",
    "b.gcr.io/test.example.com/my-app:test.example.com",
    "xn--n3h.com/myimage:xn--n3h.com",
    "foo_bar.com:8080",
    "foo/foo_bar.com:8080",
    "[2001:db8::1]:5000/repo",
    "registry.test:5000/pliers/api:1.0.0",
    "registry.pliers.lab:5000/grafana/alloy:v1.5.1",
    "localhost/x",
    "a__b/c---d",
    "Registry.Example.com/pliers/api",
    "a" * 255,
    "x:" + "t" * 128,
]
BAD_IMAGES = [
    "",
    ":justtag",
    f"@{DIGEST}",
    "repo@sha256:ffffffffffffffffffffffffffffffffff",
    "validname@invaliddigest:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    "Uppercase:tag",
    "test:5000/Uppercase/lowercase:tag",
    "aa/asdf$$^/aa",
    "registry.test/pliers/api:1.0 ; rm -rf /",
    "registry.test/pliers/a b",
    "registry.test/pliers/api:1.0\n",
    "registry.test/pliers/../api",
    "a..b",
    "a/-b",
    "a" * 256,
    "x:" + "t" * 129,
    "x:.tag",
    f"x@sha256:{'a' * 63}",
    "test:70000/repo",
    "test:0/repo",
    "registry.test//api",
]


@pytest.mark.parametrize("value", GOOD_IMAGES)
def test_image_references_by_the_grammar_have_no_problem(value):
    assert image_reference_problem(value, "api_image") == ""


@pytest.mark.parametrize("value", BAD_IMAGES)
def test_anything_else_is_refused_naming_the_variable_and_the_grammar(value):
    problem = image_reference_problem(value, "api_image")
    assert problem.startswith("api_image must be an image reference, [registry[:port]/]path[:tag][@digest] (")
    assert json.dumps(value)[:40] in problem


# --- port_problem -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [1, 80, 65535, "443", "0080"])
def test_ports_have_no_problem(value):
    assert port_problem(value, "web_http_port") == ""


@pytest.mark.parametrize("value", [0, 65536, 70000, -1, True, 1.5, "80 ", "8o", "", None, "٣"])
def test_what_is_no_port_is_refused(value):
    assert port_problem(value, "web_http_port").startswith("web_http_port must be a TCP port (1-65535), got ")


def test_an_empty_port_publishes_nothing_when_optional():
    assert port_problem("", "p", optional=True) == port_problem(None, "p", optional=True) == ""
    assert "or empty to publish nothing" in port_problem(99999, "p", optional=True)


# --- size_problem and resource_problems ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["256M", "1G", "512m", "1gb", "1GiB", "1024", "1.5g", "10k", "100b", 268435456])
def test_docker_sizes_have_no_problem(value):
    assert size_problem(value, "api_memory") == ""


@pytest.mark.parametrize("value", ["1 gigabyte", "1 G", "0", 0, "-1", "1i", "G", True, "", None, "1x", "1,5g", "1G "])
def test_what_docker_would_not_read_as_a_size_is_refused(value):
    assert size_problem(value, "api_memory").startswith("api_memory must be a size in bytes as Docker reads it")


@pytest.mark.parametrize("value", ["256mb", "1k", "1KB", "2Gb", "0", "100", "100b"])
def test_redis_sizes_have_no_problem(value):
    assert size_problem(value, "redis_maxmemory", syntax="redis") == ""


@pytest.mark.parametrize("value", ["1.5gb", "1t", "1gib", "256 mb", "256mb\nrename-command", "-1"])
def test_what_redis_would_not_read_is_refused(value):
    assert size_problem(value, "redis_maxmemory", "redis").startswith("redis_maxmemory must be a size as redis.conf")


def test_an_unknown_size_syntax_is_a_mistake_of_the_caller():
    with pytest.raises(AnsibleFilterError):
        size_problem("1", "x", "kubernetes")


def test_good_limits_and_reservations_have_no_problem():
    values = {"api_cpus": "0.5", "api_memory": "256M", "api_reserved_cpus": ".1", "api_reserved_memory": "64M"}
    assert resource_problems(values) == []
    assert (
        resource_problems({"x_cpus": 2, "x_memory": 1073741824, "x_reserved_cpus": 2.0, "x_reserved_memory": "1G"})
        == []
    )


@pytest.mark.parametrize("value", ["0", "-1", "abc", True, "1 cpu", "", None, 0, float("nan"), float("inf"), "1.5\n"])
def test_cpus_must_be_a_positive_number(value):
    assert resource_problems({"api_cpus": value}) == [
        f"api_cpus must be a number of CPUs above 0 (like 0.5 or 2), got {json.dumps(str(value))}"
    ]


def test_a_reservation_above_its_limit_is_refused():
    problems = resource_problems(
        {"api_cpus": "0.5", "api_memory": "128M", "api_reserved_cpus": "2", "api_reserved_memory": "1G"}
    )
    assert problems == [
        "api_reserved_cpus (2) must not be more than api_cpus (0.5): a container cannot reserve more than it may use",
        "api_reserved_memory (1G) must not be more than api_memory (128M): a container cannot reserve more than it "
        "may use",
    ]


def test_a_reservation_is_not_compared_with_a_limit_that_is_wrong():
    problems = resource_problems({"api_memory": "1 gigabyte", "api_reserved_memory": "64M"})
    assert len(problems) == 1 and problems[0].startswith("api_memory must be a size")


def test_resource_problems_takes_cpus_and_memory_only():
    with pytest.raises(AnsibleFilterError, match="api_replicas"):
        resource_problems({"api_replicas": 1})


# --- url_problem --------------------------------------------------------------------------------------------------

GOOD_URLS = [
    ("https://acme-v02.api.letsencrypt.org/directory", ["https"]),
    ("https://acme.pliers.lab:14000/dir", ["https"]),
    ("https://ACME.example.com", ["https"]),
    ("http://[::1]:8080/x?a=b#c", ["http"]),
    ("https://hooks.example.net/services/T0KEN?x=1", ["http", "https"]),
    ("http://alerts@hooks.internal:8080/x", ["http", "https"]),
    ("https://192.0.2.7/hook", ["https"]),
]
BAD_URLS = [
    ("https://acme.example.com/dir x", "it must not contain whitespace or a control character"),
    ("https://acme.example.com/dir\n", "it must not contain whitespace or a control character"),
    ("https://acme.example.com/\x00", "it must not contain whitespace or a control character"),
    ("acme.example.com/dir", "its scheme must be https"),
    ("http://acme.example.com/dir", "its scheme must be https"),
    ("https:acme.example.com/dir", "its scheme must be https"),
    ("ftp://acme.example.com/dir", "its scheme must be https"),
    ("https:///dir", "it must name a host"),
    ("https://", "it must name a host"),
    ("https://exa$mple.com/", "it must name a host"),
    ("https://:443/", "it must name a host"),
    ("https://acme.example.com:0/", "its port must be a number from 1 to 65535"),
    ("https://acme.example.com:99999/", "its port must be a number from 1 to 65535"),
    ("https://acme.example.com:port/", "its port must be a number from 1 to 65535"),
    ("https://[::1/", "it does not parse as one"),
]


@pytest.mark.parametrize(("value", "schemes"), GOOD_URLS)
def test_urls_of_the_schemes_have_no_problem(value, schemes):
    assert url_problem(value, "x", schemes) == ""


@pytest.mark.parametrize(("value", "why"), BAD_URLS)
def test_a_url_is_refused_saying_why_and_showing_it(value, why):
    problem = url_problem(value, "pliers_acme_directory", ["https"])
    assert problem == f"pliers_acme_directory must be an https:// URL: {why}; got {json.dumps(value)}"


def test_a_password_in_a_url_is_refused_and_never_shown():
    problem = url_problem("https://user:s3cret@acme.example.com:99999/", "x", ["https"])
    assert "it must not hold a password (user:password@)" in problem and "s3cret" not in problem


def test_a_secret_url_is_never_shown():
    problem = url_problem("https://hooks.example.net:99999/T0KEN", "hook", ["http", "https"], secret=True)
    assert problem == (
        "hook must be an http:// or https:// URL: its port must be a number from 1 to 65535; its value is not shown "
        "(it may hold a secret)"
    )


def test_an_empty_url_is_fine_when_optional_and_schemes_may_be_one_string():
    assert url_problem("", "x", optional=True) == url_problem(None, "x", optional=True) == ""
    assert url_problem("", "x").startswith("x must be an https:// URL: its scheme must be https")
    assert url_problem("http://a.example", "x", "http") == ""


# --- type_problems, declared_variables, undeclared_variables ------------------------------------------------------

SPECS = [
    {
        "argument_specs": {
            "main": {
                "options": {
                    "names": {"type": "list", "elements": "str"},
                    "labels": {"type": "dict"},
                    "hosts": {"type": "list", "elements": "dict"},
                    "any": {"type": "list"},
                    "key": {"type": "list", "no_log": True},
                    "title": {"type": "str"},
                }
            }
        }
    },
    {"preflight": {"options": {"ports": {"type": "list", "elements": "int"}, "mode": {}}}},
]


def test_lists_and_mappings_as_declared_have_no_problem():
    values = {"names": ["a", 1], "labels": {}, "hosts": [{"a": 1}], "any": [[1], {}], "ports": [80], "title": [1]}
    assert type_problems(values, SPECS) == []


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"names": "a,b"}, """names must be a list ([a, b] in YAML, or one '- a' a line), got a string "a,b\""""),
        ({"names": None}, "names must be a list ([a, b] in YAML, or one '- a' a line), got a null"),
        ({"names": {"a": 1}}, "names must be a list ([a, b] in YAML, or one '- a' a line), got a mapping"),
        ({"labels": "db=true"}, 'labels must be a mapping ({key: value} in YAML), got a string "db=true"'),
        ({"labels": ["db"]}, "labels must be a mapping ({key: value} in YAML), got a list"),
        ({"labels": 3}, 'labels must be a mapping ({key: value} in YAML), got a number "3"'),
        ({"names": ["a", ["b"]]}, "names must list str values, got a list among them"),
        ({"ports": [80, {"a": 1}]}, "ports must list int values, got a mapping among them"),
        ({"hosts": [{"a": 1}, "b"]}, "hosts must list dict values, got a string among them"),
        ({"key": "s3cret,x"}, "key must be a list ([a, b] in YAML, or one '- a' a line), got a string"),
    ],
)
def test_a_value_that_is_not_the_declared_list_or_mapping_is_named(values, problem):
    assert type_problems(values, SPECS) == [problem]


def test_undeclared_or_other_types_are_not_looked_at_and_problems_are_sorted():
    values = {"title": "x", "unknown": "y", "names": "z", "labels": "w"}
    assert [problem.split()[0] for problem in type_problems(values, SPECS)] == ["labels", "names"]


def test_type_problems_wants_a_mapping_and_specs():
    with pytest.raises(AnsibleFilterError):
        type_problems(["names"], SPECS)
    with pytest.raises(AnsibleFilterError):
        type_problems({}, ["not a spec"])


def test_declared_variables_lists_every_entry_points_options_once():
    assert declared_variables(SPECS) == ["any", "hosts", "key", "labels", "mode", "names", "ports", "title"]
    assert declared_variables(SPECS, ["dict"]) == ["labels"]
    assert declared_variables(SPECS, "str") == ["mode", "title"]
    assert declared_variables(SPECS[0]["argument_specs"]) == ["any", "hosts", "key", "labels", "names", "title"]


DECLARED = ["pliers_environment", "pliers_mode", "web_http_port", "monitoring_grafana_port"]
PREFIXES = ["pliers_", "web_", "monitoring_"]


def test_a_typo_is_named_with_the_name_it_probably_meant():
    names = ["pliers_enviroment", "pliers_mode", "web_htp_port", "ansible_host", "vault_x", "pliers_nothing_like_it"]
    assert undeclared_variables(names, DECLARED, PREFIXES) == [
        "pliers_enviroment is declared by no role of pliers.deploy (did you mean pliers_environment?)",
        "pliers_nothing_like_it is declared by no role of pliers.deploy (no role reads it)",
        "web_htp_port is declared by no role of pliers.deploy (did you mean web_http_port?)",
    ]


def test_private_and_excluded_names_are_no_typos():
    names = ["_web_x", "__web_y", "pliers_lab_registry", "pliers_lab_domain", "pliers_preflight_passed", "webhook"]
    assert undeclared_variables(names, DECLARED, PREFIXES, ["pliers_lab_*", "pliers_preflight_passed"]) == []
    assert undeclared_variables(["pliers_x"], DECLARED, "pliers_") == [
        "pliers_x is declared by no role of pliers.deploy (no role reads it)"
    ]


def test_warn_shows_each_message_as_a_warning_and_returns_them(monkeypatch):
    shown = []
    monkeypatch.setattr(inputs.Display, "warning", lambda self, message, *args, **kwargs: shown.append(message))
    assert warn(["one", "two"]) == ["one", "two"] and shown == ["one", "two"]
    assert warn("three") == ["three"] and shown[-1] == "three"
    assert warn(None) == []


def test_every_filter_is_exported():
    assert set(FilterModule().filters()) == {
        "single_line_problems", "format_problem", "image_reference_problem", "port_problem", "size_problem",
        "resource_problems", "url_problem", "type_problems", "declared_variables", "undeclared_variables", "warn",
    }  # fmt: skip


# --- What the preflight reads: the roles' specs, and the names the collection sets as it runs ---------------------


def stack_preflight_vars() -> dict:
    return yaml.safe_load((ROLES / "stack/tasks/preflight.yml").read_text())[0]["vars"]


def role_specs() -> list[dict]:
    return [yaml.safe_load(path.read_text()) for path in sorted(ROLES.glob("*/meta/argument_specs.yml"))]


@needs_roles
def test_the_preflight_reads_every_roles_spec():
    assert sorted(stack_preflight_vars()["_stack_collection_roles"]) == sorted(
        path.parent.parent.name for path in ROLES.glob("*/meta/argument_specs.yml")
    )


@needs_roles
def test_every_declared_variable_has_a_role_prefix():
    prefixes = tuple(stack_preflight_vars()["_stack_role_prefixes"])
    assert [name for name in declared_variables(role_specs()) if not name.startswith(prefixes)] == []


def set_names(node) -> set[str]:
    """The variables a task file sets: set_fact's keys, register's names, loop variables."""
    names: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("ansible.builtin.set_fact", "set_fact") and isinstance(value, dict):
                names |= {name for name in value if name != "cacheable"}
            elif key in ("register", "loop_var") and isinstance(value, str):
                names.add(value)
            names |= set_names(value)
    elif isinstance(node, list):
        for item in node:
            names |= set_names(item)
    return names


@needs_roles
def test_every_name_the_collection_sets_as_it_runs_is_declared_or_excluded():
    """The typo warning must not name what the collection itself sets: a new set_fact, register or loop variable with
    a role's prefix goes into the stack preflight's _stack_runtime_variables (or an argument spec)."""
    files = [*ROLES.glob("*/tasks/*.yml"), *(ROOT / "playbooks").glob("*.yml")]
    names = set().union(*(set_names(yaml.safe_load(path.read_text())) for path in files))
    preflight = stack_preflight_vars()
    undeclared = undeclared_variables(
        sorted(names),
        declared_variables(role_specs()),
        preflight["_stack_role_prefixes"],
        preflight["_stack_runtime_variables"],
    )
    assert undeclared == []
    assert {"pliers_stack_services", "pliers_preflight_passed", "stack_role"} <= names
