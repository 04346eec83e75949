"""The spend transaction on PostgreSQL: a lost connection, and how many at once.

A call whose database connection dies while the upstream answers is still charged.

The pool hands out a connection used moments ago without pinging it (a round
trip per call saved, proxy/storage/db.py), so the spend transaction may start on a
connection that died meanwhile. Nothing was committed on it: the ledger is
written once more on a connection the pool checks, and charged exactly once.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from proxy.storage import ledger as spend
from proxy.storage.db import database
from proxy.storage.models import Key, SpendLog
from tests.conftest import base_config
from tests.support.databases import terminate_pg_backends
from tests.support.rate_limits import chat, make_key


def _kill_other_backends(db_url: str) -> int:
    return terminate_pg_backends(db_url.rsplit("/", 1)[1], wait_ms=5000)


def test_a_connection_killed_during_the_upstream_call_still_charges_once(
    make_app: Any, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not db_url.startswith("postgres"):
        pytest.skip("the PostgreSQL pool")
    app = make_app(base_config(db_url, plugins={"disable": ["rate_limiter", "webhook_alerter"]}))
    client = app.test_client()
    plain = make_key(max_budget=10)
    assert chat(client, plain).status_code == 200  # the pool now holds a fresh connection

    upstream = app.extensions["comptroller"].upstream
    answer = upstream.call_raw
    killed: list[int] = []

    def answer_while_the_database_drops_us(*args: Any, **kwargs: Any) -> Any:
        killed.append(_kill_other_backends(db_url))
        return answer(*args, **kwargs)

    monkeypatch.setattr(upstream, "call_raw", answer_while_the_database_drops_us)
    resp = chat(client, plain)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert killed and killed[0] > 0
    with database.connection_context():
        logs = list(SpendLog.select())
        key = Key.get()
    assert len(logs) == 2
    assert resp.headers["x-comptroller-call-id"] in {log.request_id for log in logs}
    assert key.spend == pytest.approx(sum(log.spend for log in logs), abs=1e-12)


class CountsOpenSpendTransactions:
    """Wraps the ledger write: how many are under way at once in this process."""

    def __init__(self, write: Any, limit: int) -> None:
        self.write = write
        self.lock = threading.Lock()
        self.inside = 0
        self.most = 0
        self.too_many = threading.Event()
        self.limit = limit

    def __call__(self, *args: Any) -> Any:
        with self.lock:
            self.inside += 1
            self.most = max(self.most, self.inside)
            if self.inside > self.limit:
                self.too_many.set()
        try:
            # Before the transaction takes any row lock: hold on a moment, so that
            # other calls would overlap here if they were let in.
            self.too_many.wait(timeout=0.2)
            return self.write(*args)
        finally:
            with self.lock:
                self.inside -= 1


def test_a_process_keeps_few_batched_transactions_open_at_once(
    make_app: Any, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spend transactions all update the proxy counter: more than a couple at once
    from one process would only queue on its row lock in PostgreSQL."""
    if not db_url.startswith("postgres"):
        pytest.skip("the batched spend transaction is PostgreSQL's")
    counting = CountsOpenSpendTransactions(spend._Ledger.write, spend.SETTLE_CONCURRENCY)
    monkeypatch.setattr(spend._Ledger, "write", lambda ledger: counting(ledger))
    config = base_config(db_url, plugins={"disable": ["rate_limiter", "webhook_alerter"]})
    app = make_app(config)
    plain = make_key(max_budget=10)
    with ThreadPoolExecutor(6) as pool:
        statuses = list(pool.map(lambda _: chat(app.test_client(), plain).status_code, range(6)))
    assert statuses == [200] * 6
    assert counting.most == spend.SETTLE_CONCURRENCY
    with database.connection_context():
        logs = list(SpendLog.select())
        key = Key.get()
    assert len(logs) == 6
    assert key.spend == pytest.approx(sum(log.spend for log in logs), abs=1e-12)
