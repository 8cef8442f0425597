# The docker_host role's probe (tasks/probe.yml), run by the host's python3: what the host has, as one JSON line.
import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys


def output(*argv):
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""


def importable(*modules):
    """Whether Python finds the modules (without importing them: the Docker SDK takes a while)."""
    return all(importlib.util.find_spec(module) is not None for module in modules)


def login(registry):
    """A hash of the registry login docker login left (the credentials themselves never leave the host)."""
    try:
        with open("/root/.docker/config.json", encoding="utf-8") as handle:
            auth = json.load(handle).get("auths", {}).get(registry, {}).get("auth", "")
    except (OSError, ValueError):
        return ""
    return hashlib.sha256(auth.encode()).hexdigest() if auth else ""


found = {
    "engine": output("systemctl", "is-active", "docker") == "active",
    "enabled": output("systemctl", "is-enabled", "docker") == "enabled",
    "compose": output("docker", "compose", "version", "--short") if shutil.which("docker") else "",
    "sdk": importable("docker"),
    # What community.docker.docker_stack needs on a manager.
    "stack_tools": importable("jsondiff", "yaml"),
    # What the Swarm's firewall is loaded with.
    "nft": shutil.which("nft") is not None or shutil.which("nft", path="/usr/sbin:/sbin") is not None,
    "login": login(sys.argv[1]),
    # inactive, active, or locked: a manager of an autolocked Swarm whose engine restarted.
    "swarm": output("docker", "info", "--format", "{{.Swarm.LocalNodeState}}") if shutil.which("docker") else "",
}
print(json.dumps(found))
