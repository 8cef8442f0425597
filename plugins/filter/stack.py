# Copyright (c) pliers.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one renderer: the stack's services, as data, to a Compose project or a Swarm stack.

The two functions share everything a service is (image, command, environment, networks, health,
volumes, secrets, configs); only what Compose and Swarm spell differently lives in their branch.
Documentation: compose_project.yml and swarm_stack.yml beside this file.
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

SERVICE_KEYS = frozenset(
    (
        *("image", "command", "environment", "secrets", "configs", "networks", "healthcheck", "depends_on"),
        *("ports", "volumes", "replicas", "resources", "labels", "user", "stop_grace_period", "http", "restart"),
        # Swarm only (ignored by Compose): how the service is placed, updated and reached.
        *("placement", "update_order", "mode", "max_replicas_per_node", "endpoint_mode", "generic_resources"),
    )
)
FILE_KEYS = frozenset(("name", "file", "target", "mode", "uid", "gid", "version"))
PORT_KEYS = frozenset(("published", "target", "host_ip", "protocol"))
VOLUME_KEYS = frozenset(("source", "target", "type", "read_only"))
HEALTHCHECK_KEYS = frozenset(("test", "interval", "timeout", "retries", "start_period", "start_interval"))
UPDATE_ORDERS = ("start-first", "stop-first")
ENDPOINT_MODES = ("vip", "dnsrr")


def _check_keys(where: str, value: dict, allowed: frozenset, required: tuple[str, ...] = ()) -> None:
    if not isinstance(value, dict):
        raise AnsibleFilterError(f"{where}: expected a mapping, got {type(value).__name__}")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise AnsibleFilterError(
            f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})"
        )
    missing = [key for key in required if value.get(key) in (None, "")]
    if missing:
        raise AnsibleFilterError(f"{where}: missing {', '.join(missing)}")


def traefik_labels(name: str, http: dict, swarm: bool = False) -> dict:
    """Router and service labels for one HTTP route (Traefik v3, Docker or Swarm provider)."""
    prefix = http.get("path_prefix", "/")
    rule = "PathPrefix(`/`)" if prefix == "/" else f"PathPrefix(`{prefix}`)"
    labels = {
        "traefik.enable": "true",
        f"traefik.http.routers.{name}.rule": rule,
        f"traefik.http.routers.{name}.entrypoints": "websecure",
        f"traefik.http.routers.{name}.tls": "true",
        f"traefik.http.services.{name}.loadbalancer.server.port": str(http["port"]),
        f"traefik.http.services.{name}.loadbalancer.healthcheck.path": http.get("health_path", "/health"),
    }
    if swarm:
        # Swarm tasks behind dnsrr have no virtual IP: Traefik must talk to the tasks themselves.
        labels[f"traefik.http.services.{name}.loadbalancer.server.scheme"] = "http"
    return labels


def _replicas(where: str, model: dict, minimum: int) -> int:
    replicas = model.get("replicas", 1)
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < minimum:
        raise AnsibleFilterError(f"{where}: replicas must be a whole number >= {minimum}, got {replicas!r}")
    return replicas


def _common(name: str, model: dict, networks: dict, top: dict) -> tuple[dict, dict]:
    """What a service is in both modes; collects top-level volumes, secrets and configs into top.

    Returns the service and, per secret/config kind, the model entries it references (for the mode's refs).
    """
    where = f"service {name}"
    _check_keys(where, model, SERVICE_KEYS, ("image",))
    service: dict = {"image": model["image"]}
    if model.get("command"):
        service["command"] = list(model["command"])
    if model.get("user"):
        service["user"] = str(model["user"])
    if model.get("environment"):
        service["environment"] = {str(k): str(v) for k, v in sorted(model["environment"].items())}
    unknown_networks = sorted(set(model.get("networks") or []) - set(networks))
    if unknown_networks:
        raise AnsibleFilterError(f"{where}: unknown network(s) {', '.join(unknown_networks)}")
    if model.get("networks"):
        service["networks"] = sorted(model["networks"])
    if model.get("healthcheck"):
        _check_keys(f"{where} healthcheck", model["healthcheck"], HEALTHCHECK_KEYS, ("test",))
        service["healthcheck"] = dict(model["healthcheck"])
    volumes = []
    for index, volume in enumerate(model.get("volumes") or []):
        _check_keys(f"{where} volumes[{index}]", volume, VOLUME_KEYS, ("source", "target"))
        kind = volume.get("type", "volume")
        if kind == "volume":
            top["volumes"][volume["source"]] = {}
        volumes.append(
            {
                "type": kind,
                "source": volume["source"],
                "target": volume["target"],
                "read_only": bool(volume.get("read_only", False)),
            }
        )
    if volumes:
        service["volumes"] = volumes
    files = {}
    for kind in ("secrets", "configs"):
        entries = []
        for index, entry in enumerate(model.get(kind) or []):
            _check_keys(f"{where} {kind}[{index}]", entry, FILE_KEYS, ("name", "file", "target"))
            top[kind][entry["name"]] = entry
            entries.append(entry)
        files[kind] = entries
    if model.get("stop_grace_period"):
        service["stop_grace_period"] = model["stop_grace_period"]
    return service, files


def _ports(where: str, model: dict, host_mode: bool) -> list[dict]:
    ports = []
    for index, port in enumerate(model.get("ports") or []):
        _check_keys(f"{where} ports[{index}]", port, PORT_KEYS, ("published", "target"))
        rendered = {"target": int(port["target"]), "published": int(port["published"]), "protocol": "tcp"}
        if host_mode:
            # The routing mesh (ingress) needs IPVS; host mode publishes on each node running a task.
            rendered["mode"] = "host"
        elif port.get("host_ip"):
            rendered["host_ip"] = port["host_ip"]
        if not host_mode:
            rendered["published"] = str(rendered["published"])
        ports.append(rendered)
    return ports


def _resources(model: dict) -> dict:
    return {
        kind: {key: str(value) for key, value in limits.items()}
        for kind, limits in sorted((model.get("resources") or {}).items())
        if limits
    }


def _compose_service(name: str, model: dict, networks: dict, edge: str, top: dict) -> dict:
    where = f"service {name}"
    service, files = _common(name, model, networks, top)
    service["restart"] = model.get("restart", "unless-stopped")
    for kind, entries in files.items():
        if entries:
            service[kind] = [{"source": entry["name"], "target": entry["target"]} for entry in entries]
    if model.get("depends_on"):
        service["depends_on"] = {dep: {"condition": cond} for dep, cond in sorted(model["depends_on"].items())}
    ports = _ports(where, model, host_mode=False)
    if ports:
        service["ports"] = ports
    deploy: dict = {}
    replicas = _replicas(where, model, 0)
    if replicas != 1:
        deploy["replicas"] = replicas
    if _resources(model):
        deploy["resources"] = _resources(model)
    if deploy:
        service["deploy"] = deploy
    labels = dict(model.get("labels") or {})
    if edge == "traefik" and model.get("http"):
        labels.update(traefik_labels(name, model["http"]))
    if labels:
        service["labels"] = {str(k): str(v) for k, v in sorted(labels.items())}
    return dict(sorted(service.items()))


def _swarm_service(name: str, model: dict, networks: dict, edge: str, top: dict, defaults: dict) -> dict:
    where = f"service {name}"
    service, files = _common(name, model, networks, top)
    for kind, entries in files.items():
        refs = []
        for entry in entries:
            ref = {"source": entry["name"], "target": entry["target"]}
            ref.update({key: str(entry[key]) for key in ("uid", "gid") if key in entry})
            ref["mode"] = int(str(entry.get("mode", "0400" if kind == "secrets" else "0444")), 8)
            refs.append(ref)
        if refs:
            service[kind] = refs
    ports = _ports(where, model, host_mode=True)
    if ports:
        service["ports"] = ports
    mode = model.get("mode", "replicated")
    if mode not in ("replicated", "global"):
        raise AnsibleFilterError(f"{where}: mode must be replicated or global, got {mode!r}")
    order = model.get("update_order", "start-first")
    if order not in UPDATE_ORDERS:
        raise AnsibleFilterError(f"{where}: update_order must be one of {', '.join(UPDATE_ORDERS)}, got {order!r}")
    max_per_node = int(model.get("max_replicas_per_node") or 0)
    # A hard per-node cap can leave a start-first update no room once a node is lost: its next new task waits for
    # a place no node has, beside the old task it should replace, and the update never ends. Such a service
    # updates stop-first, one task at a time, while its other replicas serve.
    if max_per_node > 0:
        order = "stop-first"
    endpoint_mode = model.get("endpoint_mode", defaults["endpoint_mode"])
    if endpoint_mode not in ENDPOINT_MODES:
        raise AnsibleFilterError(f"{where}: endpoint_mode must be vip or dnsrr, got {endpoint_mode!r}")
    deploy: dict = {"mode": mode, "endpoint_mode": endpoint_mode}
    if mode == "replicated":
        deploy["replicas"] = _replicas(where, model, 1)
    resources = _resources(model)
    if model.get("generic_resources"):
        resources.setdefault("reservations", {})["generic_resources"] = [
            {"discrete_resource_spec": {"kind": kind, "value": int(value)}}
            for kind, value in sorted(model["generic_resources"].items())
        ]
    if resources:
        deploy["resources"] = resources
    # A task that died is replaced after 1 s (Swarm's default is 5 s): with the health check's first probe, a
    # service whose every task crashed is served again within the edge's 10 s.
    deploy["restart_policy"] = {"condition": "any", "delay": "1s", "window": "30s"}
    deploy["update_config"] = {
        "parallelism": 1,
        "delay": "5s",
        "order": order,
        "failure_action": "rollback",
        "monitor": defaults["monitor"],
    }
    deploy["rollback_config"] = {"parallelism": 1, "order": order, "failure_action": "pause", "monitor": "10s"}
    placement: dict = {}
    if model.get("placement"):
        placement["constraints"] = list(model["placement"])
    if max_per_node > 0:
        placement["max_replicas_per_node"] = max_per_node
    if placement:
        deploy["placement"] = placement
    if edge == "traefik" and model.get("http"):
        deploy["labels"] = dict(sorted(traefik_labels(name, model["http"], swarm=True).items()))
    service["deploy"] = deploy
    if model.get("labels"):
        service["labels"] = {str(k): str(v) for k, v in sorted(model["labels"].items())}
    return dict(sorted(service.items()))


def _check_stack(services: dict, edge: str, caller: str) -> None:
    if not isinstance(services, dict) or not services:
        raise AnsibleFilterError(f"{caller}: no services were contributed to the stack")
    if edge not in ("nginx", "traefik"):
        raise AnsibleFilterError(f"{caller}: edge must be nginx or traefik, got {edge!r}")


def compose_project(services: dict, name: str, networks: dict, edge: str = "nginx") -> dict:
    """The Compose project for the services (see compose_project.yml)."""
    _check_stack(services, edge, "compose_project")
    top: dict = {"secrets": {}, "configs": {}, "volumes": {}}
    rendered = {svc: _compose_service(svc, model, networks, edge, top) for svc, model in sorted(services.items())}
    project: dict = {
        "name": name,
        "services": rendered,
        "networks": {
            net: ({"internal": True} if (spec or {}).get("internal") else {}) for net, spec in sorted(networks.items())
        },
    }
    if top["volumes"]:
        project["volumes"] = dict(sorted(top["volumes"].items()))
    for kind in ("secrets", "configs"):
        if top[kind]:
            project[kind] = {key: {"file": entry["file"]} for key, entry in sorted(top[kind].items())}
    return project


def swarm_stack(
    services: dict,
    name: str,
    networks: dict,
    edge: str = "nginx",
    endpoint_mode: str = "dnsrr",
    monitor: str = "30s",
    encrypted: bool = False,
) -> dict:
    """The Swarm stack file for the services (see swarm_stack.yml)."""
    _check_stack(services, edge, "swarm_stack")
    if endpoint_mode not in ENDPOINT_MODES:
        raise AnsibleFilterError(f"swarm_stack: endpoint_mode must be vip or dnsrr, got {endpoint_mode!r}")
    top: dict = {"secrets": {}, "configs": {}, "volumes": {}}
    defaults = {"endpoint_mode": endpoint_mode, "monitor": monitor}
    rendered = {
        svc: _swarm_service(svc, model, networks, edge, top, defaults) for svc, model in sorted(services.items())
    }
    overlay = {}
    for net, spec in sorted(networks.items()):
        spec = spec or {}
        network: dict = {"driver": "overlay", "attachable": bool(spec.get("attachable", False))}
        if spec.get("internal"):
            network["internal"] = True
        if encrypted:
            network["driver_opts"] = {"encrypted": "true"}
        overlay[net] = network
    # 3.12: the first stack file schema with a health check's start_interval (Docker 25).
    stack: dict = {"version": "3.12", "services": rendered, "networks": overlay}
    if top["volumes"]:
        stack["volumes"] = dict(sorted(top["volumes"].items()))
    for kind in ("secrets", "configs"):
        objects = {}
        for key, entry in sorted(top[kind].items()):
            if not entry.get("version"):
                raise AnsibleFilterError(
                    f"swarm_stack: {kind} {key} needs a version (a hash of its content): Swarm cannot update "
                    "a secret or config in place, so each content gets its own name"
                )
            objects[key] = {"file": entry["file"], "name": f"{name}_{key}_{entry['version']}"}
        if objects:
            stack[kind] = objects
    return stack


class FilterModule:
    def filters(self):
        return {"compose_project": compose_project, "swarm_stack": swarm_stack}
