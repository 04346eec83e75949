"""/budget/update with a new budget_duration reschedules the customers on that budget.

As /key/update and /user/update do for their own periods: the schedule
restarts from each customer's creation, and nothing is reset now. Customers
without a budget follow the default end-user budget
(``litellm_settings.max_end_user_budget_id``), so a change of that row's
period reschedules them too.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from proxy.storage import customer_budgets
from proxy.storage.models import Budget, Customer
from tests.conftest import MASTER, base_config
from tests.support.admin_api import post, post_ok

DAY = 86400.0


def new_tier(client: Any, budget_id: str, **values: Any) -> None:
    post_ok(client, "/budget/new", {"budget_id": budget_id, **values})


def customer_on(client: Any, user_id: str, days_old: float, spend: float, **body: Any) -> float:
    """A customer made ``days_old`` days ago who has spent ``spend``; its creation time."""
    post_ok(client, "/customer/new", {"user_id": user_id, **body})
    created = time.time() - days_old * DAY
    Customer.update(created_at=created, spend=spend).where(Customer.user_id == user_id).execute()
    return created


def reset_at(user_id: str) -> float | None:
    return Customer.get_by_id(user_id).budget_reset_at


def shown_spend(client: Any, user_id: str) -> float:
    resp = client.get(f"/customer/info?end_user_id={user_id}", headers=MASTER)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return float(resp.get_json()["spend"])


def test_a_new_duration_reschedules_the_tiers_customers_from_their_creation(client):
    new_tier(client, "tier", max_budget=10, budget_duration="30d")
    new_tier(client, "other", max_budget=10, budget_duration="30d")
    first = customer_on(client, "first", days_old=10.5, spend=3.0, budget_id="tier")
    second = customer_on(client, "second", days_old=1.0, spend=2.0, budget_id="tier")
    customer_on(client, "elsewhere", days_old=10.5, spend=1.0, budget_id="other")
    untouched = reset_at("elsewhere")

    answer = post_ok(client, "/budget/update", {"budget_id": "tier", "budget_duration": "7d"})

    assert answer["budget_duration"] == "7d"
    # Whole 7-day periods from creation: the next boundary after now.
    assert reset_at("first") == pytest.approx(first + 14 * DAY, abs=0.01)
    assert reset_at("second") == pytest.approx(second + 7 * DAY, abs=0.01)
    assert reset_at("elsewhere") == untouched
    # Rescheduled, not reset: what they spent this period still counts.
    assert shown_spend(client, "first") == 3.0
    assert shown_spend(client, "second") == 2.0


def test_a_customers_own_budget_edited_through_budget_update_reschedules_it(client):
    post_ok(client, "/customer/new", {"user_id": "own", "max_budget": 5, "budget_duration": "30d"})
    created = time.time() - 2.5 * DAY
    Customer.update(created_at=created).where(Customer.user_id == "own").execute()
    budget_id = Customer.get_by_id("own").budget_id

    post_ok(client, "/budget/update", {"budget_id": budget_id, "budget_duration": "1d"})

    assert reset_at("own") == pytest.approx(created + 3 * DAY, abs=0.01)


def test_removing_the_duration_clears_the_customers_next_reset(client):
    new_tier(client, "tier", max_budget=10, budget_duration="1d")
    customer_on(client, "on-tier", days_old=0.5, spend=4.0, budget_id="tier")
    assert reset_at("on-tier") is not None

    post_ok(client, "/budget/update", {"budget_id": "tier", "budget_duration": None})

    assert reset_at("on-tier") is None
    assert shown_spend(client, "on-tier") == 4.0


def test_a_first_duration_schedules_the_tiers_customers_without_a_reset_now(client):
    new_tier(client, "tier", max_budget=10)
    created = customer_on(client, "on-tier", days_old=3.2, spend=4.0, budget_id="tier")
    assert reset_at("on-tier") is None

    post_ok(client, "/budget/update", {"budget_id": "tier", "budget_duration": "1d"})

    assert reset_at("on-tier") == pytest.approx(created + 4 * DAY, abs=0.01)
    assert shown_spend(client, "on-tier") == 4.0


def test_the_default_budgets_new_duration_reschedules_customers_without_a_budget(make_app, db_url):
    config = base_config(db_url, litellm_settings={"max_end_user_budget_id": "default-tier"})
    client = make_app(config).test_client()
    new_tier(client, "default-tier", max_budget=1, budget_duration="30d")
    new_tier(client, "paid", max_budget=9, budget_duration="30d")
    follower = customer_on(client, "follower", days_old=10.5, spend=0.5)
    customer_on(client, "paying", days_old=10.5, spend=0.5, budget_id="paid")
    customer_on(client, "own", days_old=10.5, spend=0.5, max_budget=2, budget_duration="30d")
    paying, own = reset_at("paying"), reset_at("own")

    post_ok(client, "/budget/update", {"budget_id": "default-tier", "budget_duration": "7d"})

    assert reset_at("follower") == pytest.approx(follower + 14 * DAY, abs=0.01)
    assert (reset_at("paying"), reset_at("own")) == (paying, own)
    assert shown_spend(client, "follower") == 0.5


def test_the_same_duration_again_leaves_a_due_reset_due(client):
    new_tier(client, "tier", max_budget=10, budget_duration="1d")
    customer_on(client, "on-tier", days_old=1.5, spend=4.0, budget_id="tier")
    overdue = time.time() - 0.5 * DAY
    Customer.update(budget_reset_at=overdue).where(Customer.user_id == "on-tier").execute()

    post_ok(client, "/budget/update", {"budget_id": "tier", "budget_duration": "1d"})

    assert reset_at("on-tier") == overdue
    assert shown_spend(client, "on-tier") == 0.0  # the period that ended is reset when read


def test_the_budget_row_and_its_customers_change_in_one_transaction(client, monkeypatch):
    new_tier(client, "tier", max_budget=10, budget_duration="30d")
    customer_on(client, "on-tier", days_old=10.5, spend=3.0, budget_id="tier")
    before = reset_at("on-tier")

    def fails(*args: Any) -> int:
        raise RuntimeError("rescheduling failed")

    monkeypatch.setattr(customer_budgets, "reschedule", fails)
    resp = post(client, "/budget/update", {"budget_id": "tier", "budget_duration": "7d"})

    assert resp.status_code == 500
    assert Budget.get_by_id("tier").budget_duration == "30d"
    assert reset_at("on-tier") == before
