"""Load a collection plugin by path (the collection's plugins/ is not a Python package)."""

from __future__ import annotations

import importlib.util
from types import ModuleType

from lab.common import ROOT


def load_plugin(relative: str) -> ModuleType:
    path = ROOT / "plugins" / relative
    spec = importlib.util.spec_from_file_location(f"pliers_plugin_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
