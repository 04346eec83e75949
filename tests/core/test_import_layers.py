"""Which module may import which: the layers of the layout stay one-way.

The import graph is read from the source (every ``import``, those inside
functions included: an import deferred to call time is still a dependency),
so a cycle hidden behind a lazy import is found too.

- The core never imports the UI: the UI registers what the core needs
  (its login session check) through the app (``proxy.call.auth.SESSION_CHECK``).
  Only the app factory, which wires every part together, imports it.
- The OpenAPI generator reads schemas, never a view (a module defining a
  Flask blueprint); the docs view reads the generator: one way only.
- No two modules import each other, directly or through others.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

from tests.support.source_ast import parse_source

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("proxy", "plugins")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _sources() -> dict[str, Path]:
    return {
        _module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")
    }


def _resolve(name: str) -> str | None:
    """The module of ours that importing ``name`` loads (``a.b.func`` is ``a.b``)."""
    modules = _sources()
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imported_names(module: str, tree: ast.AST) -> Iterator[str]:
    is_package = _sources()[module].name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package
                for _ in range(node.level - 1):
                    anchor = anchor.rpartition(".")[0]
                base = f"{anchor}.{base}" if base else anchor
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


@cache
def import_graph() -> dict[str, frozenset[str]]:
    graph = {}
    for module, path in _sources().items():
        tree = parse_source(path)
        targets = {_resolve(name) for name in _imported_names(module, tree)}
        graph[module] = frozenset(t for t in targets if t is not None and t != module)
    return graph


def defines_a_blueprint(module: str) -> bool:
    tree = parse_source(_sources()[module])
    return any(
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name | ast.Attribute)
        and (node.func.id if isinstance(node.func, ast.Name) else node.func.attr) == "Blueprint"
        for node in ast.walk(tree)
    )


def import_cycles(graph: dict[str, frozenset[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_core_never_imports_the_ui() -> None:
    offenders = {
        module: sorted(t for t in targets if _in(t, "proxy.ui"))
        for module, targets in import_graph().items()
        if not _in(module, "proxy.ui") and module != "proxy.app"
    }
    assert {m: t for m, t in offenders.items() if t} == {}


def test_the_openapi_generator_imports_no_view() -> None:
    views = {module for module in import_graph() if defines_a_blueprint(module)}
    assert "proxy.api.docs" in views and "proxy.api.admin.common" in views  # the probe works
    offenders = {
        module: sorted(targets & views)
        for module, targets in import_graph().items()
        if _in(module, "proxy.api.openapi")
    }
    assert {m: t for m, t in offenders.items() if t} == {}


def test_no_module_imports_itself_through_others() -> None:
    assert import_cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": frozenset({"b"}), "b": frozenset({"c"}), "c": frozenset({"a"}), "d": frozenset()}
    assert import_cycles(graph) == [["a", "b", "c"]]
    assert "proxy.storage.models" in import_graph()["proxy.call.auth"]  # the graph is read
