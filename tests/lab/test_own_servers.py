"""A server of a real team's (#15): Debian 12, hardened the usual way (root's SSH login refused, a deploy user with
sudo) and running a Docker engine someone else installed and configured, with a daemon.json of their own. Debian 12's
own packages have no Compose v2, so the role refuses to install the engine there, naming what to do, with nothing
installed; its owner installed Docker from binaries instead, in the manner of Docker's binary install (Docker's
download site is not reachable here, so the binaries are Debian 13's, on Debian 12's containerd and runc). The local
inventory's whole stack (Compose) is deployed onto it as that user, through sudo, with docker_host_manage_engine
false: the engine is left alone (the same process, the same daemon.json), and a rerun changes nothing. An engine
older than the stack needs is refused, naming its version, and still left alone."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import yaml

from lab import hosts as lab_hosts
from lab.common import docker
from lab.images import Builder, push_all
from lab.registry import login
from lab.topology import Lab
from lab.traffic import http

from .support import ROOT, Target, lab_cli, output, recap_changed

LAB = Lab("pliers-own")
SPEC = {"lab": LAB, "deployer": LAB.host_name(1), "edge": LAB.host_name(1), "db": LAB.host_name(1)}
DEPLOY_USER = "deploy"
# What the engine's owner wrote: none of it is the role's to change.
DAEMON_JSON = {
    "log-driver": "local",
    "log-opts": {"max-size": "20m"},
    "max-concurrent-downloads": 4,
    "default-address-pools": [{"base": "10.213.0.0/16", "size": 24}],
}
# The owner's engine on Debian 12: containerd, runc and the Docker SDK from its packages, Docker 26 and Compose v2
# as binaries (from Debian 13's packages, the lab's stand-in for download.docker.com's), with their systemd units.
INSTALL_ENGINE = r"""set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends containerd runc tini iptables python3-docker
trap 'rm -f /etc/apt/sources.list.d/engine-binaries.list' EXIT
echo 'deb http://deb.debian.org/debian trixie main' > /etc/apt/sources.list.d/engine-binaries.list
apt-get update -q
work=$(mktemp -d)
cd "$work"
apt-get download -q docker.io/trixie docker-cli/trixie docker-compose/trixie
rm /etc/apt/sources.list.d/engine-binaries.list
apt-get update -q
for deb in *.deb; do dpkg-deb -x "$deb" root; done
install -m 0755 root/usr/sbin/dockerd root/usr/sbin/docker-proxy /usr/sbin/
install -m 0755 root/usr/bin/docker /usr/bin/
dockerd --version
install -D -m 0755 root/usr/libexec/docker/cli-plugins/docker-compose /usr/libexec/docker/cli-plugins/docker-compose
ln -sf tini-static /usr/bin/docker-init
install -m 0644 root/usr/lib/systemd/system/docker.s* /etc/systemd/system/
getent group docker >/dev/null || groupadd --system docker
cd / && rm -rf "$work"
systemctl daemon-reload
systemctl enable --now docker.socket docker.service
"""
# What says an engine was installed: either package, or any dockerd.
ENGINE_INSTALLED = "dpkg-query -W docker.io || dpkg-query -W docker-ce || command -v dockerd"
REFUSAL = (
    r"Debian 12[.0-9]* does not ship Compose v2: use Debian 13 or Ubuntu 24.04, "
    r"or set docker_host_install_source=docker"
)


class OwnServer(Target):
    def deploy(self, *extra: str) -> subprocess.CompletedProcess:
        return self.play("deploy.yml", "-e", f"@{LAB.credentials}", *extra)

    def engine(self) -> tuple[str, str]:
        """The engine's process and its daemon.json's hash, as the host has them."""
        pid = lab_hosts.ssh(self.deployer, "systemctl show --property MainPID --value docker").stdout.strip()
        digest = lab_hosts.ssh(self.deployer, "sha256sum /etc/docker/daemon.json").stdout.split()[0]
        assert pid not in ("", "0"), "the engine does not run"
        return pid, digest


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A hardened one-host lab with the engine its owner installed and configured, and the local inventory's stack
    deployed onto it (rc asserted by the first test); removed at the end."""
    lab_cli("down", name=LAB.name)
    lab_cli("up", "--hosts", "1", "--debian", "12", "--deploy-user", DEPLOY_USER, name=LAB.name)
    host = lab_hosts.lab_host(LAB, LAB.host_name(1))
    inventory = tmp_path_factory.mktemp("inventory-own")
    shutil.copytree(ROOT / "inventories" / "local", inventory, dirs_exist_ok=True)
    hosts = inventory / "hosts.yml"
    hosts.write_text(hosts.read_text().replace("pliers-demo-", f"{LAB.name}-"))
    (inventory / "host_vars").mkdir()
    (inventory / "host_vars" / f"{LAB.name}-1.yml").write_text(yaml.safe_dump({"docker_host_manage_engine": False}))
    target = OwnServer("compose-own", inventory, SPEC)
    # Before its owner installs the engine: the role asked to install it from Debian 12's packages (the refused run
    # leaves its entry in the host's release history, as every failed deploy does).
    target.refused = target.deploy("-e", "docker_host_manage_engine=true")
    target.installed_when_refused = lab_hosts.ssh(host, ENGINE_INSTALLED, check=False).returncode == 0
    # The owner's engine, their daemon.json, the engine restarted to read it.
    lab_hosts.ssh(host, INSTALL_ENGINE, timeout=900)
    write = "mkdir -p /etc/docker && cat > /etc/docker/daemon.json && systemctl restart docker"
    lab_hosts.ssh(host, write, input=json.dumps(DAEMON_JSON))
    target.before = target.engine()
    target.first = target.deploy()
    yield target
    lab_cli("down", name=LAB.name, check=False)


def test_the_hardened_host_refuses_root_and_lets_its_deploy_user_sudo(server):
    host = server.deployer
    assert lab_hosts.ssh(host, "cat /etc/debian_version").stdout.startswith("12.")
    assert host.user == DEPLOY_USER
    root = lab_hosts.run(
        ["ssh", "-i", str(lab_hosts.SSH_KEY), *lab_hosts.SSH_OPTIONS, "-o", "BatchMode=yes", f"root@{host.address}",
         "true"], check=False,
    )  # fmt: skip
    assert root.returncode == 255 and "Permission denied" in root.stderr, root
    assert lab_hosts.ssh(host, "id -un").stdout.strip() == "root"


def test_the_stack_deploys_as_the_deploy_user_leaving_the_engine_alone_and_a_rerun_changes_nothing(server):
    assert server.first.returncode == 0, f"the first deploy failed:\n{output(server.first)}"
    assert server.engine() == server.before, "the engine restarted or its daemon.json changed"
    assert server.version() == "1.0.0"
    # Its logs as the owner's daemon.json says (the role's would be json-file).
    api = lab_hosts.ssh(server.deployer, "docker ps -q --filter label=com.docker.compose.service=api").stdout.split()
    driver = lab_hosts.ssh(server.deployer, f"docker inspect --format '{{{{.HostConfig.LogConfig.Type}}}}' {api[0]}")
    assert driver.stdout.strip() == "local"
    again = server.deploy()
    assert again.returncode == 0, output(again)
    assert set(recap_changed(again)) == {0}, output(again)
    assert server.engine() == server.before


def app_images(server: OwnServer) -> dict[str, list[str]]:
    """The host's image tags of each app service's repository."""
    listed = lab_hosts.ssh(server.deployer, "docker image ls --format '{{.Repository}} {{.Tag}}'").stdout.split("\n")
    tags: dict[str, list[str]] = {}
    for line in filter(None, listed):
        repository, tag = line.split()
        name = repository.rsplit("/", 1)[-1]
        if repository.startswith(LAB.registry) and name in ("api", "ai-service", "web"):
            tags.setdefault(name, []).append(tag)
    return {name: sorted(found) for name, found in tags.items()}


def push_releases(versions: list[str]) -> None:
    """api and ai-service at each version (1.1.0's, saying that version) in the lab's registry."""
    address = "127.0.0.1:" + docker("port", LAB.registry_container, "5000/tcp").stdout.split(":")[-1].strip()
    built = Builder().build_all()
    jobs = []
    for version in versions:
        for repository in ("api", "ai-service"):
            local = f"pliers-lab/releases-{repository}:{version}"
            derived = f"FROM {built[f'{repository}:1.1.0']}\nENV PLIERS_VERSION={version}\n"
            docker("build", "-q", "-t", local, "-", input=derived)
            jobs.append((local, f"pliers/{repository}:{version}"))
    push_all(jobs, address, login(LAB, address))
    docker("rmi", *(local for local, _ in jobs))


def test_ten_releases_in_a_row_leave_the_running_images_and_keep_more_per_service(server):
    keep = 2
    versions = [f"1.2.{n}" for n in range(10)]
    push_releases(versions)
    for version in versions:
        result = server.deploy("-e", f"pliers_release={version}", "-e", f"pliers_images_keep={keep}",
                               "-e", '{"pliers_versions": {"web": "1.1.0"}}')  # fmt: skip
        assert result.returncode == 0, f"the release of {version} failed:\n{output(result)}"
    assert server.version() == versions[-1]
    held = app_images(server)
    # The running version and the two before it (the rollback's target among them); web only ever had two.
    assert held["api"] == held["ai-service"] == versions[-keep - 1 :], held
    assert held["web"] == ["1.0.0", "1.1.0"], held
    # A release that changes no version prunes nothing (and changes nothing).
    again = server.deploy("-e", f"pliers_release={versions[-1]}", "-e", f"pliers_images_keep={keep}",
                          "-e", '{"pliers_versions": {"web": "1.1.0"}}')  # fmt: skip
    assert again.returncode == 0 and set(recap_changed(again)) == {0}, output(again)
    assert app_images(server) == held


def test_maintenance_answers_503_with_retry_after_but_on_health_endpoints_and_ends_with_nothing_lost(server):
    status, body = http(f"{server.edge}/api/items", method="POST", body={"name": "before-maintenance"})
    assert status == 201, body
    on = server.play("maintenance.yml", "-e", f"@{LAB.credentials}", "-e", "pliers_maintenance=true")
    assert on.returncode == 0, output(on)
    for path in ("/", "/api/items", "/ai/"):
        headers: dict[str, str] = {}
        status, body = http(f"{server.edge}{path}", headers_out=headers)
        assert (status, headers.get("retry-after")) == (503, "300"), (path, status, headers, body)
        assert "Down for maintenance" in body and headers.get("content-type", "").startswith("text/html")
    for path in ("/api/health", "/ai/health"):
        headers = {}
        assert http(f"{server.edge}{path}", headers_out=headers)[0] == 200, path
        assert "retry-after" not in headers, (path, headers)
    again = server.play("maintenance.yml", "-e", f"@{LAB.credentials}", "-e", "pliers_maintenance=true")
    assert again.returncode == 0 and set(recap_changed(again)) == {0}, output(again)
    off = server.play("maintenance.yml", "-e", f"@{LAB.credentials}", "-e", "pliers_maintenance=false")
    assert off.returncode == 0, output(off)
    status, body = http(f"{server.edge}/api/items")
    assert status == 200 and "before-maintenance" in body, body
    assert http(f"{server.edge}/")[0] == 200


def test_an_engine_older_than_the_stack_needs_is_refused_naming_its_version_and_left_alone(server):
    result = server.deploy("-e", "docker_host_engine_min_version=99.0")
    assert result.returncode != 0
    version = lab_hosts.ssh(server.deployer, "docker version --format '{{.Server.Version}}'").stdout.strip()
    assert f"Docker Engine {version} is older than 99.0 (docker_host_engine_min_version)" in output(result)
    assert server.engine() == server.before


def test_installing_the_engine_from_debian_12s_packages_is_refused_naming_what_to_do_with_nothing_installed(server):
    assert server.refused.returncode != 0
    assert re.search(REFUSAL, output(server.refused)), output(server.refused)
    assert not server.installed_when_refused, "an engine was installed"
