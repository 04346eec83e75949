"""Server-side prepared statements for the call path (PostgreSQL).

psycopg2 sends every statement as text, and PostgreSQL parses and plans it
again each time: for the call path's two big statements (the one-query read
and the spend ledger) planning costs as much server CPU as running them. A
:class:`Prepared` statement is prepared on a connection the first time it is
used there (``PREPARE ...; EXECUTE ...`` in the same round trip) and then
only executed. Prepared statements belong to the session and survive a
rollback. A connection on which a first ``PREPARE`` failed (we cannot tell
whether it was left prepared) runs plain SQL from then on.
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Sequence
from typing import Any

from proxy.db import database

_PLAIN: frozenset[str] = frozenset()  # marks a connection that runs plain SQL
_known: weakref.WeakKeyDictionary[Any, set[str] | frozenset[str]] = weakref.WeakKeyDictionary()


def _numbered(sql: str) -> str:
    """``%s`` placeholders as ``$1``, ``$2``, ... (the SQL holds no other ``%``)."""
    parts = sql.split("%s")
    out = [parts[0]]
    for index, part in enumerate(parts[1:], start=1):
        out.append(f"${index}{part}")
    return "".join(out)


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

    def run(self, params: Sequence[Any], prefix: str = "") -> Any:
        """Execute with ``params``; ``prefix`` (``"BEGIN; "``) goes in the same round trip."""
        conn = database.connection()
        known = _known.get(conn)
        if known is None:
            known = _known[conn] = set()
        if known is _PLAIN:
            return database.execute_sql(prefix + self.sql, params)
        if self.name in known:
            return database.execute_sql(prefix + self.execute_sql, params)
        try:
            cursor = database.execute_sql(prefix + self.prepare_sql, params)
        except Exception:
            _known[conn] = _PLAIN
            raise
        known.add(self.name)  # type: ignore[union-attr]
        return cursor
