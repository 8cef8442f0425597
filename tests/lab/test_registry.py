"""The lab registry, as a host reaches it: TLS from the lab CA, and htpasswd credentials required."""

from __future__ import annotations

from lab.hosts import ssh
from lab.registry import CA_DIR, credentials


def trust_lab_ca(host, registry: str) -> None:
    ssh(
        host,
        f"install -d -m 0755 /etc/docker/certs.d/{registry} && cat > /etc/docker/certs.d/{registry}/ca.crt",
        input=(CA_DIR / "ca.crt").read_text(),
    )


def test_a_host_logs_in_over_tls_and_is_refused_without_credentials(test_lab, docker_hosts):
    host, registry = docker_hosts[0], test_lab.registry
    user, password = credentials(test_lab)
    image = f"{registry}/library/redis:7.0.15-bookworm"

    # The lab CA untrusted to begin with, whatever an earlier test installed (test_swarm.py's fixture trusts it).
    ssh(host, f"rm -rf /etc/docker/certs.d/{registry}")
    untrusted = ssh(host, f"docker login {registry} -u {user} --password-stdin", input=password, check=False)
    assert untrusted.returncode != 0
    assert "certificate signed by unknown authority" in untrusted.stderr, untrusted.stderr

    trust_lab_ca(host, registry)
    tls = ssh(host, f"curl -sS -o /dev/null -w '%{{http_code}}' https://{registry}/v2/", check=False)
    assert tls.returncode == 60, "curl must reject the lab certificate without the lab CA"
    with_ca = ssh(
        host,
        f"curl -sS -o /dev/null -w '%{{http_code}}' --cacert /etc/docker/certs.d/{registry}/ca.crt "
        f"https://{registry}/v2/",
    )
    assert with_ca.stdout == "401", "the registry must ask for credentials"

    anonymous = ssh(host, f"docker pull {image}", check=False)
    assert anonymous.returncode != 0
    assert "no basic auth credentials" in anonymous.stderr, anonymous.stderr

    wrong = ssh(host, f"docker login {registry} -u {user} --password-stdin", input=password + "x", check=False)
    assert wrong.returncode != 0
    assert "unauthorized" in wrong.stderr.lower(), wrong.stderr

    login = ssh(host, f"docker login {registry} -u {user} --password-stdin", input=password)
    assert "Login Succeeded" in login.stdout
    pulled = ssh(host, f"docker pull -q {image} && docker image inspect --format '{{{{.Id}}}}' {image}")
    assert pulled.stdout.strip().splitlines()[-1].startswith("sha256:")
    ssh(host, f"docker logout {registry}")
