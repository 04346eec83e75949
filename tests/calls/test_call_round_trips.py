"""What one metered call costs in database round trips (issue 9).

Every statement sent through the app's database is counted at the driver's
cursor; on PostgreSQL each is one network round trip. The read side is one
query whatever the number of budget levels; on PostgreSQL the spend ledger is
``BEGIN`` + one statement, then the COMMIT with whatever plugins queued for it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg2.extensions
import pytest

from plugins.rate_limiter.tables import RateLimitLease, RateLimitWindow
from proxy.hookspecs import hookimpl
from proxy.storage.batching import defer_write
from proxy.storage.db import database, make_database
from proxy.storage.models import Customer, Key, SpendLog
from tests.conftest import base_config
from tests.support.rate_limits import chat, make_budget, make_key, make_user, window
from tests.support.statements import spy_on_cursors, statement_sql

NO_LIMITS = {"disable": ["rate_limiter", "webhook_alerter"]}


class Recorder:
    """The texts of the statements sent while :meth:`recording`, by the thread
    that records (the call's: a background thread's statements, such as the
    webhook sender's claims and pruning, are not the call's round trips)."""

    def __init__(self) -> None:
        self.on = False
        self.thread: int | None = None
        self.sent: list[str] = []

    def wrap(self, make_cursor: Any) -> Any:
        return spy_on_cursors(make_cursor, self._seen)

    def _seen(self, sql: Any) -> None:
        if self.on and threading.get_ident() == self.thread:
            self.sent.append(sql.decode() if isinstance(sql, bytes) else str(sql))

    @contextlib.contextmanager
    def recording(self) -> Iterator[list[str]]:
        self.sent = []
        self.thread = threading.get_ident()
        self.on = True
        try:
            yield self.sent
        finally:
            self.on = False


@pytest.fixture
def recorded(make_app: Any, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    def build(plugins: list[tuple[str, Any]] | None = None) -> tuple[Any, Recorder]:
        config = base_config(
            db_url, plugins=NO_LIMITS, litellm_settings={"max_end_user_budget_id": "tier"}
        )
        app = make_app(config, plugins=plugins)
        recorder = Recorder()
        monkeypatch.setattr(database.obj, "cursor", recorder.wrap(database.obj.cursor))
        return app.test_client(), recorder

    return build


def _setup_budgets() -> str:
    make_user("rt-user", max_budget=100)
    make_budget("tier", max_budget=5)
    with database.connection_context():
        Customer.create(user_id="rt-customer", budget_id="tier")
    return make_key(user_id="rt-user", max_budget=50)


def test_everything_the_checks_read_comes_in_one_query(recorded):
    client, recorder = recorded()
    plain = _setup_budgets()
    chat(client, plain, user="rt-customer")  # first sight: budget resets get scheduled
    with recorder.recording() as sent:
        assert chat(client, plain, user="rt-customer").status_code == 200
    reads = [s for s in map(statement_sql, sent) if s.lstrip().upper().startswith("SELECT")]
    assert len(reads) == 1
    for table in ('"key"', '"user"', '"customer"', '"budget"', '"proxy_spend"'):
        assert table in reads[0]


def test_a_metered_call_costs_three_round_trips_on_postgres(recorded, db_url):
    if not db_url.startswith("postgres"):
        pytest.skip("the batched spend transaction is PostgreSQL's")
    client, recorder = recorded()
    plain = _setup_budgets()
    chat(client, plain, user="rt-customer")
    with recorder.recording() as sent:
        assert chat(client, plain, user="rt-customer").status_code == 200
    # The read; BEGIN with the ledger statement; the COMMIT.
    assert len(sent) == 3
    assert sent[1].startswith("BEGIN; ") and sent[2] == "COMMIT"
    ledger = statement_sql(sent[1][len("BEGIN; ") :])
    assert "INSERT INTO spend_log" in ledger and "INSERT INTO spend_stripe" in ledger


class FailsAtFirstCommit:
    """Queues a write that fails with the first spend transaction's COMMIT only."""

    def __init__(self) -> None:
        self.calls = 0

    @hookimpl
    def post_call_spend(self, ctx: Any, usage: Any, cost: float) -> None:
        self.calls += 1
        table = "no_such_table_for_this_test" if self.calls == 1 else "proxy_spend"
        defer_write(f"UPDATE {table} SET spend = spend WHERE id = %s", [1])


def test_a_failed_plugin_write_still_bills_once_and_runs_no_hook_twice(recorded, db_url):
    if not db_url.startswith("postgres"):
        pytest.skip("the batched spend transaction is PostgreSQL's")
    plugin = FailsAtFirstCommit()
    client, _ = recorded(plugins=[("fails_at_first_commit", plugin)])
    plain = make_key(max_budget=10)
    resp = chat(client, plain, user="rt-fallback")
    assert resp.status_code == 200
    assert plugin.calls == 1  # post_call_spend runs once per call, never again
    with database.connection_context():
        logs = list(SpendLog.select())
        key = Key.get()
        customer = Customer.get_by_id("rt-fallback")
    assert len(logs) == 1
    assert key.spend == pytest.approx(logs[0].spend, abs=1e-12)
    assert customer.spend == pytest.approx(logs[0].spend, abs=1e-12)


def test_statements_are_prepared_once_per_connection(recorded, db_url):
    if not db_url.startswith("postgres"):
        pytest.skip("prepared statements are PostgreSQL's")
    client, recorder = recorded()
    plain = _setup_budgets()
    with recorder.recording() as sent:
        for _ in range(5):
            assert chat(client, plain, user="rt-customer").status_code == 200
    prepares = [s for s in sent if "PREPARE " in s]
    executes = [s for s in sent if "EXECUTE " in s and "PREPARE " not in s]
    # The read and the ledger, each prepared on first use, then only executed.
    assert len(prepares) <= 2 * 2  # at most two pooled connections took part
    assert len(executes) >= 2 * 5 - len(prepares)


class _CountingCursor(psycopg2.extensions.cursor):
    sent: list[str] = []

    def execute(self, query: Any, vars: Any = None) -> Any:  # noqa: A002
        _CountingCursor.sent.append(str(query))
        return super().execute(query, vars)


def test_a_pooled_connection_back_in_use_soon_is_not_pinged(db_url):
    if not db_url.startswith("postgres"):
        pytest.skip("the PostgreSQL pool")
    db = make_database(db_url)
    db.connect_params["cursor_factory"] = _CountingCursor
    _CountingCursor.sent = []
    try:
        db.connect()
        db.close()
        db.connect()  # back at once: no SELECT 1 first
        assert _CountingCursor.sent == []
        conn = db.connection()
        db.close()
        conn.checked_in = time.monotonic() - 60  # idle for a minute
        db.connect()  # now it is checked before use
        assert _CountingCursor.sent == ["SELECT 1"]
        assert db.connection() is conn
    finally:
        db.close_all()


def test_a_large_body_is_parsed_only_after_authentication(recorded):
    client, _ = recorded()
    junk = b"{" + b" " * (100 * 1024)  # not JSON, and larger than the prefetch limit
    resp = client.post("/chat/completions", data=junk, headers={"Authorization": "Bearer sk-wrong"})
    assert resp.status_code == 401
    assert "Authentication Error" in resp.get_json()["error"]["message"]


def test_a_large_body_still_meets_the_end_users_budget(recorded):
    client, _ = recorded()
    plain = _setup_budgets()
    with database.connection_context():
        Customer.update(spend=5.0).where(Customer.user_id == "rt-customer").execute()
    long_prompt = "word " * (20 * 1024)  # about 100 KiB
    resp = chat(
        client, plain, user="rt-customer", messages=[{"role": "user", "content": long_prompt}]
    )
    assert resp.status_code == 401
    assert "User rt-customer has exceeded their budget" in resp.get_json()["error"]["message"]


def test_every_plugin_on_costs_three_round_trips_and_no_savepoint(
    make_app: Any, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Budgets, rate limits and a webhook alert on every call: the read, which also
    decides the rate limiter's admission (its read fragment), BEGIN with the ledger,
    the COMMIT with every deferred write. The savepoint around each ``on_alert`` is
    held, never sent on its own (peewee's DatabaseProxy would send SAVEPOINT and
    RELEASE: two round trips more)."""
    if not db_url.startswith("postgres"):
        pytest.skip("the batched spend transaction is PostgreSQL's")
    monkeypatch.setenv("WEBHOOK_URL", "http://127.0.0.1:9/hook")  # queued, never sent here
    config = base_config(
        db_url,
        litellm_settings={"max_end_user_budget_id": "tier", "max_budget": 1e9},
        general_settings={"alerting": ["webhook"]},
    )
    app = make_app(config)
    recorder = Recorder()
    monkeypatch.setattr(database.obj, "cursor", recorder.wrap(database.obj.cursor))
    client = app.test_client()
    high = {"rpm_limit": 10**9, "tpm_limit": 10**12, "max_parallel_requests": 10**6}
    make_user("rt-user", max_budget=100, **high)
    make_budget("tier", max_budget=5, **high)
    with database.connection_context():
        Customer.create(user_id="rt-customer", budget_id="tier")
    plain = make_key(user_id="rt-user", max_budget=50, **high)
    chat(client, plain, user="rt-customer")  # first sight: windows and resets made
    with recorder.recording() as sent:
        assert chat(client, plain, user="rt-customer").status_code == 200
    texts = [statement_sql(s) for s in sent]
    assert not [t for t in texts if t.lstrip().upper().startswith(("SAVEPOINT", "RELEASE"))]
    assert len(sent) == 3, texts  # issue 20: at most 3
    # The one read counted the call in the rate limiter's windows and took its slots.
    assert "rate_limit_window" in texts[0] and "rate_limit_lease" in texts[0]
    assert sent[1].startswith("BEGIN; ") and sent[2].rstrip().endswith("COMMIT")
    assert "spend tracked" in sent[2]  # the webhook outbox row, with the COMMIT
    with database.connection_context():
        rows = [(w.kind, w.entity) for w in RateLimitWindow.select()]
        assert RateLimitLease.select().count() == 0  # given back with the COMMIT
    windows = {(kind, w.requests, w.in_flight) for kind, w in ((k, window(k, e)) for k, e in rows)}
    # Both calls counted once in each of the three scopes, every slot given back.
    assert windows == {(kind, 2, 0) for kind in ("key", "user", "end_user")}
