"""The proxy counter is striped (proxy.storage.counters): settles never queue on one row,
and every read, reset and strict reservation still sees the whole counter.

The multi-process proofs are tests/integration/test_spend_ledger.py (counter ==
sum of the spend logs, two hosts) and test_budget_strict_concurrency.py (the
proxy budget binds exactly).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg2
import pytest
from peewee import fn

from proxy.storage.counters import HEADER_ID, proxy_total
from proxy.storage.db import database
from proxy.storage.models import ProxySpend, SpendLog
from tests.conftest import MASTER, MASTER_KEY, base_config
from tests.support.budgets import CALL_COST, chat, priced_model
from tests.support.proxy_server import wait_until


def _config(db_url: str, **litellm: Any) -> dict[str, Any]:
    return base_config(db_url, model_list=[priced_model()], litellm_settings=litellm)


def _rows() -> dict[int, float]:
    with database.connection_context():
        return {row.id: row.spend for row in ProxySpend.select()}


def test_the_counter_is_the_sum_of_its_stripes_and_of_the_spend_logs(db_url, make_app) -> None:
    app = make_app(_config(db_url))
    for _ in range(40):
        assert chat(app, MASTER_KEY).status_code == 200
    with database.connection_context():
        logged = SpendLog.select(fn.SUM(SpendLog.spend)).scalar()
        assert proxy_total() == pytest.approx(logged, abs=1e-12)
        assert proxy_total() == pytest.approx(40 * CALL_COST, abs=1e-12)
    spent = {row_id for row_id, spend in _rows().items() if spend > 0}
    if db_url.startswith("sqlite"):
        assert spent == {HEADER_ID}  # one writer at a time: nothing to stripe
    else:
        assert HEADER_ID not in spent and len(spent) > 1  # 40 random picks of 16 stripes
    body = app.test_client().get("/global/spend", headers=MASTER).get_json()
    assert body["spend"] == pytest.approx(40 * CALL_COST, abs=1e-12)


def test_a_due_reset_zeroes_every_stripe(db_url, make_app) -> None:
    app = make_app(_config(db_url, max_budget=100, budget_duration="30d"))
    for _ in range(20):
        assert chat(app, MASTER_KEY).status_code == 200
    with database.connection_context():
        assert proxy_total() == pytest.approx(20 * CALL_COST, abs=1e-12)
        ProxySpend.update(budget_reset_at=time.time() - 1).where(
            ProxySpend.id == HEADER_ID
        ).execute()
    assert app.test_client().get("/global/spend", headers=MASTER).get_json()["spend"] == 0.0
    assert set(_rows().values()) == {0.0}
    assert chat(app, MASTER_KEY).status_code == 200
    with database.connection_context():
        assert proxy_total() == pytest.approx(CALL_COST, abs=1e-12)


def test_the_proxy_budget_sees_every_stripe(db_url, make_app) -> None:
    """A stripe's spend counts against the budget (the call's read sums them), in both
    enforcement modes."""
    for mode in ("check", "strict"):
        app = make_app(
            base_config(
                db_url,
                model_list=[priced_model()],
                litellm_settings={"max_budget": 1.0},
                general_settings={"budget_enforcement": mode},
            )
        )
        with database.connection_context():
            ProxySpend.update(spend=0.0).execute()
            ProxySpend.insert(id=HEADER_ID + 5, spend=1.0, created_at=0.0).on_conflict(
                conflict_target=[ProxySpend.id], update={ProxySpend.spend: 1.0}
            ).execute()
        resp = chat(app, MASTER_KEY)
        assert resp.status_code == 400 or resp.status_code == 401, resp.get_json()
        assert "budget" in resp.get_json()["error"]["message"].lower()


def test_a_settle_does_not_wait_for_the_counters_header_lock(db_url, make_app) -> None:
    """What a reset locks (the header row) holds up no settle; before striping every
    settle updated that row and waited here."""
    if db_url.startswith("sqlite"):
        pytest.skip("row locks are PostgreSQL's")
    app = make_app(_config(db_url))
    assert chat(app, MASTER_KEY).status_code == 200
    holder = psycopg2.connect(db_url)
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT spend FROM proxy_spend WHERE id = %s FOR UPDATE", [HEADER_ID])
        statuses: list[int] = []
        caller = threading.Thread(target=lambda: statuses.append(chat(app, MASTER_KEY).status_code))
        caller.start()
        wait_until(lambda: statuses, timeout=30)  # fails while the settle waits
        assert statuses == [200]
    finally:
        holder.rollback()
        holder.close()
        caller.join(timeout=30)
    with database.connection_context():
        assert proxy_total() == pytest.approx(2 * CALL_COST, abs=1e-12)
