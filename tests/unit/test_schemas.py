"""A published schema missing fails the check under CI, naming its path, and only skips it elsewhere."""

from __future__ import annotations

import re

import pytest

from . import schemas


@pytest.mark.parametrize("missing", ["file", "directory"])
def test_a_missing_schema_fails_under_ci_naming_its_path(monkeypatch, tmp_path, missing):
    directory = tmp_path / "schemas"
    if missing == "file":
        directory.mkdir()
    monkeypatch.setattr(schemas, "SCHEMAS", directory)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=re.escape(str(directory / "loki.json"))):
        schemas.schema_file("loki.json")


def test_a_missing_schema_skips_outside_ci_saying_which(monkeypatch, tmp_path):
    monkeypatch.setattr(schemas, "SCHEMAS", tmp_path / "schemas")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=re.escape(str(tmp_path / "schemas" / "loki.json"))):
        schemas.schema_file("loki.json")


def test_a_present_schema_is_its_path(monkeypatch, tmp_path):
    (tmp_path / "loki.json").write_text("{}")
    monkeypatch.setattr(schemas, "SCHEMAS", tmp_path)
    monkeypatch.setenv("CI", "true")
    assert schemas.schema_file("loki.json") == tmp_path / "loki.json"
