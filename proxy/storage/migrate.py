"""Apply the migrations in ``migrations/`` and create the plugins' tables."""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import Iterable

import peewee

import migrations
from proxy.storage.db import BaseModel, database, is_postgres
from proxy.storage.models import now

log = logging.getLogger("comptroller.migrate")

# Any constant works: it only has to be the same in every process.
_PG_LOCK_ID = 0x436F6D70


class AppliedMigration(BaseModel):
    name = peewee.CharField(primary_key=True, max_length=255)
    applied_at = peewee.DoubleField(default=now)

    class Meta:
        table_name = "comptroller_migration"


def migration_names() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(migrations.__path__) if m.name[0] == "m")


def migrate(plugin_tables: Iterable[type[BaseModel]] = ()) -> list[str]:
    """Apply pending migrations; safe to run from many processes at once."""
    applied_now: list[str] = []
    with database.connection_context():
        with database.atomic():
            if is_postgres():
                # Serialise concurrent start-ups (several workers, several hosts).
                database.execute_sql("SELECT pg_advisory_xact_lock(%s)", (_PG_LOCK_ID,))
            database.create_tables([AppliedMigration], safe=True)
            done = {row.name for row in AppliedMigration.select(AppliedMigration.name)}
            for name in migration_names():
                if name in done:
                    continue
                module = importlib.import_module(f"migrations.{name}")
                module.apply(database)
                AppliedMigration.create(name=name)
                applied_now.append(name)
                log.info("migration %s applied", name)
            tables = list(plugin_tables)
            if tables:
                database.create_tables(tables, safe=True)
    return applied_now
