"""The CIS Docker Benchmark v1.6.0 on what one host's engine reports: a pure checker (no SSH, no Docker call).

In: `docker info --format '{{json .}}'` (parsed), /etc/docker/daemon.json (parsed, {} when absent), the engine's
command line (optional: flags given there count as daemon.json keys would) and `docker inspect` of every running
container (the Engine API's ContainerJSON). Out: findings, `Finding(item, subject, detail)` - the CIS item, the
service the container runs (its Compose service, its Swarm service without the stack's prefix, else its name) or
"daemon", and what was seen. An allow-list (cis-allowlist.yml) names the exceptions the design needs, each with a
one-line reason; `outside_allowlist` is what no entry covers, `stale_entries` the entries that covered nothing.

The items are numbered as in CIS v1.6.0 (and docker-bench-security 1.6.0, whose tests these follow where an
inspect can tell): section 5 starts with 5.1 "swarm mode not enabled, if not needed". What is checked:

  2.2  icc false (inter-container traffic off on the default bridge)
  2.3  log level info (unset, or "info"; debug on is a finding)
  2.4  iptables not turned off
  2.5  no insecure registry (the engine's built-in loopback ranges aside)
  2.6  no aufs storage driver
  2.7  no TCP socket without TLS verification (tlsverify)
  2.9  user namespace remapping (userns-remap)
  2.10 no cgroup-parent set for the daemon
  2.11 no dm.basesize storage option
  2.12 an authorization plugin
  2.13 centralized logging: the default log driver is not local-only (json-file, local, none); any other driver
       (syslog, journald, fluentd, gelf, ...) hands logs to a collector. (docker-bench flags json-file only.)
  2.14 no-new-privileges by default
  2.15 live-restore (passes in swarm mode, which refuses it - as docker-bench)
  2.16 userland-proxy false
  2.17 a seccomp profile in force (the built-in one is fine)
  2.18 experimental features off
  5.1  swarm mode inactive
  4.1  a user for the container: Config.User (the image's USER when the container sets none) is not root, "0",
       "0:...", "root:..." or empty
  5.2  AppArmor: on an engine with AppArmor, every container has a profile (not empty, not unconfined); an engine
       with neither AppArmor nor SELinux is one finding for the daemon (no container can be confined)
  5.3  SELinux, where the engine runs it: a process label, no label=disable
  5.4  capabilities: CapDrop holds ALL; each added capability is a finding of its own (detail "adds NAME")
  5.5  not privileged
  5.6  no sensitive host directory (/, /boot, /dev, /etc, /lib, /proc, /sys, /usr, or below one of those but /)
       bind-mounted read-write (read-only is allowed, as in CIS and docker-bench)
  5.7  no sshd in the container's command (docker-bench looks at the processes; an inspect has the command)
  5.8  no published host port below 1024
  5.10 not in the host's network namespace
  5.11 a memory limit
  5.12 CPU limited or weighted (NanoCpus, CpuQuota or CpuShares)
  5.13 read-only root file system
  5.14 published ports bound to a chosen address, not every address (empty, 0.0.0.0, ::)
  5.15 restart policy: a container that no orchestrator restarts has one, and on-failure retries at most 5 times
       (docker-bench's test); a Swarm task's container (label com.docker.swarm.task.id) is restarted by Swarm, as
       its service's restart_policy says, so its own policy ("no") is not a finding
  5.16 not in the host's PID namespace
  5.17 not in the host's IPC namespace
  5.18 no host device
  5.20 no shared mount propagation
  5.21 not in the host's UTS namespace
  5.22 seccomp not unconfined
  5.25 no cgroup parent of its own
  5.26 no-new-privileges: in the container's security options, or the daemon's default (how Swarm tasks get it);
       an explicit no-new-privileges:false is a finding whatever the default
  5.27 a health check (the container's or its image's)
  5.29 a PIDs limit above 0
  5.30 not on the default bridge
  5.31 not in the host's user namespace
  5.32 no Docker socket mounted (read-only or not: the API is the API)

Not checked (manual in CIS, or not visible in an inspect): 2.1 rootless, 2.8 default ulimits, 5.9 only needed
ports, 5.19 ulimits, 5.23/5.24 docker exec options, 5.28 image freshness.
"""

from __future__ import annotations

import ipaddress
import posixpath
import shlex
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import yaml

BENCHMARK = "CIS Docker Benchmark v1.6.0"
MODES = ("compose", "swarm")
DAEMON = "daemon"

ITEMS = {
    "2.2": "network traffic is restricted between containers on the default bridge",
    "2.3": "the logging level is set to 'info'",
    "2.4": "Docker is allowed to make changes to iptables",
    "2.5": "insecure registries are not used",
    "2.6": "aufs storage driver is not used",
    "2.7": "TLS authentication for the Docker daemon is configured",
    "2.9": "user namespace support is enabled",
    "2.10": "the default cgroup usage has been confirmed",
    "2.11": "base device size is not changed until needed",
    "2.12": "authorization for Docker client commands is enabled",
    "2.13": "centralized and remote logging is configured",
    "2.14": "containers are restricted from acquiring new privileges",
    "2.15": "live restore is enabled",
    "2.16": "Userland Proxy is disabled",
    "2.17": "a daemon-wide seccomp profile is applied",
    "2.18": "experimental features are not implemented in production",
    "4.1": "a user for the container has been created",
    "5.1": "swarm mode is not enabled, if not needed",
    "5.2": "an AppArmor profile is enabled",
    "5.3": "SELinux security options are set",
    "5.4": "Linux kernel capabilities are restricted within containers",
    "5.5": "privileged containers are not used",
    "5.6": "sensitive host system directories are not mounted on containers",
    "5.7": "sshd is not run within containers",
    "5.8": "privileged ports are not mapped within containers",
    "5.10": "the host's network namespace is not shared",
    "5.11": "the memory usage for containers is limited",
    "5.12": "CPU priority is set appropriately on containers",
    "5.13": "the container's root filesystem is mounted as read only",
    "5.14": "incoming container traffic is bound to a specific host interface",
    "5.15": "the 'on-failure' container restart policy is set to '5'",
    "5.16": "the host's process namespace is not shared",
    "5.17": "the host's IPC namespace is not shared",
    "5.18": "host devices are not directly exposed to containers",
    "5.20": "mount propagation mode is not set to shared",
    "5.21": "the host's UTS namespace is not shared",
    "5.22": "the default seccomp profile is not disabled",
    "5.25": "cgroup usage is confirmed",
    "5.26": "the container is restricted from acquiring additional privileges",
    "5.27": "container health is checked at runtime",
    "5.29": "the PIDs cgroup limit is used",
    "5.30": "Docker's default bridge 'docker0' is not used",
    "5.31": "the host's user namespaces are not shared",
    "5.32": "the Docker socket is not mounted inside any containers",
}
# Items an allow-list entry may give the subject "*" for: facts of the engine or the kernel under it, not of one
# service (a container item is allowed for a named service only).
WILDCARD_ITEMS = frozenset(item for item in ITEMS if item.startswith("2.")) | {"5.1", "5.2", "5.3", "5.22"}

SENSITIVE_DIRECTORIES = ("/", "/boot", "/dev", "/etc", "/lib", "/proc", "/sys", "/usr")
LOCAL_LOG_DRIVERS = frozenset(("json-file", "local", "none"))
EVERY_ADDRESS = frozenset(("", "0.0.0.0", "::"))  # noqa: S104 - what is looked for, not bound
LOOPBACK_NETWORKS = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
MAX_RESTART_RETRIES = 5


class Finding(NamedTuple):
    item: str
    subject: str
    detail: str

    def __str__(self) -> str:
        return f"{self.item} {self.subject}: {self.detail}"


# --- The daemon's settings: daemon.json, with the command line's flags over it --------------------------------

# dockerd flag -> (daemon.json key, kind): "bool" flags take a value only as --flag=value, "value" flags as
# --flag=value or --flag value, "list" flags may repeat.
FLAGS = {
    "--icc": ("icc", "bool"),
    "--iptables": ("iptables", "bool"),
    "--userland-proxy": ("userland-proxy", "bool"),
    "--no-new-privileges": ("no-new-privileges", "bool"),
    "--live-restore": ("live-restore", "bool"),
    "--experimental": ("experimental", "bool"),
    "--tls": ("tls", "bool"),
    "--tlsverify": ("tlsverify", "bool"),
    "--selinux-enabled": ("selinux-enabled", "bool"),
    "-D": ("debug", "bool"),
    "--debug": ("debug", "bool"),
    "-l": ("log-level", "value"),
    "--log-level": ("log-level", "value"),
    "--log-driver": ("log-driver", "value"),
    "--userns-remap": ("userns-remap", "value"),
    "--cgroup-parent": ("cgroup-parent", "value"),
    "--seccomp-profile": ("seccomp-profile", "value"),
    "-H": ("hosts", "list"),
    "--host": ("hosts", "list"),
    "--authorization-plugin": ("authorization-plugins", "list"),
    "--insecure-registry": ("insecure-registries", "list"),
    "--storage-opt": ("storage-opts", "list"),
}


def daemon_settings(daemon_json: dict | None, command_line: str | list[str] = "") -> dict:
    """daemon.json's settings, with the flags of the engine's command line (`ps -o args= -C dockerd`) over them."""
    settings = dict(daemon_json or {})
    words = shlex.split(command_line) if isinstance(command_line, str) else list(command_line)
    index = 0
    while index < len(words):
        word = words[index]
        index += 1
        name, given, value = word.partition("=")
        if name not in FLAGS:
            continue
        key, kind = FLAGS[name]
        if kind == "bool":
            settings[key] = value.lower() != "false" if given else True
            continue
        if not given:
            if index >= len(words):
                break
            value = words[index]
            index += 1
        if kind == "list":
            settings[key] = [*_as_list(settings.get(key)), value]
        else:
            settings[key] = value
    return settings


def _as_list(value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _is_false(value) -> bool:
    return value is False or (isinstance(value, str) and value.lower() == "false")


def _is_true(value) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


@dataclass(frozen=True)
class Engine:
    """What the container checks need to know of their engine."""

    apparmor: bool
    selinux: bool
    userns: bool  # container uids remapped (userns-remap) or the engine rootless
    seccomp: str | None  # the profile in force ("builtin", a path, "unconfined"), None without seccomp
    no_new_privileges: bool
    swarm_active: bool

    @classmethod
    def of(cls, info: dict, settings: dict) -> Engine:
        options = [_security_option(str(option)) for option in info.get("SecurityOptions") or []]
        names = {option.get("name") for option in options}
        seccomp = next((option for option in options if option.get("name") == "seccomp"), None)
        return cls(
            apparmor="apparmor" in names,
            selinux="selinux" in names,
            userns=bool(settings.get("userns-remap")) or bool(names & {"userns", "rootless"}),
            seccomp=None if seccomp is None else seccomp.get("profile", "default"),
            no_new_privileges=_is_true(settings.get("no-new-privileges")) or "no-new-privileges" in names,
            swarm_active=((info.get("Swarm") or {}).get("LocalNodeState") or "inactive") not in ("inactive", ""),
        )


def _security_option(option: str) -> dict:
    """ "name=seccomp,profile=builtin" -> {"name": "seccomp", "profile": "builtin"}."""
    return dict(part.partition("=")[::2] for part in option.split(","))


# --- Section 2 (and 5.1, 5.2 for the engine as a whole) ---------------------------------------------------------


def check_daemon(info: dict, daemon_json: dict | None, command_line: str | list[str] = "") -> list[Finding]:
    """The engine's findings (subject "daemon")."""
    settings = daemon_settings(daemon_json, command_line)
    engine = Engine.of(info, settings)
    return [Finding(item, DAEMON, detail) for item, detail in _daemon_details(info, settings, engine)]


def _daemon_details(info: dict, settings: dict, engine: Engine) -> Iterator[tuple[str, str]]:
    if not _is_false(settings.get("icc")):
        yield "2.2", "icc is not false: containers on the default bridge talk to each other"
    level = str(settings.get("log-level") or "info").lower()
    if level != "info":
        yield "2.3", f"log-level is {level}"
    elif _is_true(settings.get("debug")) or info.get("Debug") is True:
        yield "2.3", "debug is on"
    if _is_false(settings.get("iptables")):
        yield "2.4", "iptables is false"
    for registry in _insecure_registries(info, settings):
        yield "2.5", f"insecure registry {registry}"
    if info.get("Driver") == "aufs":
        yield "2.6", "storage driver aufs"
    if not _is_true(settings.get("tlsverify")):
        for host in _as_list(settings.get("hosts")):
            if str(host).startswith("tcp://"):
                yield "2.7", f"listens on {host} without tlsverify"
    if not engine.userns:
        yield "2.9", "no userns-remap: root in a container is root on the host"
    if settings.get("cgroup-parent"):
        yield "2.10", f"cgroup-parent {settings['cgroup-parent']}"
    if any("dm.basesize" in str(option) for option in _as_list(settings.get("storage-opts"))):
        yield "2.11", "storage option dm.basesize is set"
    plugins = _as_list(settings.get("authorization-plugins")) or _as_list(
        (info.get("Plugins") or {}).get("Authorization")
    )
    if not plugins:
        yield "2.12", "no authorization plugin: any client of the socket may do anything"
    driver = info.get("LoggingDriver") or settings.get("log-driver") or "json-file"
    if driver in LOCAL_LOG_DRIVERS:
        yield "2.13", f"log driver {driver} keeps the logs on the host"
    if not engine.no_new_privileges:
        yield "2.14", "no-new-privileges is not the default"
    live_restore = info.get("LiveRestoreEnabled") is True or _is_true(settings.get("live-restore"))
    if not live_restore and not engine.swarm_active:  # Swarm refuses live-restore (docker-bench passes it there)
        yield "2.15", "live-restore is off"
    if not _is_false(settings.get("userland-proxy")):
        yield "2.16", "userland-proxy is not false"
    if engine.seccomp is None:
        yield "2.17", "the engine applies no seccomp profile"
    elif engine.seccomp == "unconfined":
        yield "2.17", "the engine's seccomp profile is unconfined"
    if info.get("ExperimentalBuild") is True or _is_true(settings.get("experimental")):
        yield "2.18", "experimental features are on"
    if engine.swarm_active:
        state = (info.get("Swarm") or {}).get("LocalNodeState")
        yield "5.1", f"swarm mode is {state}"
    if not engine.apparmor and not engine.selinux:
        yield "5.2", "the engine has neither AppArmor nor SELinux: no container can be confined by a profile"


def _insecure_registries(info: dict, settings: dict) -> list[str]:
    registry = info.get("RegistryConfig") or {}
    names = [str(name) for name in _as_list(settings.get("insecure-registries"))]
    names += [str(cidr) for cidr in registry.get("InsecureRegistryCIDRs") or []]
    names += [name for name, index in (registry.get("IndexConfigs") or {}).items() if index.get("Secure") is False]
    return sorted({name for name in names if not _loopback(name)})


def _loopback(registry: str) -> bool:
    """A registry on this host only: localhost, or an address or network within 127.0.0.0/8 or ::1."""
    host = registry
    if host.startswith("["):
        host = host[1 : host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    if host == "localhost":
        return True
    try:
        network = ipaddress.ip_network(host, strict=False)
    except ValueError:
        return False
    return any(network.version == loop.version and network.subnet_of(loop) for loop in LOOPBACK_NETWORKS)


# --- Section 4.1 and 5: each running container ------------------------------------------------------------------


def subject(container: dict) -> str:
    """The service a container runs: its Compose service, its Swarm service less the stack's prefix, else its
    name."""
    labels = (container.get("Config") or {}).get("Labels") or {}
    if labels.get("com.docker.compose.service"):
        return labels["com.docker.compose.service"]
    service = labels.get("com.docker.swarm.service.name")
    if service:
        stack = labels.get("com.docker.stack.namespace")
        return service[len(stack) + 1 :] if stack and service.startswith(f"{stack}_") else service
    return str(container.get("Name") or container.get("Id", "?")[:12]).lstrip("/")


def check_containers(
    containers: Iterable[dict], info: dict, daemon_json: dict | None, command_line: str | list[str] = ""
) -> list[Finding]:
    """The findings of every container (its service as the subject, its name in the detail)."""
    engine = Engine.of(info, daemon_settings(daemon_json, command_line))
    findings = []
    for container in containers:
        name = str(container.get("Name") or container.get("Id", "?")[:12]).lstrip("/")
        for item, detail in _container_details(container, engine):
            findings.append(Finding(item, subject(container), f"{detail} ({name})"))
    return findings


def check_host(
    info: dict, daemon_json: dict | None, containers: Iterable[dict], command_line: str | list[str] = ""
) -> list[Finding]:
    """Everything one host's engine reports: the daemon's findings, then its containers'."""
    return check_daemon(info, daemon_json, command_line) + check_containers(containers, info, daemon_json, command_line)


def _container_details(container: dict, engine: Engine) -> Iterator[tuple[str, str]]:
    config = container.get("Config") or {}
    host = container.get("HostConfig") or {}
    options = [str(option) for option in host.get("SecurityOpt") or []]
    mounts = container.get("Mounts") or []

    user = str(config.get("User") or "")
    if user.split(":", 1)[0] in ("", "0", "root"):
        yield "4.1", f"runs as root (user {user!r})" if user else "runs as root (no user, in the image either)"

    if engine.apparmor:
        profile = str(container.get("AppArmorProfile") or "")
        if profile in ("", "unconfined") or _security_value(options, "apparmor") == "unconfined":
            yield "5.2", f"AppArmor profile {profile or 'none'}"
    labelled = _security_value(options, "label") != "disable" and container.get("ProcessLabel")
    if engine.selinux and not labelled:
        yield "5.3", "no SELinux label"

    dropped = {_capability(cap) for cap in host.get("CapDrop") or []}
    if "ALL" not in dropped:
        yield "5.4", f"does not drop ALL capabilities (CapDrop {sorted(dropped)})"
    for capability in sorted({_capability(cap) for cap in host.get("CapAdd") or []}):
        yield "5.4", f"adds {capability}"

    if host.get("Privileged") is True:
        yield "5.5", "privileged"

    for mount in mounts:
        source = posixpath.normpath(str(mount.get("Source") or "/nowhere"))
        if mount.get("Type", "bind") == "bind" and mount.get("RW") is not False and _sensitive(source):
            yield "5.6", f"mounts {source} read-write at {mount.get('Destination')}"

    command = [str(word) for word in [container.get("Path"), *(container.get("Args") or [])] if word]
    command += [str(word) for word in (config.get("Entrypoint") or []) + (config.get("Cmd") or [])]
    if any(posixpath.basename(word.split()[0] if word.split() else word) == "sshd" for word in command):
        yield "5.7", "runs sshd"

    published = _published(container)
    for target, port, _ in published:
        if port.isdigit() and int(port) < 1024:
            yield "5.8", f"publishes privileged host port {port} (-> {target})"
    for target, port, everywhere in published:
        if everywhere:
            yield "5.14", f"publishes host port {port} (-> {target}) on every address"

    if host.get("NetworkMode") == "host":
        yield "5.10", "shares the host's network namespace"
    if not host.get("Memory"):
        yield "5.11", "no memory limit"
    if not (host.get("NanoCpus") or host.get("CpuQuota") or host.get("CpuShares")):
        yield "5.12", "no CPU limit or weight"
    if host.get("ReadonlyRootfs") is not True:
        yield "5.13", "root file system is writable"

    labels = config.get("Labels") or {}
    if "com.docker.swarm.task.id" not in labels:
        policy = host.get("RestartPolicy") or {}
        name = policy.get("Name") or "no"
        retries = int(policy.get("MaximumRetryCount") or 0)
        if name == "no":
            yield "5.15", "no restart policy: it stays down after a crash"
        elif name == "on-failure" and retries > MAX_RESTART_RETRIES:
            yield "5.15", f"restarts on failure up to {retries} times (more than {MAX_RESTART_RETRIES})"

    for item, key, what in (("5.16", "PidMode", "process"), ("5.17", "IpcMode", "IPC"), ("5.21", "UTSMode", "UTS")):
        if host.get(key) == "host":
            yield item, f"shares the host's {what} namespace"
    if host.get("Devices"):
        devices = [device.get("PathOnHost") for device in host["Devices"]]
        yield "5.18", f"host devices {devices}"
    for mount in mounts:
        if str(mount.get("Propagation") or "") in ("shared", "rshared"):
            yield "5.20", f"{mount.get('Destination')} has {mount['Propagation']} mount propagation"
    if _security_value(options, "seccomp") == "unconfined":
        yield "5.22", "seccomp unconfined"
    if host.get("CgroupParent"):
        yield "5.25", f"cgroup parent {host['CgroupParent']}"

    own = _security_value(options, "no-new-privileges")
    if own is not None and _is_false(own):
        yield "5.26", "no-new-privileges:false"
    elif own is None and not engine.no_new_privileges:
        yield "5.26", "no no-new-privileges, and the daemon does not default to it"

    test = (config.get("Healthcheck") or {}).get("Test") or []
    if (not test or test[0] == "NONE") and not (container.get("State") or {}).get("Health"):
        yield "5.27", "no health check"
    pids = host.get("PidsLimit")
    if not pids or int(pids) <= 0:
        yield "5.29", "no PIDs limit"

    networks = set(((container.get("NetworkSettings") or {}).get("Networks") or {}).keys())
    if "bridge" in networks or (not networks and host.get("NetworkMode") in ("default", "bridge")):
        yield "5.30", "on the default bridge"
    if host.get("UsernsMode") == "host":
        yield "5.31", "shares the host's user namespace"
    for mount in mounts:
        if posixpath.basename(str(mount.get("Source") or "")) == "docker.sock":
            access = "read-write" if mount.get("RW") is not False else "read-only"
            yield "5.32", f"mounts the Docker socket {mount.get('Source')} ({access})"


def _capability(name: str) -> str:
    name = str(name).upper()
    return name[4:] if name.startswith("CAP_") else name


def _security_value(options: list[str], key: str) -> str | None:
    """The value of one security option ("seccomp=unconfined", "seccomp:unconfined"; "no-new-privileges" alone
    is "true"), None when absent."""
    for option in options:
        for separator in ("=", ":"):
            name, found, value = option.partition(separator)
            if found and name == key:
                return value
        if option == key:
            return "true"
    return None


def _sensitive(source: str) -> bool:
    return source in SENSITIVE_DIRECTORIES or any(
        source.startswith(f"{directory}/") for directory in SENSITIVE_DIRECTORIES if directory != "/"
    )


def _published(container: dict) -> list[tuple[str, str, bool]]:
    """(container port, host port, bound on every address) of each published port, once: what the engine bound
    (NetworkSettings.Ports, where 0.0.0.0 and :: of one port are one), else what was asked (HostConfig.PortBindings).
    """
    ports = (container.get("NetworkSettings") or {}).get("Ports") or {}
    if not any(ports.values()):
        ports = (container.get("HostConfig") or {}).get("PortBindings") or {}
    addresses: dict[tuple[str, str], set[str]] = {}
    for target, bindings in sorted(ports.items()):
        for binding in bindings or []:
            port = str(binding.get("HostPort") or "")
            addresses.setdefault((target, port), set()).add(str(binding.get("HostIp") or ""))
    return [(target, port, bool(seen & EVERY_ADDRESS)) for (target, port), seen in addresses.items()]


# --- The allow-list -----------------------------------------------------------------------------------------------


class AllowlistError(ValueError):
    """An allow-list that cannot be trusted: an entry without a one-line reason, an unknown item or mode, ..."""


@dataclass(frozen=True)
class Entry:
    item: str
    subject: str
    reason: str
    modes: tuple[str, ...] = MODES
    detail: str = ""  # a part of the finding's detail the entry is limited to (e.g. one capability)

    def applies(self, mode: str | None) -> bool:
        return mode is None or mode in self.modes

    def covers(self, finding: Finding, mode: str | None = None) -> bool:
        return (
            self.applies(mode)
            and finding.item == self.item
            and self.subject in ("*", finding.subject)
            and self.detail in finding.detail
        )

    def __str__(self) -> str:
        detail = f" [{self.detail}]" if self.detail else ""
        return f"{self.item} {self.subject}{detail} ({', '.join(self.modes)}): {self.reason}"


ENTRY_KEYS = frozenset(("item", "subject", "reason", "modes", "detail"))


def load_allowlist(path: str | Path) -> list[Entry]:
    """The allow-list file: a YAML list of {item, subject, reason, modes (optional), detail (optional)}.

    Refused (AllowlistError, naming the entry): an unknown key or CIS item, a subject "*" for a container item, a
    reason that is missing, empty or longer than one line, an unknown mode, and two entries for the same finding.
    """
    data = yaml.safe_load(Path(path).read_text())
    if data is None:
        return []
    if not isinstance(data, list):
        raise AllowlistError(f"{path}: a list of entries expected, got {type(data).__name__}")
    entries: list[Entry] = []
    for index, raw in enumerate(data):
        where = f"{path} entry {index + 1}"
        entry = _entry(where, raw)
        for other in entries:
            if (other.item, other.subject, other.detail) == (entry.item, entry.subject, entry.detail) and set(
                other.modes
            ) & set(entry.modes):
                raise AllowlistError(f"{where}: {entry.item} {entry.subject} is already allowed ({other})")
        entries.append(entry)
    return entries


def _entry(where: str, raw: Any) -> Entry:
    if not isinstance(raw, dict):
        raise AllowlistError(f"{where}: a mapping expected, got {raw!r}")
    unknown = set(raw) - ENTRY_KEYS
    if unknown:
        raise AllowlistError(f"{where}: unknown keys {sorted(unknown)}")
    item = str(raw.get("item", ""))
    if item not in ITEMS:
        raise AllowlistError(f"{where}: {item!r} is not a {BENCHMARK} item this checker reports")
    subject_ = str(raw.get("subject") or "").strip()
    if not subject_:
        raise AllowlistError(f"{where}: no subject")
    if subject_ == "*" and item not in WILDCARD_ITEMS:
        raise AllowlistError(f"{where}: subject '*' is for engine-wide items only, not {item}: name the service")
    reason = raw.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise AllowlistError(f"{where} ({item} {subject_}): every exception needs its reason")
    if "\n" in reason.strip():
        raise AllowlistError(f"{where} ({item} {subject_}): the reason must be one line")
    modes = raw.get("modes", list(MODES))
    if isinstance(modes, str) or not isinstance(modes, list) or not modes or set(modes) - set(MODES):
        raise AllowlistError(f"{where} ({item} {subject_}): modes must be a non-empty list of {list(MODES)}")
    return Entry(item, subject_, reason.strip(), tuple(m for m in MODES if m in modes), str(raw.get("detail") or ""))


def outside_allowlist(findings: Iterable[Finding], allowlist: Iterable[Entry], mode: str | None = None) -> list:
    """The findings no entry (for this mode) covers."""
    entries = [entry for entry in allowlist if entry.applies(mode)]
    return [finding for finding in findings if not any(entry.covers(finding) for entry in entries)]


def stale_entries(findings: Iterable[Finding], allowlist: Iterable[Entry], mode: str | None = None) -> list[Entry]:
    """The entries (for this mode) that cover none of the findings: give it every host's findings of one run."""
    findings = list(findings)
    return [
        entry for entry in allowlist if entry.applies(mode) and not any(entry.covers(finding) for finding in findings)
    ]
