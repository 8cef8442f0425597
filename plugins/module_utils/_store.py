# Copyright (c) pliers.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the data stores' access modules share (private to this collection): a client of the store's own image in a
one-off container on the store's network, given the admin's password file and one script to run."""

from __future__ import annotations

import os
import tempfile

from ansible_collections.pliers.deploy.plugins.module_utils._docker import (
    DockerException,
    NotFound,
    docker_client,
    image_here,
    run_one_off,
)

# Where the one-off container finds them.
ADMIN_PASSWORD = "/run/secrets/admin_password"  # noqa: S105 - a path, not a password
WORKDIR = "/run/pliers"


def store_argument_spec(*, host: str, port: int, accounts: dict, **specific) -> dict:
    """An access module's argument spec: what every store's has (where it answers, its admin's password file, the
    accounts and how they are brought), with the store's own defaults and options."""
    return dict(
        image=dict(type="str", required=True),
        network=dict(type="str", required=True),
        host=dict(type="str", default=host),
        port=dict(type="int", default=port),
        admin_password_file=dict(type="path", required=True, no_log=False),
        accounts=dict(type="list", elements="dict", required=True, options=accounts),
        prune=dict(type="bool", default=False),
        missing_ok=dict(type="bool", default=False),
        timeout=dict(type="int", default=120),
        **specific,
    )


def store_client(module, what: str):
    """The target engine's client, once the store can be reached as its admin: its network exists, its admin's
    password file too, and the image is here (pulled unless in check mode). Otherwise the module ends: with
    missing_ok, reporting the store not reached (never started, or its files not written yet: a first deploy, an
    upgrade that adds the file); else failing. WHAT names what the module reads (for the message when check mode
    finds no image)."""
    params = module.params

    def not_reached(note: str) -> None:
        if params["missing_ok"]:
            module.exit_json(changed=False, reached=False, actions=[], notes=[note])

    client = docker_client(module, timeout=params["timeout"] + 30)
    try:
        client.networks.get(params["network"])
    except NotFound:
        not_reached(f"no network {params['network']}")
        module.fail_json(msg=f"network {params['network']} does not exist: start the stack's data services first")
    if not os.path.isfile(params["admin_password_file"]):
        not_reached(f"no {params['admin_password_file']} yet")
        module.fail_json(msg=f"admin_password_file {params['admin_password_file']} does not exist")
    try:
        here = image_here(module, client, params["image"])
    except DockerException as exc:
        module.fail_json(msg=f"reaching {params['host']} with {params['image']} failed: {exc}")
    if not here:
        module.warn(f"{params['image']} is not on this host: no {what} was read (check mode pulls nothing)")
        module.exit_json(changed=True, reached=False, actions=["unknown: the image is not on this host"])
    return client


def run_as_admin(module, client, script: str, command: str, *, environment: dict, role: str) -> tuple[int, str, str]:
    """Run COMMAND (a shell line) in a one-off container of module.params' image on its network, as the owner of
    its admin_password_file (mounted at ADMIN_PASSWORD), with SCRIPT written to WORKDIR/script (root's temporary
    directory, readable by that owner only)."""
    params = module.params
    uid = os.stat(params["admin_password_file"]).st_uid
    with tempfile.TemporaryDirectory(prefix="pliers-access-") as workdir:
        path = os.path.join(workdir, "script")
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400), "w") as handle:
            handle.write(script)
        os.chown(workdir, uid, -1)
        os.chown(path, uid, -1)
        return run_one_off(
            module,
            client,
            params["timeout"],
            image=params["image"],
            entrypoint=["/bin/sh", "-c"],
            command=[command],
            user=str(uid),
            environment=environment,
            network=params["network"],
            volumes={
                params["admin_password_file"]: {"bind": ADMIN_PASSWORD, "mode": "ro"},
                workdir: {"bind": WORKDIR, "mode": "ro"},
            },
            labels={"pliers.deploy.role": role},
        )
