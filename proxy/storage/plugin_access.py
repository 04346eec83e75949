"""What plugins may do with the database, for :mod:`proxy.plugin_api` to export.

Plugins write SQL with ``%s`` placeholders and get the same behaviour on
SQLite and PostgreSQL; where the two differ in what they can do, plugins ask
:func:`features` (a capability, never the backend's name), so every
SQLite/PostgreSQL branch lives in ``proxy/storage``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import peewee

from proxy.storage import stripes
from proxy.storage.batching import batched_transaction
from proxy.storage.db import database, is_postgres
from proxy.storage.prepared import run_statement

Q = TypeVar("Q", bound=peewee.Select)


@dataclass(frozen=True)
class Features:
    """What the configured database can do beyond portable SQL.

    ``row_locks``: ``SELECT ... FOR UPDATE [SKIP LOCKED]`` locks rows (on
    SQLite a writing transaction holds the whole database instead).
    ``writable_ctes``: ``INSERT``/``UPDATE``/``DELETE`` inside ``WITH``, so
    several writes travel as one statement.
    """

    row_locks: bool
    writable_ctes: bool


def features() -> Features:
    postgres = is_postgres()
    return Features(row_locks=postgres, writable_ctes=postgres)


def run(sql: str, params: Sequence[Any] = (), prepare: bool = True) -> Any:
    """Run ``sql`` now (``%s`` placeholders) and return its cursor.

    With ``prepare`` it is a server-side prepared statement on PostgreSQL
    (planned once per connection): for fixed statements on the call path.
    Inside a spend transaction it travels with the held ``BEGIN``/savepoint.
    """
    if prepare:
        return run_statement(sql, params)
    return database.execute_sql(sql.replace("%s", database.param), params)


# The current spend of one entity of the core, as a SQL scalar subquery: the sum of
# its base and its stripes (proxy.storage.stripes, proxy.storage.counters); NULL
# while it has no row.
_SPEND_OF = {
    kind: f"SELECT {stripes.total_sql(kind, 'e')} FROM {table} AS e WHERE e.{pk} = %s"
    for kind, (table, pk) in stripes.ENTITIES.items()
}
_SPEND_OF["proxy"] = "SELECT SUM(spend) FROM proxy_spend"


def spend_expression(kind: str, entity_id: str) -> tuple[str, list[Any]]:
    """``(sql, params)``: a scalar subquery for the committed spend of one
    entity (``kind`` is a key of ``ctx.spend_after``: key, user, team,
    customer, proxy); NULL while it has no row. For a check that must read
    spend and its own rows in one snapshot (one statement)."""
    sql = _SPEND_OF[kind]
    return f"({sql})", ([] if kind == "proxy" else [entity_id])


def lock_rows(query: Q, skip_locked: bool = False) -> Q:
    """``query`` locking the rows it reads until the transaction ends
    (``FOR UPDATE``; ``SKIP LOCKED`` leaves rows others hold)."""
    if not is_postgres():
        return query  # SQLite: the writing transaction already holds the database
    return query.for_update(skip_locked=skip_locked)


@contextlib.contextmanager
def transaction() -> Iterator[Any]:
    """A transaction (a savepoint inside one) whose ``BEGIN`` travels with its
    first statement on PostgreSQL; ``txn.rollback()`` undoes it so far."""
    with batched_transaction() as txn:
        yield txn


def atomic() -> Any:
    """``database.atomic()``: a transaction, or a savepoint inside one.

    Asked of the database itself, not of peewee's ``DatabaseProxy``, whose own
    ``savepoint()`` would bypass a batched spend transaction's held savepoint
    (proxy.storage.batching) and send ``SAVEPOINT``/``RELEASE`` as two round trips.
    """
    return database.obj.atomic()


def in_transaction() -> bool:
    return bool(database.in_transaction())


def after_commit(callback: Callable[[], None]) -> None:
    """Run ``callback`` once the current transaction commits (now, outside one);
    never if it rolls back."""
    database.after_commit(callback)


def connect() -> None:
    """Open this thread's connection (background threads; hooks already have one)."""
    database.connect(reuse_if_open=True)


def close() -> None:
    """Give this thread's connection back (a background thread going idle)."""
    if not database.is_closed():
        database.close()
