"""What the rate limiter costs a call, in statements sent to the database.

Every statement the plugin's storage functions send (``BEGIN``/``COMMIT``
included) is counted at the driver cursor; on PostgreSQL each is one network
round trip. On PostgreSQL the admission is decided inside the call's one read
(the plugin's read fragment), so it sends no statement of its own there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from plugins.rate_limiter import store
from proxy.storage.batching import Batch
from proxy.storage.db import database, is_postgres
from tests.conftest import base_config
from tests.support.rate_limits import chat, make_budget, make_key, make_user
from tests.support.statements import spy_on_cursors, statement_sql


def _verb(sql: Any) -> str:
    """The statement's first word; a prepared statement's own."""
    return statement_sql(sql).split()[0].upper()


class StatementCounter:
    """Counts cursor executions made while a rate-limiter storage function runs."""

    def __init__(self) -> None:
        self.active = 0
        self.statements: list[str] = []
        self.sent: list[str] = []  # every statement's SQL while measuring

    def wrap_cursor(self, make_cursor: Any) -> Any:
        return spy_on_cursors(make_cursor, self._executed)

    def _executed(self, sql: Any) -> None:
        self.sent.append(statement_sql(sql))
        if self.active:
            self.statements.append(_verb(sql))

    def wrap_queue(self, queue: Any) -> Any:
        """Statements queued to travel with the spend transaction's COMMIT (PostgreSQL)."""
        counter = self

        def queued(txn: Any, sql: str, *args: Any) -> Any:
            if counter.active:
                counter.statements.append(sql.split()[0].upper() + " at COMMIT")
            return queue(txn, sql, *args)

        return queued

    def wrap(self, function: Any) -> Any:
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.active += 1
            try:
                return function(*args, **kwargs)
            finally:
                self.active -= 1

        return counted

    @contextlib.contextmanager
    def measuring(self) -> Iterator[list[str]]:
        self.statements = []
        self.sent = []
        yield self.statements

    def decided_in_the_read(self) -> bool:
        """Whether the call's one read (the statement reading the key) counted it."""
        reads = [sql for sql in self.sent if '"key" AS k' in sql]
        return len(reads) == 1 and "UPDATE rate_limit_window" in reads[0]


@pytest.fixture
def counter(make_app: Any, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    app = make_app(base_config(db_url, litellm_settings={"max_end_user_budget_id": "tier"}))
    counting = StatementCounter()
    monkeypatch.setattr(database.obj, "cursor", counting.wrap_cursor(database.obj.cursor))
    queue = Batch.defer
    monkeypatch.setattr(Batch, "defer", counting.wrap_queue(queue))
    for name in ("admit", "settle", "release", "reclaim_expired", "uncount_requests"):
        monkeypatch.setattr(store, name, counting.wrap(getattr(store, name)))
    yield app.test_client(), counting


def statements_for_one_call(client: Any, counting: StatementCounter, plain: str | None, **kw: Any):
    chat(client, plain, **kw)  # the first call creates the window rows
    with counting.measuring() as statements:
        assert chat(client, plain, **kw).status_code == 200
    return statements


def test_no_limit_costs_no_statement(counter):
    client, counting = counter
    plain = make_key()
    assert statements_for_one_call(client, counting, plain, user="free") == []


def test_an_rpm_limit_costs_one_statement(counter):
    client, counting = counter
    plain = make_key(rpm_limit=100)
    statements = statements_for_one_call(client, counting, plain)
    if is_postgres():
        # Decided in the call's read: no round trip of its own.
        assert statements == [] and counting.decided_in_the_read()
    else:
        assert statements == ["INSERT"]


def test_a_tpm_limit_adds_one_statement_in_the_batched_transaction(counter):
    client, counting = counter
    plain = make_key(rpm_limit=100, tpm_limit=100_000)
    statements = statements_for_one_call(client, counting, plain)
    if is_postgres():
        # Decided in the read; the tokens go with the spend transaction's COMMIT.
        assert statements == ["INSERT at COMMIT"] and counting.decided_in_the_read()
    else:
        assert statements == ["INSERT", "INSERT"]


def test_three_scopes_are_decided_by_one_statement(counter):
    client, counting = counter
    make_user("u-cost", rpm_limit=100)
    make_budget("tier", rpm_limit=100)
    plain = make_key(user_id="u-cost", rpm_limit=100)
    statements = statements_for_one_call(client, counting, plain, user="cust-cost")
    if is_postgres():
        # All three decided in the call's read: no round trip of its own.
        assert statements == [] and counting.decided_in_the_read()
    else:
        assert statements == ["BEGIN", "INSERT", "COMMIT"]


def test_a_parallel_limit_costs_a_lease_and_its_release(counter):
    client, counting = counter
    plain = make_key(max_parallel_requests=10)
    statements = statements_for_one_call(client, counting, plain)
    if is_postgres():
        # The lease is taken in the read, given back with the spend's COMMIT.
        assert statements == ["WITH at COMMIT"] and counting.decided_in_the_read()
    else:
        assert statements == ["BEGIN", "INSERT", "INSERT", "COMMIT", "DELETE", "UPDATE"]


def test_every_limit_on_three_scopes_adds_one_transaction_to_the_call(counter):
    client, counting = counter
    limits = {"rpm_limit": 100, "tpm_limit": 100_000, "max_parallel_requests": 10}
    make_user("u-all", **limits)
    make_budget("tier", **limits)
    plain = make_key(user_id="u-all", **limits)
    statements = statements_for_one_call(client, counting, plain, user="cust-all")
    if is_postgres():
        # The check in the call's read, then one statement for tokens and
        # slots together, sent with the spend transaction's COMMIT.
        assert statements == ["WITH at COMMIT"] and counting.decided_in_the_read()
    else:
        assert (
            statements
            == ["BEGIN", "INSERT", "INSERT", "COMMIT", "INSERT", "DELETE"] + ["UPDATE"] * 3
        )
