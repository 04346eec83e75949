"""Apply the schema migrations: the core's (``migrations/``), then each plugin's.

A migration is a module ``mNNNN_<what>.py`` of frozen DDL, the statements of
its own time, never derived from today's Peewee models (a migration that read
the models would change meaning whenever they change):

- ``SQLITE`` and ``POSTGRES``: tuples of statements for each backend, or
  ``STATEMENTS`` for both; run in order;
- ``apply(db)``, optional: a step that needs Python (a seed row), run after
  the statements.

The core's migrations live in the top-level ``migrations`` package; a plugin
names its own package through the ``plugin_migrations`` hook (see
:mod:`proxy.hookspecs`). Every applied migration is recorded once in
``comptroller_migration``: a core one by its module name, a plugin's as
``<namespace>:<module name>``. Everything runs in one transaction, under a
PostgreSQL advisory lock, so many processes may start at once.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import time
from collections.abc import Iterable
from types import ModuleType
from typing import Any

import peewee

import migrations
from proxy.storage.db import BaseModel, database, is_postgres

log = logging.getLogger("comptroller.migrate")

# Any constant works: it only has to be the same in every process.
_PG_LOCK_ID = 0x436F6D70

# The record of applied migrations, frozen as every release since the first created it.
_MIGRATION_TABLE = {
    "sqlite": 'CREATE TABLE IF NOT EXISTS "comptroller_migration" '
    '("name" VARCHAR(255) NOT NULL PRIMARY KEY, "applied_at" REAL NOT NULL)',
    "postgres": 'CREATE TABLE IF NOT EXISTS "comptroller_migration" '
    '("name" VARCHAR(255) NOT NULL PRIMARY KEY, "applied_at" DOUBLE PRECISION NOT NULL)',
}


class AppliedMigration(BaseModel):
    name = peewee.CharField(primary_key=True, max_length=255)
    applied_at = peewee.DoubleField(default=time.time)

    class Meta:
        table_name = "comptroller_migration"


def migration_names(package: ModuleType = migrations) -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(package.__path__) if m.name[0] == "m")


def run_migration(module: ModuleType) -> None:
    """Run one migration module's statements for this backend, then its ``apply``."""
    backend = "POSTGRES" if is_postgres() else "SQLITE"
    statements: Any = getattr(module, backend, None)
    if statements is None:
        statements = getattr(module, "STATEMENTS", ())
    for statement in statements:
        database.execute_sql(statement)
    apply = getattr(module, "apply", None)
    if apply is not None:
        apply(database)


def plugin_packages(declared: Iterable[Any]) -> list[tuple[str, ModuleType]]:
    """``plugin_migrations`` results as ``(namespace, package)``, each namespace once.

    Several plugins may declare the same package under one namespace (the
    budget plugins share their tables); one namespace for two packages is a
    mistake, refused at start-up.
    """
    packages: dict[str, ModuleType] = {}
    for item in declared:
        if item is None:
            continue
        namespace, package = item
        if isinstance(package, str):
            package = importlib.import_module(package)
        if not namespace or ":" in namespace:
            raise ValueError(f"plugin migrations namespace {namespace!r}: give a name without ':'")
        known = packages.setdefault(namespace, package)
        if known is not package:
            raise ValueError(
                f"two plugins declare migrations under the namespace {namespace!r}: "
                f"{known.__name__} and {package.__name__}"
            )
    return list(packages.items())


def migrate(
    plugin_tables: Iterable[type[BaseModel]] = (),
    plugin_migrations: Iterable[Any] = (),
) -> list[str]:
    """Apply pending migrations, the core's then each plugin's; the names applied.

    ``plugin_migrations``: the ``plugin_migrations`` hook's results.
    ``plugin_tables``: models of plugins that declare tables without
    migrations (created if missing, never altered). Safe to run from many
    processes at once.
    """
    sources = [("", migrations), *plugin_packages(plugin_migrations)]
    applied_now: list[str] = []
    with database.connection_context():
        with database.atomic():
            if is_postgres():
                # Serialise concurrent start-ups (several workers, several hosts).
                database.execute_sql("SELECT pg_advisory_xact_lock(%s)", (_PG_LOCK_ID,))
            database.execute_sql(_MIGRATION_TABLE["postgres" if is_postgres() else "sqlite"])
            done = {row.name for row in AppliedMigration.select(AppliedMigration.name)}
            for namespace, package in sources:
                for name in migration_names(package):
                    recorded = f"{namespace}:{name}" if namespace else name
                    if recorded in done:
                        continue
                    run_migration(importlib.import_module(f"{package.__name__}.{name}"))
                    AppliedMigration.create(name=recorded)
                    applied_now.append(recorded)
                    log.info("migration %s applied", recorded)
            tables = list(plugin_tables)
            if tables:
                database.create_tables(tables, safe=True)
    return applied_now


def plugin_schema(pm: Any) -> tuple[list[type[BaseModel]], list[Any]]:
    """What the plugins of ``pm`` declare: ``(plugin_tables, plugin_migrations)``,
    the arguments of :func:`migrate` (start-up and the CLI)."""
    tables = [model for models in pm.hook.plugin_tables() for model in models or []]
    return tables, list(pm.hook.plugin_migrations())
