"""Strict mode refuses what it cannot bound, and keeps the bound it reserves.

Unpriced models (unless ``general_settings.allow_unpriced_models``), ``file``
parts and replayed audio have no worst case; a model with no known output cap
is sent Comptroller's default ``max_tokens`` so that its bound holds. Prices
set in ``litellm_params`` and the prices in use show on ``/model/info``.
"""

from __future__ import annotations

from typing import Any

from proxy.call.bound import DEFAULT_OUTPUT_CAP
from proxy.storage.db import database
from proxy.storage.models import SpendLog
from tests.conftest import MASTER, base_config, openai_model
from tests.support.budgets import chat, make_key

M = 1e-6


def config(db_url: str, models: list[dict[str, Any]], mode: str = "strict", **general: Any):
    return base_config(
        db_url, model_list=models, general_settings={"budget_enforcement": mode, **general}
    )


def test_strict_refuses_an_unpriced_model_before_any_upstream_call(
    db_url, make_app, upstream
) -> None:
    app = make_app(config(db_url, [openai_model("in-house", upstream.base_url)]))
    resp = chat(app, make_key(max_budget=1.0), model="in-house")
    assert resp.status_code == 400
    error = resp.get_json()["error"]
    assert error["param"] == "model" and "allow_unpriced_models" in error["message"]
    assert upstream.requests == []


def test_an_operator_may_allow_unpriced_models(db_url, make_app, upstream) -> None:
    models = [openai_model("in-house", upstream.base_url)]
    app = make_app(config(db_url, models, allow_unpriced_models=True))
    assert chat(app, make_key(max_budget=1.0), model="in-house").status_code == 200
    check = make_app(config(db_url, models, mode="check"))
    assert chat(check, make_key(max_budget=1.0), model="in-house").status_code == 200


def test_strict_refuses_a_file_part(db_url, make_app, upstream) -> None:
    app = make_app(config(db_url, [openai_model("gpt-4o", upstream.base_url)]))
    part = {"type": "file", "file": {"file_id": "file-abc"}}
    resp = chat(
        app,
        make_key(max_budget=1.0),
        model="gpt-4o",
        messages=[{"role": "user", "content": [part]}],
        max_tokens=5,
    )
    assert resp.status_code == 400
    assert resp.get_json()["error"]["param"] == "messages"
    assert "strict" in resp.get_json()["error"]["message"]
    assert upstream.requests == []


def test_strict_refuses_an_answer_replayed_by_id(db_url, make_app, upstream) -> None:
    app = make_app(config(db_url, [openai_model("gpt-4o", upstream.base_url)]))
    messages = [
        {"role": "user", "content": "say hi"},
        {"role": "assistant", "audio": {"id": "audio_abc"}},
        {"role": "user", "content": "again"},
    ]
    resp = chat(app, make_key(max_budget=1.0), model="gpt-4o", messages=messages, max_tokens=5)
    assert resp.status_code == 400
    assert "replayed by id" in resp.get_json()["error"]["message"]
    assert upstream.requests == []


def test_a_model_without_an_output_cap_is_sent_the_default_max_tokens(
    db_url, make_app, upstream
) -> None:
    model = openai_model(
        "in-house", upstream.base_url, input_cost_per_token=1 * M, output_cost_per_token=2 * M
    )
    app = make_app(config(db_url, [model]))
    assert chat(app, make_key(max_budget=1.0), model="in-house").status_code == 200
    assert upstream.requests[-1].json["max_tokens"] == DEFAULT_OUTPUT_CAP
    # A call that sets its own limit keeps it; a known model keeps the client's body.
    assert chat(app, make_key(max_budget=1.0), model="in-house", max_tokens=9).status_code == 200
    assert upstream.requests[-1].json["max_tokens"] == 9
    gpt = make_app(config(db_url, [openai_model("gpt-4o", upstream.base_url)]))
    assert chat(gpt, make_key(max_budget=1.0), model="gpt-4o").status_code == 200
    assert "max_tokens" not in upstream.requests[-1].json


def test_litellm_params_cache_prices_are_used_and_shown(db_url, make_app, upstream) -> None:
    model = openai_model(
        "gpt-4o",
        upstream.base_url,
        input_cost_per_token=2 * M,
        output_cost_per_token=8 * M,
        cache_read_input_token_cost=0.5 * M,
    )
    app = make_app(config(db_url, [model], mode="check"))
    upstream.reported_usage = {
        "prompt_tokens": 1_000,
        "completion_tokens": 10,
        "prompt_tokens_details": {"cached_tokens": 600},
    }
    assert chat(app, make_key(max_budget=1.0), model="gpt-4o").status_code == 200
    with database.connection_context():
        spend = SpendLog.get().spend
    assert spend == (400 * 2 + 600 * 0.5 + 10 * 8) * M
    info = app.test_client().get("/model/info", headers=MASTER).get_json()["data"][0]
    shown = info["model_info"]
    assert shown["input_cost_per_token"] == 2 * M
    assert shown["cache_read_input_token_cost"] == 0.5 * M
    assert shown["price_source"].startswith("litellm_params over genai-prices")
    assert shown["max_output_tokens"] == 16384 and shown["priced"] is True
