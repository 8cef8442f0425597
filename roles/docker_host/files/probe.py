# The docker_host role's probe (tasks/probe.yml), run by the host's python3: what the host has, as one JSON line.
import concurrent.futures
import datetime
import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
import time

# What a Docker bug leaves behind (moby/libnetwork#1765): a VXLAN device from an overlay network's earlier sandbox
# that holds the network's VNI, so the node cannot join the network again until its engine restarts.
STUCK_OVERLAY = "error creating vxlan interface: file exists"


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


def node_tasks():
    """On a Swarm manager: this node's tasks, as docker inspect gives them."""
    ids = output("docker", "node", "ps", "self", "--quiet", "--no-trunc").split()
    try:
        return json.loads(output("docker", "inspect", "--type", "task", *ids)) if ids else []
    except ValueError:
        return []


DAEMON_JSON = "/etc/docker/daemon.json"


def daemon_settings(path=DAEMON_JSON):
    """The engine's settings as the host has them (someone else's among them, which the role keeps), and what is
    wrong with the file ("" when nothing: a missing file holds no setting)."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        return {}, ""
    except (OSError, UnicodeDecodeError) as exc:
        return {}, f"{path} cannot be read: {exc}"
    try:
        settings = json.loads(text) if text.strip() else {}
    except ValueError as exc:
        return {}, f"{path} is not JSON ({exc})"
    if not isinstance(settings, dict):
        return {}, f"{path} holds a JSON {type(settings).__name__}, not an object of settings"
    return settings, ""


# The hosts' Python may be older than 3.11 (no datetime.UTC).
UTC = datetime.timezone.utc


def engine_started():
    """When the engine last started (UTC, as task timestamps are): errors before it are from its earlier life."""
    since = output("systemctl", "show", "docker", "--property", "ActiveEnterTimestamp", "--value", "--timestamp=utc")
    try:
        return datetime.datetime.strptime(since, "%a %Y-%m-%d %H:%M:%S %Z").replace(tzinfo=UTC)
    except ValueError:
        return datetime.datetime.min.replace(tzinfo=UTC)


def slots(tasks):
    """Each slot's tasks on this node, oldest first (a global service's slot is its node)."""
    by_slot = {}
    for task in sorted(tasks, key=lambda task: task.get("CreatedAt", "")):
        by_slot.setdefault((task.get("ServiceID"), task.get("Slot") or task.get("NodeID")), []).append(task)
    return by_slot


def newest_by_slot(tasks):
    """Each slot's newest task on this node."""
    return {slot: history[-1] for slot, history in slots(tasks).items()}


def stuck_overlay(tasks, since):
    """The services with a slot this node is still to run but does not (its newest task here is meant to run, or to
    run once the restart delay is over), whose last task here to end, since the engine started, ended on a stale
    overlay device. A slot Swarm moved to another node (its newest task here is no longer meant to run) is not, nor
    one whose last task here ran and ended otherwise: restarting this engine would only stop what it runs."""
    stuck = set()
    for history in slots(tasks).values():
        newest = history[-1]
        if newest.get("DesiredState") not in ("ready", "running") or newest.get("Status", {}).get("State") == "running":
            continue
        # The newest task, if it failed already; otherwise the one before it.
        ended = newest if newest.get("Status", {}).get("Err") else (history[-2] if len(history) > 1 else {})
        status = ended.get("Status", {})
        # To the second: older Pythons parse only 3 or 6 digits of a fraction.
        stamp = datetime.datetime.fromisoformat(status.get("Timestamp", "0001-01-01T00:00:00")[:19] + "+00:00")
        if STUCK_OVERLAY in status.get("Err", "") and stamp > since:
            stuck.add(newest.get("ServiceID", ""))
    return sorted(stuck)


def settle(seconds):
    """After an unlock or an engine restart: wait until this manager's tasks run again (at least 10 s: the node
    reports its tasks' new states late), or until one is stuck on a stale overlay device, or for the given time."""
    start, since = time.monotonic(), engine_started()
    while True:
        tasks = node_tasks()
        stuck = stuck_overlay(tasks, since)
        waiting = [
            task
            for task in newest_by_slot(tasks).values()
            if task.get("DesiredState") == "running" and task.get("Status", {}).get("State") != "running"
        ]
        waited = time.monotonic() - start
        if stuck or waited > seconds or (waited >= 10 and not waiting):
            return {"stuck": stuck, "waited": round(waited)}
        time.sleep(2)


def main():
    """python3 -c probe.py REGISTRY: what the host has; python3 -c probe.py REGISTRY --settle SECONDS: settle()."""
    if len(sys.argv) > 2 and sys.argv[2] == "--settle":
        print(json.dumps(settle(int(sys.argv[3]))))
        return

    docker = shutil.which("docker")
    # The commands side by side: a no-op deploy waits for the slowest (docker info), not for their sum.
    with concurrent.futures.ThreadPoolExecutor() as pool:
        asked = {
            "info": (
                "docker",
                "info",
                "--format",
                "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}} {{.ServerVersion}}",
            ),
            "compose": ("docker", "compose", "version", "--short"),
            "engine": ("systemctl", "is-active", "docker"),
            "enabled": ("systemctl", "is-enabled", "docker"),
        }
        answers = {key: pool.submit(output, *argv) for key, argv in asked.items() if docker or argv[0] != "docker"}
        said = {key: answers[key].result() if key in answers else "" for key in asked}
    swarm_state, swarm_manager, version = (said["info"].split() + ["", "", ""])[:3]
    daemon_json, daemon_json_problem = daemon_settings()
    found = {
        "engine": said["engine"] == "active",
        "enabled": said["enabled"] == "enabled",
        # The engine's and Compose's versions (26.1.5+dfsg1, 2.26.1): a host whose engine is someone else's is checked.
        "version": version,
        "compose": said["compose"].lstrip("v"),
        "sdk": importable("docker"),
        # What community.docker.docker_stack needs on a manager.
        "stack_tools": importable("jsondiff", "yaml"),
        # What the Swarm's firewall is loaded with.
        "nft": shutil.which("nft") is not None or shutil.which("nft", path="/usr/sbin:/sbin") is not None,
        "login": login(sys.argv[1]),
        # inactive, active, or locked: a manager of an autolocked Swarm whose engine restarted.
        "swarm": swarm_state,
        # A manager's tasks that cannot start for a stale overlay device (a worker cannot list its tasks).
        "stuck_overlay": stuck_overlay(node_tasks(), engine_started())
        if (swarm_state, swarm_manager) == ("active", "true")
        else [],
        # The engine's settings as they are: the role's are merged into them, not written over them.
        "daemon_json": daemon_json,
        "daemon_json_problem": daemon_json_problem,
    }
    print(json.dumps(found))


if __name__ == "__main__":
    main()
