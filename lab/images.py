"""Step 4/5: images built from Debian packages, tagged by a hash of their inputs.

Nothing can be pulled on these machines, so every image starts from a Debian
root filesystem made with debootstrap and imported. An image is rebuilt only
when its inputs change: its build context, its build arguments, or its base.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .common import ROOT, STATE, LabError, docker, log, run
from .engine import ensure_tools

IMAGES_DIR = ROOT / "lab" / "images"
APP_DIR = ROOT / "lab" / "app"
MIRROR = "http://deb.debian.org/debian"
LOCAL_REPO = "pliers-lab"
# The reference app's versions (docs/app-contract.md): 1.1.0 adds a migration,
# broken starts but never reports healthy.
APP_VERSIONS = ("1.0.0", "1.1.0", "broken")
# The Debian suites the images start from (debootstrapped side by side).
SUITES = ("bookworm", "trixie")

# Written into every base: the security and update suites, no recommends, and
# no service start-up during package installs (as the official Debian images do).
BASE_SETUP = """\
set -e
cat > /etc/apt/sources.list <<SOURCES
deb {mirror} {suite} main
deb {mirror} {suite}-updates main
deb http://deb.debian.org/debian-security {suite}-security main
SOURCES
printf 'APT::Install-Recommends "0";\\nAPT::Install-Suggests "0";\\n' > /etc/apt/apt.conf.d/90-lab-no-recommends
printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d
chmod 0755 /usr/sbin/policy-rc.d
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
"""


@dataclass(frozen=True)
class Image:
    """One image: a build context under lab/, its base and the names it is pushed as."""

    repo: str
    context: Path
    base: str  # a Debian suite ("bookworm", "trixie") or another Image's key
    pushed_as: tuple[str, ...] = ()  # "<repo>:<tag>" names in the lab registry
    args: dict[str, str] = field(default_factory=dict)
    version_check: tuple[str, ...] = ()  # command whose output must contain expect
    expect: str = ""
    on_demand: bool = False  # built only when asked for by name, never by a plain Builder() (lab up, demo, images)

    @property
    def key(self) -> str:
        version = self.args.get("APP_VERSION")
        return f"{self.repo}:{version}" if version else self.repo


def _service(repo: str, pushed_as: str, check: tuple[str, ...], expect: str) -> Image:
    return Image(repo, IMAGES_DIR / repo, "bookworm", (pushed_as,), {}, check, expect)


def catalogue() -> list[Image]:
    """Every lab image, bases before the images built on them."""
    images = [
        Image("host", IMAGES_DIR / "host", "trixie", (), {}, ("cat", "/etc/debian_version"), "13."),
        # The same server on Debian 12 (python3 3.11, docker.io 20.10 and no Compose v2 in its packages).
        Image("host-bookworm", IMAGES_DIR / "host", "bookworm", (), {}, ("cat", "/etc/debian_version"), "12."),
        Image("registry", IMAGES_DIR / "registry", "bookworm", (), {}, ("docker-registry", "--version"), " 2.8."),
        Image(
            "acme", IMAGES_DIR / "acme", "trixie", (), {}, ("dpkg-query", "-W", "-f", "${Version}", "pebble"), "2.6."
        ),
        # Each stand-in under the name of the upstream image whose contract it keeps (docs/images.md), the one the
        # roles' defaults name under pliers_registry.
        _service("postgres", "library/postgres:15-bookworm", ("postgres", "--version"), "(PostgreSQL) 15."),
        _service("redis", "library/redis:7.0.15-bookworm", ("redis-server", "--version"), "v=7.0.15 "),
        _service("nginx", "nginxinc/nginx-unprivileged:1.22.1", ("nginx", "-v"), "nginx/1.22.1"),
        _service("prometheus", "prom/prometheus:v2.42.0", ("prometheus", "--version"), "version 2.42.0+"),
        _service(
            "alertmanager", "prom/alertmanager:v0.25.0", ("prometheus-alertmanager", "--version"), "version 0.25.0 "
        ),
        _service(
            "node-exporter", "prom/node-exporter:v1.5.0", ("prometheus-node-exporter", "--version"), "version 1.5.0 "
        ),
        _service(
            "postgres-exporter",
            "prometheuscommunity/postgres-exporter:v0.11.1",
            ("prometheus-postgres-exporter", "--version"),
            "version 0.11.1 ",
        ),
        _service(
            "redis-exporter",
            "oliver006/redis_exporter:v1.45.0-alpine",
            ("prometheus-redis-exporter", "--version"),
            "Exporter 1.45.0",
        ),
        _service(
            "nginx-exporter",
            "nginx/nginx-prometheus-exporter:0.11.0",
            ("nginx-prometheus-exporter", "--version"),
            "version=0.11.0-",
        ),
        _service("haproxy", "library/haproxy:2.6.12", ("haproxy", "-v"), "version 2.6.12-"),
        # The HA database (postgres_replicas >= 2): Patroni 4.0 and PostgreSQL 17 (the project's own image: none
        # upstream), and etcd 3.5 to quay.io/coreos/etcd's contract, from trixie.
        Image(
            "postgres-ha",
            IMAGES_DIR / "postgres-ha",
            "trixie",
            ("pliers/postgres-ha:17",),
            {},
            ("patroni", "--version"),
            "patroni 4.0.",
        ),
        Image(
            "etcd",
            IMAGES_DIR / "etcd",
            "trixie",
            ("coreos/etcd:v3.5.16",),
            {},
            ("etcd", "--version"),
            "Version: 3.5.16\n",
        ),
        Image("app-runtime", IMAGES_DIR / "app-runtime", "bookworm"),
        # A target Python this machine lacks, for ansible-test (tests/lab/test_target_pythons.py builds it).
        Image("python3.14", IMAGES_DIR / "python", "trixie", (), {}, ("python3.14", "--version"), "Python 3.14.", True),
    ]
    for version in APP_VERSIONS:
        for role, repo, port in (("api", "api", "3000"), ("ai", "ai-service", "3001")):
            args = {"APP_VERSION": version, "APP_ROLE": role, "APP_PORT": port}
            images.append(Image(repo, APP_DIR, "app-runtime", (f"pliers/{repo}:{version}",), args))
        web_args = {"APP_VERSION": version}
        images.append(Image("web", IMAGES_DIR / "web", "nginx", (f"pliers/web:{version}",), web_args))
    return images


def _tree_digest(path: Path) -> str:
    """A hash of every file's relative path, mode and content under path."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(str(file.relative_to(path)).encode() + b"\0")
        digest.update(oct(file.stat().st_mode & 0o777).encode() + b"\0")
        digest.update(file.read_bytes() + b"\0")
    return digest.hexdigest()


def base_tag(suite: str) -> str:
    digest = hashlib.sha256(f"debootstrap minbase {suite} {MIRROR}\n{BASE_SETUP}".encode()).hexdigest()
    return f"{LOCAL_REPO}/debian:{suite}-{digest[:12]}"


def image_exists(tag: str) -> bool:
    return docker("image", "inspect", "--format", "{{.Id}}", tag, check=False).returncode == 0


def build_base(suite: str) -> str:
    """A minimal Debian root filesystem from debootstrap, imported as an image."""
    tag = base_tag(suite)
    if image_exists(tag):
        return tag
    cache = STATE / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    log(f"debootstrap {suite} (minbase) -> {tag}")
    with tempfile.TemporaryDirectory(prefix=f"rootfs-{suite}-", dir=cache) as rootfs:
        log_path = _log_path(f"debootstrap-{suite}")
        with open(log_path, "w") as log_file:
            code = _run_logged(["debootstrap", "--variant=minbase", suite, rootfs, MIRROR], log_file)
        if code != 0:
            raise LabError(f"debootstrap {suite} failed (exit {code}); see {log_path}")
        run(["chroot", rootfs, "/bin/sh", "-c", BASE_SETUP.format(mirror=MIRROR, suite=suite)])
        change = 'CMD ["/bin/bash"]'
        pipeline = f"set -o pipefail; tar -C {rootfs} --numeric-owner -c . | docker import --change '{change}' - {tag}"
        run(["bash", "-c", pipeline])
    return tag


def _log_path(name: str) -> Path:
    logs = STATE / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    return logs / f"{name.replace('/', '_').replace(':', '_')}.log"


def _run_logged(cmd: list[str], log_file) -> int:
    return subprocess.run(
        cmd, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, check=False
    ).returncode


class Builder:
    """Builds the catalogue, reusing every image whose inputs are unchanged."""

    def __init__(self, images: list[Image] | None = None) -> None:
        self.images = images or [image for image in catalogue() if not image.on_demand]
        self.tags: dict[str, str] = {}

    def tag_of(self, image: Image) -> str:
        base = self.tags[image.base]
        digest = hashlib.sha256()
        digest.update(f"{base}\n{sorted(image.args.items())}\n".encode())
        digest.update(_tree_digest(image.context).encode())
        return f"{LOCAL_REPO}/{image.repo}:{digest.hexdigest()[:12]}"

    def build_all(self) -> dict[str, str]:
        # The tools are installed once, before the bases are made side by side: two apt-get runs at
        # once fail on dpkg's lock (seen on a machine's very first lab).
        if not all(image_exists(base_tag(suite)) for suite in SUITES):
            ensure_tools("debootstrap", package="debootstrap")
        with ThreadPoolExecutor(max_workers=2) as pool:
            for suite, tag in zip(SUITES, pool.map(build_base, SUITES), strict=True):
                self.tags[suite] = tag
        pending = list(self.images)
        while pending:
            ready = [image for image in pending if image.base in self.tags]
            if not ready:
                raise LabError(f"images with unknown bases: {[i.key for i in pending]}")
            with ThreadPoolExecutor(max_workers=3) as pool:
                for image, tag in zip(ready, pool.map(self.build, ready), strict=True):
                    self.tags[image.key] = tag
            pending = [image for image in pending if image not in ready]
        return self.tags

    def build(self, image: Image) -> str:
        tag = self.tag_of(image)
        if image_exists(tag):
            return tag
        log(f"building {image.key} -> {tag}")
        args = {"BASE": self.tags[image.base], **image.args}
        cmd = ["docker", "build", "--label", f"pliers.lab.image={image.key}", "-t", tag]
        for name, value in args.items():
            cmd += ["--build-arg", f"{name}={value}"]
        log_path = _log_path(f"build-{image.key}")
        with open(log_path, "w") as log_file:
            code = _run_logged([*cmd, str(image.context)], log_file)
        if code != 0:
            tail = log_path.read_text(errors="replace").splitlines()[-25:]
            raise LabError(f"building {image.key} failed (exit {code}), log {log_path}:\n" + "\n".join(tail))
        if image.version_check:
            out = docker("run", "--rm", "--entrypoint", image.version_check[0], tag, *image.version_check[1:])
            seen = (out.stdout + out.stderr).strip()
            if image.expect not in seen:
                docker("rmi", tag, check=False)
                raise LabError(f"{image.key}: expected a version containing {image.expect!r}, got {seen!r}")
        return tag


def push_all(jobs: list[tuple[str, str]], registry: str, docker_config: Path) -> list[str]:
    """Push each (local tag, registry name) pair to registry; returns the names pushed."""
    env = {"DOCKER_CONFIG": str(docker_config)}

    def push(job: tuple[str, str]) -> str:
        local, name = job
        remote = f"{registry}/{name}"
        docker("tag", local, remote)
        run(["docker", "push", remote], env=env)
        docker("rmi", remote)  # the local hash tag keeps the image
        return name

    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(push, jobs))


def reference_names() -> list[str]:
    return [name for image in catalogue() for name in image.pushed_as]


def clean_cache() -> None:
    """Remove every image the lab built (by its local repository) and the rootfs cache."""
    tags = docker("images", "--format", "{{.Repository}}:{{.Tag}}", f"--filter=reference={LOCAL_REPO}/*").stdout.split()
    for tag in tags:
        docker("rmi", tag, check=False)
    shutil.rmtree(STATE / "cache", ignore_errors=True)
    os.makedirs(STATE, exist_ok=True)
