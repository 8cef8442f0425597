"""lab up is idempotent; lab down removes all the lab made and nothing else, quietly when nothing runs."""

from __future__ import annotations

from lab.common import docker, docker_lines
from lab.topology import Lab

from .support import TEST_LAB, lab_cli, run_container

LIFECYCLE_LAB = "pliers-lc"


def labelled(kind: str, name: str) -> list[str]:
    listing = ("ps", "-aq") if kind == "container" else (kind, "ls", "-q")
    return docker_lines(*listing, "--filter", f"label=pliers.lab={name}")


def test_up_twice_is_a_no_op_and_down_leaves_nothing(test_lab):
    lab_cli("down", name=LIFECYCLE_LAB)
    first = lab_cli("up", "--hosts", "1", name=LIFECYCLE_LAB)
    assert "1 hosts up" in first.stdout
    containers = sorted(labelled("container", LIFECYCLE_LAB))
    assert len(containers) == 3  # the host, the registry and the ACME server

    second = lab_cli("up", "--hosts", "1", name=LIFECYCLE_LAB)
    assert sorted(labelled("container", LIFECYCLE_LAB)) == containers
    assert "(0 images pushed)" in second.stdout
    assert "starting" not in second.stderr and "building" not in second.stderr, second.stderr

    # Lab state lost (or another checkout's): the registry is recreated for the new credentials.
    Lab(LIFECYCLE_LAB).credentials.unlink()
    third = lab_cli("up", "--hosts", "1", name=LIFECYCLE_LAB)
    assert "recreating pliers-lc-registry" in third.stderr, third.stderr
    assert "(0 images pushed)" not in third.stdout, "the new registry must receive the images again"

    # A container of another lab must survive this lab's down.
    bystander = run_container(any_lab_image(), "300", name="pliers-test-bystander", options=("--entrypoint", "sleep"))
    lab_cli("down", name=LIFECYCLE_LAB)
    for kind in ("container", "volume", "network"):
        assert labelled(kind, LIFECYCLE_LAB) == [], f"{kind}s left behind by lab down"
    assert bystander in docker_lines("ps", "-q", "--no-trunc", "--filter", f"label={TEST_LAB.label}")
    docker("rm", "-f", bystander)


def test_down_when_nothing_runs_succeeds_quietly():
    result = lab_cli("down", name="pliers-never-up")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def any_lab_image() -> str:
    """Any image the lab built (the registry's is small enough to idle in)."""
    return docker_lines("images", "--format", "{{.Repository}}:{{.Tag}}", "--filter", "reference=pliers-lab/registry")[
        0
    ]
