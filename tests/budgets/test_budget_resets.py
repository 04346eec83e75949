"""Budget resets (applied by the core at read time) as the budget checks see them.

A period's end is simulated by writing a past ``budget_reset_at`` (what the
row holds once its time has come), never by sleeping. The multi-worker
``2s`` run is in tests/integration/test_budget_resets.py.
"""

from __future__ import annotations

import time

import pytest

from proxy.call.auth import hash_key
from proxy.storage.db import database
from proxy.storage.models import Customer, Key, ProxySpend, User
from proxy.storage.resets import apply_due_resets
from tests.support.budgets import (
    CALL_COST,
    budget_config,
    chat,
    make_budget,
    make_customer,
    make_key,
    make_user,
    set_proxy_spend,
)

DAY = 86400.0


def test_key_blocked_until_its_period_ends_then_reset_on_whole_periods(db_url, make_app) -> None:
    app = make_app(budget_config(db_url))
    created = time.time() - 10 * DAY - 3600  # 10 days and an hour old, 1d periods
    plain = make_key(
        max_budget=1.0,
        spend=1.0,
        budget_duration="1d",
        created_at=created,
        budget_reset_at=time.time() + 60,
    )
    assert "ExceededTokenBudget" in chat(app, plain).get_json()["error"]["message"]
    overdue = created + 3 * DAY  # the row says its reset fell due 8 days ago
    with database.connection_context():
        Key.update(budget_reset_at=overdue).where(Key.token == hash_key(plain)).execute()
    assert chat(app, plain).status_code == 200
    with database.connection_context():
        key = Key.get_by_id(hash_key(plain))
    assert key.spend == pytest.approx(CALL_COST)  # reset once, then this call
    assert key.budget_reset_at == created + 11 * DAY  # whole periods from creation, no drift


def test_user_budget_duration_resets_its_spend(db_url, make_app) -> None:
    app = make_app(budget_config(db_url))
    make_user("u", max_budget=1.0, spend=1.0, budget_duration="30s", budget_reset_at=1.0)
    assert chat(app, make_key(user_id="u")).status_code == 200
    with database.connection_context():
        assert User.get_by_id("u").spend == pytest.approx(CALL_COST)


def test_customer_resets_on_its_tier_duration(db_url, make_app) -> None:
    app = make_app(budget_config(db_url))
    make_budget("monthly", max_budget=1.0, budget_duration="1mo")
    make_customer("c", spend=1.0, budget_id="monthly", budget_reset_at=time.time() + 60)
    assert chat(app, user="c").status_code == 401
    with database.connection_context():
        Customer.update(budget_reset_at=1.0).execute()
    assert chat(app, user="c").status_code == 200


def test_customer_on_the_default_budget_resets_on_its_duration(db_url, make_app) -> None:
    config = budget_config(db_url, litellm_settings={"max_end_user_budget_id": "default-tier"})
    app = make_app(config)
    make_budget("default-tier", max_budget=1.0, budget_duration="1h")
    make_customer("c", spend=1.0, budget_reset_at=1.0)
    assert chat(app, user="c").status_code == 200


def test_proxy_budget_duration_resets_the_proxy_counter(db_url, make_app) -> None:
    config = budget_config(db_url, litellm_settings={"max_budget": 1.0, "budget_duration": "30d"})
    app = make_app(config)
    set_proxy_spend(1.0)
    with database.connection_context():
        ProxySpend.update(budget_reset_at=time.time() + 60).execute()
    assert "Proxy has exceeded its budget" in chat(app).get_json()["error"]["message"]
    with database.connection_context():
        ProxySpend.update(budget_reset_at=1.0).execute()
    assert chat(app).status_code == 200


def test_a_first_duration_is_scheduled_from_creation(db_url, make_app) -> None:
    app = make_app(budget_config(db_url))
    created = time.time() - 90  # 1m periods: the first reset was due 30 s ago
    plain = make_key(max_budget=1.0, spend=1.0, budget_duration="1m", created_at=created)
    assert chat(app, plain).status_code == 200
    with database.connection_context():
        key = Key.get_by_id(hash_key(plain))
    assert key.budget_reset_at == created + 120


def test_a_stale_reader_never_resets_twice(db_url, make_app) -> None:
    """Two workers read the same overdue row; only the first one's update resets it."""
    make_app(budget_config(db_url))
    plain = make_key(max_budget=1.0, spend=0.9, budget_duration="1h", budget_reset_at=1.0)
    with database.connection_context():
        first = Key.get_by_id(hash_key(plain))
        second = Key.get_by_id(hash_key(plain))  # read before the first one resets
        apply_due_resets((first, "1h"))
        Key.update(spend=Key.spend + 0.5).where(Key.token == hash_key(plain)).execute()
        apply_due_resets((second, "1h"))
        row = Key.get_by_id(hash_key(plain))
    assert first.spend == 0.0
    assert row.spend == 0.5 and second.spend == 0.5  # the stale reader took the fresh row
    assert row.budget_reset_at == first.budget_reset_at > time.time()
