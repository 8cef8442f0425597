"""The nginx edge's configuration in the shapes the lab's deployed stacks do not take - TLS off behind a load balancer
(trusted proxies), an inventory certificate, each in both modes - rendered by the roles (tests/render.py) and loaded
by the lab's own nginx image (nginx -t, as the edge's user), with the files the edge would have beside it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from lab.common import docker
from tests.render import render_stack

pytestmark = pytest.mark.lab

NAME = "pliers.staging.example.com"
CASES = {
    "tls-off-behind-a-load-balancer": {"pliers_tls": "off", "pliers_edge_trusted_proxies": ["10.0.0.0/8", "192.0.2.7"]},
    "inventory-certificate": {"pliers_tls": "inventory", "pliers_edge_hsts_max_age": 31536000},
}


@pytest.fixture(scope="module", params=[(case, mode) for case in CASES for mode in ("compose", "swarm")],
                ids=lambda param: f"{param[0]}-{param[1]}")  # fmt: skip
def edge_config(request, tmp_path_factory, test_lab) -> tuple[str, str, Path]:
    case, mode = request.param
    project = tmp_path_factory.mktemp(f"edge-{case}-{mode}")
    overrides = {**CASES[case], "pliers_mode": mode, "pliers_server_names": [NAME]}
    render_stack(project, "staging", overrides)
    return case, mode, project


def nginx_t(image: str, project: Path, mode: str) -> subprocess.CompletedProcess:
    """nginx -t on the rendered edge configuration, with a certificate and, in compose mode, the upstreams the
    follower would have written (every routed service on a loopback address)."""
    tls, upstreams = project / "tls", project / "upstreams"
    tls.mkdir(exist_ok=True)
    upstreams.mkdir(exist_ok=True)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
         "-subj", f"/CN={NAME}", "-keyout", str(tls / "privkey.pem"), "-out", str(tls / "fullchain.pem")],
        check=True, capture_output=True,
    )  # fmt: skip
    for path in tls.iterdir():
        path.chmod(0o644)
    for service in ("api", "ai-service", "web"):
        (upstreams / f"{service}.conf").write_text(f"upstream {service} {{\n    server 127.0.0.1:9;\n}}\n")
    return docker(
        "run", "--rm", "--user", "101:101", "--cap-drop", "ALL",
        "-v", f"{project / 'configs' / 'edge'}:/etc/nginx/conf.d:ro", "-v", f"{tls}:/etc/nginx/tls:ro",
        "-v", f"{upstreams}:/tmp/pliers-edge:ro", image, "nginx", "-t",
        check=False,
    )  # fmt: skip


def test_the_lab_nginx_image_loads_the_rendered_edge(edge_config, images):
    case, mode, project = edge_config
    result = nginx_t(images["nginx"], project, mode)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "test is successful" in result.stderr


def test_what_each_shape_renders(edge_config):
    case, mode, project = edge_config
    text = (project / "configs" / "edge" / "pliers-edge.conf").read_text()
    assert f"server_name {NAME};" in text
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in text
    if case == "tls-off-behind-a-load-balancer":
        assert "listen 8443" not in text and "return 308" not in text
        # HSTS only on what the load balancer says came over HTTPS.
        assert "add_header Strict-Transport-Security $pliers_hsts always;" in text
        assert 'https "max-age=31536000";' in text
        assert "set_real_ip_from 10.0.0.0/8;" in text and "set_real_ip_from 192.0.2.7;" in text
        assert '"~^1:(?<proto>https?)$" $proto;' in text
    else:
        assert "listen 8443 ssl http2;" in text and "return 308 https://$host$request_uri;" in text
        assert 'add_header Strict-Transport-Security "max-age=31536000" always;' in text
        assert "set_real_ip_from" not in text
        assert "ssl_protocols TLSv1.2 TLSv1.3;" in text
    assert ("@acme_peers" in text) is False, "the ACME peers are asked only with pliers_tls acme in swarm mode"
