"""pliers-edge.sh, the nginx edge's follower (roles/web/files), run for real with sh, on fake getent and nginx
executables first on PATH: what it renders from the upstream files compose_rollout writes, when it reloads
nginx, and its follower in the background. (The edge itself runs on the lab.)"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from ansible_collections.pliers.deploy.plugins.module_utils._nginx_edge import upstream

if not all(shutil.which(tool) for tool in ("sh", "awk", "flock", "setsid")):
    pytest.skip("pliers-edge.sh needs sh, awk, flock and setsid", allow_module_level=True)

SCRIPT = Path(__file__).resolve().parents[2] / "roles" / "web" / "files" / "pliers-edge.sh"

# getent ahostsv4 NAME, answered from $FAKE_DIR/hosts ("name address" lines; a name on two lines has two
# addresses): each address three times, as glibc prints it (STREAM, DGRAM, RAW); exit 2 for an unknown name.
FAKE_GETENT = r"""#!/bin/sh
[ "$1" = ahostsv4 ] || exit 1
printf '%s\n' "$2" >> "$FAKE_DIR/getent.log"
case $2 in *.) ;; *) exit 3 ;; esac  # the script asks for absolute names only (a trailing dot)
status=2
while read -r name address; do
    if [ "$name." = "$2" ]; then
        printf '%-15s STREAM %s\n%-15s DGRAM  \n%-15s RAW    \n' "$address" "$2" "$address" "$address"
        status=0
    fi
done < "$FAKE_DIR/hosts"
exit $status
"""

# nginx: its arguments appended to $FAKE_DIR/nginx.log; `nginx -t` refuses while $FAKE_DIR/refuse exists.
FAKE_NGINX = r"""#!/bin/sh
printf '%s\n' "$*" >> "$FAKE_DIR/nginx.log"
if [ "$1" = -t ] && [ -e "$FAKE_DIR/refuse" ]; then
    echo 'nginx: [emerg] host not found in upstream "p-api-1:3000"' >&2
    exit 1
fi
exit 0
"""

CHECK = "nginx -t -q"
RELOAD = "nginx -s reload"


class EdgeScript:
    """pliers-edge.sh in a directory of its own: upstreams/ (what compose_rollout writes), run/ (what it renders)."""

    def __init__(self, root: Path):
        self.root = root
        self.source = root / "upstreams"
        self.run_dir = root / "run"
        self.pidfile = self.run_dir / "follow.pid"
        self.source.mkdir()
        bin_dir = root / "bin"
        bin_dir.mkdir()
        for name, text in (("getent", FAKE_GETENT), ("nginx", FAKE_NGINX)):
            (bin_dir / name).write_text(text)
            (bin_dir / name).chmod(0o755)
        self.resolve({})
        self.env = dict(
            os.environ,
            PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            FAKE_DIR=str(root),
            PLIERS_EDGE_CONF=str(self.root / "conf"),
            PLIERS_EDGE_SOURCE=str(self.source),
            PLIERS_EDGE_RUN=str(self.run_dir),
            PLIERS_EDGE_INTERVAL="0.2",
            PLIERS_EDGE_PROC=str(self.root / "proc"),
        )
        (self.root / "proc").mkdir()

    def resolve(self, addresses: dict[str, str | list[str]]) -> None:
        """What Docker's DNS answers now: name -> address(es)."""
        lines = [
            f"{name} {address}\n"
            for name, value in addresses.items()
            for address in ([value] if isinstance(value, str) else value)
        ]
        # Replaced whole: a follower may be reading it.
        (self.root / "hosts.new").write_text("".join(lines))
        (self.root / "hosts.new").replace(self.root / "hosts")

    def write_upstream(self, service: str, text: str) -> None:
        (self.source / f"{service}.conf").write_text(text)

    def pretend_a_follower_runs(self) -> None:
        # The follower's lock held by this process (and its pid written): sync then starts no follower, so that
        # nothing renders behind the test's back. The fixture never kills this pid.
        self.run_dir.mkdir(exist_ok=True)
        self.follow_lock = (self.run_dir / "follow.lock").open("w")
        fcntl.flock(self.follow_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.pidfile.write_text(f"{os.getpid()}\n")

    def sync(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["sh", str(SCRIPT), "sync", *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def process(self, pid: int, title: str) -> None:
        """A process in the script's /proc, with the title nginx gives its processes (NUL-padded, as in cmdline)."""
        (self.root / "proc" / str(pid)).mkdir(exist_ok=True)
        (self.root / "proc" / str(pid) / "cmdline").write_bytes(title.encode() + b"\0" * 8)

    def end(self, pid: int) -> None:
        shutil.rmtree(self.root / "proc" / str(pid))

    def drained(self, tenths: str) -> subprocess.CompletedProcess:
        return subprocess.run(["sh", str(SCRIPT), "drained", tenths], cwd=self.root, env=self.env,
                              capture_output=True, text=True, timeout=60, check=False)  # fmt: skip

    def rendered(self, service: str) -> str:
        return (self.run_dir / f"{service}.conf").read_text()

    def nginx_calls(self) -> list[str]:
        log = self.root / "nginx.log"
        return ["nginx " + line for line in log.read_text().splitlines()] if log.exists() else []

    def looked_up(self) -> list[str]:
        """The names looked up (asked as absolute names: the trailing dot is checked by the fake getent)."""
        log = self.root / "getent.log"
        return [name.removesuffix(".") for name in log.read_text().splitlines()] if log.exists() else []

    def follower_pid(self, wait: float = 0.0) -> int | None:
        """The follower's pid once it wrote it (it does so as it starts, after sync returned)."""
        deadline = time.monotonic() + wait
        while True:
            text = self.pidfile.read_text().strip() if self.pidfile.exists() else ""
            if text or time.monotonic() >= deadline:
                return int(text) if text else None
            time.sleep(0.05)

    def is_our_follower(self, pid: int) -> bool:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False  # gone
        return str(SCRIPT).encode() in cmdline and b"follow" in cmdline

    def stop_follower(self) -> None:
        """Kill the follower a sync started, by the pid it wrote, if it runs (the stand-in pid is never killed)."""
        if not self.run_dir.exists():
            return
        deadline = time.monotonic() + 2.0
        while True:
            pid = self.follower_pid()
            if pid == os.getpid():
                return
            if pid is not None and self.is_our_follower(pid):
                break
            if time.monotonic() >= deadline:
                return  # none started, or it is already gone
            time.sleep(0.05)  # it may not have written its pid yet
        os.kill(pid, signal.SIGTERM)
        while self.is_our_follower(pid) and time.monotonic() < deadline + 2.0:
            time.sleep(0.05)


@pytest.fixture
def edge(tmp_path, request):
    edge = EdgeScript(tmp_path)
    request.addfinalizer(edge.stop_follower)
    return edge


@pytest.fixture
def edge_without_follower(edge):
    edge.pretend_a_follower_runs()
    return edge


def server_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip().startswith(("server", "#")) and "{" not in line]


# --- rendering ---------------------------------------------------------------------------------------------------


def test_each_container_name_becomes_the_address_it_resolves_to_once(edge_without_follower):
    edge = edge_without_follower
    # p-api-3 is listed twice by the DNS; getent prints each address three times anyway.
    edge.resolve({"p-api-3": ["172.18.0.5", "172.18.0.5"], "p-api-4": "172.18.0.6"})
    edge.write_upstream("api", upstream("api", 3000, ["p-api-3", "p-api-4"]))
    assert edge.sync().returncode == 0
    assert edge.rendered("api") == (
        "# Managed by pliers.deploy (compose_rollout): the healthy containers of api.\n"
        "upstream api {\n"
        "    least_conn;\n"
        "    server 172.18.0.5:3000 max_fails=3 fail_timeout=10s;  # p-api-3\n"
        "    server 172.18.0.6:3000 max_fails=3 fail_timeout=10s;  # p-api-4\n"
        "    keepalive 16;\n"
        "}\n"
    )


def test_a_name_with_two_addresses_gets_a_server_each(edge_without_follower):
    edge = edge_without_follower
    edge.resolve({"p-api-3": ["172.18.0.5", "10.0.1.5"]})
    edge.write_upstream("api", upstream("api", 3000, ["p-api-3"]))
    edge.sync()
    assert server_lines(edge.rendered("api"))[1:] == [
        "server 172.18.0.5:3000 max_fails=3 fail_timeout=10s;  # p-api-3",
        "server 10.0.1.5:3000 max_fails=3 fail_timeout=10s;  # p-api-3",
    ]


def test_a_name_that_does_not_resolve_is_left_out_with_a_comment(edge_without_follower):
    edge = edge_without_follower
    edge.resolve({"p-api-3": "172.18.0.5"})
    edge.write_upstream("api", upstream("api", 3000, ["p-api-3", "p-api-4"]))
    edge.sync()
    assert server_lines(edge.rendered("api"))[1:] == [
        "server 172.18.0.5:3000 max_fails=3 fail_timeout=10s;  # p-api-3",
        "# p-api-4: no address (not running)",
    ]
    # Asked twice: a lookup that timed out must not take a running container out.
    assert edge.looked_up().count("p-api-4") == 2


def test_an_upstream_left_without_any_server_gets_a_placeholder(edge_without_follower):
    edge = edge_without_follower
    edge.write_upstream("api", upstream("api", 3000, ["p-api-3"]))
    edge.sync()
    assert server_lines(edge.rendered("api"))[1:] == [
        "# p-api-3: no address (not running)",
        "server 127.0.0.1:9 down;",
    ]


def test_an_address_is_kept_as_it_is_and_not_looked_up(edge_without_follower):
    edge = edge_without_follower
    edge.write_upstream("api", upstream("api", 3000, ["10.0.0.7"]))
    edge.write_upstream("web", upstream("web", 8080, []))  # compose_rollout's own placeholder
    edge.sync()
    assert "    server 10.0.0.7:3000 max_fails=3 fail_timeout=10s;\n" in edge.rendered("api")
    assert server_lines(edge.rendered("web"))[1:] == ["server 127.0.0.1:9 down;"]
    assert edge.looked_up() == []


def test_every_upstream_of_a_file_is_rendered(edge_without_follower):
    edge = edge_without_follower
    edge.resolve({"p-api-3": "172.18.0.5"})
    edge.write_upstream("api", upstream("api", 3000, ["p-api-3"]) + upstream("admin", 3000, ["p-admin-1"]))
    edge.sync()
    assert [line for line in server_lines(edge.rendered("api")) if line.startswith("server")] == [
        "server 172.18.0.5:3000 max_fails=3 fail_timeout=10s;  # p-api-3",
        "server 127.0.0.1:9 down;",  # admin's, which has no container
    ]


@pytest.mark.parametrize("name", ["a;touch${IFS}x", "$(touch${IFS}x)", "`touch${IFS}x`", "a|touch${IFS}x", "-x"])
def test_a_name_with_shell_metacharacters_is_left_out_and_nothing_runs(edge_without_follower, name):
    edge = edge_without_follower
    edge.resolve({"p-api-3": "172.18.0.5"})
    edge.write_upstream("api", upstream("api", 3000, [name, "p-api-3"]))
    assert edge.sync().returncode == 0
    assert f"    # {name}: not a container name, left out\n" in edge.rendered("api")
    assert "server 172.18.0.5:3000" in edge.rendered("api")
    assert not (edge.root / "x").exists()
    assert edge.looked_up() == ["p-api-3"]


# --- sync and reload ---------------------------------------------------------------------------------------------


def test_the_first_sync_checks_the_configuration_then_reloads(edge_without_follower):
    edge = edge_without_follower
    edge.resolve({"p-api-3": "172.18.0.5"})
    edge.write_upstream("api", upstream("api", 3000, ["p-api-3"]))
    result = edge.sync()
    assert (result.returncode, result.stdout) == (0, "reloaded\n")  # a follower runs: none started
    assert edge.nginx_calls() == [CHECK, RELOAD]


def test_a_sync_with_nothing_changed_says_so_and_does_not_reload(edge_without_follower):
    edge = edge_without_follower
    edge.resolve({"p-api-3": "172.18.0.5"})
    edge.write_upstream("api", upstream("api", 3000, ["p-api-3"]))
    edge.sync()
    result = edge.sync()
    assert (result.returncode, result.stdout) == (0, "unchanged\n")
    assert edge.nginx_calls() == [CHECK, RELOAD]


def test_a_changed_address_is_rendered_and_reloaded(edge_without_follower):
    edge = edge_without_follower
    edge.resolve({"p-api-3": "172.18.0.5"})
    edge.write_upstream("api", upstream("api", 3000, ["p-api-3"]))
    edge.sync()
    edge.resolve({"p-api-3": "172.18.0.9"})  # the container was restarted and got another address
    assert edge.sync().stdout == "reloaded\n"
    assert "server 172.18.0.9:3000" in edge.rendered("api")
    assert "172.18.0.5" not in edge.rendered("api")
    assert edge.nginx_calls() == [CHECK, RELOAD, CHECK, RELOAD]


def test_an_upstream_file_removed_is_dropped_from_what_nginx_loads(edge_without_follower):
    edge = edge_without_follower
    edge.write_upstream("api", upstream("api", 3000, []))
    edge.write_upstream("web", upstream("web", 8080, []))
    edge.sync()
    (edge.source / "web.conf").unlink()
    assert edge.sync().stdout == "reloaded\n"
    assert sorted(path.name for path in edge.run_dir.glob("*.conf")) == ["api.conf"]


def test_a_forced_sync_reloads_though_nothing_changed(edge_without_follower):
    edge = edge_without_follower
    edge.write_upstream("api", upstream("api", 3000, []))
    edge.sync()
    result = edge.sync("--force")
    assert (result.returncode, result.stdout) == (0, "reloaded\n")
    assert edge.nginx_calls() == [CHECK, RELOAD, CHECK, RELOAD]


def test_the_edges_own_configuration_changed_since_the_last_reload_is_loaded_by_the_next_sync(edge_without_follower):
    # A deploy wrote edge.conf, then was killed before it reloaded the edge: the next sync (or follower round) does.
    edge = edge_without_follower
    (edge.root / "conf").mkdir()
    (edge.root / "conf" / "edge.conf").write_text("server { listen 80; }\n")
    edge.write_upstream("api", upstream("api", 3000, []))
    assert edge.sync().stdout == "reloaded\n"
    assert edge.sync().stdout == "unchanged\n"
    (edge.root / "conf" / "edge.conf").write_text("server { listen 80; server_tokens off; }\n")
    assert edge.sync().stdout == "reloaded\n"
    assert edge.nginx_calls() == [CHECK, RELOAD, CHECK, RELOAD]


def reload_with_a_worker(edge, pid: int) -> None:
    """A worker runs, then a sync reloads nginx (retiring it)."""
    edge.process(pid, "nginx: worker process")
    edge.write_upstream("api", upstream("api", 3000, []))
    edge.sync()


@pytest.fixture
def edge_started_by_this_script(edge_without_follower):
    """As `start` leaves it: this script's reloads record the workers they retire."""
    (edge_without_follower.run_dir / "records-retiring").touch()
    return edge_without_follower


def test_drained_waits_for_the_workers_the_last_reload_retired_and_no_other_process(edge_started_by_this_script):
    edge = edge_started_by_this_script
    edge.process(1, "nginx: master process nginx -g daemon off;")
    edge.process(7, "nginx: worker process")
    edge.process(8, "nginx: worker process")
    edge.process(9, "sh /etc/nginx/conf.d/pliers-edge.sh follow")
    edge.write_upstream("api", upstream("api", 3000, []))
    assert edge.sync().stdout == "reloaded\n"
    # nginx handled the reload: new workers, the old ones finishing the requests they hold.
    edge.process(7, "nginx: worker process is shutting down")
    edge.process(8, "nginx: worker process is shutting down")
    edge.process(10, "nginx: worker process")
    assert edge.drained("1").stdout == "still draining\n"
    edge.end(7)
    assert edge.drained("1").stdout == "still draining\n"
    edge.end(8)
    assert edge.drained("1").stdout == "drained\n"
    # Nothing retired since: the new worker holds nothing back.
    assert edge.drained("0").stdout == "drained\n"


def test_drained_waits_for_a_worker_nginx_has_not_retired_yet(edge_started_by_this_script):
    # nginx -s reload returns before the master handled it: the old worker keeps its title a moment longer.
    edge = edge_started_by_this_script
    reload_with_a_worker(edge, 7)
    assert edge.drained("1").stdout == "still draining\n"
    edge.end(7)
    assert edge.drained("1").stdout == "drained\n"


def test_drained_fails_in_an_edge_whose_reloads_are_not_recorded(edge_without_follower):
    # Started by an older script: its follower's reloads record nothing, so nothing can say the drain is over.
    edge = edge_without_follower
    reload_with_a_worker(edge, 7)
    edge.end(7)
    result = edge.drained("1")
    assert result.returncode == 1 and "older pliers-edge.sh" in result.stdout


def test_a_reload_that_fails_keeps_what_the_last_one_retired(edge_started_by_this_script):
    edge = edge_started_by_this_script
    reload_with_a_worker(edge, 7)
    edge.process(7, "nginx: worker process is shutting down")
    edge.process(8, "nginx: worker process")
    (edge.root / "refuse").touch()
    edge.write_upstream("api", upstream("api", 3000, ["p-api-3"]))
    assert edge.sync().returncode != 0
    assert edge.drained("1").stdout == "still draining\n", "worker 7 still finishes its requests"
    edge.end(7)
    assert edge.drained("1").stdout == "drained\n"


@pytest.mark.parametrize("tenths", ["", "1.5", "-1", "2;reboot", "99999999999999999999"])
def test_drained_refuses_a_limit_that_is_no_whole_number_of_tenths(edge_started_by_this_script, tenths):
    result = edge_started_by_this_script.drained(tenths)
    assert result.returncode == 2 and "tenths of a second" in result.stderr


def test_upstreams_nginx_refuses_are_replaced_by_the_previous_ones_and_sync_fails(edge_without_follower):
    edge = edge_without_follower
    edge.resolve({"p-api-3": "172.18.0.5"})
    edge.write_upstream("api", upstream("api", 3000, ["p-api-3"]))
    edge.sync()
    edge.resolve({"p-api-3": "172.18.0.9"})
    (edge.root / "refuse").touch()
    result = edge.sync()
    assert result.returncode != 0
    assert "reloaded" not in result.stdout
    assert "nginx refused its configuration, keeping the previous upstreams" in result.stderr
    assert "server 172.18.0.5:3000" in edge.rendered("api")  # what nginx runs on is still on disk
    assert edge.nginx_calls() == [CHECK, RELOAD, CHECK]  # no reload after the refused check
    # Tried again on the next sync once nginx accepts it.
    (edge.root / "refuse").unlink()
    assert edge.sync().stdout == "reloaded\n"
    assert "server 172.18.0.9:3000" in edge.rendered("api")


# --- the follower ------------------------------------------------------------------------------------------------


def test_the_follower_picks_up_a_changed_address_without_another_sync(edge):
    edge.resolve({"p-api-3": "172.18.0.5"})
    edge.write_upstream("api", upstream("api", 3000, ["p-api-3"]))
    result = edge.sync()
    assert (result.returncode, result.stdout) == (0, "reloaded\nfollower started\n")
    assert edge.follower_pid(wait=30.0) is not None
    edge.resolve({"p-api-3": "172.18.0.9"})  # recreated by hand, outside a deploy
    deadline = time.monotonic() + 30.0  # a bound the loaded CI machine meets; met, it returns at once
    # The follower renders, then reloads: both are waited for.
    while edge.nginx_calls().count(RELOAD) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "server 172.18.0.9:3000 max_fails=3 fail_timeout=10s;  # p-api-3" in edge.rendered("api")
    assert edge.nginx_calls().count(RELOAD) == 2
    # It runs: a sync now starts no second one.
    assert "follower started" not in edge.sync().stdout


def test_a_follower_that_stopped_is_started_again(edge):
    gone = subprocess.Popen(["true"])
    gone.wait()
    edge.run_dir.mkdir()
    edge.pidfile.write_text(f"{gone.pid}\n")
    edge.write_upstream("api", upstream("api", 3000, []))
    assert edge.sync().stdout == "reloaded\nfollower started\n"
    deadline = time.monotonic() + 30.0  # a bound the loaded CI machine meets; met, it returns at once
    while edge.follower_pid() == gone.pid and time.monotonic() < deadline:
        time.sleep(0.05)
    assert edge.follower_pid() not in (None, gone.pid)
