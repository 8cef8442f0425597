# Copyright (c) pliers.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A service image's migration commands (private to this collection), run as migrate and compose_rollout run them: in
a one-off container of the image, on the stack's network, with the stack's secret files mounted read-only. Each
command prints one JSON document on its last line (docs/app-contract.md)."""

from __future__ import annotations

import json
import posixpath

from ansible_collections.pliers.deploy.plugins.module_utils._docker import run_one_off

STATUS_COMMAND = ["pliers", "migrate", "status"]
UP_COMMAND = ["pliers", "migrate", "up"]


class MigrationError(Exception):
    """A migration command failed or printed no JSON; the message says which and why."""


def run_json(module, client, command: list[str], *, image: str, network: str, env: dict, secrets: list[dict],
             timeout: int) -> dict:  # fmt: skip
    """Run command in a one-off container of image; the JSON document it printed last."""
    volumes = {
        secret["file"]: {"bind": posixpath.join("/run/secrets", secret["target"]), "mode": "ro"} for secret in secrets
    }
    status, stdout, stderr = run_one_off(
        module,
        client,
        timeout,
        image=image,
        command=command,
        environment={str(k): str(v) for k, v in env.items()},
        network=network,
        volumes=volumes,
        labels={"pliers.deploy.role": "migrate"},
    )
    if status != 0:
        raise MigrationError(
            f"'{' '.join(command)}' in {image} failed (exit {status}): {stderr[-1500:] or stdout[-1500:]}"
        )
    try:
        document = json.loads(stdout.splitlines()[-1])
    except (ValueError, IndexError):
        document = None
    if not isinstance(document, dict):
        printed = f"{stdout[-500:]!r} {stderr[-500:]!r}"
        raise MigrationError(f"'{' '.join(command)}' printed no JSON object as its last line: {printed}")
    return document
