"""Server-side prepared statements for the call path (PostgreSQL).

psycopg2 sends every statement as text, and PostgreSQL parses and plans it
again each time: for the call path's statements (the one-query read, the
spend ledger, the rate limiter's upserts) planning costs about as much
server CPU as running them. A :class:`Prepared` statement is prepared on a
connection the first time it is used there (``PREPARE ...; EXECUTE ...`` in
the same round trip) and then only executed. Prepared statements belong to
the session and survive a rollback. A connection on which a statement
carrying a first ``PREPARE`` failed (we cannot tell whether the ``PREPARE``
itself went through) runs plain SQL from then on.
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Iterable, Sequence
from typing import Any

from proxy.storage.db import database
from proxy.storage.literals import for_execute

_PLAIN: frozenset[str] = frozenset()  # marks a connection that runs plain SQL
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


def mark_prepared(conn: Any, names: Iterable[str]) -> None:
    known = _names(conn)
    if known is not _PLAIN:
        known.update(names)  # type: ignore[union-attr]


def give_up(conn: Any) -> None:
    """Plain SQL from now on for ``conn`` (its prepared statements are unknown)."""
    _known[conn] = _PLAIN


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
        except Exception as err:
            after_failure(conn, preparing, err)
            raise
        mark_prepared(conn, preparing)
        return cursor


def after_failure(conn: Any, preparing: set[str], err: Exception) -> None:
    """A statement carrying ``PREPARE`` of ``preparing`` failed with ``err``."""
    if not preparing:
        return
    if _raised_by_execute(err):
        mark_prepared(conn, preparing)
    else:
        give_up(conn)


# SQLSTATE classes only a running statement raises (data, integrity, transaction
# rollback): the PREPARE before it went through.
_EXECUTION_CLASSES = ("22", "23", "40")


def _raised_by_execute(err: Exception) -> bool:
    cause = getattr(err, "orig", None) or err.__context__
    code = getattr(cause, "pgcode", None) or ""
    return code[:2] in _EXECUTION_CLASSES


def run_statement(sql: str, params: Sequence[Any] = ()) -> Any:
    """Run ``sql`` (``%s`` placeholders) now and return its cursor: prepared on
    PostgreSQL, in SQLite's ``?`` style there."""
    if database.param == "%s":
        return Prepared.of(sql).run(params)
    return database.execute_sql(sql.replace("%s", database.param), params)
