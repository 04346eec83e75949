"""``budget_enforcement: strict`` and ``clamp_max_tokens`` in one process, on both databases.

The upstream is the mock OpenAI server: it bills "hi" as a 4-token prompt and
the answer is 10 words (fewer when ``max_tokens`` is lower). With input at
0.001 and output at 0.01 per token a call costs 0.004 + 0.01 per word. The
worst case reserved counts the same prompt as 22 tokens (proxy.call.bound: 8
framing + 4 bytes of "user" + 2 of "hi" + 8 reply priming).
The multi-process guarantees are in tests/integration/test_budget_strict_concurrency.py.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

import pytest

from plugins.budgets.clamp import CLAMP_HEADER
from plugins.budgets.strict import BudgetReservation
from proxy.call.auth import hash_key
from proxy.storage.db import database
from proxy.storage.models import Customer, Key, User
from tests.conftest import base_config, openai_model
from tests.support.budgets import chat, make_key, make_user
from tests.support.proxy_server import wait_until

IN, OUT = 0.001, 0.01
PROMPT = 22 * IN  # reserved for the prompt
BILLED_PROMPT = 4 * IN  # what the upstream bills for it


def worst(max_tokens: int) -> float:
    return PROMPT + max_tokens * OUT


def billed(words: int) -> float:
    return BILLED_PROMPT + words * OUT


def strict_config(db_url: str, upstream: Any, mode: str = "strict", **general: Any) -> dict:
    model = openai_model(
        "gpt-4o", upstream.base_url, input_cost_per_token=IN, output_cost_per_token=OUT
    )
    return base_config(
        db_url,
        model_list=[model],
        general_settings={"budget_enforcement": mode, **general},
    )


def call(app: Any, key: str, **body: Any) -> Any:
    return chat(app, key, model="gpt-4o", **body)


def reservations() -> list[BudgetReservation]:
    with database.connection_context():
        return list(BudgetReservation.select())


def key_spend(plain: str) -> float:
    with database.connection_context():
        return float(Key.get_by_id(hash_key(plain)).spend)


def test_strict_refuses_a_call_whose_worst_case_does_not_fit(db_url, make_app, upstream) -> None:
    app = make_app(strict_config(db_url, upstream))
    plain = make_key(max_budget=1.0)
    resp = call(app, plain, max_tokens=200)
    assert resp.status_code == 401
    assert resp.get_json()["error"]["message"] == (
        "Authentication Error, ExceededTokenBudget: Current spend for token: 0.0; "
        f"Max Budget for Token: 1.0 (strict budget: this call may cost up to {worst(200)!r}"
        " and calls in flight hold 0.0)"
    )
    assert upstream.requests == [] and reservations() == []
    assert call(app, plain, max_tokens=50).status_code == 200


def test_check_mode_lets_the_same_call_through(db_url, make_app, upstream) -> None:
    app = make_app(strict_config(db_url, upstream, mode="check"))
    plain = make_key(max_budget=1.0)
    assert call(app, plain, max_tokens=200).status_code == 200
    assert reservations() == []


def test_a_call_in_flight_holds_its_worst_case_until_it_settles(db_url, make_app, upstream) -> None:
    app = make_app(strict_config(db_url, upstream))
    plain = make_key(max_budget=1.6 * worst(20))
    upstream.hang = True
    first: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: first.update(resp=call(app, plain, max_tokens=20)))
    thread.start()
    try:
        held = wait_until(lambda: reservations(), timeout=10)
        assert [(r.entity_kind, r.entity_id, r.amount) for r in held] == [
            ("key", hash_key(plain), worst(20))
        ]
        assert held[0].expires_at > time.time()
        second = call(app, plain, max_tokens=20)
        assert second.status_code == 401
        assert f"calls in flight hold {worst(20)!r}" in second.get_json()["error"]["message"]
    finally:
        upstream.hang = False
        thread.join(timeout=10)
    assert first["resp"].status_code == 200
    assert reservations() == []
    assert key_spend(plain) == pytest.approx(billed(10), abs=1e-12)  # 10 words came back
    assert call(app, plain, max_tokens=20).status_code == 200


def test_a_failed_call_releases_its_reservation_and_charges_nothing(
    db_url, make_app, upstream
) -> None:
    app = make_app(strict_config(db_url, upstream))
    plain = make_key(max_budget=worst(20))
    upstream.fail_next(3, 500)  # the call and its two retries
    assert call(app, plain, max_tokens=20).status_code == 500
    assert reservations() == [] and key_spend(plain) == 0.0
    assert call(app, plain, max_tokens=20).status_code == 200


def test_a_stream_settles_its_reservation(db_url, make_app, upstream) -> None:
    app = make_app(strict_config(db_url, upstream))
    plain = make_key(max_budget=1.0)
    resp = call(app, plain, max_tokens=20, stream=True)
    assert resp.status_code == 200
    assert b"[DONE]" in resp.get_data()
    assert reservations() == []
    assert key_spend(plain) == pytest.approx(billed(10), abs=1e-12)


def _reserve_directly(plain: str, amount: float, expires_at: float) -> None:
    with database.connection_context():
        BudgetReservation.create(
            request_id="chatcmpl-dead-worker",
            entity_kind="key",
            entity_id=hash_key(plain),
            amount=amount,
            expires_at=expires_at,
        )


def test_a_reservation_holds_until_it_expires(db_url, make_app, upstream) -> None:
    app = make_app(strict_config(db_url, upstream))
    live, dead = make_key(max_budget=1.0), make_key(max_budget=1.0)
    _reserve_directly(live, 1.0, time.time() + 600)  # a call still in flight elsewhere
    _reserve_directly(dead, 1.0, time.time() - 1)  # a worker that died: expired
    assert (
        "calls in flight hold 1.0" in call(app, live, max_tokens=5).get_json()["error"]["message"]
    )
    assert call(app, dead, max_tokens=5).status_code == 200


def test_reservation_is_all_or_nothing_across_levels(db_url, make_app, upstream) -> None:
    config = strict_config(db_url, upstream)
    config["litellm_settings"] = {"max_budget": 100.0, "max_user_budget": worst(20)}
    app = make_app(config)
    make_user("roomy", max_budget=100.0)
    plain = make_key(user_id="roomy", max_budget=0.5 * worst(20))
    resp = call(app, plain, max_tokens=20, user="new-customer")
    assert "ExceededTokenBudget" in resp.get_json()["error"]["message"]
    assert reservations() == []
    with database.connection_context():
        # Strict mode locks rows of its own: no end-user row is made to lock one.
        assert Customer.get_or_none(Customer.user_id == "new-customer") is None
    resp = call(app, make_key(user_id="roomy"), max_tokens=20, user="new-customer")
    assert resp.status_code == 200
    with database.connection_context():
        customer = Customer.get_by_id("new-customer")
        user = User.get_by_id("roomy")
    assert customer.spend == pytest.approx(billed(10)) and user.spend == pytest.approx(billed(10))


def test_strict_refusal_names_the_first_level_in_spec_order(db_url, make_app, upstream) -> None:
    config = strict_config(db_url, upstream)
    config["litellm_settings"] = {"max_budget": 0.5 * worst(20)}
    app = make_app(config)
    plain = make_key(max_budget=0.5 * worst(20))
    message = call(app, plain, max_tokens=20).get_json()["error"]["message"]
    assert message.startswith("Authentication Error, ExceededBudget: Proxy has exceeded its budget")


# --- clamp_max_tokens ---------------------------------------------------------


@pytest.mark.parametrize("mode", ["strict", "check"])
def test_clamp_lowers_max_tokens_to_what_the_budget_can_pay(
    db_url, make_app, upstream, mode
) -> None:
    app = make_app(strict_config(db_url, upstream, mode=mode, clamp_max_tokens=True))
    plain = make_key(max_budget=PROMPT + 7.5 * OUT)  # the prompt and 7 output tokens fit
    resp = call(app, plain, max_tokens=200)
    assert resp.status_code == 200, resp.get_json()
    assert resp.headers[CLAMP_HEADER] == "7"
    assert upstream.requests[-1].json["max_tokens"] == 7
    assert resp.get_json()["usage"]["completion_tokens"] == 7
    assert key_spend(plain) == pytest.approx(billed(7)) and key_spend(plain) <= PROMPT + 7.5 * OUT
    assert reservations() == []


@pytest.mark.parametrize("mode", ["strict", "check"])
def test_clamp_without_max_tokens_uses_the_models_output_cap(
    db_url, make_app, upstream, mode
) -> None:
    app = make_app(strict_config(db_url, upstream, mode=mode, clamp_max_tokens=True))
    plain = make_key(max_budget=1.0)  # gpt-4o's cap (16384 tokens) does not fit
    resp = call(app, plain)
    assert resp.status_code == 200
    expected = math.floor((1.0 - PROMPT) / OUT)
    assert resp.headers[CLAMP_HEADER] == str(expected)
    assert upstream.requests[-1].json["max_tokens"] == expected


def test_clamp_lowers_max_completion_tokens_when_that_is_what_was_sent(
    db_url, make_app, upstream
) -> None:
    app = make_app(strict_config(db_url, upstream, clamp_max_tokens=True))
    plain = make_key(max_budget=PROMPT + 3 * OUT)
    resp = call(app, plain, max_completion_tokens=50)
    assert resp.headers[CLAMP_HEADER] == "3"
    sent = upstream.requests[-1].json
    assert sent["max_completion_tokens"] == 3 and "max_tokens" not in sent


@pytest.mark.parametrize("mode", ["strict", "check"])
def test_clamp_refuses_when_not_even_the_prompt_fits(db_url, make_app, upstream, mode) -> None:
    app = make_app(strict_config(db_url, upstream, mode=mode, clamp_max_tokens=True))
    plain = make_key(max_budget=PROMPT + 0.5 * OUT)
    resp = call(app, plain, max_tokens=200)
    assert resp.status_code == 401
    assert "ExceededTokenBudget" in resp.get_json()["error"]["message"]
    assert CLAMP_HEADER not in resp.headers
    assert upstream.requests == []


def test_a_call_that_fits_is_not_clamped(db_url, make_app, upstream) -> None:
    app = make_app(strict_config(db_url, upstream, clamp_max_tokens=True))
    resp = call(app, make_key(max_budget=1.0), max_tokens=20)
    assert resp.status_code == 200 and CLAMP_HEADER not in resp.headers
    assert upstream.requests[-1].json["max_tokens"] == 20


def test_expired_reservations_are_deleted_as_housekeeping(
    db_url, make_app, upstream, monkeypatch
) -> None:
    from plugins.budgets import strict as module

    app = make_app(strict_config(db_url, upstream))
    plain = make_key(max_budget=1.0)
    _reserve_directly(plain, 0.5, time.time() - 1)
    monkeypatch.setattr(module, "_next_gc", 0.0)  # the process's next sweep is due
    assert call(app, plain, max_tokens=5).status_code == 200
    assert reservations() == []
    assert module._next_gc > time.time()


def test_strict_reservations_are_one_plugin_that_can_be_disabled(db_url, make_app, upstream):
    app = make_app(strict_config(db_url, upstream))
    pm = app.extensions["comptroller"].pm
    wrappers = [
        impl.plugin_name
        for impl in pm.hook.pre_request_check.get_hookimpls()
        if impl.wrapper or impl.hookwrapper
    ]
    assert wrappers == ["strict_budgets"]
    plain = make_key(max_budget=0.5 * worst(20))
    assert call(app, plain, max_tokens=20).status_code == 401
    # Disabled, nothing reserves: strict mode checks as check mode does.
    config = strict_config(db_url, upstream)
    config["plugins"] = {"disable": ["strict_budgets"]}
    assert call(make_app(config), plain, max_tokens=20).status_code == 200
    assert reservations() == []
