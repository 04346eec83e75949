"""Prepared statements (proxy.storage.prepared) after a statement that failed.

A statement is prepared on a connection the first time it is used there, in
the same text as its first run; several can be prepared in one text (the
spend transaction's deferred writes travel with its COMMIT). When such a text
fails, PostgreSQL has run the statements before the failing one and none
after it: a name whose ``PREPARE`` never ran must not be taken for prepared,
or every later use of it on that connection fails.
"""

from __future__ import annotations

import peewee
import pytest

from proxy.storage.batching import batched_transaction, defer_write
from proxy.storage.db import database
from proxy.storage.prepared import run_statement

# Fails when run (division by zero, SQLSTATE 22012: a data error, as a value a
# statement cannot take would raise).
FAILS = "SELECT 1 / (%s::int - %s::int)"
# A later statement of the same text, used again on its own afterwards.
LATER = "SELECT %s::int + %s::int AS total"


def _prepared_names() -> set[str]:
    rows = database.execute_sql("SELECT name FROM pg_prepared_statements").fetchall()
    return {row[0] for row in rows}


def test_a_statement_after_the_one_that_failed_is_prepared_when_next_used(pg: str) -> None:
    with database.connection_context():
        with pytest.raises(peewee.DataError), batched_transaction():
            defer_write(FAILS, [1, 1])
            defer_write(LATER, [1, 1])
        # The failed text prepared FAILS (its PREPARE ran before its EXECUTE failed)
        # and never reached LATER's PREPARE.
        assert run_statement(LATER, [2, 3]).fetchone()[0] == 5
        assert run_statement(FAILS, [2, 1]).fetchone()[0] == 1
        assert len(_prepared_names()) == 2


def test_a_statement_whose_run_failed_stays_prepared(pg: str) -> None:
    with database.connection_context():
        with pytest.raises(peewee.DataError):
            run_statement(FAILS, [1, 1])  # PREPARE ran, then EXECUTE failed
        assert run_statement(FAILS, [3, 1]).fetchone()[0] == 0
        assert run_statement(FAILS, [2, 1]).fetchone()[0] == 1
        assert len(_prepared_names()) == 1


def test_statements_in_a_transaction_after_a_failure_run_as_plain_sql_until_it_ends(
    pg: str,
) -> None:
    with database.connection_context():
        with pytest.raises(peewee.DataError), batched_transaction():
            defer_write(FAILS, [1, 1])
            defer_write(LATER, [1, 1])
        with database.atomic():
            database.execute_sql("SELECT 1")  # the transaction is open on the server
            assert run_statement(LATER, [2, 3]).fetchone()[0] == 5  # plain: not prepared
            assert len(_prepared_names()) == 1
        assert run_statement(LATER, [4, 3]).fetchone()[0] == 7  # read back, then prepared
        assert len(_prepared_names()) == 2
