"""What the rate limiter costs a call, in statements sent to the database.

Every statement the plugin's storage functions send (``BEGIN``/``COMMIT``
included) is counted at the driver cursor; on PostgreSQL each is one network
round trip.
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

    def wrap_cursor(self, make_cursor: Any) -> Any:
        return spy_on_cursors(make_cursor, self._executed)

    def _executed(self, sql: Any) -> None:
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
        yield self.statements


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
    assert statements_for_one_call(client, counting, plain) == ["INSERT"]


def test_a_tpm_limit_adds_one_statement_in_the_batched_transaction(counter):
    client, counting = counter
    plain = make_key(rpm_limit=100, tpm_limit=100_000)
    statements = statements_for_one_call(client, counting, plain)
    if is_postgres():
        # No round trip of its own: it goes with the spend transaction's COMMIT.
        assert statements == ["INSERT", "INSERT at COMMIT"]
    else:
        assert statements == ["INSERT", "INSERT"]


def test_three_scopes_are_decided_by_one_statement(counter):
    client, counting = counter
    make_user("u-cost", rpm_limit=100)
    make_budget("tier", rpm_limit=100)
    plain = make_key(user_id="u-cost", rpm_limit=100)
    statements = statements_for_one_call(client, counting, plain, user="cust-cost")
    if is_postgres():
        # One statement that is its own transaction: one round trip in all.
        assert statements == ["WITH"]
    else:
        assert statements == ["BEGIN", "INSERT", "COMMIT"]


def test_a_parallel_limit_costs_a_lease_and_its_release(counter):
    client, counting = counter
    plain = make_key(max_parallel_requests=10)
    statements = statements_for_one_call(client, counting, plain)
    if is_postgres():
        assert statements == ["WITH", "WITH at COMMIT"]
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
        # The check (its own transaction), then one statement for tokens and
        # slots together, sent with the spend transaction's COMMIT.
        assert statements == ["WITH", "WITH at COMMIT"]
    else:
        assert (
            statements
            == ["BEGIN", "INSERT", "INSERT", "COMMIT", "INSERT", "DELETE"] + ["UPDATE"] * 3
        )
