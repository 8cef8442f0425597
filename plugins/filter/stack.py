# Copyright (c) pliers.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one renderer: the stack's services, as data, to a Compose project (and, in #4, a Swarm stack)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

SERVICE_KEYS = frozenset(
    (
        *("image", "command", "environment", "secrets", "configs", "networks", "healthcheck", "depends_on"),
        *("ports", "volumes", "replicas", "resources", "labels", "user", "stop_grace_period", "http", "restart"),
    )
)
FILE_KEYS = frozenset(("name", "file", "target", "mode"))
PORT_KEYS = frozenset(("published", "target", "host_ip", "protocol"))
VOLUME_KEYS = frozenset(("source", "target", "type", "read_only"))
HEALTHCHECK_KEYS = frozenset(("test", "interval", "timeout", "retries", "start_period"))


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


def traefik_labels(name: str, http: dict) -> dict:
    """Router and service labels for one HTTP route (Traefik v3, Docker provider)."""
    prefix = http.get("path_prefix", "/")
    rule = "PathPrefix(`/`)" if prefix == "/" else f"PathPrefix(`{prefix}`)"
    return {
        "traefik.enable": "true",
        f"traefik.http.routers.{name}.rule": rule,
        f"traefik.http.routers.{name}.entrypoints": "websecure",
        f"traefik.http.routers.{name}.tls": "true",
        f"traefik.http.services.{name}.loadbalancer.server.port": str(http["port"]),
        f"traefik.http.services.{name}.loadbalancer.healthcheck.path": http.get("health_path", "/health"),
    }


def _service(name: str, model: dict, networks: dict, edge: str, top: dict) -> dict:
    where = f"service {name}"
    _check_keys(where, model, SERVICE_KEYS, ("image",))
    service: dict = {"image": model["image"], "restart": model.get("restart", "unless-stopped")}
    if model.get("command"):
        service["command"] = list(model["command"])
    if model.get("user"):
        service["user"] = str(model["user"])
    if model.get("environment"):
        service["environment"] = {str(k): str(v) for k, v in sorted(model["environment"].items())}
    for kind in ("secrets", "configs"):
        entries = []
        for index, entry in enumerate(model.get(kind) or []):
            _check_keys(f"{where} {kind}[{index}]", entry, FILE_KEYS, ("name", "file", "target"))
            top[kind][entry["name"]] = {"file": entry["file"]}
            entries.append({"source": entry["name"], "target": entry["target"]})
        if entries:
            service[kind] = entries
    unknown_networks = sorted(set(model.get("networks") or []) - set(networks))
    if unknown_networks:
        raise AnsibleFilterError(f"{where}: unknown network(s) {', '.join(unknown_networks)}")
    if model.get("networks"):
        service["networks"] = sorted(model["networks"])
    if model.get("healthcheck"):
        _check_keys(f"{where} healthcheck", model["healthcheck"], HEALTHCHECK_KEYS, ("test",))
        service["healthcheck"] = dict(model["healthcheck"])
    if model.get("depends_on"):
        service["depends_on"] = {dep: {"condition": cond} for dep, cond in sorted(model["depends_on"].items())}
    ports = []
    for index, port in enumerate(model.get("ports") or []):
        _check_keys(f"{where} ports[{index}]", port, PORT_KEYS, ("published", "target"))
        rendered = {"target": int(port["target"]), "published": str(port["published"]), "protocol": "tcp"}
        if port.get("host_ip"):
            rendered["host_ip"] = port["host_ip"]
        ports.append(rendered)
    if ports:
        service["ports"] = ports
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
    deploy: dict = {}
    replicas = model.get("replicas", 1)
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        raise AnsibleFilterError(f"{where}: replicas must be a whole number >= 0, got {replicas!r}")
    if replicas != 1:
        deploy["replicas"] = replicas
    if model.get("resources"):
        deploy["resources"] = {
            kind: {key: str(value) for key, value in limits.items()}
            for kind, limits in sorted(model["resources"].items())
            if limits
        }
    if deploy:
        service["deploy"] = deploy
    labels = dict(model.get("labels") or {})
    if edge == "traefik" and model.get("http"):
        labels.update(traefik_labels(name, model["http"]))
    if labels:
        service["labels"] = {str(k): str(v) for k, v in sorted(labels.items())}
    if model.get("stop_grace_period"):
        service["stop_grace_period"] = model["stop_grace_period"]
    return service


def compose_project(services: dict, name: str, networks: dict, edge: str = "nginx") -> dict:
    """The Compose project for the services (see DOCUMENTATION)."""
    if not isinstance(services, dict) or not services:
        raise AnsibleFilterError("compose_project: no services were contributed to the stack")
    if edge not in ("nginx", "traefik"):
        raise AnsibleFilterError(f"compose_project: edge must be nginx or traefik, got {edge!r}")
    top: dict = {"secrets": {}, "configs": {}, "volumes": {}}
    rendered = {svc: _service(svc, model, networks, edge, top) for svc, model in sorted(services.items())}
    project: dict = {
        "name": name,
        "services": rendered,
        "networks": {
            net: ({"internal": True} if (spec or {}).get("internal") else {}) for net, spec in sorted(networks.items())
        },
    }
    for kind in ("volumes", "secrets", "configs"):
        if top[kind]:
            project[kind] = dict(sorted(top[kind].items()))
    return project


class FilterModule:
    def filters(self):
        return {"compose_project": compose_project}
