# Copyright (c) pliers.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the data stores' access modules share (private to this collection): a client of the store's own image, given
the admin's password file and one script to run: in the store's own running container on this host when there is one
(one docker exec), else in a one-off container of its image on the store's network."""

from __future__ import annotations

import os
import tempfile
import time

from ansible_collections.pliers.deploy.plugins.module_utils._docker import (
    COMPOSE_SERVICE_LABEL,
    DockerException,
    NotFound,
    docker_client,
    image_here,
    run_one_off,
)

# Where the one-off container finds them. A client's command reads them from $PLIERS_ADMIN_PASSWORD_FILE and
# $PLIERS_SCRIPT, which name them wherever it runs.
ADMIN_PASSWORD = "/run/secrets/admin_password"  # noqa: S105 - a path, not a password
WORKDIR = "/run/pliers"
SCRIPT = f"{WORKDIR}/script"
# How long a store that does not answer yet is waited for (a database starting, or its Swarm task placed again once
# its node's engine restarted), and how often it is asked meanwhile.
ANSWER_WAIT = 60
ANSWER_RETRY_SECONDS = 3


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
        wait=dict(type="int", default=ANSWER_WAIT),
        timeout=dict(type="int", default=120),
        **specific,
    )


class StoreNotReached(Exception):
    """The store is not there to answer (never started, stopped, starting; its network or files not there yet).
    note: what a run that may miss it reports; failure: the message of a run that may not."""

    def __init__(self, note: str, failure: str) -> None:
        super().__init__(failure)
        self.note, self.failure = note, failure


class StoreNotAnswering(StoreNotReached):
    """The store is there but does not answer its client (not started yet, starting, stopping): worth asking again."""


class StoreError(Exception):
    """The store cannot be read or brought to its accounts; the message says why."""


class ImageMissing(Exception):
    """Check mode, no store container and no image to start a client from: what the store holds cannot be read."""


def client_failure(client: str, where: str, status: int, said: str, not_answering: tuple) -> Exception:
    """What a store client's failed run (CLIENT on WHERE, exit STATUS, saying SAID) raises: StoreNotAnswering when
    SAID has a sign of a store that is not there to answer (NOT_ANSWERING), StoreError otherwise."""
    failure = f"{client} on {where} failed (exit {status}): {said[-1500:]}"
    if any(sign in said for sign in not_answering):
        return StoreNotAnswering(f"{where} does not answer: {said[-300:]}", failure)
    return StoreError(failure)


def reach(module, client, store: dict) -> None:
    """Whether the store can be reached as its admin: its network exists, its admin's password file too, and, unless
    its own container runs here, its image is here (pulled unless in check mode: ImageMissing then). Raises
    StoreNotReached or StoreError otherwise."""
    try:
        client.networks.get(store["network"])
    except NotFound:
        raise StoreNotReached(
            f"no network {store['network']}",
            f"network {store['network']} does not exist: start the stack's data services first",
        ) from None
    if not os.path.isfile(store["admin_password_file"]):
        raise StoreNotReached(
            f"no {store['admin_password_file']} yet",
            f"admin_password_file {store['admin_password_file']} does not exist",
        )
    try:
        if store_container(client, store)[0] is None and not image_here(module, client, store["image"]):
            raise ImageMissing(store["image"])
    except DockerException as exc:
        raise StoreError(f"reaching {store['host']} with {store['image']} failed: {exc}") from exc


def brought(module, client, store: dict, bring, prune: bool, wait: int) -> dict:
    """The store reached and brought to its accounts: BRING(module, client, store, prune)'s result. A store that does
    not answer is asked again every few seconds for up to WAIT seconds (its missing network or admin's file is not
    waited for). Raises what reach and BRING raise."""
    deadline = time.monotonic() + wait
    while True:
        try:
            reach(module, client, store)
            return bring(module, client, store, prune)
        except StoreNotAnswering:
            if time.monotonic() >= deadline:
                raise
            time.sleep(ANSWER_RETRY_SECONDS)


def access_main(module, account_problems, bring, what: str) -> None:
    """An access module's run on module.params (the store): its accounts checked, the store reached, then BRING(module,
    client, store, prune) for its result. WHAT names what the module reads (for the message when check mode finds no
    image)."""
    params = module.params
    problems = account_problems(params["accounts"], params["admin_user"])
    if problems:
        module.fail_json(msg="; ".join(problems))
    client = docker_client(module, timeout=params["timeout"] + 30)
    try:
        # A store that may be missing is not waited for, nor in check mode: it is reported at once.
        wait = 0 if params["missing_ok"] or module.check_mode else params["wait"]
        module.exit_json(**brought(module, client, params, bring, params["prune"], wait))
    except StoreNotReached as exc:
        if params["missing_ok"]:
            module.exit_json(changed=False, reached=False, actions=[], notes=[exc.note])
        module.fail_json(msg=exc.failure)
    except ImageMissing as exc:
        module.warn(f"{exc} is not on this host: no {what} was read (check mode pulls nothing)")
        module.exit_json(changed=True, reached=False, actions=["unknown: the image is not on this host"])
    except StoreError as exc:
        module.fail_json(msg=str(exc))
    except DockerException as exc:
        module.fail_json(msg=f"reaching {params['host']} with {params['image']} failed: {exc}")


def store_container(client, store: dict):
    """The store's own running container on this host (a Compose service named the store's host, on its network) and
    where the admin's password file is mounted in it: (container, path), or (None, None). A Swarm task sees its
    secrets through the swarm, not a file of the host: the one-off container reaches it then."""
    wanted = os.path.realpath(store["admin_password_file"])
    filters = {"network": store["network"], "label": f"{COMPOSE_SERVICE_LABEL}={store['host']}", "status": "running"}
    for container in client.containers.list(filters=filters):
        for mount in container.attrs.get("Mounts") or []:
            if mount.get("Type") == "bind" and os.path.realpath(mount.get("Source") or "") == wanted:
                return container, mount["Destination"]
    return None, None


def run_as_admin(
    module, client, store: dict, script: str, command: str, *, environment: dict, host_variable: str, role: str
) -> tuple[int, str, str]:
    """Run COMMAND (a shell line) as the owner of the store's admin_password_file, given the file's path in
    $PLIERS_ADMIN_PASSWORD_FILE and SCRIPT's in $PLIERS_SCRIPT: in the store's own container (docker exec, the
    script on its standard input), or in a one-off container of the image on its network (the file mounted at
    ADMIN_PASSWORD, the script written to WORKDIR/script, root's temporary directory, readable by that owner only).
    The script is never in an argument or an environment variable (it may hold password hashes)."""
    uid = os.stat(store["admin_password_file"]).st_uid
    container, password_path = store_container(client, store)
    if container is not None:
        # The store itself, on its loopback: its name may not resolve yet in a container that just started (Compose
        # connects its other networks as it starts).
        where = {**environment, host_variable: "127.0.0.1"}
        where.update(PLIERS_ADMIN_PASSWORD_FILE=password_path, PLIERS_SCRIPT="/dev/stdin")
        flags = [arg for name, value in sorted(where.items()) for arg in ("--env", f"{name}={value}")]
        # timeout, in the container: a client that waits (on a lock) is ended there, not only its docker exec.
        limit = str(store.get("timeout") or 120)
        argv = ["docker", "exec", "--interactive", "--user", str(uid), *flags, container.id, "timeout", limit]
        return module.run_command([*argv, "/bin/sh", "-c", command], data=script, binary_data=True)
    with tempfile.TemporaryDirectory(prefix="pliers-access-") as workdir:
        path = os.path.join(workdir, os.path.basename(SCRIPT))
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400), "w") as handle:
            handle.write(script)
        os.chown(workdir, uid, -1)
        os.chown(path, uid, -1)
        return run_one_off(
            module,
            client,
            store.get("timeout") or 120,
            image=store["image"],
            entrypoint=["/bin/sh", "-c"],
            command=[command],
            user=str(uid),
            environment={
                **environment,
                "PLIERS_ADMIN_PASSWORD_FILE": ADMIN_PASSWORD,
                "PLIERS_SCRIPT": SCRIPT,
            },
            network=store["network"],
            volumes={
                store["admin_password_file"]: {"bind": ADMIN_PASSWORD, "mode": "ro"},
                workdir: {"bind": WORKDIR, "mode": "ro"},
            },
            labels={"pliers.deploy.role": role},
        )
