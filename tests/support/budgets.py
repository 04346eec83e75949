"""Rows and calls for the budget tests: entities made with the Peewee models (as the
admin API would), chat calls to a priced model served by a mock OpenAI server over
real HTTP, which counts usage its own way (never with the proxy's estimator)."""

from __future__ import annotations

import uuid
from typing import Any

from flask import Flask

from proxy.call.auth import display_name, generate_key, hash_key
from proxy.storage.db import database
from proxy.storage.models import Budget, Customer, Key, ProxySpend, SpendLog, SpendStripe, User
from tests.conftest import MASTER_KEY, base_config
from tests.support.mock_openai import MockOpenAI

# The mock server answers "This is a mock response from the Comptroller test
# upstream." (10 words, 10 tokens) and bills "hi" as a 4-token prompt.
CALL_COST = 4 * 0.001 + 10 * 0.002
_upstream: MockOpenAI | None = None


def budget_upstream() -> MockOpenAI:
    """The budget tests' upstream: one mock server for the whole test process."""
    global _upstream
    if _upstream is None:
        _upstream = MockOpenAI()
        _upstream.start()
    return _upstream


def priced_model() -> dict[str, Any]:
    return {
        "model_name": "priced",
        "litellm_params": {
            "model": "openai/priced",
            "api_base": budget_upstream().base_url,
            "api_key": "sk-up",
            "input_cost_per_token": 0.001,
            "output_cost_per_token": 0.002,
        },
    }


def budget_config(db_url: str, **sections: Any) -> dict[str, Any]:
    return base_config(db_url, model_list=[priced_model()], **sections)


def make_key(**fields: Any) -> str:
    plain = generate_key()
    with database.connection_context():
        Key.create(token=hash_key(plain), key_name=display_name(plain), **fields)
    return plain


def make_user(user_id: str, **fields: Any) -> None:
    with database.connection_context():
        User.create(user_id=user_id, **fields)


def make_budget(budget_id: str | None = None, **fields: Any) -> str:
    budget_id = budget_id or f"own-{uuid.uuid4().hex}"
    with database.connection_context():
        Budget.create(budget_id=budget_id, **fields)
    return budget_id


def make_customer(user_id: str, **fields: Any) -> None:
    with database.connection_context():
        Customer.create(user_id=user_id, **fields)


def set_spend(model: Any, entity_id: str, spend: float, **fields: Any) -> None:
    """Set a key's, user's, team's or customer's whole counter (and other ``fields``):
    its row's base, and none on its stripes (proxy.storage.stripes)."""
    with database.connection_context(), database.atomic():
        S = SpendStripe
        S.delete().where((S.kind == model.spend_kind) & (S.entity_id == entity_id)).execute()
        pk = model._meta.primary_key
        model.update(spend=spend, **fields).where(pk == entity_id).execute()


def set_proxy_spend(spend: float) -> None:
    with database.connection_context():
        # The counter is striped (proxy.storage.counters): all of it on the header row.
        ProxySpend.update(spend=0.0).execute()
        ProxySpend.update(spend=spend).where(ProxySpend.id == 1).execute()


def chat(app: Flask, key: str = MASTER_KEY, user: str | None = None, **body: Any) -> Any:
    payload: dict[str, Any] = {
        "model": "priced",
        "messages": [{"role": "user", "content": "hi"}],
        **body,
    }
    if user is not None:
        payload["user"] = user
    return app.test_client().post(
        "/chat/completions", json=payload, headers={"Authorization": f"Bearer {key}"}
    )


def error_of(resp: Any) -> str:
    body = resp.get_json()
    assert resp.status_code == 401, body
    assert body["error"]["type"] == "auth_error"
    assert body["error"]["code"] == "401"
    return str(body["error"]["message"])


def spend_of(model: Any, pk: str) -> float:
    with database.connection_context():
        return float(model.get_by_id(pk).spend)


def spend_logs() -> int:
    with database.connection_context():
        return int(SpendLog.select().count())
