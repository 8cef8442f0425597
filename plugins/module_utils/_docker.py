# Copyright (c) pliers.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Docker SDK client the pliers.deploy modules share (private to this collection)."""

from __future__ import annotations

# The SDK's exceptions are re-exported: the modules catch them without importing the SDK themselves.
__all__ = ["HAS_DOCKER_SDK", "DockerException", "ImageNotFound", "NotFound", "docker_client"]

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
