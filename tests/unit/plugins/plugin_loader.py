"""Load one of the collection's plugin files as a Python module under test."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

PLUGINS = Path(__file__).resolve().parents[3] / "plugins"


def load_plugin(kind: str, name: str) -> Any:
    """plugins/<kind>/<name>.py as a fresh module (its module_utils come through ansible_collections)."""
    spec = importlib.util.spec_from_file_location(f"{name}_under_test", PLUGINS / kind / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
