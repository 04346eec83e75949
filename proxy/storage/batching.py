"""A transaction in as few round trips as PostgreSQL allows.

Peewee sends ``BEGIN``, every statement and ``COMMIT`` as round trips of
their own. The spend transaction holds the row locks of the hottest rows
(the key, its user, the proxy counter) from its first increment to its
commit, so every round trip in between is time in which every other call
of that key waits. A :class:`BatchedTransaction` sends ``BEGIN`` with its
first statement (:meth:`BatchedTransaction.first`) and, with ``COMMIT``,
the statements queued by :func:`execute_at_commit`: writes whose result
nobody reads (a rate-limit token count, an outbox row).

Statements queued for the commit run after every statement sent
immediately; a failure in any of them fails the commit, and the whole
transaction rolls back as one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import peewee

from proxy.storage.db import database
from proxy.storage.prepared import Prepared, after_failure, mark_prepared

# psycopg2.extensions.TRANSACTION_STATUS_INERROR
_IN_ERROR = 3
# Turns driver errors into peewee's (peewee's own execute_sql uses it).
_driver_errors: Any = getattr(peewee, "__exception_wrapper__")  # noqa: B009
DEFERS_WRITES = "comptroller_defers_writes"
F = TypeVar("F", bound=Callable[..., Any])


def defers_writes(function: F) -> F:
    """Mark a hook implementation whose only writes go through :func:`execute_at_commit`.

    The spend transaction calls such an ``on_alert`` without a savepoint of its
    own (two round trips saved): it cannot break the transaction before the
    commit. Every other implementation gets its savepoint.
    """
    setattr(function, DEFERS_WRITES, True)
    return function


class BatchedTransaction(peewee._transaction):
    """``with BatchedTransaction(database.obj) as txn: txn.first(sql, params) ...``"""

    def __init__(self, db: peewee.Database) -> None:
        super().__init__(db)
        self.deferred: list[bytes] = []
        self.preparing: set[str] = set()  # prepared by the deferred statements
        self.begun = False
        self.commit_sent = False  # from then on, the outcome of a failure is unknown

    def _begin(self) -> None:
        """Nothing yet: ``BEGIN`` travels with the first statement."""

    def first(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Send ``BEGIN`` and the transaction's first statement in one round trip."""
        assert not self.begun, "first() is the transaction's first statement"
        self.begun = True
        return self.db.execute_sql("BEGIN; " + sql, params)

    def first_prepared(self, statement: Prepared, params: Sequence[Any] = ()) -> Any:
        """:meth:`first`, as a server-side prepared statement."""
        assert not self.begun, "first_prepared() is the transaction's first statement"
        self.begun = True
        return statement.run(params, prefix="BEGIN; ")

    def queue(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Send ``sql`` with the COMMIT, as a prepared statement."""
        conn = self.db.connection()
        text = Prepared.of(sql).text_for(conn, self.preparing)
        with _driver_errors:
            self.deferred.append(self.db.cursor().mogrify(text, params))

    def commit(self, begin: bool = True) -> None:
        statements, self.deferred = self.deferred, []
        preparing, self.preparing = self.preparing, set()
        conn = self.db.connection()
        try:
            if self.begun:
                if conn.get_transaction_status() == _IN_ERROR:
                    # COMMIT would answer ROLLBACK without an error: make it one.
                    raise peewee.InternalError("the transaction failed before its commit")
                self.commit_sent = True
                _send(self.db, b"; ".join([*statements, b"COMMIT"]))
            elif statements:
                _send(self.db, b"; ".join(statements))
        except Exception as err:
            after_failure(conn, preparing, err)
            raise
        mark_prepared(conn, preparing)
        self.db._run_commit_callbacks()

    def rollback(self, begin: bool = True) -> None:
        self.deferred = []
        self.preparing = set()  # never sent (commit() gives up on a failed send itself)
        if self.begun:
            self.db.rollback()
        self.db._clear_commit_callbacks()


def _send(db: peewee.Database, sql: bytes) -> None:
    """Send already interpolated SQL (no parameters: a ``%`` in it is data), with
    driver errors turned into peewee's, as ``execute_sql`` does."""
    with _driver_errors:
        db.cursor().execute(sql)


def execute_at_commit(sql: str, params: Sequence[Any] = ()) -> None:
    """Run a write whose result nobody reads: with the COMMIT inside a batched
    transaction (one round trip for all of them), else at once."""
    txn = database.top_transaction()
    if isinstance(txn, BatchedTransaction):
        txn.queue(sql, params)
    else:
        database.execute_sql(sql, params)
