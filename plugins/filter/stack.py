# Copyright (c) pliers.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one renderer: the stack's services, as data, to a Compose project or a Swarm stack.

The service roles decide (each service's image, files, networks, health, phase ...); this file spells it. It alone
decides what differs between the modes: where each secret and config file lives on the host and how it reaches
the container (Compose bind mounts, Swarm's versioned objects), the labels that recreate a Compose container whose
files changed, how ports are published, and which services each step of a deploy acts on (stack_plan).
Documentation: compose_project.yml, swarm_stack.yml, stack_files.yml, stack_plan.yml and contribute.yml beside
this file.
"""

from __future__ import annotations

import posixpath
import re

from ansible.errors import AnsibleFilterError
from ansible_collections.pliers.deploy.plugins.filter.networks import is_address
from ansible_collections.pliers.deploy.plugins.filter.secrets import content_version
from ansible_collections.pliers.deploy.plugins.module_utils._history import NOT_RELEASES

SERVICE_KEYS = frozenset(
    (
        *("image", "command", "environment", "secrets", "configs", "networks", "healthcheck", "depends_on"),
        *("ports", "volumes", "replicas", "resources", "labels", "user", "stop_grace_period", "http", "restart"),
        *("cap_add", "cap_drop", "read_only", "tmpfs", "pids_limit", "isolated", "aliases"),
        # What the pipeline reads (never rendered): the step the service belongs to, the role that contributed it,
        # where Prometheus scrapes it, the migrations its image runs, what it offers as the stack's edge, the
        # accounts it logs in to a data store with, the data store it is, the cluster it is a member of.
        *("phase", "role", "metrics", "migrations", "entrypoint", "upstreams", "accounts", "store", "docker_api"),
        "cluster",
        # Swarm only (ignored by Compose): how the service is placed, updated and reached.
        *("placement", "update_order", "mode", "max_replicas_per_node", "endpoint_mode", "generic_resources"),
    )
)
PHASES = ("data", "app", "edge", "ops")
FILE_KEYS = frozenset(("name", "target", "content", "mode", "uid", "gid", "reload"))
PORT_KEYS = frozenset(("published", "target", "host_ip", "protocol"))
VOLUME_KEYS = frozenset(("source", "target", "type", "read_only", "owned"))
HEALTHCHECK_KEYS = frozenset(("test", "interval", "timeout", "retries", "start_period", "start_interval"))
HTTP_KEYS = frozenset(("port", "path_prefix", "health_path", "verify"))
VERIFY_KEYS = frozenset(("path", "json", "body_regex"))
UPSTREAM_KEYS = frozenset(("dir", "sync", "drained"))
MIGRATIONS_KEYS = frozenset(("network", "backup_first", "environment", "secrets"))
ACCOUNT_KEYS = frozenset(("store", "name", "password", "privileges", "group"))
# server: the service that runs the store, when the one clients reach is a proxy in front of it (the HA database):
# its image is the client the access step runs, its secret the admin's password.
STORE_KEYS = frozenset(("kind", "database", "admin_user", "admin_password", "network", "port", "server"))
# Each kind of store and its default port; a PostgreSQL store names its database.
STORE_KINDS = {"postgres": 5432, "redis": 6379}
# A cluster the deploy keeps to the model (Patroni's, the HA database's): its synchronous mode and PostgreSQL's
# settings, in its configuration.
CLUSTER_KEYS = frozenset(("kind", "synchronous", "parameters"))
CLUSTER_KINDS = ("patroni",)
UPDATE_ORDERS = ("start-first", "stop-first")
# Another name a service answers by on its networks: a DNS label.
DNS_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
ENDPOINT_MODES = ("vip", "dnsrr")
TLS_MODES = ("acme", "inventory", "off")
# A Linux capability as Docker names it (without CAP_, e.g. NET_BIND_SERVICE), or ALL.
CAPABILITY = re.compile(r"^[A-Z_]+$")
# A host name a router matches, or an address (no wildcard: Traefik's Host matcher takes exact names).
_DNS_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
SERVER_NAME = re.compile(rf"^(?=.{{1,253}}$){_DNS_LABEL}(\.{_DNS_LABEL})*$")
# The edge's middlewares (the traefik role's dynamic configuration defines them): every route's request bodies are
# limited; the routes other than the web's / (the APIs) are rate-limited per client too.
BODY_LIMIT = "pliers-body-limit@file"
RATE_LIMIT = "pliers-rate-limit@file"
# The label that recreates a Compose container whose secret or config files changed (a bind-mounted file that is
# replaced is not seen by a running container).
FILES_LABEL = "pliers.deploy.files"
LOOPBACK_PREFIXES = ("127.", "::1", "localhost")
# Least privilege unless a service says otherwise: every capability dropped, a read-only root file system (tmpfs
# where the image writes), a bounded number of processes, and no privilege gained through setuid binaries.
HARDENED = {"cap_drop": ["ALL"], "read_only": True, "pids_limit": 256}
NO_NEW_PRIVILEGES = "no-new-privileges:true"
# Swarm has no network "none": an isolated service joins this internal network, which only isolated services join
# (each listens on a unix socket only).
ISOLATED_NETWORK = "isolated"

# The Docker API, never the engine's socket itself: a service that reads it (docker_api) is given a proxy of its own
# that passes GET and HEAD on the endpoints it names and refuses everything else (403), on a unix socket in a
# volume only the two share. The endpoints, by name: the paths each opens (/_ping and /version always are: clients
# negotiate the API version with them), with or without the API version prefix.
DOCKER_API_KEYS = frozenset(("endpoints", "image"))
_DOCKER_ID = "[A-Za-z0-9_.-]+"
DOCKER_API_ENDPOINTS = {
    "containers": rf"/containers/json|/containers/{_DOCKER_ID}/json",
    "events": r"/events",
    "info": r"/info",
    "logs": rf"/containers/{_DOCKER_ID}/logs",
    "networks": rf"/networks(/{_DOCKER_ID})?",
    "nodes": rf"/nodes(/{_DOCKER_ID})?",
    "services": rf"/services(/{_DOCKER_ID})?",
    "tasks": rf"/tasks(/{_DOCKER_ID})?",
}
DOCKER_API_DIR = "/run/docker-api"
DOCKER_SOCKET = "/var/run/docker.sock"
HAPROXY_CONFIG = "/usr/local/etc/haproxy/haproxy.cfg"
# A Swarm placement on one host of the inventory (docker_host labels each node with its inventory name).
PINNED = re.compile(r"node\.labels\.pliers\.host\s*==\s*(\S+)")


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


def _phase(name: str, model: dict) -> str:
    phase = model.get("phase")
    if phase not in PHASES:
        raise AnsibleFilterError(f"service {name}: phase must be one of {', '.join(PHASES)}, got {phase!r}")
    return phase


def _owned_volumes(name: str, model: dict) -> list[dict]:
    """The named volumes the service owns (owned=true): each with its service, the uid and gid of its user, for whom the
    deploy makes it (empty, mounted without the image's content) or hands every file of it to before the service
    runs, and the host a Swarm places it on (its node.labels.pliers.host constraint; None: not pinned, which only
    Compose allows). Such a service runs as a numeric uid:gid."""
    pinned = [PINNED.fullmatch(str(constraint)) for constraint in model.get("placement") or []]
    host = next((match.group(1) for match in pinned if match), None)
    owned = []
    for index, volume in enumerate(model.get("volumes") or []):
        where = f"service {name} volumes[{index}]"
        _check_keys(where, volume, VOLUME_KEYS, ("source", "target"))
        if volume.get("owned", False) is False:
            continue
        if volume["owned"] is not True:
            raise AnsibleFilterError(f"{where}: owned must be true or false, got {volume['owned']!r}")
        if volume.get("type", "volume") != "volume":
            raise AnsibleFilterError(f"{where}: only a named volume can be owned, not a {volume['type']}")
        if model.get("mode") == "global":
            # One volume per node, and no way to stop such a service but removing it.
            raise AnsibleFilterError(f"{where}: a global service's volume cannot be owned")
        user = str(model.get("user") or "")
        if not re.fullmatch(r"[0-9]+:[0-9]+", user):
            raise AnsibleFilterError(f"{where}: an owned volume's service runs as a numeric uid:gid, got user {user!r}")
        uid, gid = (int(part) for part in user.split(":"))
        owned.append({"service": name, "volume": volume["source"], "uid": uid, "gid": gid, "host": host})
    return owned


def _check_service(name: str, model: dict) -> None:
    where = f"service {name}"
    _check_keys(where, model, SERVICE_KEYS, ("image",))
    _phase(name, model)
    if model.get("http"):
        _check_keys(f"{where} http", model["http"], HTTP_KEYS, ("port",))
        if model["http"].get("verify"):
            _check_keys(f"{where} http verify", model["http"]["verify"], VERIFY_KEYS, ("path",))
    if model.get("upstreams"):
        _check_keys(f"{where} upstreams", model["upstreams"], UPSTREAM_KEYS, ("dir", "sync"))
    if model.get("migrations"):
        _check_keys(f"{where} migrations", model["migrations"], MIGRATIONS_KEYS)
    for index, account in enumerate(model.get("accounts") or []):
        _check_keys(f"{where} accounts[{index}]", account, ACCOUNT_KEYS, ("store", "name", "password", "privileges"))
    if model.get("store"):
        _check_keys(f"{where} store", model["store"], STORE_KEYS, ("kind", "admin_user", "admin_password"))
        if model["store"]["kind"] not in STORE_KINDS:
            raise AnsibleFilterError(f"{where} store: kind must be one of {', '.join(STORE_KINDS)}")
        if model["store"]["kind"] == "postgres" and not model["store"].get("database"):
            raise AnsibleFilterError(f"{where} store: a postgres store names its database")
    if "cluster" in model:  # present at all: the deploy keeps it to the model (roles/stack's _stack_clusters)
        _check_keys(f"{where} cluster", model["cluster"], CLUSTER_KEYS, ("kind",))
        if model["cluster"]["kind"] not in CLUSTER_KINDS:
            raise AnsibleFilterError(f"{where} cluster: kind must be one of {', '.join(CLUSTER_KINDS)}")
        if not isinstance(model["cluster"].get("parameters", {}), dict):
            raise AnsibleFilterError(f"{where} cluster: parameters is a mapping of settings to values")
    for key in ("cap_add", "cap_drop"):
        _capabilities(f"{where} {key}", model.get(key), allow_all=key == "cap_drop")
    if model.get("docker_api"):
        _docker_api_endpoints(name, model["docker_api"])
    for key in ("read_only", "isolated"):
        if not isinstance(model.get(key, False), bool):
            raise AnsibleFilterError(f"{where}: {key} must be true or false, got {model[key]!r}")
    if model.get("isolated") and model.get("networks"):
        raise AnsibleFilterError(f"{where}: an isolated service joins no network, got {', '.join(model['networks'])}")
    _owned_volumes(name, model)
    tmpfs = model.get("tmpfs") or []
    if not isinstance(tmpfs, list) or not all(isinstance(p, str) and posixpath.isabs(p) for p in tmpfs):
        raise AnsibleFilterError(f"{where}: tmpfs must be a list of absolute paths, got {tmpfs!r}")
    pids = model.get("pids_limit", HARDENED["pids_limit"])
    if isinstance(pids, str) and pids.isdigit():
        pids = int(pids)
    if not isinstance(pids, int) or isinstance(pids, bool) or pids < 16:
        raise AnsibleFilterError(f"{where}: pids_limit must be a whole number of processes, 16 or more, got {pids!r}")


def _capabilities(where: str, value, allow_all: bool) -> list[str]:
    """A service's cap_add or cap_drop: capability names (ALL only to drop: adding every one is privileged)."""
    if value in (None, []):
        return []
    if not isinstance(value, list):
        raise AnsibleFilterError(f"{where}: expected a list of capability names, got {value!r}")
    for name in value:
        if not isinstance(name, str) or not CAPABILITY.match(name) or (name == "ALL" and not allow_all):
            raise AnsibleFilterError(
                f"{where}: {name!r} is not a capability name (upper case, like NET_BIND_SERVICE"
                + (", or ALL)" if allow_all else "; ALL is refused)")
            )
    return list(value)


# --- The Docker API, through a proxy of each reader's own ------------------------------------------------------


def _docker_api_endpoints(name: str, api: dict) -> list[str]:
    where = f"service {name} docker_api"
    _check_keys(where, api, DOCKER_API_KEYS, ("endpoints", "image"))
    endpoints = api["endpoints"]
    if not isinstance(endpoints, list) or not endpoints or not all(e in DOCKER_API_ENDPOINTS for e in endpoints):
        raise AnsibleFilterError(
            f"{where}: endpoints must be a list of {', '.join(DOCKER_API_ENDPOINTS)}, got {endpoints!r}"
        )
    return sorted(set(endpoints))


def _haproxy_config(name: str, endpoints: list[str]) -> str:
    paths = "|".join(["/_ping", "/version"] + [DOCKER_API_ENDPOINTS[e] for e in endpoints])
    return f"""\
# Managed by pliers.deploy: the Docker API as {name} may read it ({", ".join(endpoints)}), on
# {DOCKER_API_DIR}/docker.sock. GET and HEAD on those endpoints reach the engine; anything else is refused (403).
global
    log stderr format raw daemon notice
    # A few readers at most: small tables (HAProxy sizes them from the open-files limit otherwise), one thread, and
    # a stop that does not wait for the open event and log streams.
    maxconn 256
    nbthread 1
    hard-stop-after 5s

defaults
    mode http
    log global
    timeout connect 5s
    # Event and log streams stay open while nothing happens; their clients reconnect after an hour of silence.
    timeout client 1h
    timeout server 1h

frontend docker_api
    bind {DOCKER_API_DIR}/docker.sock mode 666
    http-request deny deny_status 403 unless {{ method GET HEAD }} {{ path_reg ^(/v[0-9]+[.][0-9]+)?({paths})$ }}
    default_backend engine

backend engine
    server engine {DOCKER_SOCKET}
"""


def docker_api_proxy(name: str, model: dict) -> tuple[str, dict, dict]:
    """The proxy service a service that reads the Docker API is given, and that service with the proxy's socket.

    The proxy runs where its reader runs (Swarm: on each node the reader may run on), as root with no capability
    (the engine's socket is root's), on no network: it and its reader share only a volume, which holds its socket.
    """
    endpoints = _docker_api_endpoints(name, model["docker_api"])
    if model["phase"] == "app":
        raise AnsibleFilterError(
            f"service {name}: an app service reads no Docker API (docker_api is for data, edge and ops services)"
        )
    proxy = f"{name}-docker-api"
    volume = f"{name.replace('-', '_')}_docker_api"
    service = {
        "phase": model["phase"],
        "image": model["docker_api"]["image"],
        "command": ["haproxy", "-f", HAPROXY_CONFIG],
        "user": "0:0",
        "isolated": True,
        "configs": [
            {"name": f"{volume}_haproxy", "target": HAPROXY_CONFIG, "content": _haproxy_config(name, endpoints)}
        ],
        "volumes": [
            {"type": "bind", "source": DOCKER_SOCKET, "target": DOCKER_SOCKET, "read_only": True},
            {"source": volume, "target": DOCKER_API_DIR},
        ],
        "healthcheck": {"test": ["CMD", "test", "-S", f"{DOCKER_API_DIR}/docker.sock"], "interval": "15s",
                        "start_interval": "1s", "start_period": "10s", "timeout": "3s", "retries": 3},
        "resources": {"limits": {"cpus": "0.25", "memory": "64M"}},
        "pids_limit": 64,
        "mode": "global",
        "placement": list(model.get("placement") or []),
    }  # fmt: skip
    reader = {
        **model,
        "volumes": [*(model.get("volumes") or []), {"source": volume, "target": DOCKER_API_DIR, "read_only": True}],
        "depends_on": {**(model.get("depends_on") or {}), proxy: "service_healthy"},
    }
    return proxy, service, reader


# --- Files: where each secret and config lives on the host, and its version ---------------------------------


def service_files(name: str, model: dict, project_dir: str) -> list[dict]:
    """The service's secret and config files, each with its host path, version, mode and owner.

    A secret lives in <project_dir>/secrets/<service>/, root-only, owned by the user that reads it (0400); a config
    in <project_dir>/configs/<service>/ (0644). Each is named after its target's file name.
    """
    files = []
    for kind in ("secrets", "configs"):
        seen: dict[str, str] = {}
        for index, entry in enumerate(model.get(kind) or []):
            where = f"service {name} {kind}[{index}]"
            _check_keys(where, entry, FILE_KEYS, ("name", "target"))
            if "content" not in entry or entry["content"] is None:
                raise AnsibleFilterError(f"{where}: missing content")
            if entry.get("reload") and kind == "secrets":
                raise AnsibleFilterError(f"{where}: only configs can be reloaded in place")
            basename = posixpath.basename(str(entry["target"]))
            if basename in seen:
                raise AnsibleFilterError(
                    f"service {name}: {kind} {seen[basename]} and {entry['name']} both end in {basename}"
                )
            seen[basename] = entry["name"]
            secret = kind == "secrets"
            content = str(entry["content"])
            files.append(
                {
                    "kind": kind,
                    "name": str(entry["name"]),
                    "target": str(entry["target"]),
                    "path": posixpath.join(project_dir, kind, name, basename),
                    "content": content,
                    "version": content_version(content),
                    "mode": str(entry.get("mode", "0400" if secret else "0644")),
                    "uid": entry.get("uid", 0),
                    "gid": entry.get("gid", entry.get("uid", 0)),
                    "secret": secret,
                    "reload": bool(entry.get("reload", False)),
                }
            )
    return files


def migration_files(name: str, model: dict, project_dir: str) -> list[dict]:
    """The secret files only the service's migrations mount (e.g. the database owner's password, which the service
    itself never sees), in <project_dir>/secrets/<service>-migrations/."""
    secrets = (model.get("migrations") or {}).get("secrets") or []
    return service_files(f"{name}-migrations", {"secrets": secrets}, project_dir) if secrets else []


def _reload_dir(name: str, files: list[dict]) -> str | None:
    """The container directory a service's reloadable configs live in (their host directory is mounted there)."""
    targets = {posixpath.dirname(f["target"]) for f in files if f["reload"]}
    if len(targets) > 1:
        raise AnsibleFilterError(
            f"service {name}: configs reloaded in place must share one directory, got {', '.join(sorted(targets))}"
        )
    return targets.pop() if targets else None


def stack_files(services: dict, project_dir: str, selected: list | None = None) -> dict:
    """The directories and files a deploy writes for the services (those selected): see stack_files.yml."""
    _check_stack(services, "stack_files")
    wanted = set(services) if selected is None else set(selected)
    directories: list[dict] = []
    files: list[dict] = []
    names: dict[str, tuple[str, str]] = {}
    for service, model in sorted(services.items()):
        for entry in service_files(service, model, project_dir) + migration_files(service, model, project_dir):
            # Two services naming the same secret or config with different contents would overwrite each other.
            previous = names.setdefault(entry["name"], (service, entry["version"]))
            if previous[1] != entry["version"]:
                raise AnsibleFilterError(
                    f"{entry['kind']} {entry['name']} is defined by {previous[0]} and {service} with different contents"
                )
            if service not in wanted:
                continue
            directory = posixpath.dirname(entry["path"])
            if not any(d["path"] == directory for d in directories):
                directories.append({"path": directory, "mode": "0700" if entry["secret"] else "0755"})
            files.append(
                {
                    "path": entry["path"],
                    "content": entry["content"],
                    "mode": entry["mode"],
                    "owner": entry["uid"],
                    "group": entry["gid"],
                    "secret": entry["secret"],
                    "service": service,
                    "reload": entry["reload"],
                }
            )
    parents = [{"path": posixpath.join(project_dir, kind), "mode": "0700" if kind == "secrets" else "0755"}
               for kind in ("secrets", "configs")]  # fmt: skip
    return {"directories": parents + directories, "files": files}


# --- What both modes share ------------------------------------------------------------------------------------


def _edge_options(caller: str, server_names, tls: str) -> tuple[list[str], str]:
    """The names the edge serves and its TLS mode, checked."""
    if isinstance(server_names, str):
        server_names = [server_names]
    names = [str(name) for name in server_names or ()]
    bad = [name for name in names if not (SERVER_NAME.match(name) or is_address(name))]
    if bad:
        raise AnsibleFilterError(f"{caller}: server_names must be host names, got {', '.join(map(repr, bad))}")
    if tls not in TLS_MODES:
        raise AnsibleFilterError(f"{caller}: tls must be one of {', '.join(TLS_MODES)}, got {tls!r}")
    return names, tls


def traefik_labels(name: str, http: dict, swarm: bool = False, server_names=(), tls: str = "acme") -> dict:
    """Router and service labels for one HTTP route (Traefik v3, Docker or Swarm provider).

    The router matches the server names only (a request for any other host matches no router: Traefik answers 404,
    with no application content), on HTTPS, or on plain HTTP when tls is off.
    """
    prefix = http.get("path_prefix", "/")
    rule = f"PathPrefix(`{prefix}`)"
    hosts = [f"Host(`{host}`)" for host in server_names]
    if len(hosts) == 1:
        rule = f"{hosts[0]} && {rule}"
    elif hosts:
        rule = f"({' || '.join(hosts)}) && {rule}"
    router = f"traefik.http.routers.{name}"
    labels = {
        "traefik.enable": "true",
        f"{router}.rule": rule,
        f"{router}.entrypoints": "web" if tls == "off" else "websecure",
        f"{router}.middlewares": BODY_LIMIT if prefix == "/" else f"{RATE_LIMIT},{BODY_LIMIT}",
        f"traefik.http.services.{name}.loadbalancer.server.port": str(http["port"]),
        f"traefik.http.services.{name}.loadbalancer.healthcheck.path": http.get("health_path", "/health"),
    }
    if tls != "off":
        labels[f"{router}.tls"] = "true"
        # A router's own tls section replaces its entry point's, certificate resolver included: it names it again,
        # with the names its certificate covers (an ACME server certifies no address).
        if tls == "acme":
            labels[f"{router}.tls.certresolver"] = "acme"
            names = [host for host in server_names if not is_address(host)]
            if names:
                labels[f"{router}.tls.domains[0].main"] = names[0]
            if names[1:]:
                labels[f"{router}.tls.domains[0].sans"] = ",".join(names[1:])
    if swarm:
        # Swarm tasks behind dnsrr have no virtual IP: Traefik must talk to the tasks themselves.
        labels[f"traefik.http.services.{name}.loadbalancer.server.scheme"] = "http"
    return labels


def _replicas(where: str, model: dict, minimum: int) -> int:
    replicas = model.get("replicas", 1)
    if isinstance(replicas, str) and replicas.isdigit():
        replicas = int(replicas)
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < minimum:
        raise AnsibleFilterError(f"{where}: replicas must be a whole number >= {minimum}, got {replicas!r}")
    return replicas


def _common(name: str, model: dict, networks: dict, top: dict) -> dict:
    """What a service is in both modes; collects its named volumes into top."""
    where = f"service {name}"
    _check_service(name, model)
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
    aliases = model.get("aliases") or []
    if not isinstance(aliases, list) or not all(isinstance(a, str) and DNS_NAME.match(a) for a in aliases):
        raise AnsibleFilterError(f"{where}: aliases must be a list of DNS names (other names it has), got {aliases!r}")
    if model.get("networks"):
        # Its other names answer on each of its networks.
        service["networks"] = (
            {net: {"aliases": sorted(aliases)} for net in sorted(model["networks"])}
            if aliases
            else sorted(model["networks"])
        )
    if model.get("healthcheck"):
        _check_keys(f"{where} healthcheck", model["healthcheck"], HEALTHCHECK_KEYS, ("test",))
        service["healthcheck"] = dict(model["healthcheck"])
    volumes = []
    for volume in model.get("volumes") or []:
        kind = volume.get("type", "volume")
        if kind == "volume":
            top["volumes"][volume["source"]] = {}
        mount = {
            "type": kind,
            "source": volume["source"],
            "target": volume["target"],
            "read_only": bool(volume.get("read_only", False)),
        }
        if volume.get("owned"):
            # The deploy makes it, its top its user's: copying the image's directory in would hand that back to the
            # image's owner (Docker copies the ownership too).
            mount["volume"] = {"nocopy": True}
        volumes.append(mount)
    # tmpfs as mounts of type tmpfs: the one shape both Compose and docker stack deploy take.
    volumes += [{"type": "tmpfs", "target": path} for path in model.get("tmpfs") or []]
    if volumes:
        service["volumes"] = volumes
    # Least privilege (HARDENED, unless the service says otherwise): capabilities dropped and the few it needs
    # added back (docker stack deploy honours them since Engine 20.10), a read-only root file system.
    for key in ("cap_add", "cap_drop"):
        if model.get(key, HARDENED.get(key)):
            service[key] = list(model.get(key, HARDENED.get(key)))
    if model.get("read_only", HARDENED["read_only"]):
        service["read_only"] = True
    if model.get("stop_grace_period"):
        service["stop_grace_period"] = model["stop_grace_period"]
    return service


def _ports(where: str, model: dict, swarm: bool) -> list[dict]:
    ports = []
    for index, port in enumerate(model.get("ports") or []):
        _check_keys(f"{where} ports[{index}]", port, PORT_KEYS, ("published", "target"))
        host_ip = str(port.get("host_ip") or "")
        rendered = {"target": int(port["target"]), "published": int(port["published"]), "protocol": "tcp"}
        if swarm:
            # Swarm publishes on every address of a node: a port meant for the loopback only is not published
            # there rather than opened to the world.
            if host_ip.startswith(LOOPBACK_PREFIXES):
                continue
            # The routing mesh (ingress) needs IPVS; host mode publishes on each node running a task.
            rendered["mode"] = "host"
        else:
            if host_ip:
                rendered["host_ip"] = host_ip
            rendered["published"] = str(rendered["published"])
        ports.append(rendered)
    return ports


def _resources(model: dict) -> dict:
    """The service's limits and reservations, with its process limit (Compose and docker stack deploy alike)."""
    resources = {
        kind: {key: str(value) for key, value in limits.items()}
        for kind, limits in sorted((model.get("resources") or {}).items())
        if limits
    }
    resources.setdefault("limits", {})["pids"] = int(model.get("pids_limit", HARDENED["pids_limit"]))
    return resources


def _compose_service(name: str, model: dict, networks: dict, edge: dict, top: dict, project_dir: str) -> dict:
    where = f"service {name}"
    service = _common(name, model, networks, top)
    service["restart"] = model.get("restart", "unless-stopped")
    if model.get("isolated"):
        service["network_mode"] = "none"
    # Swarm cannot set it per service: there, the engine's default (docker_host's daemon.json) applies.
    service["security_opt"] = [NO_NEW_PRIVILEGES]
    files = service_files(name, model, project_dir)
    mounted = _reload_dir(name, files)
    refs: dict[str, list] = {"secrets": [], "configs": []}
    for entry in files:
        top[entry["kind"]][entry["name"]] = {"file": entry["path"]}
        if entry["kind"] == "configs" and mounted and posixpath.dirname(entry["target"]) == mounted:
            continue  # served by the directory mount below
        refs[entry["kind"]].append({"source": entry["name"], "target": entry["target"]})
    for kind, entries in refs.items():
        if entries:
            service[kind] = entries
    if mounted:
        # Reloadable configs: their host directory is mounted, so a rewritten file is seen by the running container
        # (a single bind-mounted file that is replaced is not), and the service reloads it in place.
        service.setdefault("volumes", []).append(
            {"type": "bind", "source": posixpath.join(project_dir, "configs", name), "target": mounted,
             "read_only": True}
        )  # fmt: skip
    if model.get("depends_on"):
        service["depends_on"] = {dep: {"condition": cond} for dep, cond in sorted(model["depends_on"].items())}
    ports = _ports(where, model, swarm=False)
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
    recreating = [f"{f['name']}={f['version']}" for f in files if not f["reload"]]
    if recreating:
        labels[FILES_LABEL] = content_version(sorted(recreating))
    if edge["edge"] == "traefik" and model.get("http"):
        labels.update(traefik_labels(name, model["http"], **edge["traefik"]))
    if labels:
        service["labels"] = {str(k): str(v) for k, v in sorted(labels.items())}
    return dict(sorted(service.items()))


def _swarm_service(
    name: str, model: dict, networks: dict, edge: dict, top: dict, defaults: dict, project_dir: str
) -> dict:
    where = f"service {name}"
    service = _common(name, model, networks, top)
    # A Swarm volume is its node's own: the deploy makes or hands it over on the host the service is pinned to.
    for owned in _owned_volumes(name, model):
        if owned["host"] is None:
            raise AnsibleFilterError(
                f"{where}: its owned volume {owned['volume']} needs the service pinned to one host in Swarm mode "
                "(placement node.labels.pliers.host == <host>), where the deploy makes it for its user"
            )
    if model.get("isolated"):
        service["networks"] = [ISOLATED_NETWORK]
    refs: dict[str, list] = {"secrets": [], "configs": []}
    for entry in service_files(name, model, project_dir):
        top[entry["kind"]][entry["name"]] = entry
        ref = {"source": entry["name"], "target": entry["target"], "uid": str(entry["uid"]), "gid": str(entry["gid"])}
        ref["mode"] = int(entry["mode"], 8) if entry["secret"] else 0o444
        refs[entry["kind"]].append(ref)
    for kind, entries in refs.items():
        if entries:
            service[kind] = entries
    ports = _ports(where, model, swarm=True)
    if ports:
        service["ports"] = ports
    mode = model.get("mode", "replicated")
    if mode not in ("replicated", "global"):
        raise AnsibleFilterError(f"{where}: mode must be replicated or global, got {mode!r}")
    # Stateful services and the edge (its host-mode ports) cannot run two tasks side by side.
    order = model.get("update_order") or ("stop-first" if model["phase"] in ("data", "edge") else "start-first")
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
    if edge["edge"] == "traefik" and model.get("http"):
        deploy["labels"] = dict(sorted(traefik_labels(name, model["http"], swarm=True, **edge["traefik"]).items()))
    service["deploy"] = deploy
    if model.get("labels"):
        service["labels"] = {str(k): str(v) for k, v in sorted(model["labels"].items())}
    return dict(sorted(service.items()))


def _check_stack(services: dict, caller: str, edge: str = "nginx") -> None:
    if not isinstance(services, dict) or not services:
        raise AnsibleFilterError(f"{caller}: no services were contributed to the stack")
    if edge not in ("nginx", "traefik"):
        raise AnsibleFilterError(f"{caller}: edge must be nginx or traefik, got {edge!r}")


def _edge(caller: str, edge: str, server_names, tls: str) -> dict:
    """The edge, and what its router labels need (Traefik): the names it serves, its TLS mode."""
    names, tls = _edge_options(caller, server_names, tls)
    return {"edge": edge, "traefik": {"server_names": names, "tls": tls}}


def _used(networks: dict, rendered: dict) -> dict:
    """The networks some service joins: one only some configurations use (the HA database's) is not made for none."""
    joined = {net for service in rendered.values() for net in service.get("networks") or []}
    return {net: spec for net, spec in networks.items() if net in joined}


def compose_project(
    services: dict,
    name: str,
    networks: dict,
    project_dir: str,
    edge: str = "nginx",
    server_names: list | tuple = (),
    tls: str = "acme",
) -> dict:
    """The Compose project for the services (see compose_project.yml)."""
    _check_stack(services, "compose_project", edge)
    edge_options = _edge("compose_project", edge, server_names, tls)
    top: dict = {"secrets": {}, "configs": {}, "volumes": {}}
    rendered = {
        svc: _compose_service(svc, model, networks, edge_options, top, project_dir)
        for svc, model in sorted(services.items())
    }
    project: dict = {
        "name": name,
        "services": rendered,
        "networks": {
            net: ({"internal": True} if (spec or {}).get("internal") else {})
            for net, spec in sorted(_used(networks, rendered).items())
        },
    }
    for kind in ("volumes", "secrets", "configs"):
        if top[kind]:
            project[kind] = dict(sorted(top[kind].items()))
    return project


def swarm_stack(
    services: dict,
    name: str,
    networks: dict,
    project_dir: str,
    edge: str = "nginx",
    endpoint_mode: str = "dnsrr",
    monitor: str = "30s",
    encrypted: bool = False,
    server_names: list | tuple = (),
    tls: str = "acme",
) -> dict:
    """The Swarm stack file for the services (see swarm_stack.yml)."""
    _check_stack(services, "swarm_stack", edge)
    edge_options = _edge("swarm_stack", edge, server_names, tls)
    if endpoint_mode not in ENDPOINT_MODES:
        raise AnsibleFilterError(f"swarm_stack: endpoint_mode must be vip or dnsrr, got {endpoint_mode!r}")
    top: dict = {"secrets": {}, "configs": {}, "volumes": {}}
    defaults = {"endpoint_mode": endpoint_mode, "monitor": monitor}
    isolated = any(model.get("isolated") for model in services.values())
    if isolated and ISOLATED_NETWORK in networks:
        raise AnsibleFilterError(
            f"swarm_stack: the network name {ISOLATED_NETWORK} is the stack's own (its isolated services'), not yours"
        )
    rendered = {
        svc: _swarm_service(svc, model, networks, edge_options, top, defaults, project_dir)
        for svc, model in sorted(services.items())
    }
    overlay = {}
    for net, spec in sorted(_used(networks, rendered).items()):
        spec = spec or {}
        network: dict = {"driver": "overlay", "attachable": bool(spec.get("attachable", False))}
        if spec.get("internal"):
            network["internal"] = True
        if encrypted:
            network["driver_opts"] = {"encrypted": "true"}
        overlay[net] = network
    if isolated:
        overlay[ISOLATED_NETWORK] = {"driver": "overlay", "attachable": False, "internal": True}
    # 3.12: the first stack file schema with a health check's start_interval (Docker 25).
    stack: dict = {"version": "3.12", "services": rendered, "networks": overlay}
    if top["volumes"]:
        stack["volumes"] = dict(sorted(top["volumes"].items()))
    for kind in ("secrets", "configs"):
        if top[kind]:
            # Swarm cannot update a secret or config in place: each content is an object of its own, and a changed
            # content rolls the services that use it.
            stack[kind] = {
                key: {"file": entry["path"], "name": f"{name}_{key}_{entry['version']}"}
                for key, entry in sorted(top[kind].items())
            }
    return stack


# --- The pipeline's steps -------------------------------------------------------------------------------------


def _ordered(services: dict, names: set[str]) -> list[str]:
    """names, each after the services it depends on (then by name)."""
    ordered: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in ordered or name not in names:
            return
        if name in path:
            raise AnsibleFilterError(f"stack_plan: services depend on each other in a circle: {' -> '.join(path)}")
        for dependency in sorted(services[name].get("depends_on") or {}):
            if dependency in services:
                visit(dependency, (*path, name))
        ordered.append(name)

    for name in sorted(names):
        visit(name, ())
    return ordered


def _image_tag(image: str) -> str:
    last = str(image).rsplit("/", 1)[-1]
    return last.split("@", 1)[0].rsplit(":", 1)[1] if ":" in last.split("@", 1)[0] else "latest"


def _image_repository(image: str) -> str:
    """The reference without its tag and digest, as the engine lists it (registry.example.com:5000/pliers/api; Docker
    Hub's without docker.io/ and library/)."""
    path = str(image).split("@", 1)[0]
    last = path.rsplit("/", 1)[-1]
    repository = path[: len(path) - len(last)] + last.split(":", 1)[0]
    for prefix in ("docker.io/", "library/"):
        repository = repository.removeprefix(prefix)
    return repository


def maintenance_open(verify_paths: list) -> list:
    """The paths the edge still answers in maintenance (pliers_maintenance), sorted: the routed services' verify paths
    (their health endpoints) but "/", which is every page of the web. The edge's configuration and the deploy's
    verification both read them here."""
    if not isinstance(verify_paths, list) or not all(isinstance(path, str) for path in verify_paths):
        raise AnsibleFilterError(f"maintenance_open: expected a list of paths, got {verify_paths!r}")
    return sorted(set(verify_paths) - {"/"})


def prunable_images(listed: dict, repositories: dict, history: list, keep: int) -> list:
    """The app images a host holds (listed: docker_host_info's result, with images and containers, verbose) that may
    go, by reference or, for an image held by digest alone (a Swarm node pulls the digest a service is pinned to), by
    id. Of each app service's repository
    (service -> repository, as the plan names them), every tag but the one the last successful release runs and the
    `keep` versions before it in the history (release_log's entries, oldest first); of its images held by digest
    alone, all but the keep + 1 newest. Never an image a container uses."""
    if not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
        raise AnsibleFilterError(f"prunable_images: keep must be a whole number of 1 or more, got {keep!r}")
    releases = [
        entry.get("versions") or {}
        for entry in reversed(history or [])
        if entry.get("result") == "ok" and entry.get("playbook") not in NOT_RELEASES
    ]
    kept = set()
    for service, repository in repositories.items():
        versions = list(dict.fromkeys(versions[service] for versions in releases if versions.get(service)))
        kept |= {f"{_image_repository(repository)}:{version}" for version in versions[: keep + 1]}
    wanted = {_image_repository(repository) for repository in repositories.values()}
    busy = {container.get("ImageID") for container in listed.get("containers") or []}
    prunable, by_digest = [], {}
    for image in listed.get("images") or []:
        if image.get("Id") in busy:
            continue
        tags = image.get("RepoTags") or []
        prunable += [tag for tag in tags if _image_repository(tag) in wanted and tag not in kept]
        digests = {_image_repository(digest) for digest in image.get("RepoDigests") or []} & wanted
        if digests and all(tag.startswith("<none>") for tag in tags):
            by_digest.setdefault(min(digests), []).append(image)
    for held in by_digest.values():
        newest = sorted(held, key=lambda image: int(image.get("Created") or 0), reverse=True)
        prunable += [image["Id"] for image in newest[keep + 1 :]]
    return sorted(prunable)


def _migrations(name: str, model: dict, project_dir: str) -> dict:
    """How the pipeline runs a service's migrations: its image, environment and secret files, on its network."""
    migrations = model["migrations"]
    network = migrations.get("network") or (model.get("networks") or [None])[0]
    if network not in (model.get("networks") or []):
        raise AnsibleFilterError(f"service {name}: migrations run on one of its networks, got {network!r}")
    # The service's environment and secret files, with the migrations' own in their place (same target).
    own = migration_files(name, model, project_dir)
    replaced = {f["target"] for f in own}
    environment = {**(model.get("environment") or {}), **(migrations.get("environment") or {})}
    return {
        "service": name,
        "network": network,
        "backup_first": bool(migrations.get("backup_first", True)),
        "image": model["image"],
        "environment": {str(k): str(v) for k, v in environment.items()},
        "secrets": [
            {"name": f["name"], "file": f["path"], "target": f["target"]}
            for f in service_files(name, model, project_dir) + own
            if f["secret"] and (f in own or f["target"] not in replaced)
        ],
    }


def stack_stores(services: dict, project_dir: str = "/", selected: list | None = None) -> list[dict]:
    """Each data store of the stack (a service with a store) and the accounts every service logs in to it with:
    what the stack's access step brings each store to (see stack_stores.yml). The accounts carry passwords. With
    selected, only the accounts of the selected services (a service left as it runs keeps its credentials), and the
    stores with one."""
    _check_stack(services, "stack_stores")
    stores = []
    for name, model in sorted(services.items()):
        _check_service(name, model)
        store = model.get("store")
        if not store:
            continue
        server_name = store.get("server", name)
        if server_name not in services:
            raise AnsibleFilterError(f"service {name} store: its server {server_name!r} is no service of the stack")
        server = services[server_name]
        admin = [
            f
            for f in service_files(server_name, server, project_dir)
            if f["secret"] and f["target"] == store["admin_password"]
        ]
        if not admin:
            raise AnsibleFilterError(
                f"service {server_name} store: no secret has the target {store['admin_password']!r}"
            )
        network = store.get("network") or (model.get("networks") or [None])[0]
        if network not in (model.get("networks") or []):
            raise AnsibleFilterError(f"service {name} store: reached on one of its networks, got {network!r}")
        accounts = [
            {key: str(account[key]) for key in ("name", "password", "privileges", "group") if account.get(key)}
            | {"service": user}
            for user, user_model in sorted(services.items())
            for account in user_model.get("accounts") or []
            if account["store"] == name
        ]
        stores.append(
            {
                "service": name,
                "kind": store["kind"],
                "image": server["image"],
                "network": network,
                "port": int(store.get("port", STORE_KINDS[store["kind"]])),
                "database": str(store.get("database", "")),
                "admin_user": str(store["admin_user"]),
                "admin_password_file": admin[0]["path"],
                "accounts": accounts,
            }
        )
    unknown = sorted(
        {a["store"] for m in services.values() for a in m.get("accounts") or []} - {s["service"] for s in stores}
    )
    if unknown:
        raise AnsibleFilterError(f"stack_stores: accounts name a store no service is: {', '.join(unknown)}")
    if selected is not None:
        stores = [
            {**store, "accounts": [a for a in store["accounts"] if a["service"] in selected]}
            for store in stores
            if any(a["service"] in selected for a in store["accounts"])
        ]
    return stores


def stack_plan(services: dict, selected: list | None = None, project_dir: str = "/") -> dict:
    """Which services each step of a deploy acts on (see stack_plan.yml)."""
    _check_stack(services, "stack_plan")
    for name, model in services.items():
        _check_service(name, model)
    unknown = sorted(set(selected or []) - set(services))
    if unknown:
        raise AnsibleFilterError(f"stack_plan: no service {', '.join(unknown)} in the stack")
    chosen = set(services) if selected is None else set(selected)
    phase = {name: model["phase"] for name, model in services.items()}
    data = {name for name in chosen if phase[name] == "data"}
    # Monitoring and the like start beside the data services when they need nothing else (their health is waited
    # for side by side), rather than after the migrations.
    early = {
        name
        for name in chosen
        if phase[name] == "ops" and all(phase.get(dep) == "data" for dep in services[name].get("depends_on") or {})
    }
    rolled = {name for name in chosen if phase[name] == "app"}
    rest = chosen - data - early - rolled
    edges = [name for name in sorted(services) if services[name].get("upstreams")]
    edge = edges[0] if edges else None
    routed = {name: services[name]["http"] for name in sorted(rolled) if services[name].get("http")}
    return {
        "selected": sorted(chosen),
        "all": len(chosen) == len(services),
        "data": _ordered(services, data),
        "first": _ordered(services, data | early),
        "rolled": _ordered(services, rolled),
        "rest": _ordered(services, rest),
        "routes": {name: int(http["port"]) for name, http in routed.items()},
        "verify": [{"name": name, **http["verify"]} for name, http in sorted(routed.items()) if http.get("verify")],
        "migrations": [
            _migrations(name, services[name], project_dir)
            for name in _ordered(services, rolled)
            if services[name].get("migrations")
        ],
        "edge": edge,
        # Compose: where the edge's upstream files go (in its configuration directory, which it mounts), and what
        # loads them.
        "upstreams": {
            "dir": posixpath.join(project_dir, "configs", edge, services[edge]["upstreams"]["dir"]),
            "sync": list(services[edge]["upstreams"]["sync"]),
            "drained": list(services[edge]["upstreams"].get("drained", [])),
        }
        if edge
        else None,
        # What the deploy hands to the user of the service that owns it before the service runs.
        "owned_volumes": [owned for name in sorted(chosen) for owned in _owned_volumes(name, services[name])],
        "versions": {name: _image_tag(services[name]["image"]) for name in sorted(services) if phase[name] == "app"},
        # Where each app service's images come from: a release prunes the old ones (prunable_images).
        "repositories": {
            name: _image_repository(services[name]["image"]) for name in sorted(services) if phase[name] == "app"
        },
    }


def contribute(stack: dict | None, role: str, services: dict) -> dict:
    """The stack's services with the role's added (see contribute.yml)."""
    merged = dict(stack or {})
    if not isinstance(services, dict):
        raise AnsibleFilterError(f"contribute: role {role} must contribute a mapping of services")
    for name, model in services.items():
        if not isinstance(model, dict):
            raise AnsibleFilterError(f"contribute: role {role}'s service {name} must be a mapping")
        owner = (merged.get(name) or {}).get("role")
        if owner and owner != role:
            raise AnsibleFilterError(f"contribute: role {role} contributes service {name}, which role {owner} did")
        merged[name] = {**model, "role": role}
        _check_service(name, merged[name])
        if model.get("docker_api"):
            proxy, service, merged[name] = docker_api_proxy(name, merged[name])
            owner = (merged.get(proxy) or {}).get("role")
            if owner and owner != role:
                raise AnsibleFilterError(
                    f"contribute: role {role}'s {name} needs service {proxy}, which role {owner} did"
                )
            merged[proxy] = {**service, "role": role}
            _check_service(proxy, merged[proxy])
    return merged


class FilterModule:
    def filters(self):
        return {
            "compose_project": compose_project,
            "swarm_stack": swarm_stack,
            "stack_files": stack_files,
            "stack_plan": stack_plan,
            "stack_stores": stack_stores,
            "contribute": contribute,
            "prunable_images": prunable_images,
            "maintenance_open": maintenance_open,
        }
