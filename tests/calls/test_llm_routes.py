"""The OpenAI-compatible routes: shapes, auth errors and bad input (SQLite and Postgres).

These use the built-in ``mock/`` provider (no network), so they prove the
routes and the error handling; the upstream adapters are in test_upstream.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from proxy.call.auth import hash_key
from proxy.storage.counters import proxy_total
from proxy.storage.models import Customer, Key, SpendLog, User
from tests.conftest import MASTER, base_config
from tests.support.assertions import assert_error
from tests.support.seeds import CUSTOMER_CURL_BODY

CHAT = {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "what time is it"}]}
EMBED = {"model": "text-embedding-ada-002", "input": "hello world"}


@pytest.fixture
def client(make_app: Callable[..., Flask], db_url: str) -> FlaskClient:
    """The app on built-in mock models (no model_list), master key sk-1234."""
    return make_app(base_config(db_url)).test_client()


def make_key(plain: str, **fields: Any) -> Key:
    return Key.create(token=hash_key(plain), key_name=f"sk-...{plain[-4:]}", **fields)


# --- routes that answer -----------------------------------------------------


@pytest.mark.parametrize("path", ["/chat/completions", "/v1/chat/completions"])
def test_chat_completion_routes(client: FlaskClient, path: str) -> None:
    resp = client.post(path, json=CHAT, headers=MASTER)
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["choices"][0]["message"]["content"]
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    row = SpendLog.get()
    assert row.model_group == "gpt-3.5-turbo"
    assert row.prompt_tokens == usage["prompt_tokens"]
    assert row.completion_tokens == usage["completion_tokens"]
    assert row.status == "success"
    assert resp.headers["x-comptroller-call-id"] == row.request_id


@pytest.mark.parametrize("path", ["/embeddings", "/v1/embeddings"])
def test_embedding_routes(client: FlaskClient, path: str) -> None:
    resp = client.post(path, json={**EMBED, "input": ["a", "bb"]}, headers=MASTER)
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["object"] == "list"
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert all(d["object"] == "embedding" and d["embedding"] for d in body["data"])
    row = SpendLog.get()
    assert row.call_type == "embeddings"
    assert row.completion_tokens == 0


def test_azure_deployment_route_takes_the_model_from_the_path(client: FlaskClient) -> None:
    body = {"messages": CHAT["messages"]}
    resp = client.post(
        "/openai/deployments/azure-gpt-3.5/chat/completions?api-version=2024-06-01",
        json=body,
        headers={"api-key": "sk-1234"},
    )
    assert resp.status_code == 200
    assert SpendLog.get().model_group == "azure-gpt-3.5"


def test_azure_deployment_route_with_an_unknown_deployment(client: FlaskClient) -> None:
    resp = client.post(
        "/openai/deployments/nope/chat/completions", json={"messages": CHAT["messages"]},
        headers=MASTER,
    )  # fmt: skip
    error = assert_error(resp, 400, "model", err_type="invalid_request_error")
    assert error["message"] == "Invalid model name passed in model=nope"


@pytest.mark.parametrize("path", ["/models", "/v1/models"])
def test_models_lists_every_model_for_the_master_key(client: FlaskClient, path: str) -> None:
    resp = client.get(path, headers=MASTER)
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["object"] == "list"
    ids = [m["id"] for m in body["data"]]
    assert {"gpt-3.5-turbo", "azure-gpt-3.5", "mistral", "text-embedding-ada-002"} <= set(ids)
    for model in body["data"]:
        assert set(model) == {"id", "object", "created", "owned_by"}
        assert model["object"] == "model"
        assert isinstance(model["created"], int)


def test_models_lists_only_what_a_virtual_key_may_use(client: FlaskClient) -> None:
    make_key("sk-limited-key-0001", models=["mistral", "beta-models"])
    resp = client.get("/v1/models", headers={"Authorization": "Bearer sk-limited-key-0001"})
    assert resp.status_code == 200
    assert sorted(m["id"] for m in resp.get_json()["data"]) == [
        "mistral",
        "text-embedding-ada-002",  # via its access group
    ]


def test_health_routes_need_no_key(client: FlaskClient) -> None:
    live = client.get("/health/liveliness")
    assert live.status_code == 200
    assert live.get_json() == {"status": "I'm alive!"}
    ready = client.get("/health/readiness")
    assert ready.status_code == 200
    assert ready.get_json()["status"] == "healthy"


def test_readiness_answers_503_when_the_database_is_gone(
    make_app: Callable[..., Flask], db_url: str
) -> None:
    from proxy.storage.db import database, init_database

    app = make_app(base_config(db_url))
    unreachable = "postgresql://postgres@127.0.0.1:1/none?connect_timeout=1"
    real = database.obj
    init_database(unreachable)
    try:
        resp = app.test_client().get("/health/readiness")
        assert_error(resp, 503, err_type="service_unavailable")
        assert app.test_client().get("/health/liveliness").status_code == 200
    finally:
        database.initialize(real)


def test_the_seed_curl_body_with_inline_comments_is_served(client: FlaskClient) -> None:
    resp = client.post(
        "/chat/completions",
        data=CUSTOMER_CURL_BODY.encode(),
        headers={**MASTER, "Content-Type": "application/json"},
    )
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert SpendLog.get().end_user == "ishaan3"
    assert Customer.get_by_id("ishaan3").spend == pytest.approx(SpendLog.get().spend)


# --- the end user (SPEC section 4) ----------------------------------------


@pytest.mark.parametrize(
    ("headers", "body", "expected"),
    [
        ({"x-litellm-customer-id": "h1", "x-litellm-end-user-id": "h2"}, {"user": "b"}, "h1"),
        ({"x-litellm-end-user-id": "h2"}, {"user": "b", "metadata": {"user_id": "m"}}, "h2"),
        ({}, {"user": "b", "metadata": {"user_id": "m"}}, "b"),
        ({}, {"metadata": {"user_id": "m"}}, "m"),
        ({}, {}, None),
    ],
)
def test_end_user_is_the_first_found(
    client: FlaskClient, headers: dict, body: dict, expected: str | None
) -> None:
    resp = client.post("/chat/completions", json={**CHAT, **body}, headers={**MASTER, **headers})
    assert resp.status_code == 200
    assert SpendLog.get().end_user == expected


# --- authentication (SPEC section 3) ------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic c2stMTIzNDo="},
        {"Authorization": "Bearer sk-wrong"},
        {"Authorization": "Bearer sk-12345"},
        {"api-key": "sk-wrong"},
        {"Authorization": "Bearer sk-1234\u00e9"},
    ],
)
def test_missing_or_wrong_key_is_401(client: FlaskClient, headers: dict) -> None:
    resp = client.post("/chat/completions", json=CHAT, headers=headers)
    error = assert_error(resp, 401, "None", err_type="auth_error")
    assert error["message"].startswith("Authentication Error")
    assert SpendLog.select().count() == 0


@pytest.mark.parametrize("path", ["/embeddings", "/v1/embeddings", "/models", "/v1/models"])
def test_every_llm_route_needs_a_key(client: FlaskClient, path: str) -> None:
    if "models" in path:
        resp = client.get(path, headers={"Authorization": "Bearer sk-wrong"})
    else:
        resp = client.post(path, json=EMBED)
    assert_error(resp, 401, "None", err_type="auth_error")


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer sk-1234"},
        {"Authorization": "bearer sk-1234"},
        {"Authorization": "  Bearer   sk-1234  "},
        {"api-key": "sk-1234"},
    ],
)
def test_accepted_ways_to_send_the_master_key(client: FlaskClient, headers: dict) -> None:
    assert client.post("/chat/completions", json=CHAT, headers=headers).status_code == 200


def test_a_virtual_key_calls_and_is_charged(client: FlaskClient) -> None:
    User.create(user_id="u-1")
    key = make_key("sk-virtual-key-0001", user_id="u-1")
    resp = client.post(
        "/chat/completions", json=CHAT, headers={"Authorization": "Bearer sk-virtual-key-0001"}
    )
    assert resp.status_code == 200
    row = SpendLog.get()
    assert row.api_key == key.token
    assert row.user_id == "u-1"
    assert Key.get_by_id(key.token).spend == pytest.approx(row.spend)
    assert User.get_by_id("u-1").spend == pytest.approx(row.spend)


def test_an_expired_key_is_401(client: FlaskClient) -> None:
    make_key("sk-expired-key-0001", expires=time.time() - 1)
    resp = client.post(
        "/chat/completions", json=CHAT, headers={"Authorization": "Bearer sk-expired-key-0001"}
    )
    error = assert_error(resp, 401, err_type="auth_error")
    assert error["message"] == "Authentication Error - Expired Key"


def test_a_model_the_key_may_not_use_is_401(client: FlaskClient) -> None:
    make_key("sk-mistral-only-01", models=["mistral"])
    resp = client.post(
        "/chat/completions", json=CHAT, headers={"Authorization": "Bearer sk-mistral-only-01"}
    )
    error = assert_error(resp, 401, err_type="auth_error")
    assert "key not allowed to access model" in error["message"]
    assert SpendLog.select().count() == 0


# --- bad input (SPEC section 4) ---------------------------------------------


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        (b"{bad", "body"),
        (b"", "body"),
        (b"   \n", "body"),
        (b"[1, 2]", "body"),
        (b'"a string"', "body"),
        (b"null", "body"),
        (b"42", "body"),
        (b"\xff\xfe{", "body"),
        (b"[" * 50000, "body"),
        (b'{"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "x"}], '
         b'"temperature": NaN}', "body"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("path", ["/chat/completions", "/v1/embeddings"])
def test_malformed_bodies_are_400_naming_the_body(
    client: FlaskClient, raw: bytes, param: str, path: str
) -> None:
    resp = client.post(path, data=raw, headers={**MASTER, "Content-Type": "application/json"})
    assert_error(resp, 400, param, err_type="invalid_request_error")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": CHAT["messages"]}, "model"),
        ({**CHAT, "model": None}, "model"),
        ({**CHAT, "model": 5}, "model"),
        ({**CHAT, "model": ""}, "model"),
        ({**CHAT, "model": ["gpt-3.5-turbo"]}, "model"),
        ({"model": "gpt-3.5-turbo"}, "messages"),
        ({**CHAT, "messages": "hi"}, "messages"),
        ({**CHAT, "messages": []}, "messages"),
        ({**CHAT, "messages": {"role": "user"}}, "messages"),
        ({**CHAT, "messages": ["hi"]}, "messages[0]"),
        ({**CHAT, "messages": [{"content": "no role"}]}, "messages[0]"),
        ({**CHAT, "stream": "yes"}, "stream"),
        ({**CHAT, "max_tokens": "10"}, "max_tokens"),
        ({**CHAT, "max_tokens": True}, "max_tokens"),
        ({**CHAT, "max_tokens": 0}, "max_tokens"),
        ({**CHAT, "max_tokens": 1.5}, "max_tokens"),
        ({**CHAT, "stream_options": "include_usage"}, "stream_options"),
        ({**CHAT, "metadata": "x"}, "metadata"),
        ({**CHAT, "user": 12}, "user"),
    ],
)
def test_bad_chat_fields_are_400_naming_the_field(
    client: FlaskClient, body: dict, param: str
) -> None:
    resp = client.post("/chat/completions", json=body, headers=MASTER)
    error = assert_error(resp, 400, param, err_type="invalid_request_error")
    assert param.split("[")[0] in error["message"]
    assert SpendLog.select().count() == 0


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x"}, "model"),
        ({**EMBED, "model": 3}, "model"),
        ({"model": "text-embedding-ada-002"}, "input"),
        ({**EMBED, "input": None}, "input"),
        ({**EMBED, "input": ""}, "input"),
        ({**EMBED, "input": []}, "input"),
        ({**EMBED, "input": 5}, "input"),
        ({**EMBED, "input": {"text": "x"}}, "input"),
    ],
)
def test_bad_embedding_fields_are_400_naming_the_field(
    client: FlaskClient, body: dict, param: str
) -> None:
    resp = client.post("/embeddings", json=body, headers=MASTER)
    assert_error(resp, 400, param, err_type="invalid_request_error")
    assert SpendLog.select().count() == 0


@pytest.mark.parametrize("path", ["/chat/completions", "/embeddings"])
def test_unknown_model_is_400_with_litellms_message(client: FlaskClient, path: str) -> None:
    body = {**(CHAT if "chat" in path else EMBED), "model": "gpt-17"}
    error = assert_error(
        client.post(path, json=body, headers=MASTER), 400, err_type="invalid_request_error"
    )
    assert error["message"] == "Invalid model name passed in model=gpt-17"
    assert error["param"] == "model"


def test_bad_input_is_checked_after_the_key(client: FlaskClient) -> None:
    """A caller without a key learns nothing about the body: 401 first."""
    resp = client.post("/chat/completions", data=b"{bad", headers={"Content-Type": "text/plain"})
    assert_error(resp, 401, err_type="auth_error")


def test_unknown_route_is_a_404_in_the_error_shape(client: FlaskClient) -> None:
    assert_error(client.get("/v1/nothing-here", headers=MASTER), 404, err_type="not_found_error")
    assert_error(
        client.post("/chat/complete", json=CHAT, headers=MASTER), 404, err_type="not_found_error"
    )


def test_wrong_method_is_405_in_the_error_shape(client: FlaskClient) -> None:
    assert_error(
        client.get("/chat/completions", headers=MASTER), 405, err_type="invalid_request_error"
    )


def test_a_body_over_the_size_limit_is_413(make_app: Callable[..., Flask], db_url: str) -> None:
    app = make_app(base_config(db_url, general_settings={"max_request_size_mb": 0.001}))
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 5000}]}
    resp = app.test_client().post("/chat/completions", json=big, headers=MASTER)
    assert_error(resp, 413, err_type="invalid_request_error")


@pytest.mark.parametrize(
    "body",
    [
        {**CHAT, "messages": [{"role": "user", "content": None}]},
        {**CHAT, "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]},
        {**CHAT, "messages": [{"role": "user", "content": {"weird": True}}]},
        {**CHAT, "tools": "not-a-list", "functions": 3},
        {**CHAT, "max_completion_tokens": 2},
        {**CHAT, "metadata": {"user_id": 5}},
        {**CHAT, "stream_options": {"include_usage": False}},
        {**CHAT, "stream": False},
        {**CHAT, "n": "many", "temperature": "hot"},
    ],
)
def test_odd_but_parseable_bodies_never_answer_500(client: FlaskClient, body: dict) -> None:
    resp = client.post("/chat/completions", json=body, headers=MASTER)
    assert resp.status_code < 500, resp.get_data(as_text=True)
    assert "Traceback" not in resp.get_data(as_text=True)


def test_a_failed_call_charges_nothing(client: FlaskClient) -> None:
    client.post("/chat/completions", json={**CHAT, "model": "nope"}, headers=MASTER)
    client.post("/chat/completions", data=b"{", headers=MASTER)
    assert SpendLog.select().count() == 0
    assert proxy_total() == 0
