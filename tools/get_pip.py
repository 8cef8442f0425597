"""A stand-in for the pip bootstrap script ansible-test downloads from ci-files.testing.ansible.com (not
reachable from these machines): pip from Python's own ensurepip, then the pip version asked for from the
configured package index. ansible-test runs it as `python get_pip.py <pip options> pip==X`."""

from __future__ import annotations

import subprocess
import sys

# get-pip.py's own switches; pip install does not know them.
OWN_OPTIONS = ("--no-setuptools", "--no-wheel")

subprocess.run([sys.executable, "-m", "ensurepip", "--default-pip"], check=True, capture_output=True)
arguments = [argument for argument in sys.argv[1:] if argument not in OWN_OPTIONS]
sys.exit(subprocess.run([sys.executable, "-m", "pip", "install", *arguments], check=False).returncode)
