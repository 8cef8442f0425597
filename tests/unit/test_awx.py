"""AWX as code: awx/credentials.json and awx/pliers.json are what `awx import` (awxkit) reads, and they agree with
this repository and docs/awx.md.

No AWX runs here. awxkit's own import (ApiV2.import_assets: its resource order, its natural-key lookups, its
related surveys and credentials) runs against an in-memory AWX API that answers as AWX 24.6.1 does where the import
depends on it: the POST fields of OPTIONS (awx/api/serializers.py), the checks a create or an update makes (a job
template's playbook, a credential's inputs, a survey). AWX's inventory sync (`ansible-inventory --list --export`, as
awx/main/tasks/jobs.py runs it) and the documented secrets play run on this machine. What this cannot prove: that a
real AWX accepts the files; the lab's tests/lab/test_galaxy.py runs a deploy under ansible-runner as AWX does."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import defaultdict
from functools import cache, partial
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
import yaml
from awxkit.api.client import Connection
from awxkit.api.pages import page
from awxkit.api.pages.api import EXPORTABLE_RESOURCES, ApiV2
from awxkit.api.pages.credentials import credential_type_name_to_config_kind_map
from awxkit.api.utils import remove_encrypted

from ..paths import ROOT

BIN = Path(sys.executable).parent
DOCS = ROOT / "docs" / "awx.md"
# `awx import < awx/credentials.json` once, then `awx import < awx/pliers.json` (again after any change): awxkit
# sends a secret's "$encrypted$" as "", so importing a credential again would empty the secret set since.
CREDENTIALS = json.loads((ROOT / "awx" / "credentials.json").read_text())
PLIERS = json.loads((ROOT / "awx" / "pliers.json").read_text())
DOCUMENTS = {"credentials.json": CREDENTIALS, "pliers.json": PLIERS}
ENVIRONMENTS = ("staging", "production")
# awxkit 24.6.1 calls datetime.utcnow(), deprecated since Python 3.12, while it waits for a project's first sync.
pytestmark = pytest.mark.filterwarnings("ignore:datetime.datetime.utcnow:DeprecationWarning")

# The API's name of each resource awxkit imports (its root lists inventories as "inventory").
SEGMENT = {resource: "inventories" if resource == "inventory" else resource for resource in EXPORTABLE_RESOURCES}
SEGMENT["system_job_templates"] = "system_job_templates"  # awxkit orders it too, as a dependency
TYPE = {
    "organizations": "organization",
    "credential_types": "credential_type",
    "credentials": "credential",
    "execution_environments": "execution_environment",
    "projects": "project",
    "inventories": "inventory",
    "inventory_sources": "inventory_source",
    "job_templates": "job_template",
}
SEGMENT_OF_TYPE = {kind: segment for segment, kind in TYPE.items()}

# AWX 24.6.1's writable fields, what OPTIONS lists under actions.POST (awx/api/serializers.py, less the read-only
# ones). awxkit sends a document's field only if it is listed there: any other is dropped without a word.
ID = "id"


def fields(plain: str = "", ids: str = "", required: str = "") -> dict[str, dict]:
    listed = {name: {"type": "string", "required": False} for name in ["name", "description", *plain.split()]}
    listed |= {name: {"type": ID, "required": False} for name in ids.split()}
    for name in ["name", *required.split()]:
        listed[name]["required"] = True
    return listed


POST_FIELDS = {
    "organizations": fields("max_hosts", ids="default_environment"),
    "credential_types": fields("kind inputs injectors", required="kind"),
    "credentials": fields("inputs", ids="organization credential_type user team", required="credential_type"),
    "execution_environments": fields("image pull", ids="organization credential", required="image"),
    "projects": fields(
        "local_path scm_type scm_url scm_branch scm_refspec scm_clean scm_track_submodules scm_delete_on_update"
        " timeout scm_update_on_launch scm_update_cache_timeout allow_override",
        ids="organization credential default_environment signature_validation_credential",
        required="organization",
    ),
    "inventories": fields(
        "kind host_filter variables prevent_instance_group_fallback", ids="organization", required="organization"
    ),
    "inventory_sources": fields(
        "source source_path source_vars scm_branch enabled_var enabled_value host_filter overwrite overwrite_vars"
        " timeout verbosity limit update_on_launch update_cache_timeout",
        ids="inventory source_project credential execution_environment",
        required="inventory",
    ),
    "job_templates": fields(
        "job_type playbook scm_branch forks limit verbosity extra_vars job_tags force_handlers skip_tags"
        " start_at_task timeout use_fact_cache host_config_key survey_enabled become_enabled diff_mode"
        " allow_simultaneous job_slice_count webhook_service prevent_instance_group_fallback"
        " ask_scm_branch_on_launch ask_diff_mode_on_launch ask_variables_on_launch ask_limit_on_launch"
        " ask_tags_on_launch ask_skip_tags_on_launch ask_job_type_on_launch ask_verbosity_on_launch"
        " ask_inventory_on_launch ask_credential_on_launch ask_execution_environment_on_launch ask_labels_on_launch"
        " ask_forks_on_launch ask_job_slice_count_on_launch ask_timeout_on_launch ask_instance_groups_on_launch",
        ids="inventory project execution_environment webhook_credential",
        required="project playbook",
    ),
}
TARGET = {
    "organization": "organizations",
    "default_environment": "execution_environments",
    "execution_environment": "execution_environments",
    "credential": "credentials",
    "webhook_credential": "credentials",
    "signature_validation_credential": "credentials",
    "credential_type": "credential_types",
    "inventory": "inventories",
    "project": "projects",
    "source_project": "projects",
}
# AWX's managed credential types the documents use (awx/main/models/credential/__init__.py): kind, input fields,
# and which of them are secret.
MACHINE_SECRETS = {"password", "ssh_key_data", "ssh_public_key_data", "ssh_key_unlock", "become_password"}
SCM_SECRETS = {"password", "ssh_key_data", "ssh_key_unlock"}
MANAGED_TYPES = {
    "Machine": ("ssh", MACHINE_SECRETS | {"username", "become_method", "become_username"}, MACHINE_SECRETS),
    "Source Control": ("scm", SCM_SECRETS | {"username"}, SCM_SECRETS),
    "Vault": ("vault", {"vault_password", "vault_id"}, {"vault_password"}),
    "Container Registry": ("registry", {"host", "username", "password", "verify_ssl"}, {"password"}),
}
# A survey question's types and what its default must be (awx/main/constants.py SURVEY_TYPE_MAPPING).
SURVEY_TYPES = {
    "text": str,
    "textarea": str,
    "password": str,
    "multiplechoice": str,
    "multiselect": str,
    "integer": int,
    "float": (float, int),
}


def assets(document: dict, resource: str) -> list[dict]:
    return document.get(resource) or []


def job_templates() -> list[dict]:
    return assets(PLIERS, "job_templates")


def survey(template: dict) -> list[dict]:
    return template.get("related", {}).get("survey_spec", {}).get("spec", [])


def environment_of(template: dict) -> str:
    (environment,) = [env for env in ENVIRONMENTS if template["inventory"]["name"] == f"pliers-{env}"]
    return environment


def freeze(key):
    return json.dumps(key, sort_keys=True)


# ---------------------------------------------------------------------------------------------------------------
# docs/awx.md: the project's files it shows (a YAML block whose first line is `# <file>.yml`).


def documented_files() -> dict[str, str]:
    blocks = re.findall(r"```yaml\n(.*?)```", DOCS.read_text(), re.DOTALL)
    return {match[1]: block for block in blocks if (match := re.match(r"---\n# ([\w/.-]+\.yml)\b", block))}


def documented_wrappers() -> dict[str, str]:
    """Each job template's playbook in the project, and the collection playbook it imports after secrets.yml."""
    block = documented_files()["deploy.yml"]
    plays = yaml.safe_load(block)
    assert [play.get("ansible.builtin.import_playbook") for play in plays] == ["secrets.yml", "pliers.deploy.deploy"]
    # "---", then "# deploy.yml (and rollback.yml, ...: the same, each importing its own)"
    names = re.findall(r"\b(\w+)\.yml\b", block.splitlines()[1])
    return {f"{name}.yml": f"pliers.deploy.{name}" for name in names}


# ---------------------------------------------------------------------------------------------------------------
# An in-memory AWX API, for awxkit's import to run against.


class FakeAwx:
    """Just enough of AWX's REST API v2 for `awx import`: the root, OPTIONS, filtered lists, create and replace,
    a job template's survey and credentials. Each request and each refusal is recorded."""

    def __init__(self, playbooks: list[str]):
        self.objects: dict[str, dict[int, dict]] = defaultdict(dict)
        self.surveys: dict[int, dict] = {}
        self.attached: dict[int, list[int]] = defaultdict(list)
        self.requests: list[tuple[str, str, dict | None]] = []
        self.refusals: list[str] = []
        self.playbooks = playbooks  # what the project's sync found
        self.next_id = 1
        for name, (kind, inputs, secrets) in MANAGED_TYPES.items():
            fields_ = [{"id": field, "label": field, "secret": field in secrets} for field in sorted(inputs)]
            self.store("credential_types", {"name": name, "kind": kind, "managed": True, "inputs": {"fields": fields_}})

    def store(self, segment: str, values: dict) -> dict:
        obj = {"id": self.next_id, "type": TYPE[segment], **values}
        self.objects[segment][self.next_id] = obj
        self.next_id += 1
        return obj

    def view(self, segment: str, obj: dict) -> dict:
        url = f"/api/v2/{segment}/{obj['id']}/"
        related = {
            name: f"/api/v2/{TARGET[name]}/{value}/"
            for name, value in obj.items()
            if name in TARGET and value is not None
        }
        if segment == "job_templates":
            related |= {"survey_spec": f"{url}survey_spec/", "credentials": f"{url}credentials/"}
        shown = {**obj, "url": url, "related": related}
        if segment == "credentials":  # AWX shows a secret as "$encrypted$"
            secrets = self.secret_fields(obj["credential_type"])
            shown["inputs"] = {k: "$encrypted$" if k in secrets else v for k, v in obj["inputs"].items()}
        return shown

    def secret_fields(self, credential_type: int) -> set[str]:
        inputs = self.objects["credential_types"][credential_type]["inputs"]
        return {field["id"] for field in inputs["fields"] if field.get("secret")}

    def handle(self, method: str, path: str, params: dict, body) -> tuple[int, object]:
        self.requests.append((method, path, body))
        parts = path.removeprefix("/api/v2/").strip("/").split("/")
        if path == "/api/v2/":
            return 200, {resource: f"/api/v2/{segment}/" for resource, segment in SEGMENT.items()}
        segment = parts[0]
        if len(parts) == 1 and method == "options":
            return 200, {"actions": {"POST": POST_FIELDS.get(segment, fields())}}
        if len(parts) == 1 and method == "get":
            found = [
                self.view(segment, obj)
                for obj in self.objects[segment].values()
                if all(str(obj.get(key)) == str(value) for key, value in params.items())
            ]
            return 200, {"count": len(found), "next": None, "previous": None, "results": found}
        if len(parts) == 1 and method == "post":
            return self.write(segment, None, body)
        obj = self.objects[segment].get(int(parts[1]))
        if obj is None:
            return 404, {"detail": "Not found."}
        if len(parts) == 2 and method == "get":
            return 200, self.view(segment, obj)
        if len(parts) == 2 and method == "put":
            return self.write(segment, obj, body)
        if parts[2] == "survey_spec" and method == "post":
            if problem := survey_problem(body):
                return self.refuse(f"{obj['name']}'s survey: {problem}")
            self.surveys[obj["id"]] = body
            return 200, {}
        if parts[2] == "credentials" and method == "get":
            found = [self.view("credentials", self.objects["credentials"][i]) for i in self.attached[obj["id"]]]
            return 200, {"count": len(found), "next": None, "previous": None, "results": found}
        if parts[2] == "credentials" and method == "post":
            return self.attach(obj, body["id"])
        return 405, {"detail": f"{method} {path}"}

    def refuse(self, problem: str) -> tuple[int, dict]:
        self.refusals.append(problem)
        return 400, {"error": problem}

    def write(self, segment: str, existing: dict | None, body: dict) -> tuple[int, dict]:
        """A create (POST) or a replace (PUT): the checks of AWX's serializers this import can meet."""
        allowed = POST_FIELDS[segment]
        values = {**(existing or {}), **{k: v for k, v in body.items() if k in allowed}}
        for name, spec in allowed.items():
            if spec["required"] and values.get(name) in (None, ""):
                return self.refuse(f"{segment} {body.get('name')!r}: {name} is required")
            if spec["type"] == ID and values.get(name) is not None and values[name] not in self.objects[TARGET[name]]:
                return self.refuse(f"{segment} {body.get('name')!r}: no {name} {values[name]}")
        scope = "inventory" if segment == "inventory_sources" else "organization"
        for other in self.objects[segment].values():
            same = other["name"] == values["name"] and other.get(scope) == values.get(scope)
            if same and other is not existing:
                return self.refuse(f"{segment} {values['name']!r} exists")
        problem = getattr(self, f"check_{segment}", lambda _values, _existing: None)(values, existing)
        if problem:
            return self.refuse(f"{segment} {values['name']!r}: {problem}")
        if existing is None:
            return 201, self.view(segment, self.store(segment, values))
        existing.update(values)
        return 200, self.view(segment, existing)

    def check_credentials(self, values: dict, existing: dict | None) -> str | None:
        credential_type = self.objects["credential_types"][values["credential_type"]]
        known = {field["id"] for field in credential_type["inputs"]["fields"]}
        if unknown := set(values.get("inputs", {})) - known:
            return f"inputs {sorted(unknown)} are not {credential_type['name']}'s"
        inputs = {}
        for name, value in values.get("inputs", {}).items():
            if name in self.secret_fields(values["credential_type"]) and value == "$encrypted$":
                if existing is None:
                    return f"$encrypted$ is a reserved keyword, and cannot be used for {name}"
                value = existing["inputs"].get(name, "")
            if value != "":  # AWX drops an empty secret (Credential.encrypt_field)
                inputs[name] = value
        values["inputs"] = inputs
        return None

    def check_projects(self, values: dict, _existing) -> str | None:
        credential = self.objects["credentials"].get(values.get("credential"))
        if credential and self.objects["credential_types"][credential["credential_type"]]["kind"] != "scm":
            return "the credential is not a Source Control credential"
        values.update(status="successful", scm_type=values.get("scm_type") or "")
        return None

    def check_execution_environments(self, values: dict, _existing) -> str | None:
        credential = self.objects["credentials"].get(values.get("credential"))
        if credential and self.objects["credential_types"][credential["credential_type"]]["kind"] != "registry":
            return "the credential is not a Container Registry credential"
        return None

    def check_inventory_sources(self, values: dict, _existing) -> str | None:
        if values.get("source") == "scm" and not values.get("source_project"):
            return "Project required for scm type sources."
        return None

    def check_job_templates(self, values: dict, _existing) -> str | None:
        project = self.objects["projects"][values["project"]]
        if not project.get("allow_override") and values["playbook"] not in self.playbooks:
            return "Playbook not found for project."
        if values.get("inventory") is None and not values.get("ask_inventory_on_launch"):
            return "Job Template must provide 'inventory' or allow prompting for it."
        values["organization"] = project["organization"]  # a job template's is its project's
        return None

    def attach(self, template: dict, credential_id: int) -> tuple[int, object]:
        credential = self.objects["credentials"].get(credential_id)
        if credential is None:
            return self.refuse(f"no credential {credential_id}")
        kind = self.objects["credential_types"][credential["credential_type"]]["kind"]
        kinds = [
            self.objects["credential_types"][self.objects["credentials"][i]["credential_type"]]["kind"]
            for i in self.attached[template["id"]]
        ]
        if kind in kinds:  # one Machine credential; one Vault credential per vault id (none here)
            return self.refuse(f"{template['name']}: a second {kind} credential")
        self.attached[template["id"]].append(credential_id)
        return 204, None


def survey_problem(spec: dict) -> str | None:
    """AWX's survey checks (JobTemplateSurveySpec._validate_spec_data in awx/api/views/__init__.py)."""
    if not isinstance(spec.get("name"), str) or not isinstance(spec.get("description"), str):
        return "name and description must be strings"
    if not isinstance(spec.get("spec"), list) or not spec["spec"]:
        return "'spec' doesn't contain any items."
    variables = set()
    for item in spec["spec"]:
        for field, kind in (("type", str), ("question_name", str), ("variable", str), ("required", bool)):
            if not isinstance(item.get(field), kind):
                return f"{field!r} missing or not a {kind.__name__} in {item.get('variable')!r}"
        if item["variable"] in variables:
            return f"'variable' {item['variable']!r} duplicated"
        variables.add(item["variable"])
        if item["type"] not in SURVEY_TYPES:
            return f"{item['type']!r} is not a question type"
        if item.get("default", "") != "" and not isinstance(item["default"], SURVEY_TYPES[item["type"]]):
            return f"default of {item['variable']!r} is not a {item['type']}"
        if any(not isinstance(item.get(key), int | None) for key in ("min", "max")):
            return f"min or max of {item['variable']!r} is not an integer"
        if item["type"] in ("multiplechoice", "multiselect"):
            choices = item.get("choices")
            choices = choices.splitlines() if isinstance(choices, str) else choices
            if not choices:
                return f"{item['variable']!r} must specify choices"
            defaults = item.get("default", "")
            defaults = [d for d in defaults.splitlines() if d.strip()] if isinstance(defaults, str) else defaults
            if any(default not in choices for default in defaults):
                return f"default of {item['variable']!r} is not one of its choices"
    return None


class FakeSession:
    """What awxkit's Connection calls (requests.Session's verbs), answered by the FakeAwx."""

    def __init__(self, awx: FakeAwx):
        self.awx = awx
        self.cookies: dict = {}
        self.headers: dict = {}
        self.auth = None

    def __getattr__(self, method: str):
        if method not in ("get", "post", "put", "patch", "options", "delete", "head"):
            raise AttributeError(method)
        return partial(self.request, method)

    def request(self, method: str, url: str, params=None, **kwargs) -> requests.Response:
        status, body = self.awx.handle(method, urlsplit(url).path, params or {}, kwargs.get("json"))
        response = requests.Response()
        response.status_code = status
        response._content = b"" if body is None else json.dumps(body).encode()
        response.encoding = "utf-8"
        response.headers["Content-Type"] = "application/json"
        response.headers["Allow"] = "GET, POST, PUT, HEAD, OPTIONS"
        response.url = url
        response.request = requests.Request(method.upper(), url).prepare()
        return response


def awx_import(awx: FakeAwx, document: dict) -> ApiV2:
    """What `awx import < file` does once logged in: ApiV2.import_assets(document)."""
    connection = Connection("https://awx.invalid")
    connection.session = FakeSession(awx)
    api = ApiV2(connection, endpoint="/api/v2/").get()
    api.import_assets(json.loads(json.dumps(document)))  # awxkit edits what it is given
    return api


def fresh_awx() -> FakeAwx:
    return FakeAwx(playbooks=list(documented_wrappers()))


@pytest.fixture(scope="module")
def imported() -> FakeAwx:
    awx = fresh_awx()
    for document in (CREDENTIALS, PLIERS):
        api = awx_import(awx, document)
        assert not getattr(api, "_has_error", False), awx.refusals
    return awx


# ---------------------------------------------------------------------------------------------------------------
# The collection: what each playbook reads.


def walk(node):
    """Every mapping in a loaded YAML document."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def strings(node):
    """Every key and string value of a loaded YAML document (its comments are gone)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from strings(key)
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def reached(playbook: str) -> list[Path]:
    """The collection playbook's files and the role task files it reaches: import_playbook, import_role and
    include_role (their tasks_from), import_tasks and include_tasks; with the stack's main, the service roles'."""
    roles = ROOT / "roles"
    service_roles = yaml.safe_load((roles / "stack" / "defaults" / "main.yml").read_text())["pliers_service_roles"]
    queue, seen = [ROOT / "playbooks" / f"{playbook}.yml"], []
    while queue:
        path = queue.pop()
        if path in seen or not path.is_file():
            continue
        seen.append(path)
        for mapping in walk(yaml.safe_load(path.read_text())):
            for key, value in mapping.items():
                action = str(key).removeprefix("ansible.builtin.")
                if action == "import_playbook" and isinstance(value, str):
                    queue.append(path.parent / f"{value.removeprefix('pliers.deploy.').removesuffix('.yml')}.yml")
                elif action in ("import_role", "include_role") and isinstance(value, dict):
                    role = value["name"].removeprefix("pliers.deploy.")
                    entry = value.get("tasks_from", "main")
                    queue.append(roles / role / "tasks" / f"{entry}.yml")
                    if (role, entry) == ("stack", "main"):
                        for service in service_roles:
                            service_dir = roles / service.removeprefix("pliers.deploy.")
                            queue += [service_dir / "defaults" / "main.yml", *(service_dir / "tasks").glob("*.yml")]
                elif action in ("import_tasks", "include_tasks"):
                    name = value.get("file") if isinstance(value, dict) else value
                    if isinstance(name, str) and "{{" not in name:
                        queue.append(path.parent / name)
    return seen


CONDITIONS = ("when", "that", "failed_when", "changed_when", "until")


@cache
def expressions(playbook: str) -> list[str]:
    """The Jinja expressions of the files a playbook reaches ({{ }} and conditions), their string literals removed:
    where a variable is read, not where a task's name says its word."""
    found = []
    for path in reached(playbook):
        document = yaml.safe_load(path.read_text())
        found += [expression for text in strings(document) for expression in re.findall(r"{{(.*?)}}", text, re.S)]
        for mapping in walk(document):
            for key in CONDITIONS:
                value = mapping.get(key)
                found += [v for v in (value if isinstance(value, list) else [value]) if isinstance(v, str)]
    return [re.sub(r"'[^']*'|\"[^\"]*\"", "''", expression) for expression in found]


def reads(expression: str, variable: str) -> bool:
    return re.search(rf"(?<![.\w]){variable}\b", expression) is not None


@cache
def options() -> dict[str, dict]:
    """Every role's inputs, from its meta/argument_specs.yml (type, default, choices)."""
    found = {}
    for spec in sorted(ROOT.glob("roles/*/meta/argument_specs.yml")):
        for entry in yaml.safe_load(spec.read_text())["argument_specs"].values():
            found |= entry.get("options", {})
    return found


def playbook_default(playbook: str, variable: str):
    """A playbook's own `<variable> | default(<value>)`, for the extra vars only a playbook reads."""
    match = re.search(rf"\b{variable}\s*\|\s*default\(([^)]*)\)", (ROOT / "playbooks" / f"{playbook}.yml").read_text())
    return yaml.safe_load(match[1]) if match else None


def collection_playbook(template: dict) -> str:
    return documented_wrappers()[template["playbook"]].removeprefix("pliers.deploy.")


# ---------------------------------------------------------------------------------------------------------------
# The files' shape, by awxkit's own tables.


def test_the_files_hold_only_resources_awx_import_reads():
    for name, document in DOCUMENTS.items():
        unknown = set(document) - set(EXPORTABLE_RESOURCES)
        assert document and not unknown, f"{name}: awxkit imports none of {sorted(unknown)}"
        for resource, listed in document.items():
            assert isinstance(listed, list) and listed, (name, resource)
            for asset in listed:
                assert isinstance(asset.get("natural_key"), dict), f"{name}: {asset.get('name')} has no natural_key"


def check_natural_key(key: dict, where: str):
    """A natural key names its type, and only fields awxkit identifies that type by (its page's NATURAL_KEY)."""
    segment = SEGMENT_OF_TYPE.get(key.get("type"))
    assert segment, f"{where}: awxkit looks up no type {key.get('type')!r}"
    natural = page.get_registered_page(f"/api/v2/{segment}/1/").NATURAL_KEY
    assert set(key) - {"type"} <= set(natural), f"{where}: {sorted(key)} beyond {natural}"
    for field, value in key.items():
        if isinstance(value, dict):
            check_natural_key(value, f"{where}.{field}")


def test_each_natural_key_is_made_of_the_fields_awxkit_matches_on():
    for name, document in DOCUMENTS.items():
        for resource, listed in document.items():
            for asset in listed:
                key, where = asset["natural_key"], f"{name}: {asset['name']}"
                assert key["type"] == TYPE[SEGMENT[resource]], where
                assert key["name"] == asset["name"], where
                check_natural_key(key, where)
                # The object's own references are the ones its natural key names.
                for field in set(key) & set(asset) - {"type"}:
                    assert key[field] == asset[field], f"{where}: natural_key.{field}"


def test_the_credential_types_are_awx_managed_ones():
    # awxkit's table of AWX's managed credential types (by lowercased name) gives the kind of each.
    for credential in assets(CREDENTIALS, "credentials"):
        credential_type = credential["credential_type"]
        assert credential_type["name"] in MANAGED_TYPES, credential["name"]
        kind = credential_type_name_to_config_kind_map[credential_type["name"].lower()]
        assert credential_type["kind"] == kind == MANAGED_TYPES[credential_type["name"]][0], credential["name"]


def creation_order() -> list[str]:
    """The order `awx import` creates resources in: ApiV2._dependent_resources (awxkit's page_creation_order)."""
    root = {resource: f"/api/v2/{segment}/" for resource, segment in SEGMENT.items()}
    return list(ApiV2(Connection("https://awx.invalid"), endpoint="/api/v2/", json=root)._dependent_resources())


def test_every_reference_names_an_object_imported_before_it():
    order = creation_order()
    # credentials.json is imported first, pliers.json after; within one, awxkit's order of resources.
    defined = {}
    for index, document in enumerate(DOCUMENTS.values()):
        for resource, listed in document.items():
            for asset in listed:
                defined[freeze(asset["natural_key"])] = (index, order.index(resource))
    for index, (name, document) in enumerate(DOCUMENTS.items()):
        for resource, listed in document.items():
            for asset in listed:
                where = f"{name}: {asset['name']}"
                for field, value in asset.items():
                    if field not in TARGET or not isinstance(value, dict):
                        continue
                    if value["type"] == "credential_type":  # AWX's own (managed), there before any import
                        assert value["name"] in MANAGED_TYPES, where
                        continue
                    assert freeze(value) in defined, f"{where}: its {field} {value['name']!r} is in neither file"
                    assert defined[freeze(value)] < (index, order.index(resource)), (
                        f"{where}: its {field} is imported after it (awxkit's order: {order})"
                    )
                # Related credentials are attached once every object exists.
                for credential in asset.get("related", {}).get("credentials", []):
                    assert freeze(credential) in defined, f"{where}: no credential {credential['name']!r}"


# ---------------------------------------------------------------------------------------------------------------
# awxkit's import, against the in-memory AWX.


def test_awx_import_creates_every_object_with_its_survey_and_credentials(imported):
    for document in DOCUMENTS.values():
        for resource, listed in document.items():
            created = {obj["name"] for obj in imported.objects[SEGMENT[resource]].values()}
            assert {asset["name"] for asset in listed} <= created, resource
    created = {obj["name"]: obj for obj in imported.objects["job_templates"].values()}
    for template in job_templates():
        obj = created[template["name"]]
        assert obj["survey_enabled"] and imported.surveys[obj["id"]] == template["related"]["survey_spec"]
        attached = {imported.objects["credentials"][i]["name"] for i in imported.attached[obj["id"]]}
        assert attached == {credential["name"] for credential in template["related"]["credentials"]}


def test_awx_receives_every_field_the_files_set(imported):
    # awxkit sends a field only if AWX's OPTIONS lists it, and a reference only once its natural key resolved.
    creates = {}
    for method, path, body in imported.requests:
        if method == "post" and path.count("/") == 4 and body and "name" in body:  # /api/v2/<resource>/
            creates[(path.split("/")[3], body["name"])] = body
    for name, document in DOCUMENTS.items():
        for resource, listed in document.items():
            for asset in listed:
                sent = creates[(SEGMENT[resource], asset["name"])]
                dropped = set(asset) - {"natural_key", "related"} - set(sent)
                assert not dropped, f"{name}: {asset['name']}: AWX takes no {sorted(dropped)}; awxkit drops them"
                unresolved = [field for field, value in asset.items() if field in TARGET and sent[field] is None]
                assert not unresolved, f"{name}: {asset['name']}: {unresolved} found no object"


def enter_secrets(awx: FakeAwx) -> dict[str, dict]:
    """What an administrator does after importing credentials.json: each secret entered in AWX."""
    for credential in awx.objects["credentials"].values():
        for field in awx.secret_fields(credential["credential_type"]) & {"ssh_key_data", "vault_password", "password"}:
            credential["inputs"][field] = f"entered {field} of {credential['name']}"
    return {credential["name"]: dict(credential["inputs"]) for credential in awx.objects["credentials"].values()}


def test_pliers_json_imports_again_and_again_leaving_the_credentials_alone():
    awx = fresh_awx()
    awx_import(awx, CREDENTIALS)
    entered = enter_secrets(awx)
    for attempt in range(2):
        start = len(awx.requests)
        api = awx_import(awx, PLIERS)
        assert not getattr(api, "_has_error", False), awx.refusals
        writes = [(method, path) for method, path, _ in awx.requests[start:] if method in ("post", "put", "patch")]
        assert not [path for _, path in writes if path.startswith("/api/v2/credentials/")], writes
        if attempt:  # found again by their natural keys: replaced, nothing created twice, nothing attached again
            assert not [path for method, path in writes if method == "post" and not path.endswith("/survey_spec/")]
    assert {credential["name"]: credential["inputs"] for credential in awx.objects["credentials"].values()} == entered
    assert len(awx.objects["job_templates"]) == len(job_templates())


def test_importing_credentials_json_again_would_empty_the_secrets_entered_since():
    # Why docs/awx.md imports it once: awxkit sends "$encrypted$" as "" (utils.remove_encrypted, on an update
    # too), and AWX keeps no empty secret.
    assert remove_encrypted({"vault_password": "$encrypted$"}) == {"vault_password": ""}
    awx = fresh_awx()
    awx_import(awx, CREDENTIALS)
    entered = enter_secrets(awx)
    awx_import(awx, CREDENTIALS)
    after = {credential["name"]: credential["inputs"] for credential in awx.objects["credentials"].values()}
    assert after["pliers-vault-production"] == {} != entered["pliers-vault-production"]


# ---------------------------------------------------------------------------------------------------------------
# The job templates and their surveys, against the collection's playbooks.


def test_every_job_template_runs_a_documented_wrapper_of_a_collection_playbook():
    wrappers = documented_wrappers()
    assert {template["playbook"] for template in job_templates()} == set(wrappers)
    for wrapper, playbook in wrappers.items():
        assert (ROOT / "playbooks" / f"{playbook.removeprefix('pliers.deploy.')}.yml").is_file(), wrapper
    # One template per playbook in each environment, named after both.
    names = {template["name"] for template in job_templates()}
    expected = {f"pliers-{env}-{wrapper.removesuffix('.yml')}" for env in ENVIRONMENTS for wrapper in wrappers}
    assert names == expected
    assert {environment_of(template) for template in job_templates()} == set(ENVIRONMENTS)


@pytest.mark.parametrize("template", job_templates(), ids=lambda template: template["name"])
def test_every_survey_question_sets_a_variable_its_playbook_reads(template):
    playbook = collection_playbook(template)
    read = expressions(playbook)
    for question in survey(template):
        assert any(reads(e, question["variable"]) for e in read), f"{playbook}.yml reads no {question['variable']}"


@pytest.mark.parametrize("template", job_templates(), ids=lambda template: template["name"])
def test_each_question_has_the_type_choices_and_default_the_collection_gives_its_variable(template):
    playbook, known = collection_playbook(template), options()
    read = expressions(playbook)
    for question in survey(template):
        variable, where = question["variable"], f"{template['name']}: {question['variable']}"
        spec = known.get(variable, {})
        default = spec.get("default", playbook_default(playbook, variable))
        assert spec or default is not None, f"{where}: neither a role's input nor a playbook's default"
        uses = [expression for expression in read if reads(expression, variable)]
        as_bool = re.compile(rf"(?<![.\w]){variable}(\s*\|\s*default\([^)]*\))?\s*\|\s*bool\b")
        if spec.get("type") == "bool" or any(as_bool.search(use) for use in uses):
            # A multiple choice answer is a string: "false" is false only through `| bool`, wherever it is read.
            assert question["type"] == "multiplechoice" and question["choices"] == ["false", "true"], where
            unfiltered = [use.strip() for use in uses if not as_bool.search(use)]
            assert not unfiltered, f"{where}: read without | bool: {unfiltered}"
        elif spec.get("type") == "int":
            assert question["type"] == "integer", where
        elif spec.get("choices"):
            assert question["type"] == "multiplechoice" and set(question["choices"]) <= set(spec["choices"]), where
        else:
            assert question["type"] == "text", where
        if question.get("default", "") != "":
            assert str(question["default"]).lower() == str(default).lower(), f"{where}: the collection's is {default}"
        else:
            assert not spec.get("default"), f"{where}: empty, where the collection's default is {spec['default']}"


def test_a_question_left_empty_passes_no_variable():
    # AWX passes a question's default whenever it passes the question's own checks (awx/main/models/mixins.py,
    # _update_unified_job_kwargs): an empty default with no minimum would reach the playbook as "", over its
    # default. AWX's UI sends no empty answer.
    for template in job_templates():
        for question in survey(template):
            where = f"{template['name']}: {question['variable']}"
            default = question.get("default", "")
            if question["type"] in ("text", "textarea"):
                assert default != "" or question.get("min", 0) >= 1, f'{where}: an empty answer would pass ""'
                if default != "":
                    assert question.get("min", 0) <= len(default) <= question.get("max", len(default)), where
            if question["type"] == "integer":
                assert question.get("min", default) <= default <= question.get("max", default), where


def test_the_rollback_sets_no_version_the_history_decides():
    # The rollback makes the history's release this run's with set_fact (roles/stack/tasks/rollback.yml); extra
    # vars outrank it, so a survey answer or a template's extra var would deploy that instead.
    rollback = (ROOT / "roles" / "stack" / "tasks" / "rollback.yml").read_text()
    assert "pliers_release" in rollback and "pliers_versions" in rollback
    versions = {"pliers_release", "pliers_versions"} | {name for name in options() if name.endswith("_version")}
    for template in job_templates():
        if template["playbook"] == "rollback.yml":
            passed = {question["variable"] for question in survey(template)}
            passed |= set(yaml.safe_load(template.get("extra_vars") or "{}") or {})
            assert not passed & versions, template["name"]


def test_the_maintenance_template_makes_the_operator_switch_it_on_or_off():
    # playbooks/maintenance.yml deploys the edge with pliers_maintenance as given: no default may choose for the
    # operator (its "false" would end a maintenance someone meant to start), and the answer is a string, read | bool.
    assert documented_wrappers()["maintenance.yml"] == "pliers.deploy.maintenance"
    assert (ROOT / "playbooks" / "maintenance.yml").is_file()
    for environment in ENVIRONMENTS:
        (template,) = [t for t in job_templates() if t["name"] == f"pliers-{environment}-maintenance"]
        assert template["playbook"] == "maintenance.yml" and collection_playbook(template) == "maintenance"
        assert environment_of(template) == environment
        questions = {question["variable"]: question for question in survey(template)}
        assert set(questions) == {"pliers_maintenance", "pliers_maintenance_retry_after"}, template["name"]
        switch = questions["pliers_maintenance"]
        assert switch["type"] == "multiplechoice" and switch["choices"] == ["false", "true"], template["name"]
        assert switch["required"] is True and switch.get("default", "") == "", template["name"]
        retry_after = questions["pliers_maintenance_retry_after"]
        assert retry_after["type"] == "integer" and retry_after["required"] is False, template["name"]
        assert retry_after["min"] == 1, template["name"]
        assert retry_after["default"] == options()["pliers_maintenance_retry_after"]["default"] == 300


# What a launch may not change: the environment, its credentials, its hosts, its variables past the survey.
FIXED_AT_LAUNCH = ("inventory", "credential", "execution_environment", "variables", "limit", "scm_branch", "job_type",
                   "skip_tags", "diff_mode")  # fmt: skip


def test_a_job_runs_alone_on_its_environment_with_its_credentials_and_its_survey():
    for template in job_templates():
        environment, where = environment_of(template), template["name"]
        # One job of an environment at a time (the deploy lock refuses a second anyway), on every host at once.
        assert template["allow_simultaneous"] is False and template.get("job_slice_count", 1) == 1, where
        for prompt in FIXED_AT_LAUNCH:
            assert template.get(f"ask_{prompt}_on_launch", False) is False, f"{where}: ask_{prompt}_on_launch"
        # Tags choose a deploy's services (--tags redis); the other playbooks have no tag to choose.
        assert template.get("ask_tags_on_launch", False) is (template["playbook"] == "deploy.yml"), where
        assert template["survey_enabled"] is True and survey(template), where
        credentials = {c["name"]: c["credential_type"]["name"] for c in template["related"]["credentials"]}
        assert credentials == {"pliers-ssh": "Machine", f"pliers-vault-{environment}": "Vault"}, where
        assert template["project"] == assets(PLIERS, "projects")[0]["natural_key"], where
        assert template["execution_environment"] == assets(PLIERS, "execution_environments")[0]["natural_key"]


def test_no_secret_is_in_the_files():
    secret_keys = re.compile(r"password|secret|token|key_data|key_unlock|api_key|private", re.IGNORECASE)

    def pairs(node):
        if isinstance(node, dict):
            for key, value in node.items():
                yield key, value
                yield from pairs(value)
        elif isinstance(node, list):
            for value in node:
                yield from pairs(value)

    for name, document in DOCUMENTS.items():
        text = json.dumps(document)
        assert "-----BEGIN" not in text and "$ANSIBLE_VAULT" not in text, name
        for key, value in pairs(document):
            if secret_keys.search(key) and isinstance(value, str):
                assert value in ("", "$encrypted$"), f"{name}: {key} holds a value"
    for credential in assets(CREDENTIALS, "credentials"):
        _, known, secrets = MANAGED_TYPES[credential["credential_type"]["name"]]
        assert set(credential["inputs"]) <= known, credential["name"]
        for field in secrets & set(credential["inputs"]):
            assert credential["inputs"][field] == "$encrypted$", f"{credential['name']}: {field}"
        # What awxkit sends for it: nothing, for the administrator to enter in AWX.
        assert all(remove_encrypted(credential["inputs"])[field] == "" for field in secrets & set(credential["inputs"]))
    for template in job_templates():
        # Secrets reach a job from the vault only: no password question, no vault_* variable.
        passed = [question["variable"] for question in survey(template) if question["type"] != "password"]
        assert len(passed) == len(survey(template)), template["name"]
        assert not [variable for variable in passed if variable.startswith("vault_")], template["name"]
        assert not template.get("extra_vars"), template["name"]


# ---------------------------------------------------------------------------------------------------------------
# The inventories: synced from the project, with no vault password.


def test_each_inventory_syncs_from_the_project_through_no_vaulted_file():
    project = assets(PLIERS, "projects")[0]["natural_key"]
    sources = assets(PLIERS, "inventory_sources")
    assert [inventory["name"] for inventory in assets(PLIERS, "inventory")] == [f"pliers-{e}" for e in ENVIRONMENTS]
    for environment in ENVIRONMENTS:
        (source,) = [s for s in sources if s["inventory"]["name"] == f"pliers-{environment}"]
        assert source["source"] == "scm" and source["source_project"] == project
        assert source["source_path"] == f"inventories/{environment}/hosts.yml"
        assert "credential" not in source  # an inventory source takes no Vault credential
        assert source["overwrite"] and source["overwrite_vars"] and source["update_on_launch"]
        # This repository's inventory, which the project copies: nothing Ansible reads there is vaulted.
        directory = ROOT / "inventories" / environment
        assert (directory / "hosts.yml").is_file()
        for path in directory.rglob("*"):
            if path.is_file() and path.suffix in ("", ".yml", ".yaml", ".json"):
                assert not path.read_text().startswith("$ANSIBLE_VAULT"), path


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """On this machine, away from the checkout's ansible.cfg and any ANSIBLE_* setting (a vault password file)."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("ANSIBLE_")}
    environment["ANSIBLE_COLLECTIONS_PATH"] = str(ROOT / ".venv" / "collections")
    return subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, check=False)


def awx_sync(inventory: Path, cwd: Path) -> subprocess.CompletedProcess:
    """AWX's inventory update, as awx/main/tasks/jobs.py (RunInventoryUpdate.build_args) runs it: no vault."""
    command = [str(BIN / "ansible-inventory"), "--list", "--export", "-i", str(inventory),
               "--playbook-dir", str(inventory.parent)]  # fmt: skip
    return run(command, cwd)


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_this_repositorys_inventory_syncs_as_awx_syncs_it(environment, tmp_path):
    result = awx_sync(ROOT / "inventories" / environment / "hosts.yml", tmp_path)
    assert result.returncode == 0, result.stderr
    synced = json.loads(result.stdout)
    assert synced["all"]["vars"]["pliers_environment"] == environment
    assert synced["pliers_hosts"]


def documented_project(tmp_path: Path) -> tuple[Path, str, Path]:
    """The project as docs/awx.md lays it out, the production inventory its only one, this machine its only host;
    the collection's deploy stands in as a playbook of another directory (Ansible looks for a play's playbook
    variables beside the playbook that holds it). Returns the project, the vault's secret and its password file."""
    project = tmp_path / "project"
    inventory = project / "inventories" / "production"
    (inventory / "group_vars").mkdir(parents=True)
    (inventory / "group_vars" / "all").symlink_to(ROOT / "inventories" / "production" / "group_vars" / "all")
    host = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    (inventory / "hosts.yml").write_text(yaml.safe_dump({"pliers_hosts": {"hosts": {"here": host}}}))
    secret = "vault-value-0123456789abcdef"
    vault = yaml.safe_load((ROOT / "inventories/production/group_vars/all/vault.yml.example").read_text())
    (project / "vault").mkdir()
    (project / "vault" / "production.yml").write_text(yaml.safe_dump({**vault, "vault_postgres_password": secret}))
    password = tmp_path / "vault-password"
    password.write_text("the job template's vault credential\n")
    encrypted = run(
        [str(BIN / "ansible-vault"), "encrypt", "vault/production.yml", "--vault-password-file", str(password)], project
    )
    assert encrypted.returncode == 0, encrypted.stderr
    for name, text in documented_files().items():
        (project / name).write_text(text.replace("pliers.deploy.deploy", "collection/deploy.yml"))
    (project / "collection").mkdir()
    probe = f"""\
- name: Deploy | stand-in
  hosts: pliers_hosts
  gather_facts: false
  tasks:
    - name: Deploy | the inventory's reference reads the vault
      tags: [redis]
      ansible.builtin.assert:
        that: pliers_database_password == '{secret}'
        quiet: true
"""
    (project / "collection" / "deploy.yml").write_text(probe)
    return project, secret, password


def test_the_documented_project_syncs_without_the_vault_and_its_jobs_open_it(tmp_path):
    project, secret, password = documented_project(tmp_path)
    inventory = project / "inventories" / "production" / "hosts.yml"
    synced = awx_sync(inventory, project)
    assert synced.returncode == 0, synced.stderr
    assert secret not in synced.stdout and "{{ vault_postgres_password }}" in synced.stdout
    # A job: the vault credential answers the prompt; a deploy launched with tags still loads the secrets, and a
    # verbose one prints none (AWX keeps every job event).
    playbook = [str(BIN / "ansible-playbook"), "deploy.yml", "-i", str(inventory), "--tags", "redis", "-v"]
    job = run([*playbook, "--vault-password-file", str(password)], project)
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    assert "Deploy | the inventory's reference reads the vault" in job.stdout and secret not in job.stdout
    # Without the vault credential, nothing opens it.
    assert run(playbook, project).returncode != 0


def test_a_vaulted_file_in_the_inventory_fails_awxs_sync(tmp_path):
    # The limitation the layout avoids: the sync has no vault password to open group_vars/all/vault.yml with.
    project, _, _ = documented_project(tmp_path)
    inventory = project / "inventories" / "production"
    (inventory / "group_vars" / "all").unlink()
    (inventory / "group_vars" / "all").mkdir()
    (inventory / "group_vars" / "all" / "vault.yml").write_bytes((project / "vault" / "production.yml").read_bytes())
    synced = awx_sync(inventory / "hosts.yml", project)
    assert synced.returncode != 0 and "no vault secrets" in synced.stderr, synced.stderr


def test_the_documented_wrapper_imports_the_collections_playbook(tmp_path):
    for name, text in documented_files().items():
        (tmp_path / name).write_text(text)
    checked = run([str(BIN / "ansible-playbook"), "--syntax-check", "deploy.yml", "-i", "localhost,"], tmp_path)
    assert checked.returncode == 0, checked.stdout[-3000:] + checked.stderr[-3000:]


def test_the_docs_name_every_template_credential_and_survey_variable():
    text = DOCS.read_text()
    for credential in assets(CREDENTIALS, "credentials"):
        assert f"`{credential['name']}`" in text, credential["name"]
    for template in job_templates():
        assert f"| `{template['playbook'].removesuffix('.yml')}` |" in text, template["name"]
        for question in survey(template):
            assert f"`{question['variable']}`" in text, question["variable"]
