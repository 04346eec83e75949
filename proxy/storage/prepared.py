"""Server-side prepared statements for the call path (PostgreSQL).

psycopg2 sends every statement as text, and PostgreSQL parses and plans it
again each time: for the call path's statements (the one-query read, the
spend ledger, the rate limiter's upserts) planning costs about as much
server CPU as running them. A :class:`Prepared` statement is prepared on a
connection the first time it is used there (``PREPARE ...; EXECUTE ...`` in
the same round trip) and then only executed. Prepared statements belong to
the session and survive a rollback.

When a text carrying one or more ``PREPARE`` fails, PostgreSQL has run its
statements up to the failing one and none after it, and the error does not
say which one failed: the connection's prepared names are then read back
from ``pg_prepared_statements`` before its next statement (one round trip,
only after such a failure), not guessed. A ``PREPARE`` that never ran taken
for done would fail every later use of its name on that connection; one
that ran taken for not done would fail its next ``PREPARE``.
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg2.extensions

from proxy.storage.db import database
from proxy.storage.literals import for_execute

_PLAIN: frozenset[str] = frozenset()  # a statement sent as plain SQL (see _read_back)
# Marks a connection whose prepared names are unknown since a text preparing some failed.
_UNSURE: frozenset[str] = frozenset({"?"})
_READ_BACK = "SELECT name FROM pg_prepared_statements"
_known: weakref.WeakKeyDictionary[Any, set[str] | frozenset[str]] = weakref.WeakKeyDictionary()
_by_sql: dict[str, Prepared] = {}


def _numbered(sql: str) -> str:
    """``%s`` placeholders as ``$1``, ``$2``, ... (the SQL holds no other ``%``)."""
    parts = sql.split("%s")
    out = [parts[0]]
    for index, part in enumerate(parts[1:], start=1):
        out.append(f"${index}{part}")
    return "".join(out)


def _names(conn: Any) -> set[str] | frozenset[str]:
    known = _known.get(conn)
    if known is None:
        known = _known[conn] = set()
    return known


def _read_back(conn: Any) -> set[str] | frozenset[str]:
    """The names prepared on ``conn``, read from the server (after a failure made them
    unsure); plain SQL (:data:`_PLAIN`) for a statement while ``conn`` is in a
    transaction (one that failed may not run the read-back, and is rolled back before
    its next)."""
    if conn.get_transaction_status() != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
        return _PLAIN
    with conn.cursor() as cursor:
        cursor.execute(_READ_BACK)
        names = {row[0] for row in cursor.fetchall()}
    _known[conn] = names
    return names


def mark_prepared(conn: Any, names: Iterable[str]) -> None:
    known = _names(conn)
    if known is not _UNSURE:
        known.update(names)  # type: ignore[union-attr]


class Prepared:
    """One statement (psycopg2 ``%s`` placeholders), prepared per connection on first use."""

    def __init__(self, sql: str) -> None:
        assert "%%" not in sql, "a prepared statement cannot hold a literal %"
        self.sql = sql
        self.name = "cmp_" + hashlib.sha1(sql.encode()).hexdigest()[:16]
        count = sql.count("%s")
        args = f"({', '.join(['%s'] * count)})" if count else ""
        self.execute_sql = f"EXECUTE {self.name}{args}"
        self.prepare_sql = f"PREPARE {self.name} AS {_numbered(sql)}; {self.execute_sql}"

    @classmethod
    def of(cls, sql: str) -> Prepared:
        """The one :class:`Prepared` for ``sql`` (statements are few and fixed)."""
        statement = _by_sql.get(sql)
        if statement is None:
            statement = _by_sql[sql] = cls(sql)
        return statement

    def text_for(self, conn: Any, preparing: set[str]) -> str:
        """The SQL to send on ``conn``; adds the name to ``preparing`` if it prepares it."""
        known = _names(conn)
        if known is _UNSURE:
            known = _read_back(conn)
        if known is _PLAIN:
            return self.sql
        if self.name in known or self.name in preparing:
            return self.execute_sql
        preparing.add(self.name)
        return self.prepare_sql

    def run(self, params: Sequence[Any]) -> Any:
        """Execute with ``params``."""
        conn = database.connection()
        preparing: set[str] = set()
        text, values = for_execute(conn, self.text_for(conn, preparing), params)
        try:
            cursor = database.execute_sql(text, values)
        except Exception:
            after_failure(conn, preparing)
            raise
        mark_prepared(conn, preparing)
        return cursor


def after_failure(conn: Any, preparing: set[str]) -> None:
    """A text carrying ``PREPARE`` of ``preparing`` failed: which of them
    ran is unknown (those before the failing statement did), so the connection's
    names are read back before its next statement."""
    if preparing and not conn.closed:
        _known[conn] = _UNSURE


def run_statement(sql: str, params: Sequence[Any] = ()) -> Any:
    """Run ``sql`` (``%s`` placeholders) now and return its cursor: prepared on
    PostgreSQL, in SQLite's ``?`` style there."""
    if database.param == "%s":
        return Prepared.of(sql).run(params)
    return database.execute_sql(sql.replace("%s", database.param), params)
