"""The lab's ACME server: pebble (Let's Encrypt's test server, packaged by Debian), one per lab.

Hosts reach it as https://acme.pliers.lab:14000/dir on the lab network, over TLS from the lab CA. It validates
HTTP-01 challenges on port 80 of whatever a name resolves to, and in the lab every name resolves to the lab's edge
host (pebble-challtestsrv answers its DNS queries), so the deployed edge answers the challenge as it would on the
internet. pebble makes a new root for its certificates each time it starts: `lab up` writes the current one to
<lab state>/acme-root.pem, the only CA the tests trust for the edge.
"""

from __future__ import annotations

import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

from .common import LabError, docker, log
from .registry import CA_DIR, server_certificate
from .topology import Lab

ACME_ALIAS = "acme.pliers.lab"
DIRECTORY = f"https://{ACME_ALIAS}:14000/dir"
EDGE_LABEL = "pliers.lab.acme-edge"


def domain(lab: Lab) -> str:
    """The name a lab's stack is served as (every name resolves to the lab's edge host, for pebble)."""
    return f"{lab.name}.pliers.test"


def root_file(lab: Lab) -> Path:
    return lab.state / "acme-root.pem"


def edge_host(lab: Lab) -> str:
    """The host the lab's pebble sends challenges to ("" when it has none)."""
    state = docker("inspect", "--format", f'{{{{index .Config.Labels "{EDGE_LABEL}"}}}}', container(lab), check=False)
    return state.stdout.strip().partition("@")[0] if state.returncode == 0 else ""


def follow_edge(lab: Lab, name: str, address: str) -> None:
    """After host name was recreated (it may have another address): pebble, when it sends its challenges there,
    sends them to the new address (pebble restarted: its root is new too, and written again)."""
    state = docker("inspect", "--format", "{{.Config.Image}}", container(lab), check=False)
    if state.returncode == 0 and edge_host(lab) == name:
        ensure_acme(lab, state.stdout.strip(), name, address)


def container(lab: Lab) -> str:
    return f"{lab.name}-acme"


def ensure_acme(lab: Lab, image: str, edge_name: str, edge_address: str) -> Path:
    """pebble running for this lab, pointed at the edge host; returns the file holding its current root."""
    name = container(lab)
    edge_address = f"{edge_name}@{edge_address}"
    state = docker("inspect", "--format", f'{{{{.State.Running}}}} {{{{index .Config.Labels "{EDGE_LABEL}"}}}}', name,
                   check=False)  # fmt: skip
    running, _, edge = state.stdout.strip().partition(" ")
    if state.returncode == 0 and (edge != edge_address or running != "true"):
        # pointed elsewhere (the edge host was recreated), or stopped: a stopped pebble forgot its root anyway
        docker("rm", "-f", name)
        state = docker("inspect", name, check=False)
    if state.returncode != 0:
        crt, key = server_certificate("acme", ACME_ALIAS)
        log(f"starting the ACME server {name} ({DIRECTORY} on the lab network, every name resolving to {edge_address})")
        docker(
            "run", "-d", "--name", name, "--label", lab.label, "--label", f"{EDGE_LABEL}={edge_address}",
            "--network", lab.network, "--network-alias", ACME_ALIAS, "-p", "127.0.0.1::15000",
            # no random sleeps before validating, no nonce refused on purpose: the lab tests the deploy, not certbot
            "-e", "PEBBLE_VA_NOSLEEP=1", "-e", "PEBBLE_WFE_NONCEREJECT=0",
            "-e", f"PLIERS_ACME_EDGE={edge_address.partition('@')[2]}",
            "-v", f"{crt}:/etc/pebble/tls/cert.pem:ro", "-v", f"{key}:/etc/pebble/tls/key.pem:ro",
            image,
        )  # fmt: skip
    address = docker("port", name, "15000/tcp").stdout.split()[0]
    root = _fetch_root(address)
    path = root_file(lab)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != root:
        path.write_text(root)
    return path


def _fetch_root(address: str, timeout: float = 30) -> str:
    """pebble's current root certificate, from its management interface."""
    context = ssl.create_default_context(cafile=str(CA_DIR / "ca.crt"))
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"https://{address}/roots/0", context=context, timeout=3) as response:  # noqa: S310
                return response.read().decode()
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.3)
    raise LabError(f"the ACME server's management interface at {address} did not answer in {timeout}s ({last})")
