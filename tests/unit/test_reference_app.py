"""The reference app's logic that needs no database: settings from *_FILE, migrations per version."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from ..paths import ROOT


@pytest.fixture
def app(monkeypatch):
    def load(version: str):
        monkeypatch.setenv("PLIERS_VERSION", version)
        spec = importlib.util.spec_from_file_location("pliers_app", ROOT / "lab" / "app" / "pliers_app.py")
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, "pliers_app", module)
        spec.loader.exec_module(module)
        return module

    return load


def test_settings_prefer_the_file(app, monkeypatch, tmp_path):
    module = app("1.0.0")
    secret = tmp_path / "password"
    secret.write_text("from-file\n")
    monkeypatch.setenv("DATABASE_PASSWORD", "from-env")
    assert module.setting("DATABASE_PASSWORD") == "from-env"
    monkeypatch.setenv("DATABASE_PASSWORD_FILE", str(secret))
    assert module.setting("DATABASE_PASSWORD") == "from-file"
    assert module.setting("NOT_SET", "default") == "default"


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("1.0.0", ["0001_items"]),
        ("1.1.0", ["0001_items", "0002_item_tags"]),
        ("broken", ["0001_items", "0002_item_tags"]),
    ],
)
def test_each_version_ships_its_own_migrations(app, version, expected):
    assert [name for name, _ in app(version).available_migrations()] == expected


def test_broken_is_never_healthy_even_with_every_dependency_up(app, monkeypatch):
    module = app("broken")
    monkeypatch.setattr(module, "check", lambda probe: "ok")
    status, body = module.health()
    assert status == 503 and body["status"] == "failing" and body["version"] == "broken"
    good = app("1.1.0")
    monkeypatch.setattr(good, "check", lambda probe: "ok")
    assert good.health()[0] == 200
