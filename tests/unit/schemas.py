"""The published JSON schemas the offline checks validate rendered files against (../shared/schemas/, from
SchemaStore, beside the checkout)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ..paths import ROOT

SCHEMAS = ROOT.parent / "shared" / "schemas"


def schema_file(name: str) -> Path:
    """The path of the published schema `name`.

    When it is missing (the file, or the whole directory): under CI (CI=true) the test fails naming the path, for
    a check that CI skipped would pass unseen; elsewhere the test is skipped, saying what is missing.
    """
    path = SCHEMAS / name
    if path.is_file():
        return path
    missing = f"no published schema {path}" + ("" if SCHEMAS.is_dir() else f" (no directory {SCHEMAS})")
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{missing}: CI validates against it", pytrace=False)
    pytest.skip(f"{missing}; CI has them, and fails without them")
