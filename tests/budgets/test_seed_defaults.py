"""The seeds' flows on the built-in defaults, with nothing configured but the budgets."""

from __future__ import annotations

from typing import Any

from flask import Flask

from tests.conftest import MASTER, MASTER_KEY
from tests.support.seeds import CUSTOMER_CURL_BODY

# sha256("sk-1234"): the token the webhook seed shows for a call made with the master key.
SEED_MASTER_TOKEN = "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b"


def _defaults(make_app: Any, **litellm_settings: Any) -> Flask:
    return make_app({"litellm_settings": litellm_settings})


def _seed_call(app: Flask) -> Any:
    headers = {**MASTER, "Content-Type": "application/json"}
    return app.test_client().post("/chat/completions", data=CUSTOMER_CURL_BODY, headers=headers)


def test_max_user_budget_refuses_the_second_call_on_the_built_in_models(make_app: Any) -> None:
    app = _defaults(make_app, max_budget=10, max_user_budget=0.0001)
    first = _seed_call(app)
    assert first.status_code == 200, first.get_data(as_text=True)
    second = _seed_call(app)
    assert second.status_code == 401
    message = second.get_json()["error"]["message"]
    assert message.startswith(
        "Authentication Error, ExceededBudget: User ishaan3 has exceeded their budget. "
        "Current spend: "
    )
    assert message.endswith("; Max Budget: 0.0001")
    spend = app.test_client().get("/customer/info?end_user_id=ishaan3", headers=MASTER)
    assert spend.get_json()["spend"] > 0.0001


def test_a_master_key_call_is_logged_under_the_master_keys_hash(make_app: Any) -> None:
    assert MASTER_KEY == "sk-1234"
    app = _defaults(make_app)
    assert _seed_call(app).status_code == 200
    logs = app.test_client().get("/spend/logs", headers=MASTER).get_json()
    assert [row["api_key"] for row in logs] == [SEED_MASTER_TOKEN]


def test_a_deployment_mock_response_answers_without_the_upstream(make_app: Any) -> None:
    model = {
        "model_name": "canned",
        "litellm_params": {
            "model": "openai/gpt-4o-mini",
            "api_base": "http://127.0.0.1:9",  # nothing listens: a call would fail
            "mock_response": "canned answer",
        },
    }
    app = make_app({"model_list": [model]})
    body = {"model": "canned", "messages": [{"role": "user", "content": "hi"}]}
    answer = app.test_client().post("/chat/completions", json=body, headers=MASTER)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.get_json()["choices"][0]["message"]["content"] == "canned answer"
    assert answer.get_json()["usage"]["completion_tokens"] == 2
