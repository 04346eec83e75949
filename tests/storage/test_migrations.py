"""The migrations are frozen DDL, and today's models agree with what they build.

Migrations never read the models (a migration that did would change meaning
as the models change), so a model changed without a migration would go
unnoticed until a query failed in production: every Peewee model of the core
and the builtin plugins is compared, column by column, with the table the
migrations made.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from collections.abc import Iterator
from pathlib import Path

import peewee
import pytest

import plugins
import proxy
from proxy.storage.db import BaseModel, database
from proxy.storage.migrate import AppliedMigration, migrate, plugin_packages
from tests.support.source_ast import parse_source

ROOT = Path(__file__).resolve().parents[2]
MIGRATION_DIRS = [ROOT / "migrations", *sorted((ROOT / "plugins").glob("*/migrations"))]


def _import_everything() -> None:
    for package in (proxy, plugins):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            importlib.import_module(info.name)


def table_models() -> list[type[peewee.Model]]:
    """Every model with a table that Comptroller ships: subclasses of the storage
    BaseModel defined in ``proxy`` or ``plugins``, all their modules imported. (A
    third-party plugin's model, such as README's example a test may have loaded,
    is created by that plugin's own ``plugin_tables``.)"""
    _import_everything()
    found: list[type[peewee.Model]] = []
    todo: list[type[peewee.Model]] = [BaseModel]
    while todo:
        model = todo.pop()
        todo.extend(model.__subclasses__())
        if model is not BaseModel and model.__module__.split(".")[0] in ("proxy", "plugins"):
            found.append(model)
    return sorted(found, key=lambda m: m._meta.table_name)


def _columns(model: type[peewee.Model]) -> set[tuple[str, bool]]:
    return {(field.column_name, bool(field.null)) for field in model._meta.sorted_fields}


@pytest.fixture
def migrated(db_url: str, app: object) -> Iterator[None]:
    """A database made by start-up's migrations (the app of ``db_url``)."""
    with database.connection_context():
        yield


def test_every_model_matches_the_table_its_migrations_made(migrated: None) -> None:
    models = table_models()
    assert {"key", "rate_limit_window", "webhook_outbox", "budget_reservation"} <= {
        m._meta.table_name for m in models
    }
    tables = set(database.get_tables())
    for model in models:
        table = model._meta.table_name
        assert table in tables, f"no migration creates {table} ({model.__name__})"
        in_db = {(c.name, bool(c.null)) for c in database.get_columns(table)}
        assert in_db == _columns(model), f"{model.__name__} differs from table {table}"


def test_migrations_run_once(migrated: None) -> None:
    assert migrate() == []
    names = [row.name for row in AppliedMigration.select()]
    assert len(names) == len(set(names))


def test_no_migration_imports_the_live_models() -> None:
    for folder in MIGRATION_DIRS:
        for path in folder.glob("m*.py"):
            tree = parse_source(path)
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom | ast.Import):
                    names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                    names += [alias.name for alias in node.names]
                    assert not any(n.startswith(("proxy", "plugins")) for n in names), (
                        f"{path.relative_to(ROOT)} imports {names}: freeze its DDL instead"
                    )


def test_a_namespace_declared_for_two_packages_is_refused() -> None:
    same = ("budgets", "plugins.budgets.migrations")
    assert len(plugin_packages([same, same, None])) == 1
    with pytest.raises(ValueError, match="two plugins"):
        plugin_packages([same, ("budgets", "plugins.rate_limiter.migrations")])
    with pytest.raises(ValueError, match="without ':'"):
        plugin_packages([("a:b", "plugins.budgets.migrations")])
