"""python3 -m lab {up,down,reset,status,images}: the lab's command line (the Makefile calls it)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

from . import hosts as lab_hosts
from .acme import DIRECTORY, domain, ensure_acme, root_file
from .common import LabError, docker, docker_lines, log
from .engine import engine_version, ensure_engine
from .images import Builder, clean_cache, push_all
from .registry import CA_DIR, ensure_ca, ensure_registry, login
from .topology import DEFAULT_NAME, Lab, parse_host_count, parse_ports, parse_user

# The hosts' image by Debian release.
HOST_IMAGES = {"13": "host", "12": "host-bookworm"}


def push_changed(lab: Lab, builder: Builder, address: str) -> int:
    """Push the reference images the registry does not hold yet (by image id); returns how many."""
    record_path = lab.state / "pushed.json"
    registry_id = docker("inspect", "--format", "{{.Id}}", lab.registry_container).stdout.strip()
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    if record.get("registry") != registry_id:
        record = {"registry": registry_id, "images": {}}
    local_tags = {name: builder.tags[image.key] for image in builder.images for name in image.pushed_as}
    wanted = {
        name: docker("image", "inspect", "--format", "{{.Id}}", tag).stdout.strip() for name, tag in local_tags.items()
    }
    stale = sorted(name for name, image_id in wanted.items() if record["images"].get(name) != image_id)
    if stale:
        log(f"pushing {len(stale)} images to the lab registry")
        push_all([(local_tags[name], name) for name in stale], address, login(lab, address))
        record["images"].update({name: wanted[name] for name in stale})
        record_path.write_text(json.dumps(record, indent=2) + "\n")
    return len(stale)


def up(
    lab: Lab, count: int, publish: tuple[str, ...] = (), acme_edge: int = 1, deploy_user: str = "", debian: str = "13"
) -> None:
    started = time.monotonic()
    ensure_engine()
    builder = Builder()
    tags = builder.build_all()
    lab_hosts.ensure_network(lab)
    address = ensure_registry(lab, tags["registry"])
    pushed = push_changed(lab, builder, address)
    hosts = lab_hosts.ensure_hosts(lab, count, tags[HOST_IMAGES[debian]], publish, deploy_user)
    if not 1 <= acme_edge <= len(hosts):
        raise LabError(f"--acme-edge must name one of the {len(hosts)} hosts (1-{len(hosts)}), got {acme_edge}")
    acme_root = ensure_acme(lab, tags["acme"], hosts[acme_edge - 1].name, hosts[acme_edge - 1].address)
    inventory = lab_hosts.write_inventory(lab, hosts, CA_DIR / "ca.crt")
    print(f"lab {lab.name}: {len(hosts)} hosts up ({', '.join(f'{h.name} {h.address}' for h in hosts)})")
    print(f"  registry   {lab.registry} from the hosts, {address} from this machine ({pushed} images pushed)")
    edge = hosts[acme_edge - 1].name
    print(f"  acme       {DIRECTORY} from the hosts, for {domain(lab)} on {edge}; its root {acme_root}")
    print(f"  inventory  {inventory}")
    print(f"  extra vars {lab.credentials}")
    print(f"  took {time.monotonic() - started:.1f}s")


def down(lab: Lab) -> None:
    """Remove every container, volume and network labelled for this lab, and its state files."""
    if engine_version():
        label = f"label={lab.label}"
        containers = docker_lines("ps", "-aq", "--filter", label)
        if containers:
            docker("rm", "-f", "-v", *containers)
        volumes = docker_lines("volume", "ls", "-q", "--filter", label)
        if volumes:
            docker("volume", "rm", *volumes)
        networks = docker_lines("network", "ls", "-q", "--filter", label)
        if networks:
            docker("network", "rm", *networks)
        if containers or volumes or networks:
            counts = f"{len(containers)} containers, {len(volumes)} volumes, {len(networks)} networks"
            log(f"lab {lab.name} removed: {counts}")
    for path in (lab.inventory, lab.credentials, lab.state / "pushed.json", root_file(lab)):
        path.unlink(missing_ok=True)
    for directory in (lab.state / "registry", lab.state / "docker-config"):
        shutil.rmtree(directory, ignore_errors=True)


def status(lab: Lab) -> None:
    if not engine_version():
        print("no Docker engine answers")
        return
    rows = docker_lines("ps", "-a", "--filter", f"label={lab.label}", "--format", "{{.Names}}\t{{.Status}}")
    print("\n".join(rows) if rows else f"lab {lab.name}: nothing running")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m lab", description=__doc__)
    parser.add_argument(
        "--name", default=os.environ.get("LAB_NAME", DEFAULT_NAME), help="which lab (default: $LAB_NAME or pliers-lab)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    up_parser = commands.add_parser("up", help="engine, images, registry and N hosts (idempotent)")
    up_parser.add_argument("--hosts", default="1", help="how many hosts (1-9)")
    up_parser.add_argument(
        "--publish",
        action="append",
        default=[],
        metavar="MACHINE_PORT:HOST_PORT",
        help="publish a port of the first host on this machine's 127.0.0.1 (repeatable)",
    )
    up_parser.add_argument(
        "--acme-edge", default="1", help="the host (1-N) where the edge answers the lab ACME server's challenges"
    )
    up_parser.add_argument(
        "--deploy-user",
        default="",
        metavar="USER",
        help="hosts hardened the usual way: USER logs in with the lab's key and has sudo, root's login is refused",
    )
    up_parser.add_argument(
        "--debian", default="13", choices=sorted(HOST_IMAGES), help="the hosts' Debian release (default 13)"
    )
    commands.add_parser("down", help="remove everything this lab made")
    reset_parser = commands.add_parser("reset", help="recreate hosts as freshly installed")
    reset_parser.add_argument("hosts", nargs="+")
    reset_parser.add_argument("--publish", action="append", default=[], metavar="MACHINE_PORT:HOST_PORT")
    commands.add_parser("status", help="list this lab's containers")
    commands.add_parser("images", help="build the images, and the CA and SSH key every lab shares")
    commands.add_parser("clean-cache", help="remove the built images and the rootfs cache")
    args = parser.parse_args(argv)
    try:
        lab = Lab(args.name)
        if args.command == "up":
            up(lab, parse_host_count(args.hosts), parse_ports(args.publish), parse_host_count(args.acme_edge),
               parse_user(args.deploy_user), args.debian)  # fmt: skip
        elif args.command == "down":
            down(lab)
        elif args.command == "reset":
            ensure_engine()
            tags = Builder().build_all()
            # Each host from the newest build of the image it was made from (Debian 13 or 12).
            known = set(lab_hosts.running_hosts(lab))
            images = {name: tags.get(lab_hosts.made_from(name), tags["host"]) for name in args.hosts if name in known}
            hosts = lab_hosts.reset_hosts(lab, args.hosts, images, parse_ports(args.publish))
            lab_hosts.write_inventory(lab, hosts, CA_DIR / "ca.crt")
        elif args.command == "status":
            status(lab)
        elif args.command == "images":
            # Everything labs share, made once: labs started side by side (make test-lab) then only read it.
            ensure_engine()
            for key, tag in Builder().build_all().items():
                print(f"{key:24} {tag}")
            ensure_ca()
            lab_hosts.ensure_ssh_key()
        elif args.command == "clean-cache" and engine_version():
            clean_cache()
    except LabError as exc:
        print(f"lab: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
