#!/usr/bin/python
# Copyright (c) pliers.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: health_check
short_description: Wait until HTTP endpoints and containers are healthy
version_added: 0.1.0
description:
  - Polls every target until all of them pass in the same round, or the deadline passes.
  - An HTTP target passes when it answers the expected status and, when asked, its JSON body has the expected
    fields or its body matches a regular expression.
  - A container target passes when its health check reports C(healthy) (or, without a health check, when it
    runs). A Compose service target passes when every container of the service does.
  - Read-only. Never reports C(changed); runs the same in check mode.
  - On failure the message names each failing target and what it last saw.
author:
  - Pliers team (@pliers)
extends_documentation_fragment:
  - pliers.deploy._attributes
  - pliers.deploy._attributes.actiongroup_deploy
attributes:
  check_mode:
    support: full
    details: Runs the checks in check mode too; it changes nothing either way.
  diff_mode:
    support: none
  action_group:
    version_added: 0.2.0
options:
  targets:
    description: What to check.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: A name for messages and results (default the URL, container or service).
        type: str
      url:
        description:
          - An HTTP(S) URL to GET.
          - Give exactly one of O(targets[].url), O(targets[].container) or O(targets[].compose_service).
        type: str
      status:
        description: The HTTP status that passes.
        type: int
        default: 200
      json:
        description: Fields the JSON body must have, by dotted path (C(checks.database)), with their expected values.
        type: dict
      body_regex:
        description: A regular expression the body must match.
        type: str
      host:
        description: The host name to ask as (the C(Host) header, and the TLS server name over HTTPS), the URL giving
          the address - an edge that answers only its server names, reached by address.
        type: str
        version_added: 0.2.0
      container:
        description: A container name or id whose health must be C(healthy).
        type: str
      compose_service:
        description: A Compose service (with O(targets[].compose_project)) all of whose containers must be healthy.
        type: str
      compose_project:
        description: The Compose project of O(targets[].compose_service).
        type: str
  timeout:
    description: Seconds to wait for every target to pass.
    type: int
    default: 60
  interval:
    description: Seconds between rounds.
    type: float
    default: 1.0
  request_timeout:
    description: Seconds one HTTP request may take.
    type: float
    default: 5.0
  validate_certs:
    description: Verify HTTPS certificates.
    type: bool
    default: true
requirements:
  - the Python Docker SDK on the target, for container and Compose service targets
"""

EXAMPLES = r"""
- name: Verify the stack through the edge
  pliers.deploy.health_check:
    targets:
      - name: web
        url: http://127.0.0.1/
      - name: api
        url: http://127.0.0.1/api/health
        json:
          version: "1.1.0"
          checks.database: ok
      - name: ai-service
        url: http://127.0.0.1/ai/health
    timeout: 120

- name: Wait for PostgreSQL's container health
  pliers.deploy.health_check:
    targets:
      - compose_project: pliers-production
        compose_service: postgres
"""

RETURN = r"""
targets:
  description: One entry per target, in the order given.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The target's name.
      type: str
    ok:
      description: Whether it passed in the last round.
      type: bool
    attempts:
      description: How many times it was checked.
      type: int
    latency_ms:
      description: Duration of the last check in milliseconds.
      type: float
    last:
      description: What the last check saw (status and a short body, or the container health).
      type: str
  sample:
    - name: api
      ok: true
      attempts: 3
      latency_ms: 4.2
      last: "HTTP 200 {\"status\": \"ok\", \"version\": \"1.1.0\"}"
elapsed:
  description: Seconds spent waiting.
  returned: always
  type: float
"""

import re
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.pliers.deploy.plugins.module_utils._health import BODY_EXCERPT, check_http


def container_state(container) -> tuple[bool, str]:
    state = container.attrs.get("State", {})
    health = (state.get("Health") or {}).get("Status")
    if health:
        log = (state.get("Health") or {}).get("Log") or []
        last_output = log[-1].get("Output", "").strip()[:BODY_EXCERPT] if log else ""
        detail = f"{container.name} is {health}" + (f" (last check: {last_output})" if last_output else "")
        return health == "healthy", detail
    running = state.get("Status") == "running"
    return running, f"{container.name} is {state.get('Status')} (no health check)"


def check_container(target: dict, client) -> tuple[bool, str]:
    from ansible_collections.pliers.deploy.plugins.module_utils._docker import (  # the SDK, when needed
        COMPOSE_PROJECT_LABEL,
        COMPOSE_SERVICE_LABEL,
        NotFound,
    )

    if target.get("container"):
        try:
            return container_state(client.containers.get(target["container"]))
        except NotFound:
            return False, f"no container {target['container']}"
    labels = [
        f"{COMPOSE_PROJECT_LABEL}={target['compose_project']}",
        f"{COMPOSE_SERVICE_LABEL}={target['compose_service']}",
    ]
    containers = client.containers.list(all=True, filters={"label": labels})
    if not containers:
        return False, f"no container of service {target['compose_service']} in project {target['compose_project']}"
    states = [container_state(container) for container in containers]
    return all(ok for ok, _detail in states), "; ".join(detail for _ok, detail in states)


def target_name(target: dict) -> str:
    return target.get("name") or target.get("url") or target.get("container") or target.get("compose_service")


def validate(module, targets: list[dict]) -> None:
    for index, target in enumerate(targets):
        kinds = [key for key in ("url", "container", "compose_service") if target.get(key)]
        if len(kinds) != 1:
            module.fail_json(
                msg=f"targets[{index}]: give exactly one of url, container or compose_service, got {kinds or 'none'}"
            )
        if target.get("compose_service") and not target.get("compose_project"):
            module.fail_json(msg=f"targets[{index}]: compose_service needs compose_project")
        if target.get("body_regex"):
            try:
                re.compile(target["body_regex"])
            except re.error as exc:
                module.fail_json(msg=f"targets[{index}]: body_regex is not a valid regular expression: {exc}")


def main() -> None:
    argument_spec = dict(
        targets=dict(
            type="list",
            elements="dict",
            required=True,
            options=dict(
                name=dict(type="str"),
                url=dict(type="str"),
                status=dict(type="int", default=200),
                json=dict(type="dict"),
                body_regex=dict(type="str"),
                host=dict(type="str"),
                container=dict(type="str"),
                compose_service=dict(type="str"),
                compose_project=dict(type="str"),
            ),
        ),
        timeout=dict(type="int", default=60),
        interval=dict(type="float", default=1.0),
        request_timeout=dict(type="float", default=5.0),
        validate_certs=dict(type="bool", default=True),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    targets = module.params["targets"]
    if not targets:
        module.fail_json(msg="targets is empty: give at least one URL, container or Compose service")
    validate(module, targets)
    client = None
    if any(not t.get("url") for t in targets):
        # The Docker SDK takes a while to import: only for container targets.
        from ansible_collections.pliers.deploy.plugins.module_utils._docker import docker_client

        client = docker_client(module)

    results = [{"name": target_name(t), "ok": False, "attempts": 0, "latency_ms": 0.0, "last": ""} for t in targets]
    started = time.monotonic()
    deadline = started + module.params["timeout"]
    while True:
        for target, result in zip(targets, results, strict=True):
            began = time.monotonic()
            if target.get("url"):
                ok, last = check_http(target, module.params["request_timeout"], module.params["validate_certs"])
            else:
                ok, last = check_container(target, client)
            result.update(
                ok=ok,
                last=last,
                attempts=result["attempts"] + 1,
                latency_ms=round((time.monotonic() - began) * 1000, 1),
            )
        if all(result["ok"] for result in results) or time.monotonic() >= deadline:
            break
        time.sleep(module.params["interval"])
    elapsed = round(time.monotonic() - started, 2)
    failed = [result for result in results if not result["ok"]]
    if failed:
        details = "; ".join(f"{result['name']}: {result['last']}" for result in failed)
        module.fail_json(
            msg=f"{len(failed)} of {len(results)} health checks failed after {elapsed}s: {details}",
            targets=results,
            elapsed=elapsed,
        )
    module.exit_json(changed=False, targets=results, elapsed=elapsed)


if __name__ == "__main__":
    main()
