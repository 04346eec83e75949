"""Comptroller uses its dependencies' public API only (issue 15).

Two checks over proxy/ and plugins/:

- the source reaches no underscore name of another object: ``obj._name`` and
  ``super()._name`` are refused unless ``_name`` is Comptroller's own (defined
  in proxy/ or plugins/), and ``from dep import _name`` is refused. Peewee's
  ``Model._meta`` is documented API ("Model options and table metadata") and
  allowed;
- no class of Comptroller's defines a private name that a dependency class it
  subclasses already has (an override of that dependency's internals), but
  ``_connect``: peewee's documented hook for a database class ("Adding a
  Custom Database Driver").
"""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import pkgutil
from pathlib import Path

import peewee

from tests.support.source_ast import parse_source

ROOT = Path(__file__).resolve().parents[2]
TREES = ("proxy", "plugins")
ALLOWED_ATTRIBUTES = {"_meta"}  # peewee's documented model metadata
GENERATED = {"_abc_impl"}  # ABCMeta gives each abstract class its own


def _sources() -> list[Path]:
    return sorted(path for tree in TREES for path in (ROOT / tree).rglob("*.py"))


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _own_private_names(trees: list[ast.AST]) -> set[str]:
    """Every underscore name Comptroller itself defines (functions, methods, attributes)."""
    own: set[str] = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                own.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                own.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                own.add(node.attr)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                own.add(node.target.id)
    return {name for name in own if _private(name)}


def test_no_private_name_of_a_dependency_is_reached() -> None:
    parsed = {path: parse_source(path) for path in _sources()}
    own = _own_private_names(list(parsed.values()))
    bad = []
    for path, tree in parsed.items():
        where = os.path.relpath(path, ROOT)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if node.module.split(".")[0] in TREES:
                    continue
                bad += [
                    f"{where}:{node.lineno} imports {node.module}.{alias.name}"
                    for alias in node.names
                    if _private(alias.name)
                ]
            if not isinstance(node, ast.Attribute) or not _private(node.attr):
                continue
            if node.attr in ALLOWED_ATTRIBUTES:
                continue
            receiver = node.value
            is_super = (
                isinstance(receiver, ast.Call)
                and isinstance(receiver.func, ast.Name)
                and receiver.func.id == "super"
            )
            if isinstance(receiver, ast.Name) and receiver.id in ("self", "cls"):
                continue
            if node.attr in own and not is_super:
                continue
            bad.append(f"{where}:{node.lineno} reaches {ast.unparse(node)}")
    assert bad == []


def _modules() -> list[str]:
    names = []
    for tree in TREES:
        package = importlib.import_module(tree)
        names.append(tree)
        names += [
            info.name
            for info in pkgutil.walk_packages(package.__path__, prefix=f"{tree}.")
            if ".migrations" not in info.name and "_migrations" not in info.name
        ]
    return names


def _is_dependency(cls: type) -> bool:
    return cls.__module__.split(".")[0] not in (*TREES, "builtins", "typing", "abc")


def _overrides(cls: type) -> list[str]:
    """The private members of dependency classes that ``cls`` itself redefines."""
    bad = []
    for base in cls.__mro__[1:]:
        if not _is_dependency(base):
            continue
        for member in vars(cls):
            if not _private(member) or member in GENERATED or not hasattr(base, member):
                continue
            if member == "_connect" and issubclass(base, peewee.Database):
                continue  # peewee's documented hook for a database class
            bad.append(
                f"{cls.__module__}.{cls.__qualname__}.{member} overrides {base.__qualname__}'s"
            )
    return bad


def test_no_class_overrides_a_private_member_of_a_dependency() -> None:
    bad = []
    for name in _modules():
        module = importlib.import_module(name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == name:
                bad += _overrides(cls)
    assert sorted(set(bad)) == []


def test_the_check_finds_an_override_of_peewees_pool() -> None:
    """What the pool once did (``_is_closed`` of playhouse.pool) is found; a
    database class's ``_connect`` is not."""
    from playhouse.pool import PooledPostgresqlDatabase

    class Pool(PooledPostgresqlDatabase):
        def _is_closed(self, conn: object) -> bool:
            return False

    class Driver(peewee.PostgresqlDatabase):
        def _connect(self) -> object:
            return None

    assert any(".Pool._is_closed overrides" in line for line in _overrides(Pool))
    assert _overrides(Driver) == []
