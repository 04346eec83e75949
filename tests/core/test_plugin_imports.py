"""Plugins reach the core through proxy.plugin_api (and the hook specs) only.

Walks every module under plugins/ (imports inside functions and under
``TYPE_CHECKING`` included) and fails on any import of another core module:
storage, the call path's internals, the HTTP layer. What a plugin needs is
exported by proxy/plugin_api.py, so a third-party plugin can do the same.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

from tests.support.source_ast import parse_source

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = ROOT / "plugins"
# The core modules a plugin may import.
PUBLIC = {"proxy.plugin_api", "proxy.hookspecs"}


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = parse_source(path)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module == "proxy":
            # "from proxy import storage" imports the module proxy.storage.
            found += [(node.lineno, f"proxy.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def _private_core_imports(path: Path) -> list[str]:
    bad = []
    for line, name in _imports(path):
        if (name == "proxy" or name.startswith("proxy.")) and name not in PUBLIC:
            bad.append(f"{os.path.relpath(path, ROOT)}:{line} imports {name}")
    return bad


def test_no_plugin_imports_core_internals() -> None:
    modules = sorted(PLUGINS.rglob("*.py"))
    assert len(modules) > 20
    bad = [line for path in modules for line in _private_core_imports(path)]
    assert bad == []


def test_the_walk_catches_storage_imports(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from typing import TYPE_CHECKING\n"
        "from proxy.plugin_api import hookimpl\n"
        "from proxy import storage\n"
        "if TYPE_CHECKING:\n"
        "    from proxy.storage.models import Key\n"
        "def f():\n"
        "    import proxy.storage.batching\n"
    )
    assert [line.split(" imports ")[1] for line in _private_core_imports(sample)] == [
        "proxy.storage",
        "proxy.storage.models",
        "proxy.storage.batching",
    ]
