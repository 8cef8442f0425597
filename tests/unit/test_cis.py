"""The CIS Docker Benchmark checker of the lab test (tests/lab/cis.py) on small synthetic engine reports: a hardened
engine and container have no finding, each weakness its item; Swarm tasks and the daemon's defaults are judged as
the engine applies them; the allow-list matches by item, subject, mode and detail, names its stale entries and
refuses an entry without a one-line reason."""

from __future__ import annotations

import copy

import pytest

from ..lab import cis
from ..paths import ROOT

ANY = "0.0.0.0"  # noqa: S104 - an address an engine reports, not one bound here
HARDENED_INFO = {
    "Driver": "overlay2",
    "LoggingDriver": "syslog",
    "Debug": False,
    "ExperimentalBuild": False,
    "LiveRestoreEnabled": True,
    "Plugins": {"Authorization": ["authz-broker"], "Log": ["json-file", "syslog"]},
    "RegistryConfig": {
        "InsecureRegistryCIDRs": ["::1/128", "127.0.0.0/8"],
        "IndexConfigs": {"docker.io": {"Name": "docker.io", "Secure": True, "Official": True}},
    },
    "SecurityOptions": ["name=apparmor", "name=seccomp,profile=builtin", "name=userns", "name=cgroupns"],
    "Swarm": {"LocalNodeState": "inactive"},
}
HARDENED_DAEMON = {
    "icc": False,
    "userland-proxy": False,
    "no-new-privileges": True,
    "live-restore": True,
    "userns-remap": "default",
    "authorization-plugins": ["authz-broker"],
    "log-driver": "syslog",
}
HARDENED_CONTAINER = {
    "Id": "0123456789abcdef",
    "Name": "/pliers-local-api-1",
    "Path": "pliers",
    "Args": ["serve"],
    "AppArmorProfile": "docker-default",
    "Config": {
        "User": "10001:10001",
        "Labels": {"com.docker.compose.project": "pliers-local", "com.docker.compose.service": "api"},
        "Healthcheck": {"Test": ["CMD", "pliers", "healthcheck"]},
        "Cmd": ["serve"],
        "Entrypoint": ["pliers"],
    },
    "HostConfig": {
        "CapDrop": ["ALL"],
        "CapAdd": None,
        "Privileged": False,
        "ReadonlyRootfs": True,
        "PidsLimit": 256,
        "Memory": 268435456,
        "NanoCpus": 500000000,
        "CpuShares": 0,
        "CpuQuota": 0,
        "RestartPolicy": {"Name": "unless-stopped", "MaximumRetryCount": 0},
        "NetworkMode": "pliers-local_backend",
        "PidMode": "",
        "IpcMode": "private",
        "UTSMode": "",
        "UsernsMode": "",
        "CgroupParent": "",
        "SecurityOpt": ["no-new-privileges:true"],
        "Devices": [],
        "PortBindings": {},
    },
    "Mounts": [
        {"Type": "volume", "Name": "data", "Source": "/var/lib/docker/volumes/data/_data", "Destination": "/data",
         "RW": True, "Propagation": ""},
        {"Type": "bind", "Source": "/opt/pliers/local/configs/api", "Destination": "/etc/api", "RW": False,
         "Propagation": "rprivate"},
        {"Type": "bind", "Source": "/", "Destination": "/host", "RW": False, "Propagation": "rprivate"},
    ],
    "NetworkSettings": {"Ports": {"8000/tcp": None}, "Networks": {"pliers-local_backend": {}}},
    "State": {"Running": True, "Health": {"Status": "healthy"}},
}  # fmt: skip


def info(**changes) -> dict:
    return {**copy.deepcopy(HARDENED_INFO), **changes}


def daemon(**changes) -> dict:
    return {**copy.deepcopy(HARDENED_DAEMON), **changes}


def container(config: dict | None = None, host: dict | None = None, **changes) -> dict:
    result = copy.deepcopy(HARDENED_CONTAINER)
    result["Config"].update(config or {})
    result["HostConfig"].update(host or {})
    result.update(changes)
    return result


def items(findings) -> list[str]:
    return [finding.item for finding in findings]


def swarm_task(config: dict | None = None, host: dict | None = None, **changes) -> dict:
    """A Swarm task's container as the swarm executor creates it: no restart policy, no security options."""
    labels = {"com.docker.swarm.service.name": "pliers-local_prometheus", "com.docker.stack.namespace": "pliers-local",
              "com.docker.swarm.task.id": "k2v1", "com.docker.swarm.node.id": "n1"}  # fmt: skip
    return container(
        {"Labels": labels, **(config or {})},
        {"RestartPolicy": {"Name": "no", "MaximumRetryCount": 0}, "SecurityOpt": None, **(host or {})},
        Name="/pliers-local_prometheus.1.k2v1",
        **changes,
    )


# --- A hardened host ----------------------------------------------------------------------------------------------


def test_a_hardened_engine_and_container_have_no_finding():
    assert cis.check_host(info(), daemon(), [container()]) == []


def test_the_command_line_counts_as_daemon_json_does():
    # daemon.json empty, everything given as dockerd flags instead.
    flags = ("/usr/sbin/dockerd -H fd:// --containerd=/run/containerd/containerd.sock --icc=false "
             "--userland-proxy=false --no-new-privileges --live-restore --userns-remap default "
             "--authorization-plugin=authz-broker --log-level info")  # fmt: skip
    assert cis.check_daemon(info(), {}, flags) == []
    settings = cis.daemon_settings({"hosts": ["unix:///run/docker.sock"]}, ["dockerd", "-H", "tcp://0.0.0.0:2375"])
    assert settings["hosts"] == ["unix:///run/docker.sock", "tcp://0.0.0.0:2375"]


# --- Section 2: the daemon ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "engine_info", "daemon_json", "command_line"),
    [
        ("2.2", {}, {"icc": True}, ""),
        ("2.2", {}, {"icc": None}, ""),
        ("2.3", {}, {"log-level": "debug"}, ""),
        ("2.3", {}, {}, "dockerd -l warn"),
        ("2.3", {"Debug": True}, {}, ""),
        ("2.4", {}, {"iptables": False}, ""),
        ("2.5", {}, {"insecure-registries": ["registry.lab:5000"]}, ""),
        ("2.5", {"RegistryConfig": {"InsecureRegistryCIDRs": ["127.0.0.0/8", "10.0.0.0/8"]}}, {}, ""),
        ("2.5", {"RegistryConfig": {"IndexConfigs": {"registry.lab:5000": {"Secure": False}}}}, {}, ""),
        ("2.6", {"Driver": "aufs"}, {}, ""),
        ("2.7", {}, {"hosts": ["unix:///var/run/docker.sock", "tcp://0.0.0.0:2375"]}, ""),
        ("2.7", {}, {"tls": True}, "dockerd -H tcp://10.0.0.1:2376"),
        ("2.9", {"SecurityOptions": ["name=apparmor", "name=seccomp,profile=builtin"]}, {"userns-remap": ""}, ""),
        ("2.10", {}, {"cgroup-parent": "/docker-parent"}, ""),
        ("2.11", {}, {"storage-opts": ["dm.basesize=20G"]}, ""),
        ("2.12", {"Plugins": {"Authorization": None}}, {"authorization-plugins": []}, ""),
        ("2.13", {"LoggingDriver": "json-file"}, {}, ""),
        ("2.13", {"LoggingDriver": "local"}, {}, ""),
        ("2.14", {}, {"no-new-privileges": False}, ""),
        ("2.15", {"LiveRestoreEnabled": False}, {"live-restore": False}, ""),
        ("2.16", {}, {"userland-proxy": True}, ""),
        ("2.16", {}, {"userland-proxy": None}, ""),
        ("2.17", {"SecurityOptions": ["name=apparmor", "name=userns"]}, {}, ""),
        ("2.17", {"SecurityOptions": ["name=apparmor", "name=userns", "name=seccomp,profile=unconfined"]}, {}, ""),
        ("2.18", {"ExperimentalBuild": True}, {}, ""),
        ("5.1", {"Swarm": {"LocalNodeState": "active"}}, {}, ""),
        ("5.2", {"SecurityOptions": ["name=seccomp,profile=builtin", "name=userns"]}, {}, ""),
    ],
)
def test_each_daemon_weakness_is_its_item(item, engine_info, daemon_json, command_line):
    findings = cis.check_daemon(info(**engine_info), daemon(**daemon_json), command_line)
    assert items(findings) == [item], findings
    assert all(finding.subject == cis.DAEMON and finding.detail for finding in findings)


def test_daemon_defaults_left_unset_are_findings():
    """An engine as installed: no daemon.json, Debian's command line."""
    plain = info(LoggingDriver="json-file", LiveRestoreEnabled=False, Plugins={"Authorization": None},
                 SecurityOptions=["name=seccomp,profile=builtin", "name=cgroupns"])  # fmt: skip
    findings = cis.check_daemon(plain, {}, "/usr/sbin/dockerd -H fd:// --containerd=/run/containerd/containerd.sock")
    assert items(findings) == ["2.2", "2.9", "2.12", "2.13", "2.14", "2.15", "2.16", "5.2"]


def test_loopback_registries_and_tls_verified_tcp_are_fine():
    engine_info = info(RegistryConfig={"InsecureRegistryCIDRs": ["127.0.0.0/8", "::1/128"],
                                       "IndexConfigs": {"localhost:5000": {"Secure": False},
                                                        "127.0.0.1:5000": {"Secure": False},
                                                        "[::1]:5000": {"Secure": False}}})  # fmt: skip
    tls = daemon(hosts=["tcp://0.0.0.0:2376"], tlsverify=True, **{"insecure-registries": ["localhost:5000"]})
    assert cis.check_daemon(engine_info, tls) == []


def test_swarm_mode_needs_no_live_restore_but_is_item_5_1():
    swarm = info(Swarm={"LocalNodeState": "active"}, LiveRestoreEnabled=False)
    assert items(cis.check_daemon(swarm, daemon(**{"live-restore": False}))) == ["5.1"]


def test_no_new_privileges_reported_by_the_engine_counts_as_the_default():
    engine_info = info(SecurityOptions=[*HARDENED_INFO["SecurityOptions"], "name=no-new-privileges"])
    assert cis.check_daemon(engine_info, daemon(**{"no-new-privileges": None})) == []


def test_a_rootless_engine_needs_no_userns_remap():
    rootless = info(SecurityOptions=["name=seccomp,profile=builtin", "name=rootless", "name=apparmor"])
    assert cis.check_daemon(rootless, daemon(**{"userns-remap": ""})) == []


# --- Section 4.1 and 5: containers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "config", "host", "changes"),
    [
        ("4.1", {"User": ""}, {}, {}),
        ("4.1", {"User": "root"}, {}, {}),
        ("4.1", {"User": "0"}, {}, {}),
        ("4.1", {"User": "0:0"}, {}, {}),
        ("4.1", {"User": "root:www-data"}, {}, {}),
        ("5.2", {}, {}, {"AppArmorProfile": ""}),
        ("5.2", {}, {}, {"AppArmorProfile": "unconfined"}),
        ("5.4", {}, {"CapDrop": ["NET_RAW"]}, {}),
        ("5.4", {}, {"CapDrop": None}, {}),
        ("5.4", {}, {"CapAdd": ["NET_ADMIN"]}, {}),
        ("5.5", {}, {"Privileged": True}, {}),
        ("5.6", {}, {}, {"Mounts": [{"Type": "bind", "Source": "/etc", "Destination": "/etc", "RW": True}]}),
        ("5.6", {}, {}, {"Mounts": [{"Type": "bind", "Source": "/", "Destination": "/host", "RW": True}]}),
        ("5.6", {}, {}, {"Mounts": [{"Type": "bind", "Source": "/usr/lib/x", "Destination": "/x", "RW": True}]}),
        ("5.7", {"Entrypoint": ["/usr/sbin/sshd", "-D"]}, {}, {}),
        ("5.8", {}, {"PortBindings": {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "80"}]}},
         {"NetworkSettings": {"Ports": {}, "Networks": {"p_backend": {}}}}),
        ("5.10", {}, {"NetworkMode": "host"}, {"NetworkSettings": {"Networks": {"host": {}}}}),
        ("5.11", {}, {"Memory": 0}, {}),
        ("5.12", {}, {"NanoCpus": 0}, {}),
        ("5.13", {}, {"ReadonlyRootfs": False}, {}),
        ("5.14", {}, {}, {"NetworkSettings": {"Ports": {"9090/tcp": [{"HostIp": ANY, "HostPort": "9090"},
                                                                    {"HostIp": "::", "HostPort": "9090"}]},
                                              "Networks": {"p_frontend": {}}}}),
        ("5.14", {}, {"PortBindings": {"9090/tcp": [{"HostIp": "", "HostPort": "9090"}]}}, {}),
        ("5.15", {}, {"RestartPolicy": {"Name": "no", "MaximumRetryCount": 0}}, {}),
        ("5.15", {}, {"RestartPolicy": {"Name": "", "MaximumRetryCount": 0}}, {}),
        ("5.15", {}, {"RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 10}}, {}),
        ("5.16", {}, {"PidMode": "host"}, {}),
        ("5.17", {}, {"IpcMode": "host"}, {}),
        ("5.18", {}, {"Devices": [{"PathOnHost": "/dev/fuse", "PathInContainer": "/dev/fuse"}]}, {}),
        ("5.20", {}, {}, {"Mounts": [{"Type": "volume", "Source": "/v", "Destination": "/v", "RW": True,
                                      "Propagation": "rshared"}]}),
        ("5.21", {}, {"UTSMode": "host"}, {}),
        ("5.22", {}, {"SecurityOpt": ["no-new-privileges:true", "seccomp=unconfined"]}, {}),
        ("5.22", {}, {"SecurityOpt": ["no-new-privileges:true", "seccomp:unconfined"]}, {}),
        ("5.25", {}, {"CgroupParent": "/custom"}, {}),
        ("5.26", {}, {"SecurityOpt": ["no-new-privileges:false"]}, {}),
        ("5.27", {"Healthcheck": None}, {}, {"State": {"Running": True}}),
        ("5.27", {"Healthcheck": {"Test": ["NONE"]}}, {}, {"State": {"Running": True}}),
        ("5.29", {}, {"PidsLimit": None}, {}),
        ("5.29", {}, {"PidsLimit": 0}, {}),
        ("5.29", {}, {"PidsLimit": -1}, {}),
        ("5.30", {}, {"NetworkMode": "default"}, {"NetworkSettings": {"Networks": {"bridge": {}}}}),
        ("5.31", {}, {"UsernsMode": "host"}, {}),
        ("5.32", {}, {}, {"Mounts": [{"Type": "bind", "Source": "/var/run/docker.sock",
                                      "Destination": "/var/run/docker.sock", "RW": False}]}),
        ("5.32", {}, {}, {"Mounts": [{"Type": "bind", "Source": "/run/docker.sock", "Destination": "/docker.sock",
                                      "RW": True}]}),
    ],
)  # fmt: skip
def test_each_container_weakness_is_its_item(item, config, host, changes):
    findings = cis.check_containers([container(config, host, **changes)], info(), daemon())
    assert items(findings) == [item], findings
    assert findings[0].subject == "api" and findings[0].detail.endswith("(pliers-local-api-1)")


def test_read_only_host_directories_are_fine_and_a_read_write_one_is_named():
    mounts = [{"Type": "bind", "Source": "/", "Destination": "/host", "RW": False},
              {"Type": "bind", "Source": "/etc/", "Destination": "/host-etc", "RW": True},
              {"Type": "bind", "Source": "/etcetera", "Destination": "/e", "RW": True},
              {"Type": "bind", "Source": "/opt/pliers/tls", "Destination": "/etc/nginx/tls", "RW": True}]  # fmt: skip
    findings = cis.check_containers([container(Mounts=mounts)], info(), daemon())
    assert [(f.item, f.detail.split(" (")[0]) for f in findings] == [("5.6", "mounts /etc read-write at /host-etc")]


def test_each_added_capability_is_a_finding_of_its_own():
    findings = cis.check_containers([container(host={"CapAdd": ["CAP_DAC_OVERRIDE", "net_bind_service"]})], info(),
                                    daemon())  # fmt: skip
    assert [f.detail.split(" (")[0] for f in findings] == ["adds DAC_OVERRIDE", "adds NET_BIND_SERVICE"]


def test_one_published_port_is_one_finding_per_item_and_a_chosen_address_none():
    ports = {"8080/tcp": [{"HostIp": ANY, "HostPort": "80"}, {"HostIp": "::", "HostPort": "80"}],
             "8443/tcp": [{"HostIp": ANY, "HostPort": "443"}, {"HostIp": "::", "HostPort": "443"}],
             "9090/tcp": [{"HostIp": "127.0.0.1", "HostPort": "9090"}]}  # fmt: skip
    edge = container(NetworkSettings={"Ports": ports, "Networks": {"p_frontend": {}}})
    findings = cis.check_containers([edge], info(), daemon())
    assert sorted(items(findings)) == ["5.14", "5.14", "5.8", "5.8"]
    assert not any("9090" in finding.detail for finding in findings)


def test_a_swarm_task_is_restarted_by_swarm_not_by_its_engine():
    task = swarm_task()
    assert cis.check_containers([task], info(), daemon()) == []
    # The same container outside Swarm would stay down after a crash.
    del task["Config"]["Labels"]["com.docker.swarm.task.id"]
    assert items(cis.check_containers([task], info(), daemon())) == ["5.15"]


@pytest.mark.parametrize("policy", [{"Name": "on-failure", "MaximumRetryCount": 5}, {"Name": "always"}])
def test_bounded_or_orchestrated_restart_policies_are_fine(policy):
    assert cis.check_containers([container(host={"RestartPolicy": policy})], info(), daemon()) == []


def test_the_daemons_no_new_privileges_covers_a_container_without_the_option():
    task = swarm_task()
    assert cis.check_containers([task], info(), daemon()) == []
    without = daemon(**{"no-new-privileges": False})
    assert items(cis.check_containers([task], info(), without)) == ["5.26"]
    # The container's own option is enough without the default; an explicit false beats the default.
    assert cis.check_containers([container()], info(), without) == []
    assert items(cis.check_containers([container(host={"SecurityOpt": ["no-new-privileges=false"]})], info(),
                                      daemon()))  == ["5.26"]  # fmt: skip


def test_apparmor_is_judged_per_container_only_where_the_engine_has_it():
    unconfined = container(AppArmorProfile="")
    no_lsm = info(SecurityOptions=["name=seccomp,profile=builtin", "name=userns"])
    assert items(cis.check_host(no_lsm, daemon(), [unconfined])) == ["5.2"]
    assert cis.check_host(no_lsm, daemon(), [unconfined])[0].subject == cis.DAEMON
    selinux = info(SecurityOptions=["name=selinux", "name=seccomp,profile=builtin", "name=userns"])
    assert cis.check_host(selinux, daemon(), [container(ProcessLabel="system_u:system_r:container_t:s0:c1,c2")]) == []
    disabled = container(host={"SecurityOpt": ["no-new-privileges", "label=disable"]}, ProcessLabel="x")
    assert items(cis.check_host(selinux, daemon(), [disabled, container()])) == ["5.3", "5.3"]


def test_the_subject_is_the_service():
    assert cis.subject(container()) == "api"
    assert cis.subject(swarm_task()) == "prometheus"
    plain = container({"Labels": {"com.docker.swarm.service.name": "monitor"}})
    assert cis.subject(plain) == "monitor"
    assert cis.subject(container({"Labels": {}}, Name="/registry")) == "registry"


# --- The allow-list -----------------------------------------------------------------------------------------------


def write(tmp_path, text: str):
    path = tmp_path / "allow.yml"
    path.write_text(text)
    return path


FINDINGS = [
    cis.Finding("5.32", "prometheus", "mounts the Docker socket /var/run/docker.sock (read-only) (p.1.x)"),
    cis.Finding("5.4", "prometheus", "adds DAC_OVERRIDE (p.1.x)"),
    cis.Finding("5.4", "prometheus", "adds SYS_ADMIN (p.1.x)"),
    cis.Finding("2.12", "daemon", "no authorization plugin"),
]


def test_entries_match_by_item_subject_mode_and_detail(tmp_path):
    allowlist = cis.load_allowlist(write(tmp_path, """---
- {item: "5.32", subject: prometheus, modes: [swarm], reason: Swarm service discovery reads the engine's API}
- {item: "5.4", subject: prometheus, modes: [swarm], detail: adds DAC_OVERRIDE, reason: writes the image's TSDB dir}
- {item: "2.12", subject: "*", reason: the socket is root's only}
"""))  # fmt: skip
    assert [entry.modes for entry in allowlist] == [("swarm",), ("swarm",), ("compose", "swarm")]
    assert cis.outside_allowlist(FINDINGS, allowlist, "swarm") == [FINDINGS[2]]
    assert cis.outside_allowlist(FINDINGS, allowlist, "compose") == FINDINGS[:3]
    other = cis.Finding("5.32", "alloy", "mounts the Docker socket")
    assert cis.outside_allowlist([other], allowlist, "swarm") == [other]


def test_stale_entries_are_those_of_the_mode_that_covered_nothing(tmp_path):
    allowlist = cis.load_allowlist(write(tmp_path, """---
- {item: "5.32", subject: prometheus, modes: [swarm], reason: Swarm service discovery reads the engine's API}
- {item: "5.32", subject: alloy, reason: it reads the containers' logs through the engine}
- {item: "5.14", subject: prometheus, modes: [compose], reason: the lab forwards it}
"""))  # fmt: skip
    assert [str(entry).split(":")[0] for entry in cis.stale_entries(FINDINGS, allowlist, "swarm")] == [
        "5.32 alloy (compose, swarm)"
    ]
    assert [(entry.item, entry.subject) for entry in cis.stale_entries(FINDINGS, allowlist, "compose")] == [
        ("5.32", "alloy"),
        ("5.14", "prometheus"),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('- {item: "5.32", subject: alloy}', "needs its reason"),
        ('- {item: "5.32", subject: alloy, reason: ""}', "needs its reason"),
        ('- {item: "5.32", subject: alloy, reason: "  "}', "needs its reason"),
        ('- {item: "5.32", subject: alloy, reason: "one\\ntwo"}', "one line"),
        ('- {item: "5.31", subject: alloy, reason: r, modes: [k8s]}', "modes"),
        ('- {item: "5.31", subject: alloy, reason: r, modes: swarm}', "modes"),
        ('- {item: "5.9", subject: edge, reason: r}', "not a CIS Docker Benchmark v1.6.0 item"),
        ('- {item: "5.13", subject: "*", reason: r}', "name the service"),
        ('- {item: "5.13", subject: "", reason: r}', "no subject"),
        ('- {item: "5.13", subject: web, reason: r, why: x}', "unknown keys"),
        ("item: 5.13", "a list of entries"),
        ('- {item: "5.13", subject: web, reason: r}\n- {item: "5.13", subject: web, modes: [swarm], reason: s}',
         "already allowed"),
    ],
)  # fmt: skip
def test_an_entry_without_a_one_line_reason_or_a_known_item_is_refused(tmp_path, text, message):
    with pytest.raises(cis.AllowlistError, match=message):
        cis.load_allowlist(write(tmp_path, f"---\n{text}\n"))


def test_the_projects_allowlist_loads_short_and_reasoned():
    allowlist = cis.load_allowlist(ROOT / "tests" / "lab" / "cis-allowlist.yml")
    assert 0 < len(allowlist) <= 15
    for entry in allowlist:
        assert "\n" not in entry.reason and len(entry.reason) <= 150, entry
    # No read-only root exception: every service of the stack can have one.
    assert not [entry for entry in allowlist if entry.item == "5.13"]
