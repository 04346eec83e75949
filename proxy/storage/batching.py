"""A transaction in as few round trips as PostgreSQL allows.

Peewee sends ``BEGIN``, every ``SAVEPOINT``, every statement and ``COMMIT``
as round trips of their own. The spend transaction holds the row locks of
the hottest rows (the key, its user, the proxy counter) from its first
increment to its commit, so every round trip in between is time in which
every other call of that key waits.

Inside :func:`batched_transaction` on PostgreSQL, transaction control is held
back (:class:`Batch`): ``BEGIN`` and a savepoint's ``SAVEPOINT`` travel with
the next statement actually sent (a savepoint around code that sends
nothing costs nothing), and the writes queued with :func:`defer_write`
(writes whose result nobody reads: a rate-limit token count, an outbox row)
travel with ``COMMIT``. Code inside uses the ordinary peewee API
(``database.atomic()``, queries, ``database.after_commit``).

Deferred writes run after every statement sent immediately; a failure in
any of them fails the commit, and the whole transaction rolls back as one.
Elsewhere (SQLite, or outside a spend transaction) a deferred write runs at
once.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import peewee

from proxy.storage import literals
from proxy.storage.db import database
from proxy.storage.prepared import Prepared, after_failure, mark_prepared, run_statement

# psycopg2.extensions.TRANSACTION_STATUS_INERROR
_IN_ERROR = 3
_savepoint_ids = itertools.count(1)


class Batch:
    """The held-back control statements and deferred writes of one spend
    transaction on one PostgreSQL connection (installed on the pool by
    :func:`batched_transaction`, which routes ``begin``/``commit``/``rollback``/
    ``savepoint``/``execute_sql`` here)."""

    def __init__(self, db: Any) -> None:
        self.db = db
        self.held: list[str] = []  # sent ahead of the next statement
        self.begun = False  # BEGIN has been sent
        self.commit_sent = False  # from then on, the outcome of a failure is unknown
        # Interpolated SQL and the statement names it prepares on the connection.
        self.deferred: list[tuple[str, frozenset[str]]] = []

    def begin(self) -> None:
        self.held.append("BEGIN")

    def take_held(self) -> str:
        """The held control statements as a prefix for the statement being sent."""
        if not self.held:
            return ""
        if "BEGIN" in self.held:
            self.begun = True
        text = "".join(sql + "; " for sql in self.held)
        self.held.clear()
        return text

    def defer(self, sql: str, params: Sequence[Any]) -> None:
        conn = self.db.connection()
        preparing: set[str] = set(itertools.chain.from_iterable(n for _, n in self.deferred))
        before = set(preparing)
        text = Prepared.of(sql).text_for(conn, preparing)
        interpolated = literals.interpolate(text, params) if literals.fits(conn) else None
        if interpolated is None:
            interpolated = self.db.cursor().mogrify(text, params).decode()
        self.deferred.append((interpolated, frozenset(preparing - before)))

    def commit(self) -> None:
        statements = [sql for sql, _ in self.deferred]
        preparing = set(itertools.chain.from_iterable(names for _, names in self.deferred))
        self.deferred = []
        conn = self.db.connection()
        try:
            if statements:
                prefix = self.take_held()
                batch = prefix + "; ".join([*statements, "COMMIT"])
            elif self.begun:
                batch = "COMMIT"
            else:
                return  # nothing was sent: there is no transaction to end
            if self.begun and conn.get_transaction_status() == _IN_ERROR:
                # COMMIT would answer ROLLBACK without an error: make it one.
                raise peewee.InternalError("the transaction failed before its commit")
            self.commit_sent = True
            # Already interpolated: a ``%`` in it is data (psycopg2 reads ``%%`` as ``%``).
            self.db.send_sql(batch.replace("%", "%%"))
        except Exception:
            after_failure(conn, preparing)
            raise
        mark_prepared(conn, preparing)

    def rollback(self) -> None:
        self.deferred = []
        self.held.clear()
        if self.begun:
            self.begun = False
            self.db.send_sql("ROLLBACK")

    def savepoint(self) -> HeldSavepoint:
        return HeldSavepoint(self)


class HeldSavepoint:
    """A savepoint whose ``SAVEPOINT`` is sent only with a statement inside it.

    Leaving it normally needs no round trip (the commit releases it). Leaving
    it with an exception drops the writes deferred inside it, and rolls back
    to it if its ``SAVEPOINT`` was sent.
    """

    def __init__(self, batch: Batch) -> None:
        self.batch = batch
        self.sql = f'SAVEPOINT "cmp_s{next(_savepoint_ids)}"'
        self.mark = 0

    def __enter__(self) -> HeldSavepoint:
        self.mark = len(self.batch.deferred)
        self.batch.held.append(self.sql)
        return self

    def rollback(self) -> None:
        """Undo what was done inside it so far; it stays open."""
        del self.batch.deferred[self.mark :]
        held = self.batch.held
        if self.sql in held:
            del held[held.index(self.sql) + 1 :]
        else:
            self.batch.db.send_sql(f"ROLLBACK TO SAVEPOINT {self.sql.split(' ', 1)[1]}")

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        held = self.batch.held
        sent = self.sql not in held
        if not sent:
            del held[held.index(self.sql) :]  # and any savepoint opened inside it
        if exc_type is not None:
            del self.batch.deferred[self.mark :]
            if sent:
                name = self.sql.split(" ", 1)[1]
                self.batch.db.send_sql(f"ROLLBACK TO SAVEPOINT {name}")


@contextlib.contextmanager
def batched_transaction() -> Iterator[Any]:
    """``database.atomic()``, batched on PostgreSQL unless a transaction is
    already open (then it is a savepoint of that one). Yields peewee's
    transaction (or savepoint) object."""
    db = database.obj
    if not getattr(db, "batches_transactions", False) or db.in_transaction():
        with database.atomic() as txn:
            yield txn
        return
    db.batch = Batch(db)
    try:
        with database.atomic() as txn:
            yield txn
    finally:
        db.batch = None


def current_batch() -> Batch | None:
    """The batch of this thread's spend transaction, if one is open."""
    return getattr(database.obj, "batch", None)


def defer_write(sql: str, params: Sequence[Any] = ()) -> None:
    """Run a write whose result nobody reads: with the COMMIT inside a batched
    spend transaction (one round trip for all of them), else at once."""
    batch = current_batch()
    if batch is not None:
        batch.defer(sql, params)
    else:
        run_statement(sql, params)
