"""The lab's command line refuses bad input before it touches anything."""

from __future__ import annotations

import subprocess

import pytest

from lab.common import ROOT, LabError
from lab.topology import Lab, parse_host_count


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "from 1 to 9"),
        ("10", "from 1 to 9"),
        ("abc", "whole number"),
        ("-2", "whole number"),
        ("", "whole number"),
        ("1.5", "whole number"),
    ],
)
def test_make_lab_up_refuses_a_bad_host_count(value, message):
    result = subprocess.run(
        ["make", "-s", "lab-up", f"HOSTS={value}", "LAB=python3 -m lab --name pliers-badinput"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "HOSTS must be" in result.stderr and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("value", "expected"), [("1", 1), (" 3 ", 3), ("9", 9)])
def test_host_count_accepts_1_to_9(value, expected):
    assert parse_host_count(value) == expected


@pytest.mark.parametrize("name", ["", "x", "Pliers", "pliers lab", "../etc", "a" * 40])
def test_lab_names_are_checked(name):
    with pytest.raises(LabError, match="lab name"):
        Lab(name)


def test_make_demo_refuses_an_unknown_mode():
    result = subprocess.run(["make", "-s", "demo", "MODE=kubernetes"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0
    assert "MODE must be compose or swarm, got 'kubernetes'" in result.stderr
