"""Step 2: bare hosts — containers that behave like freshly installed Debian 13 servers.

systemd runs as PID 1, sshd answers with the lab's key, python3 is there and
Docker is not. Each host has its own address on the lab network and its own
/var/lib/docker volume, so the docker_host role can install an engine later.
A lab made with a deploy user has hosts hardened the usual way: that user logs in
with the lab's key and has sudo, and sshd refuses root.
"""

from __future__ import annotations

import json
import shlex
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from . import acme
from .common import STATE, LabError, docker, docker_lines, log, run
from .topology import Lab

SSH_KEY = STATE / "ssh" / "id_ed25519"
# The lab's own commands to its hosts (a host that was just made has keys no file knows yet). Ansible does check
# them: the inventory names the lab's known_hosts (write_inventory).
SSH_OPTIONS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"]
BOOT_TIMEOUT = 90

# What systemd and an inner Docker need; --privileged fails on this kernel (LAB.md).
CAPABILITIES = (
    "SYS_ADMIN",
    "NET_ADMIN",
    "SYS_PTRACE",
    "SYS_RAWIO",
    "SYS_TIME",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_CONTROL",
    "AUDIT_READ",
    "LINUX_IMMUTABLE",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_PACCT",
    "SYS_NICE",
    "SYS_TTY_CONFIG",
    "LEASE",
    "SYS_BOOT",
    "NET_BROADCAST",
    "SYS_MODULE",
    "DAC_READ_SEARCH",
)


@dataclass(frozen=True)
class Host:
    name: str
    address: str
    # Who the lab logs in as: root, or the deploy user of a hardened host (commands then run through sudo).
    user: str = "root"


def ensure_ssh_key() -> Path:
    if not SSH_KEY.exists():
        SSH_KEY.parent.mkdir(parents=True, exist_ok=True)
        SSH_KEY.parent.chmod(0o700)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "pliers-lab", "-f", str(SSH_KEY)])
    return SSH_KEY


def ensure_network(lab: Lab) -> None:
    if docker("network", "inspect", lab.network, check=False).returncode != 0:
        docker("network", "create", "--label", lab.label, lab.network)


def running_hosts(lab: Lab) -> list[str]:
    """Names of this lab's hosts (not its registry), in index order."""
    names = docker_lines(
        "ps", "-a", "--filter", f"label={lab.label}", "--filter", "label=pliers.lab.role=host", "--format", "{{.Names}}"
    )
    return sorted(names, key=lambda name: int(name.rsplit("-", 1)[1]))


def _run_host(lab: Lab, name: str, image: str, publish: tuple[str, ...] = (), deploy_user: str = "") -> None:
    volume = f"{name}-docker"
    docker("volume", "create", "--label", lab.label, volume)
    labels = (lab.label, "pliers.lab.role=host", f"pliers.lab.image={image}", f"pliers.lab.publish={','.join(publish)}",
              f"pliers.lab.deploy_user={deploy_user}")  # fmt: skip
    # systempaths=unconfined: without it the inner Docker 26 cannot start containers (LAB.md).
    security = ("seccomp=unconfined", "apparmor=unconfined", "systempaths=unconfined")
    tmpfs = ("/run", "/run/lock", "/tmp")  # noqa: S108 - tmpfs mounts inside the host
    cmd = ["run", "-d", "--name", name, "--hostname", name, "--network", lab.network, "--cgroupns=host"]
    cmd += ["-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "-v", f"{volume}:/var/lib/docker"]
    cmd += [arg for label in labels for arg in ("--label", label)]
    cmd += [arg for option in security for arg in ("--security-opt", option)]
    cmd += [arg for path in tmpfs for arg in ("--tmpfs", path)]
    cmd += [arg for capability in CAPABILITIES for arg in ("--cap-add", capability)]
    # Only on this machine's loopback: the lab never exposes a host to the network.
    cmd += [arg for ports in publish for arg in ("-p", f"127.0.0.1:{ports}")]
    docker(*cmd, image)


def host_address(lab: Lab, name: str) -> str:
    networks = json.loads(docker("inspect", "--format", "{{json .NetworkSettings.Networks}}", name).stdout)
    address = networks.get(lab.network, {}).get("IPAddress")
    if not address:
        raise LabError(f"{name} has no address on the lab network {lab.network}")
    return address


def made_for(name: str) -> str:
    """The deploy user the host was made with ("" for none: root logs in)."""
    label = '{{index .Config.Labels "pliers.lab.deploy_user"}}'
    return docker("inspect", "--format", label, name).stdout.strip().replace("<no value>", "")


def lab_host(lab: Lab, name: str) -> Host:
    """The running host `name` of the lab, at its current address (a host restarted may get another)."""
    return Host(name, host_address(lab, name), made_for(name) or "root")


def ssh(host: Host, command: str, *, check: bool = True, timeout: float = 600, input: str | None = None):
    """command (a shell line) on the host as root: through sudo on a host whose root login is refused."""
    if host.user != "root":
        command = f"sudo -n sh -c {shlex.quote(command)}"
    return run(
        [
            "ssh",
            "-i",
            str(SSH_KEY),
            *SSH_OPTIONS,
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=5",
            f"{host.user}@{host.address}",
            command,
        ],
        check=check,
        timeout=timeout,
        input=input,
    )


# A deploy user with passwordless sudo and the lab's key; sshd refuses root (the first setting read wins: 00- is read
# before the image's 10-lab.conf).
HARDEN = """set -e
id -u {user} >/dev/null 2>&1 || useradd --create-home --shell /bin/bash {user}
install -d -m 0700 -o {user} -g {user} /home/{user}/.ssh
install -m 0600 -o {user} -g {user} /root/.ssh/authorized_keys /home/{user}/.ssh/authorized_keys
echo '{user} ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/{user} && chmod 0440 /etc/sudoers.d/{user}
printf 'PermitRootLogin no\\n' > /etc/ssh/sshd_config.d/00-lab-no-root.conf
systemctl reload ssh
"""


def _wait_ready(lab: Lab, name: str) -> Host:
    """systemd finished booting, our key is authorised (for the deploy user the host was made with, root's login
    then refused) and SSH answers."""
    deadline = time.monotonic() + BOOT_TIMEOUT
    state = ""
    while time.monotonic() < deadline:
        state = docker("exec", name, "systemctl", "is-system-running", check=False).stdout.strip()
        if state in ("running", "degraded"):
            break
        time.sleep(0.3)
    else:
        raise LabError(f"{name}: systemd did not finish booting in {BOOT_TIMEOUT}s (state {state!r})")
    public_key = SSH_KEY.with_suffix(".pub").read_text()
    docker(
        "exec",
        "-i",
        name,
        "sh",
        "-c",
        "umask 077 && mkdir -p /root/.ssh && cat > /root/.ssh/authorized_keys",
        input=public_key,
    )
    user = made_for(name)
    if user:
        docker("exec", name, "sh", "-c", HARDEN.format(user=user))
    host = lab_host(lab, name)
    last = ""
    while time.monotonic() < deadline:
        result = ssh(host, "true", check=False, timeout=15)
        if result.returncode == 0:
            return host
        last = result.stderr.strip()
        time.sleep(0.3)
    raise LabError(f"{name}: SSH to {host.address} did not answer in {BOOT_TIMEOUT}s ({last})")


def ensure_hosts(lab: Lab, count: int, image: str, publish: tuple[str, ...] = (), deploy_user: str = "") -> list[Host]:
    """Hosts 1..count running (started or created as needed); returns every host of the lab.

    publish ("MACHINE_PORT:HOST_PORT", ...) is published on 127.0.0.1 by the first host; deploy_user: hosts whose
    root login is refused, reached as that user with sudo.
    """
    ensure_ssh_key()
    ensure_network(lab)
    existing = set(running_hosts(lab))
    wanted = [lab.host_name(i) for i in range(1, count + 1)]
    for name in wanted:
        ports = publish if name == wanted[0] else ()
        if name not in existing:
            log(f"starting host {name}")
            _run_host(lab, name, image, ports, deploy_user)
            continue
        labels = '{{index .Config.Labels "pliers.lab.image"}} {{index .Config.Labels "pliers.lab.publish"}}'
        running, *made_with = docker("inspect", "--format", "{{.State.Running}} " + labels, name).stdout.split(" ")
        made_with.append(made_for(name))
        if running != "true":
            log(f"starting stopped host {name}")
            docker("start", name)
        if [part.strip() for part in made_with] != [image, ",".join(ports), deploy_user]:
            log(f"{name} was made with another image, published ports or deploy user; `lab reset {name}` recreates it")
    extra = sorted(existing - set(wanted))
    if extra:
        log(f"keeping {', '.join(extra)} (asked for {count}); `make lab-down` removes every host")
    names = running_hosts(lab)
    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        return list(pool.map(lambda name: _wait_ready(lab, name), names))


def made_from(name: str) -> str:
    """The key of the lab image the host was made from (host, host-bookworm)."""
    tag = docker("inspect", "--format", '{{index .Config.Labels "pliers.lab.image"}}', name).stdout.strip()
    return tag.rsplit("/", 1)[-1].split(":", 1)[0]


def reset_hosts(lab: Lab, names: list[str], image: str | dict[str, str], publish: tuple[str, ...] = ()) -> list[Host]:
    """Recreate hosts as freshly installed (container and its Docker volume), from one image or each from its own
    (host name -> image); returns the lab's running hosts."""
    known = set(running_hosts(lab))
    unknown = [name for name in names if name not in known]
    if unknown:
        raise LabError(
            f"not hosts of lab {lab.name}: {', '.join(unknown)} (hosts: {', '.join(sorted(known)) or 'none'})"
        )
    for name in names:
        user = made_for(name)
        made = image if isinstance(image, str) else image[name]
        docker("rm", "-f", "-v", name)
        docker("volume", "rm", f"{name}-docker")
        _run_host(lab, name, made, publish if name == lab.host_name(1) else (), user)
    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        list(pool.map(lambda name: _wait_ready(lab, name), names))
    # Every host that runs (a stopped one has no address).
    up = set(docker_lines("ps", "--filter", f"label={lab.label}", "--format", "{{.Names}}"))
    hosts = [lab_host(lab, name) for name in running_hosts(lab) if name in up]
    # The lab's ACME server follows its edge host to the address it came back on.
    for host in hosts:
        if host.name in names:
            acme.follow_edge(lab, host.name, host.address)
    return hosts


def write_known_hosts(lab: Lab, hosts: list[Host]) -> Path:
    """The hosts' SSH host keys, as an operator's known_hosts holds them: read through the engine, not over the
    network the keys vouch for."""
    lines = []
    for host in hosts:
        keys = docker("exec", host.name, "sh", "-c", "cat /etc/ssh/ssh_host_*_key.pub").stdout.splitlines()
        lines += [f"{host.address} {' '.join(key.split()[:2])}" for key in keys if key.strip()]
    path = lab.state / "known_hosts"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def write_inventory(lab: Lab, hosts: list[Host], ca_file: Path) -> Path:
    """The Ansible inventory playbooks and Molecule use (SSH, as AWX reaches hosts, checking the hosts' keys)."""
    known_hosts = write_known_hosts(lab, hosts)
    ssh_options = f"-o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes -o LogLevel=ERROR"
    lines = [
        f"# Written by `python3 -m lab up` for lab {lab.name}; rewritten on every run.",
        "# Registry credentials are not here: pass -e @" + str(lab.credentials),
        "all:",
        "  hosts:",
    ]
    for host in hosts:
        lines += [f"    {host.name}:", f"      ansible_host: {host.address}", f"      ansible_user: {host.user}"]
        # A hardened host: its deploy user becomes root through sudo.
        lines += ["      ansible_become: true"] if host.user != "root" else []
    lines += [
        "  vars:",
        f"    ansible_ssh_private_key_file: {SSH_KEY}",
        "    ansible_ssh_common_args: " + json.dumps(ssh_options),
        "    ansible_python_interpreter: /usr/bin/python3",
        f"    pliers_lab_name: {lab.name}",
        f"    pliers_lab_registry: {lab.registry}",
        f"    pliers_lab_registry_ca_file: {ca_file}",
        f"    pliers_lab_registry_credentials_file: {lab.credentials}",
        # The lab's ACME server, the name the stack is served as, and the root its certificates chain to.
        f"    pliers_lab_acme_directory: {acme.DIRECTORY}",
        f"    pliers_lab_domain: {acme.domain(lab)}",
        f"    pliers_lab_acme_root_file: {acme.root_file(lab)}",
    ]
    lab.state.mkdir(parents=True, exist_ok=True)
    lab.inventory.write_text("\n".join(lines) + "\n")
    return lab.inventory
