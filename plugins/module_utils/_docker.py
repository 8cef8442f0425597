# Copyright (c) pliers.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Docker SDK client the pliers.deploy modules share (private to this collection)."""

from __future__ import annotations

# The SDK's exceptions are re-exported: the modules catch them without importing the SDK themselves.
__all__ = [
    "COMPOSE_PROJECT_LABEL",
    "COMPOSE_SERVICE_LABEL",
    "HARDENED",
    "HAS_DOCKER_SDK",
    "DockerException",
    "ImageNotFound",
    "NotFound",
    "docker_client",
    "image_here",
    "run_one_off",
]

import time
import traceback

try:
    import docker
    from docker.errors import DockerException, ImageNotFound, NotFound

    HAS_DOCKER_SDK = True
    DOCKER_SDK_IMPORT_ERROR = None
except ImportError:  # reported by docker_client() with a clear message
    HAS_DOCKER_SDK = False
    DOCKER_SDK_IMPORT_ERROR = traceback.format_exc()
    DockerException = ImageNotFound = NotFound = Exception


# The labels Docker Compose puts on a project's containers.
COMPOSE_PROJECT_LABEL = "com.docker.compose.project"
COMPOSE_SERVICE_LABEL = "com.docker.compose.service"


def docker_client(module, timeout: int = 60):
    """A client for the target's engine, or fail_json saying what is missing."""
    if not HAS_DOCKER_SDK:
        module.fail_json(
            msg="the Python Docker SDK is needed on the target (python3-docker; the docker_host role installs it)",
            exception=DOCKER_SDK_IMPORT_ERROR,
        )
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
        return client
    except DockerException as exc:
        module.fail_json(msg=f"cannot reach the Docker engine on the target: {exc}")


def image_here(module, client, image: str) -> bool:
    """Whether the target has the image for a one-off container, pulled when it lacks it; in check mode nothing is
    pulled (that would change the target), and False says the image is missing."""
    try:
        client.images.get(image)
    except ImageNotFound:
        if module.check_mode:
            return False
        client.images.pull(image)
    return True


# A one-off container is as hardened as the stack's services (the renderer's defaults): every capability dropped, a
# read-only root file system with its own /tmp, no new privileges, at most 256 processes.
HARDENED = dict(
    cap_drop=["ALL"],
    read_only=True,
    tmpfs={"/tmp": ""},  # noqa: S108 - the container's own /tmp, a tmpfs
    security_opt=["no-new-privileges:true"],
    pids_limit=256,
)

# A container joining a Swarm's attachable overlay asks the managers for an address; a busy manager lets the
# request time out ("attaching to network failed ... context deadline exceeded"), and the same start succeeds
# moments later. Only that failure is retried: the container never ran.
NETWORK_ATTACH_FAILED = "attaching to network failed"
START_ATTEMPTS = 3
START_RETRY_SECONDS = 3.0


def _started(module, client, create: dict):
    """A container, created and started; a start whose network attachment timed out is tried again."""
    attempt = 1
    while True:
        container = client.containers.create(**create)
        try:
            container.start()
            return container
        except DockerException as exc:
            container.remove(force=True)
            if NETWORK_ATTACH_FAILED not in str(exc) or attempt == START_ATTEMPTS:
                raise
            module.warn(f"starting the one-off container failed (attempt {attempt} of {START_ATTEMPTS}): {exc}")
        time.sleep(START_RETRY_SECONDS * attempt)
        attempt += 1


def run_one_off(module, client, timeout: int, **create) -> tuple[int, str, str]:
    """Run a hardened one-off container to its end and remove it: (exit status, stdout, stderr)."""
    container = _started(module, client, {**HARDENED, **create})
    try:
        try:
            outcome = container.wait(timeout=timeout)
        except Exception as exc:  # the SDK's read timeout is its HTTP client's, not a DockerException
            raise DockerException(f"the one-off container did not finish in {timeout}s ({exc})") from exc
        stdout = container.logs(stdout=True, stderr=False).decode(errors="replace").strip()
        stderr = container.logs(stdout=False, stderr=True).decode(errors="replace").strip()
    finally:
        container.remove(force=True)
    return int(outcome.get("StatusCode", -1)), stdout, stderr
