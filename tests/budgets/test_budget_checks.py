"""Budget checks as a client sees them (SPEC section 6), on SQLite and PostgreSQL.

Rows are made with the Peewee models, as the admin API would; spend is
either earned by real calls to the built-in mock provider or set on the row
to put an entity exactly at its limit.
"""

from __future__ import annotations

import pytest

from proxy.call.auth import hash_key
from proxy.storage.db import database
from proxy.storage.models import Budget, Customer, Key, User
from tests.conftest import MASTER_KEY, base_config, openai_model
from tests.support.budgets import (
    CALL_COST,
    budget_config,
    chat,
    error_of,
    make_budget,
    make_customer,
    make_key,
    make_user,
    set_proxy_spend,
    spend_logs,
    spend_of,
)

# --- key ---------------------------------------------------------------------


def test_key_at_its_max_budget_gets_exceeded_token_budget(db_url, make_app) -> None:
    app = make_app(budget_config(db_url))
    plain = make_key(max_budget=2e-07, spend=7.2e-05)
    assert error_of(chat(app, plain)) == (
        "Authentication Error, ExceededTokenBudget: "
        "Current spend for token: 7.2e-05; Max Budget for Token: 2e-07"
    )
    assert spend_logs() == 0


def test_key_is_refused_once_its_own_calls_reach_max_budget(db_url, make_app) -> None:
    app = make_app(budget_config(db_url))
    plain = make_key(max_budget=2.5 * CALL_COST)
    statuses = [chat(app, plain).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 401]
    spend = spend_of(Key, hash_key(plain))
    assert spend == pytest.approx(3 * CALL_COST, abs=1e-12)
    assert f"Current spend for token: {spend!r}; " in error_of(chat(app, plain))


def test_key_without_max_budget_is_unlimited(db_url, make_app) -> None:
    app = make_app(budget_config(db_url))
    plain = make_key(spend=1e9)
    assert chat(app, plain).status_code == 200


def test_key_max_budget_zero_refuses_the_first_call(db_url, make_app) -> None:
    app = make_app(budget_config(db_url))
    plain = make_key(max_budget=0.0)
    assert "Current spend for token: 0.0; Max Budget for Token: 0.0" in error_of(chat(app, plain))


def test_soft_budget_never_blocks(db_url, make_app) -> None:
    app = make_app(budget_config(db_url))
    plain = make_key(soft_budget=0.0001, spend=5.0)
    assert chat(app, plain).status_code == 200


# --- user --------------------------------------------------------------------


def test_user_budget_covers_all_its_keys(db_url, make_app) -> None:
    app = make_app(budget_config(db_url))
    make_user("krrish3@berri.ai", max_budget=1.5 * CALL_COST)
    first, second = make_key(user_id="krrish3@berri.ai"), make_key(user_id="krrish3@berri.ai")
    assert chat(app, first).status_code == 200
    assert chat(app, second).status_code == 200
    spend = spend_of(User, "krrish3@berri.ai")
    expected = (
        "Authentication Error, ExceededBudget: User krrish3@berri.ai has exceeded their "
        f"budget. Current spend: {spend!r}; Max Budget: {1.5 * CALL_COST!r}"
    )
    assert error_of(chat(app, first)) == expected
    assert error_of(chat(app, second)) == expected
    assert spend_logs() == 2


def test_user_max_budget_zero_refuses_its_keys(db_url, make_app) -> None:
    app = make_app(budget_config(db_url))
    make_user("u0", max_budget=0.0)
    assert "User u0 has exceeded their budget" in error_of(chat(app, make_key(user_id="u0")))


# --- proxy -------------------------------------------------------------------


def test_proxy_max_budget_zero_refuses_everything(db_url, make_app) -> None:
    app = make_app(budget_config(db_url, litellm_settings={"max_budget": 0}))
    expected = (
        "Authentication Error, ExceededBudget: Proxy has exceeded its budget. "
        "Current spend: 0.0; Max Budget: 0.0"
    )
    assert error_of(chat(app)) == expected
    assert error_of(chat(app, make_key())) == expected
    assert error_of(chat(app, user="someone")) == expected
    assert spend_logs() == 0


def test_proxy_budget_counts_every_caller(db_url, make_app) -> None:
    app = make_app(budget_config(db_url, litellm_settings={"max_budget": 1.5 * CALL_COST}))
    assert chat(app, make_key()).status_code == 200
    assert chat(app, user="c1").status_code == 200
    assert "Proxy has exceeded its budget" in error_of(chat(app, make_key()))


# --- end users ---------------------------------------------------------------


def test_end_user_over_max_user_budget_is_refused_on_the_second_call(db_url, make_app) -> None:
    config = budget_config(db_url, litellm_settings={"max_budget": 10, "max_user_budget": 0.0001})
    app = make_app(config)
    plain = make_key()
    assert chat(app, plain, user="ishaan3").status_code == 200
    spend = spend_of(Customer, "ishaan3")
    assert error_of(chat(app, plain, user="ishaan3")) == (
        "Authentication Error, ExceededBudget: User ishaan3 has exceeded their budget. "
        f"Current spend: {spend!r}; Max Budget: 0.0001"
    )
    assert chat(app, plain, user="someone-else").status_code == 200


def test_new_end_user_is_checked_with_zero_spend(db_url, make_app) -> None:
    app = make_app(budget_config(db_url, litellm_settings={"max_user_budget": 0}))
    assert error_of(chat(app, user="brand-new")) == (
        "Authentication Error, ExceededBudget: User brand-new has exceeded their budget. "
        "Current spend: 0.0; Max Budget: 0.0"
    )
    assert chat(app).status_code == 200  # no end user, no end-user budget


def test_end_user_named_by_header_or_metadata_is_checked(db_url, make_app) -> None:
    app = make_app(budget_config(db_url, litellm_settings={"max_user_budget": 0}))
    client = app.test_client()
    body = {"model": "priced", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"Authorization": f"Bearer {MASTER_KEY}", "x-litellm-customer-id": "h1"}
    assert "User h1 has exceeded" in error_of(
        client.post("/chat/completions", json=body, headers=headers)
    )
    meta = {**body, "metadata": {"user_id": "m1"}}
    assert "User m1 has exceeded" in error_of(
        client.post(
            "/chat/completions", json=meta, headers={"Authorization": f"Bearer {MASTER_KEY}"}
        )
    )


def test_end_user_with_own_max_budget_zero_is_refused(db_url, make_app) -> None:
    app = make_app(budget_config(db_url))
    make_customer("my-customer-id", budget_id=make_budget(max_budget=0.0))
    assert "User my-customer-id has exceeded their budget. Current spend: 0.0; Max Budget: 0.0" in (
        error_of(chat(app, user="my-customer-id"))
    )


def test_end_user_on_a_tier_is_refused_once_spend_reaches_the_tier(db_url, make_app) -> None:
    app = make_app(budget_config(db_url))
    make_budget("my-free-tier", max_budget=2 * CALL_COST)
    make_customer("tiered", budget_id="my-free-tier")
    make_customer("tiered-2", budget_id="my-free-tier")
    assert [chat(app, user="tiered").status_code for _ in range(3)] == [200, 200, 401]
    # A tier is a budget per customer, not a pool.
    assert chat(app, user="tiered-2").status_code == 200


def test_own_budget_wins_over_max_user_budget(db_url, make_app) -> None:
    app = make_app(budget_config(db_url, litellm_settings={"max_user_budget": 0}))
    make_customer("rich", budget_id=make_budget(max_budget=100.0))
    make_customer("unlimited", budget_id=make_budget(max_budget=None))
    assert chat(app, user="rich").status_code == 200
    assert chat(app, user="unlimited").status_code == 200


def test_default_budget_holds_customers_without_one_and_is_followed_live(db_url, make_app) -> None:
    config = budget_config(
        db_url, litellm_settings={"max_end_user_budget_id": "default-tier", "max_user_budget": 1e9}
    )
    app = make_app(config)
    make_budget("default-tier", max_budget=1.5 * CALL_COST)
    assert [chat(app, user="plain").status_code for _ in range(3)] == [200, 200, 401]
    message = error_of(chat(app, user="plain"))
    assert message.startswith("Authentication Error, ExceededBudget: User plain has exceeded")
    assert message.endswith(f"Max Budget: {1.5 * CALL_COST!r}")
    # Editing the default row changes every customer on it at once.
    with database.connection_context():
        Budget.update(max_budget=10.0).where(Budget.budget_id == "default-tier").execute()
    assert chat(app, user="plain").status_code == 200


def test_customers_with_their_own_budget_ignore_the_default(db_url, make_app) -> None:
    config = budget_config(db_url, litellm_settings={"max_end_user_budget_id": "default-tier"})
    app = make_app(config)
    make_budget("default-tier", max_budget=0.0)
    make_customer("explicit", budget_id=make_budget(max_budget=5.0))
    assert chat(app, user="explicit").status_code == 200
    assert "User newcomer has exceeded" in error_of(chat(app, user="newcomer"))


def test_missing_default_row_falls_back_to_max_user_budget(db_url, make_app) -> None:
    config = budget_config(
        db_url, litellm_settings={"max_end_user_budget_id": "not-there", "max_user_budget": 0}
    )
    app = make_app(config)
    assert "Max Budget: 0.0" in error_of(chat(app, user="c"))


# --- order and charging ------------------------------------------------------


def test_the_first_exceeded_level_answers_in_spec_order(db_url, make_app) -> None:
    app = make_app(budget_config(db_url, litellm_settings={"max_budget": 1.0}))
    make_user("u", max_budget=1.0, spend=1.0)
    plain = make_key(user_id="u", max_budget=1.0, spend=1.0)
    make_customer("c", spend=1.0, budget_id=make_budget(max_budget=1.0))
    set_proxy_spend(1.0)
    assert "ExceededBudget: Proxy has exceeded" in error_of(chat(app, plain, user="c"))
    set_proxy_spend(0.0)
    assert "ExceededTokenBudget" in error_of(chat(app, plain, user="c"))
    with database.connection_context():
        Key.update(spend=0.0).execute()
    assert "User u has exceeded" in error_of(chat(app, plain, user="c"))
    with database.connection_context():
        User.update(spend=0.0).execute()
    assert "User c has exceeded" in error_of(chat(app, plain, user="c"))


def test_a_refused_call_reaches_no_upstream_and_charges_nothing(db_url, make_app, upstream) -> None:
    config = base_config(db_url, model_list=[openai_model("gpt-4o", upstream.base_url)])
    app = make_app(config)
    plain = make_key(max_budget=1.0, spend=1.0)
    resp = chat(app, plain, model="gpt-4o")
    assert resp.status_code == 401
    assert upstream.requests == []
    assert spend_of(Key, hash_key(plain)) == 1.0
    assert spend_logs() == 0


def test_max_budget_that_is_reset_lets_the_key_call_again(db_url, make_app) -> None:
    app = make_app(budget_config(db_url))
    plain = make_key(max_budget=1.0, spend=1.0, budget_duration="30d", budget_reset_at=1.0)
    assert chat(app, plain).status_code == 200
    assert spend_of(Key, hash_key(plain)) == pytest.approx(CALL_COST, abs=1e-12)
