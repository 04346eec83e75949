"""Rows and calls for the budget tests: entities made with the Peewee models (as the
admin API would), chat calls to a priced model of the built-in mock provider."""

from __future__ import annotations

import uuid
from typing import Any

from flask import Flask

from proxy.call.auth import display_name, generate_key, hash_key
from proxy.storage.db import database
from proxy.storage.models import Budget, Customer, Key, ProxySpend, SpendLog, User
from tests.conftest import MASTER_KEY, base_config

# The built-in mock provider answers "This is a mock response from Comptroller,
# the metered LLM gateway." (11 tokens); "hi" is a 4-token prompt.
PRICED = {
    "model_name": "priced",
    "litellm_params": {
        "model": "mock/priced",
        "input_cost_per_token": 0.001,
        "output_cost_per_token": 0.002,
    },
}
CALL_COST = 4 * 0.001 + 11 * 0.002


def budget_config(db_url: str, **sections: Any) -> dict[str, Any]:
    return base_config(db_url, model_list=[PRICED], **sections)


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


def set_proxy_spend(spend: float) -> None:
    with database.connection_context():
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
