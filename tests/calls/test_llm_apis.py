"""The Responses API, legacy completions and Anthropic Messages (SQLite and Postgres).

Against the mock OpenAI and mock Anthropic servers, which speak each
provider's wire format and count tokens their own way (tests.support.wire_tokens):
what the client gets, what the upstream received, what is billed, and what
is refused, in each route's error shape.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from proxy.call.context import CallContext
from proxy.hookspecs import hookimpl
from proxy.storage.models import Key, SpendLog
from tests.conftest import MASTER, MASTER_KEY, base_config
from tests.support.admin_api import post_ok
from tests.support.mock_anthropic import MockAnthropic
from tests.support.mock_openai import DEFAULT_CONTENT, MockOpenAI

IN_PRICE = 1e-6
OUT_PRICE = 4e-6
ANTHROPIC_KEY = "sk-ant-up"
# Cache parts at the input price: these tests check what is billed, not the discounts.
PRICES = {
    "input_cost_per_token": IN_PRICE,
    "output_cost_per_token": OUT_PRICE,
    "cache_read_input_token_cost": IN_PRICE,
    "cache_creation_input_token_cost": IN_PRICE,
}
CLAUDE = "claude-test"
USER_TURN = [{"role": "user", "content": "What is the weather in Paris today?"}]


@pytest.fixture(scope="module")
def anthropic_upstream() -> Iterator[MockAnthropic]:
    with MockAnthropic(api_key=ANTHROPIC_KEY) as server:
        yield server


@pytest.fixture
def claude(anthropic_upstream: MockAnthropic) -> MockAnthropic:
    anthropic_upstream.wait_idle()
    anthropic_upstream.reset()
    return anthropic_upstream


def model_list(openai_base: str, anthropic_base: str) -> list[dict[str, Any]]:
    return [
        {
            "model_name": "gpt-4o",
            "litellm_params": {
                "model": "openai/gpt-4o",
                "api_base": openai_base,
                "api_key": "sk-up",
                **PRICES,
            },
        },
        {
            "model_name": CLAUDE,
            "litellm_params": {
                "model": "anthropic/claude-sonnet-4-5",
                "api_base": anthropic_base,
                "api_key": ANTHROPIC_KEY,
                **PRICES,
            },
        },
    ]


class CostRecorder:
    """A throw-away plugin: the worst case each call was checked with."""

    def __init__(self) -> None:
        self.estimates: list[float] = []

    @hookimpl
    def pre_request_check(self, ctx: CallContext) -> None:
        self.estimates.append(ctx.estimated_cost)


@pytest.fixture
def recorder() -> CostRecorder:
    return CostRecorder()


@pytest.fixture
def make_client(
    make_app: Callable[..., Flask],
    db_url: str,
    upstream: MockOpenAI,
    claude: MockAnthropic,
    recorder: CostRecorder,
) -> Callable[..., FlaskClient]:
    def factory(**general: Any) -> FlaskClient:
        config = base_config(
            db_url,
            model_list=model_list(upstream.base_url, claude.base_url),
            general_settings=general,
        )
        return make_app(config, plugins=[("cost_recorder", recorder)]).test_client()

    return factory


@pytest.fixture
def client(make_client: Callable[..., FlaskClient]) -> FlaskClient:
    return make_client()


def new_key(client: FlaskClient, **fields: Any) -> str:
    return str(post_ok(client, "/key/generate", fields)["key"])


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def cost(prompt: int, completion: int) -> float:
    return prompt * IN_PRICE + completion * OUT_PRICE


def only_row() -> SpendLog:
    rows = list(SpendLog.select())
    assert len(rows) == 1, [(r.call_type, r.status) for r in rows]
    return rows[0]


def sse_events(raw: bytes) -> list[tuple[str | None, dict[str, Any]]]:
    out: list[tuple[str | None, dict[str, Any]]] = []
    for block in raw.decode().split("\n\n"):
        lines = block.strip().splitlines()
        data = [line[5:].strip() for line in lines if line.startswith("data:")]
        if not data or data[0] == "[DONE]":
            continue
        names = [line[6:].strip() for line in lines if line.startswith("event:")]
        out.append((names[0] if names else None, json.loads(data[0])))
    return out


# --- the Responses API ----------------------------------------------------------


def test_response_is_billed_from_its_usage_with_cached_and_reasoning_parts(
    client: FlaskClient, upstream: MockOpenAI
) -> None:
    upstream.cached_tokens = 3
    upstream.reasoning_tokens = 5
    body = {
        "model": "gpt-4o",
        "instructions": "Answer briefly.",
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "hello 世界"}]}],
        "max_output_tokens": 100,
    }
    resp = client.post("/v1/responses", json=body, headers=MASTER)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    answer = resp.get_json()
    assert answer["object"] == "response"
    usage = answer["usage"]
    assert usage["input_tokens_details"]["cached_tokens"] == 3
    assert usage["output_tokens_details"]["reasoning_tokens"] == 5
    sent = upstream.requests[-1]
    assert sent.path == "/v1/responses"
    assert sent.json["instructions"] == "Answer briefly." and sent.json["model"] == "gpt-4o"
    row = only_row()
    assert row.call_type == "responses"
    assert (row.prompt_tokens, row.completion_tokens) == (
        usage["input_tokens"],
        usage["output_tokens"],
    )
    assert row.spend == pytest.approx(cost(usage["input_tokens"], usage["output_tokens"]))


def test_response_stream_relays_typed_events_and_bills_completed_usage(
    client: FlaskClient, recorder: CostRecorder
) -> None:
    body = {"model": "gpt-4o", "input": "Tell me a story", "stream": True}
    resp = client.post("/responses", json=body, headers=MASTER)
    assert resp.status_code == 200
    events = sse_events(resp.data)
    names = [name for name, _ in events]
    assert names[0] == "response.created" and names[-1] == "response.completed"
    assert all(name == data["type"] for name, data in events)
    text = "".join(d["delta"] for n, d in events if n == "response.output_text.delta")
    assert text == DEFAULT_CONTENT
    usage = events[-1][1]["response"]["usage"]
    row = only_row()
    assert (row.call_type, row.status) == ("responses", "success")
    assert row.prompt_tokens == usage["input_tokens"]
    assert row.completion_tokens == usage["output_tokens"]
    assert row.spend <= recorder.estimates[0]


def test_stored_response_is_reachable_by_its_own_key_only(client: FlaskClient) -> None:
    owner, other = new_key(client), new_key(client)
    created = client.post(
        "/v1/responses", json={"model": "gpt-4o", "input": "hi"}, headers=bearer(owner)
    ).get_json()
    path = f"/v1/responses/{created['id']}"
    stranger = client.get(path, headers=bearer(other))
    assert stranger.status_code == 404
    assert stranger.get_json()["error"]["type"] == "not_found_error"
    assert client.delete(path, headers=bearer(other)).status_code == 404
    assert client.get(path, headers=bearer(owner)).get_json()["id"] == created["id"]
    assert client.get(f"{path}/input_items", headers=bearer(owner)).status_code == 200
    continued = client.post(
        "/v1/responses",
        json={"model": "gpt-4o", "input": "more", "previous_response_id": created["id"]},
        headers=bearer(other),
    )
    assert continued.status_code == 404
    assert continued.get_json()["error"]["param"] == "previous_response_id"
    deleted = client.delete(path, headers=bearer(owner))
    assert deleted.status_code == 200 and deleted.get_json()["deleted"] is True
    assert client.get(path, headers=bearer(owner)).status_code == 404
    assert SpendLog.select().count() == 1  # retrieving and deleting are not billed


def test_continuation_worst_case_includes_the_stored_conversation(
    client: FlaskClient, recorder: CostRecorder
) -> None:
    first = client.post(
        "/v1/responses",
        json={"model": "gpt-4o", "input": "hi", "max_output_tokens": 50},
        headers=MASTER,
    ).get_json()
    second = client.post(
        "/v1/responses",
        json={
            "model": "gpt-4o",
            "input": "and then?",
            "max_output_tokens": 50,
            "previous_response_id": first["id"],
        },
        headers=MASTER,
    ).get_json()
    carried = first["usage"]["input_tokens"] + first["usage"]["output_tokens"]
    assert second["usage"]["input_tokens"] > carried  # the mock bills the conversation
    billed = cost(second["usage"]["input_tokens"], second["usage"]["output_tokens"])
    assert recorder.estimates[1] >= billed
    assert recorder.estimates[1] - recorder.estimates[0] >= carried * IN_PRICE


def test_background_responses_are_refused(client: FlaskClient, upstream: MockOpenAI) -> None:
    body = {"model": "gpt-4o", "input": "hi", "background": True}
    resp = client.post("/v1/responses", json=body, headers=MASTER)
    assert resp.status_code == 400
    assert resp.get_json()["error"]["param"] == "background"
    assert upstream.requests == []


# --- legacy completions ----------------------------------------------------------


@pytest.mark.parametrize(
    "prompt", ["Say this is a test", ["one", "two 二"], [101, 102, 103], [[1, 2], [3]]]
)
def test_completion_prompt_forms_with_n_and_best_of_are_billed_and_bounded(
    client: FlaskClient, recorder: CostRecorder, prompt: Any
) -> None:
    body = {"model": "gpt-4o", "prompt": prompt, "n": 2, "best_of": 3, "max_tokens": 4}
    resp = client.post("/v1/completions", json=body, headers=MASTER)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    answer = resp.get_json()
    assert answer["object"] == "text_completion"
    prompts = 2 if isinstance(prompt, list) and not isinstance(prompt[0], int) else 1
    assert len(answer["choices"]) == 2 * prompts
    usage = answer["usage"]
    assert usage["completion_tokens"] == 4 * 3 * prompts  # every best_of candidate is billed
    row = only_row()
    assert row.call_type == "completions"
    assert row.spend == pytest.approx(cost(usage["prompt_tokens"], usage["completion_tokens"]))
    assert recorder.estimates[0] >= row.spend


def test_completion_stream_meters_usage_it_asked_for_without_relaying_it(
    client: FlaskClient, upstream: MockOpenAI
) -> None:
    body = {"model": "gpt-4o", "prompt": "Say this", "stream": True, "max_tokens": 5}
    resp = client.post("/completions", json=body, headers=MASTER)
    events = [data for _, data in sse_events(resp.data)]
    assert all(e["choices"] for e in events)  # the usage-only chunk was not asked for
    assert "".join(e["choices"][0]["text"] for e in events) == " ".join(DEFAULT_CONTENT.split()[:5])
    assert upstream.requests[-1].json["stream_options"] == {"include_usage": True}
    row = only_row()
    assert (row.call_type, row.completion_tokens) == ("completions", 5)


# --- Anthropic Messages ------------------------------------------------------------


def claude_body(**extra: Any) -> dict[str, Any]:
    return {"model": CLAUDE, "max_tokens": 300, "messages": USER_TURN, **extra}


def test_message_is_relayed_natively_with_anthropic_headers_and_cache_pricing_parts(
    client: FlaskClient, claude: MockAnthropic
) -> None:
    key = new_key(client)
    system = [
        {"type": "text", "text": "You are a careful assistant. " * 20},
        {"type": "text", "text": "Project notes.", "cache_control": {"type": "ephemeral"}},
    ]
    headers = {
        "x-api-key": key,
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "prompt-caching-2024-07-31",
    }
    answers = []
    for _ in range(2):
        resp = client.post("/v1/messages", json=claude_body(system=system), headers=headers)
        assert resp.status_code == 200, resp.get_data(as_text=True)
        answers.append(resp.get_json())
    sent = claude.requests[-1]
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == ANTHROPIC_KEY  # the deployment's key, not the caller's
    assert sent.headers["anthropic-beta"] == "prompt-caching-2024-07-31"
    assert sent.json["model"] == "claude-sonnet-4-5" and sent.json["system"] == system
    first, second = (a["usage"] for a in answers)
    assert first["cache_creation_input_tokens"] > 0 and first["cache_read_input_tokens"] == 0
    assert second["cache_read_input_tokens"] == first["cache_creation_input_tokens"]
    rows = sorted(SpendLog.select(), key=lambda r: r.start_time)
    for row, usage in zip(rows, (first, second), strict=True):
        assert row.call_type == "messages"
        total_input = (
            usage["input_tokens"]
            + usage["cache_creation_input_tokens"]
            + usage["cache_read_input_tokens"]
        )
        assert (row.prompt_tokens, row.completion_tokens) == (total_input, usage["output_tokens"])


def test_message_stream_events_are_relayed_and_billed_from_message_delta(
    client: FlaskClient, recorder: CostRecorder
) -> None:
    resp = client.post(
        "/v1/messages", json=claude_body(stream=True), headers={"x-api-key": MASTER_KEY}
    )
    events = sse_events(resp.data)
    names = [name for name, _ in events]
    assert names[:2] == ["message_start", "ping"] and names[-2:] == [
        "message_delta",
        "message_stop",
    ]
    start_usage = events[0][1]["message"]["usage"]
    final_output = events[-2][1]["usage"]["output_tokens"]
    row = only_row()
    assert (row.call_type, row.status) == ("messages", "success")
    assert row.prompt_tokens == start_usage["input_tokens"]
    assert row.completion_tokens == final_output
    assert row.spend <= recorder.estimates[0]


def test_messages_errors_come_in_anthropic_shape(client: FlaskClient) -> None:
    bad_key = client.post("/v1/messages", json=claude_body(), headers={"x-api-key": "sk-nope"})
    assert bad_key.status_code == 401
    assert bad_key.get_json() == {
        "type": "error",
        "error": {
            "type": "authentication_error",
            "message": "Authentication Error, Invalid proxy server token passed.",
        },
    }
    no_max = client.post(
        "/v1/messages", json={"model": CLAUDE, "messages": USER_TURN}, headers=MASTER
    )
    assert no_max.status_code == 400
    assert no_max.get_json()["error"]["type"] == "invalid_request_error"
    assert "'max_tokens'" in no_max.get_json()["error"]["message"]
    unknown = client.post("/v1/messages", json=claude_body(model="gpt-17"), headers=MASTER)
    assert unknown.status_code == 400 and unknown.get_json()["type"] == "error"
    assert "Invalid model name passed in model=gpt-17" in unknown.get_json()["error"]["message"]


def test_budget_refusals_keep_the_seed_wording_in_each_routes_shape(
    client: FlaskClient,
) -> None:
    key = new_key(client, max_budget=0)
    message = "ExceededTokenBudget: Current spend for token: 0.0; Max Budget for Token: 0.0"
    for path, body in (
        ("/v1/responses", {"model": "gpt-4o", "input": "hi"}),
        ("/v1/completions", {"model": "gpt-4o", "prompt": "hi"}),
        ("/v1/chat/completions", {"model": CLAUDE, "messages": USER_TURN}),
    ):
        resp = client.post(path, json=body, headers=bearer(key))
        assert resp.status_code == 401, path
        assert message in resp.get_json()["error"]["message"], path
        assert resp.get_json()["error"]["type"] == "auth_error"
    resp = client.post("/v1/messages", json=claude_body(), headers={"x-api-key": key})
    assert resp.status_code == 401
    error = resp.get_json()
    assert error["type"] == "error" and error["error"]["type"] == "authentication_error"
    assert message in error["error"]["message"]
    assert SpendLog.select().count() == 0


def test_messages_respect_model_access_and_tpm_from_real_usage(client: FlaskClient) -> None:
    narrow = new_key(client, models=["gpt-4o"])
    refused = client.post("/v1/messages", json=claude_body(), headers={"x-api-key": narrow})
    assert refused.status_code == 401
    assert "key not allowed to access model" in refused.get_json()["error"]["message"]
    limited = new_key(client, tpm_limit=20)
    first = client.post("/v1/messages", json=claude_body(), headers={"x-api-key": limited})
    assert first.status_code == 200
    assert sum(first.get_json()["usage"].values()) > 20
    second = client.post("/v1/messages", json=claude_body(), headers={"x-api-key": limited})
    assert second.status_code == 429
    assert second.get_json()["error"]["type"] == "rate_limit_error"
    assert "tpm_limit=20" in second.get_json()["error"]["message"]


def test_count_tokens_is_passed_through_and_not_billed(
    client: FlaskClient, claude: MockAnthropic
) -> None:
    body = {"model": CLAUDE, "messages": USER_TURN}
    resp = client.post("/v1/messages/count_tokens", json=body, headers={"x-api-key": MASTER_KEY})
    assert resp.status_code == 200
    assert resp.get_json() == {"input_tokens": claude.input_tokens(body)}
    assert claude.requests[-1].path == "/v1/messages/count_tokens"
    assert SpendLog.select().count() == 0


# --- /chat/completions to an anthropic/ model ------------------------------------------


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


def test_chat_completion_to_claude_is_translated_both_ways(
    client: FlaskClient, claude: MockAnthropic
) -> None:
    messages = [{"role": "system", "content": "Be brief."}, *USER_TURN]
    body = {"model": CLAUDE, "messages": messages, "tools": TOOLS, "user": "cust-1"}
    resp = client.post("/chat/completions", json=body, headers=MASTER)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    choice = resp.get_json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    call = choice["message"]["tool_calls"][0]
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}
    sent = claude.requests[-1].json
    assert sent["system"] == [{"type": "text", "text": "Be brief."}]
    assert sent["tools"][0]["input_schema"]["required"] == ["city"]
    assert sent["metadata"] == {"user_id": "cust-1"} and sent["max_tokens"] > 0
    follow_up = {
        "model": CLAUDE,
        "tools": TOOLS,
        "messages": [
            *messages,
            choice["message"],
            {"role": "tool", "tool_call_id": call["id"], "content": "Sunny, 21C"},
        ],
    }
    resp = client.post("/chat/completions", json=follow_up, headers=MASTER)
    assert resp.get_json()["choices"][0]["message"]["content"] == DEFAULT_CONTENT
    sent = claude.requests[-1].json["messages"]
    assert sent[-2]["content"][-1]["type"] == "tool_use"
    assert sent[-1]["content"] == [
        {"type": "tool_result", "tool_use_id": call["id"], "content": "Sunny, 21C"}
    ]
    rows = list(SpendLog.select())
    assert [r.call_type for r in rows] == ["chat", "chat"]


def test_chat_stream_to_claude_is_translated_to_chunks_and_billed(client: FlaskClient) -> None:
    body = {
        "model": CLAUDE,
        "messages": USER_TURN,
        "tools": TOOLS,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    resp = client.post("/chat/completions", json=body, headers=MASTER)
    chunks = [data for _, data in sse_events(resp.data)]
    assert resp.data.endswith(b"data: [DONE]\n\n")
    arguments = "".join(
        c["choices"][0]["delta"].get("tool_calls", [{}])[0].get("function", {}).get("arguments", "")
        for c in chunks
        if c["choices"]
    )
    assert json.loads(arguments) == {"city": "Paris"}
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    usage = chunks[-1]["usage"]
    row = only_row()
    assert (row.prompt_tokens, row.completion_tokens) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )


# --- /v1/messages to an OpenAI-compatible model -----------------------------------------


def test_message_to_an_openai_model_is_translated_both_ways(
    client: FlaskClient, upstream: MockOpenAI
) -> None:
    body = claude_body(
        model="gpt-4o",
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        tools=[
            {
                "name": "get_weather",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
            }
        ],
        metadata={"user_id": "dev-carol"},
        stop_sequences=["END"],
    )
    resp = client.post("/v1/messages", json=body, headers={"x-api-key": MASTER_KEY})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    message = resp.get_json()
    assert message["type"] == "message" and message["stop_reason"] == "end_turn"
    assert message["content"] == [{"type": "text", "text": DEFAULT_CONTENT}]
    sent = upstream.requests[-1]
    assert sent.path == "/v1/chat/completions"
    assert sent.json["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent.json["tools"][0]["function"]["name"] == "get_weather"
    assert (sent.json["max_tokens"], sent.json["stop"], sent.json["user"]) == (
        300,
        ["END"],
        "dev-carol",
    )
    row = only_row()
    assert row.call_type == "messages" and row.end_user == "dev-carol"
    assert row.prompt_tokens == message["usage"]["input_tokens"]
    assert row.completion_tokens == message["usage"]["output_tokens"]


def test_message_stream_to_an_openai_model_becomes_anthropic_events(
    client: FlaskClient, upstream: MockOpenAI
) -> None:
    body = claude_body(model="gpt-4o", stream=True)
    resp = client.post("/v1/messages", json=body, headers={"x-api-key": MASTER_KEY})
    events = sse_events(resp.data)
    names = [name for name, _ in events]
    assert names[:2] == ["message_start", "content_block_start"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    text = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
    assert text == DEFAULT_CONTENT
    assert upstream.requests[-1].json["stream_options"] == {"include_usage": True}
    usage = events[-2][1]["usage"]
    row = only_row()
    assert (row.prompt_tokens, row.completion_tokens) == (
        usage["input_tokens"],
        usage["output_tokens"],
    )
    count = client.post(
        "/v1/messages/count_tokens",
        json={"model": "gpt-4o", "messages": USER_TURN},
        headers=MASTER,
    )
    assert count.status_code == 200 and count.get_json()["input_tokens"] > 0


# --- strict budgets ------------------------------------------------------------------


def test_strict_mode_refuses_what_the_request_cannot_bound(
    make_client: Callable[..., FlaskClient], upstream: MockOpenAI
) -> None:
    client = make_client(budget_enforcement="strict")
    key = new_key(client, max_budget=10)
    hosted = {"model": "gpt-4o", "input": "news?", "tools": [{"type": "web_search"}]}
    resp = client.post("/v1/responses", json=hosted, headers=bearer(key))
    assert resp.status_code == 400 and resp.get_json()["error"]["param"] == "tools"
    pdf = claude_body(
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "document", "source": {"type": "url", "url": "https://x/a.pdf"}}
                ],
            }
        ]
    )
    resp = client.post("/v1/messages", json=pdf, headers={"x-api-key": key})
    assert resp.status_code == 400 and resp.get_json()["type"] == "error"
    assert upstream.requests == []


def test_strict_reservation_stops_the_call_that_would_overshoot(
    make_client: Callable[..., FlaskClient],
) -> None:
    client = make_client(budget_enforcement="strict")
    key = new_key(client, max_budget=cost(0, 300) * 0.99)  # less than one answer's worst case
    resp = client.post("/v1/messages", json=claude_body(), headers={"x-api-key": key})
    assert resp.status_code == 401
    assert "strict budget" in resp.get_json()["error"]["message"]
    assert Key.get().spend == 0


# --- the README's examples, on the built-in mock models ---------------------------------


def test_readme_examples_answer_on_the_built_in_models(
    make_app: Callable[..., Flask], db_url: str
) -> None:
    client = make_app(base_config(db_url)).test_client()
    anthropic_headers = {"x-api-key": MASTER_KEY, "anthropic-version": "2023-06-01"}
    calls = [
        (
            "/v1/responses",
            {"model": "gpt-4o-mini", "instructions": "Be brief.", "input": "Tell me a joke"},
            MASTER,
            "response",
        ),
        (
            "/v1/completions",
            {"model": "gpt-3.5-turbo", "prompt": "Say this is a test", "max_tokens": 7},
            MASTER,
            "text_completion",
        ),
        (
            "/v1/messages",
            {
                "model": "claude-sonnet-4-5",
                "max_tokens": 1024,
                "messages": [{"role": "user", "content": "Hello, Claude"}],
            },
            anthropic_headers,
            None,
        ),
    ]
    for path, body, headers, kind in calls:
        resp = client.post(path, json=body, headers=headers)
        assert resp.status_code == 200, resp.get_data(as_text=True)
        answer = resp.get_json()
        assert answer.get("object", answer.get("type")) == (kind or "message")
        streamed = client.post(path, json={**body, "stream": True}, headers=headers)
        assert streamed.status_code == 200 and sse_events(streamed.data)
    rows = list(SpendLog.select())
    assert sorted(r.call_type for r in rows) == sorted(["responses", "completions", "messages"] * 2)
    assert all(r.spend > 0 for r in rows)


# --- streams the client leaves ---------------------------------------------------------


def read_until(resp: Any, marker: bytes, count: int) -> bytes:
    got = b""
    for piece in resp.response:
        got += piece if isinstance(piece, bytes) else piece.encode()
        if got.count(marker) >= count:
            break
    resp.close()  # what the WSGI server does when the client goes away
    return got


def test_a_message_stream_left_mid_way_is_charged_its_input_and_what_was_relayed(
    client: FlaskClient, claude: MockAnthropic
) -> None:
    claude.stream_event_delay = 0.02  # spaced as generated: a burst is relayed as one part
    resp = client.post(
        "/v1/messages", json=claude_body(stream=True), headers=MASTER, buffered=False
    )
    got = read_until(resp, b"text_delta", 3)
    events = sse_events(got)
    start_usage = events[0][1]["message"]["usage"]
    relayed = "".join(
        d["delta"]["text"] for n, d in events if n == "content_block_delta" and "text" in d["delta"]
    )
    row = only_row()
    assert row.status == "disconnected"
    assert row.prompt_tokens == start_usage["input_tokens"]  # from message_start
    assert row.completion_tokens == (len(relayed) + 3) // 4 < len(DEFAULT_CONTENT.split())


def test_a_response_stream_left_mid_way_is_charged_what_was_relayed(
    client: FlaskClient, upstream: MockOpenAI
) -> None:
    upstream.stream_chunk_delay = 0.02  # spaced as generated: a burst is relayed as one part
    body = {"model": "gpt-4o", "input": "Tell me a story", "stream": True}
    resp = client.post("/v1/responses", json=body, headers=MASTER, buffered=False)
    got = read_until(resp, b"response.output_text.delta", 4)
    relayed = "".join(d["delta"] for n, d in sse_events(got) if n == "response.output_text.delta")
    row = only_row()
    assert (row.status, row.call_type) == ("disconnected", "responses")
    assert row.completion_tokens == (len(relayed) + 3) // 4
    assert row.prompt_tokens == 4  # "Tell me a story": 15 characters, about 4 a token


# --- webhooks -------------------------------------------------------------------------


def test_end_user_spend_on_the_new_routes_raises_spend_tracked_alerts(
    make_app: Callable[..., Flask],
    db_url: str,
    upstream: MockOpenAI,
    claude: MockAnthropic,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import plugins.webhook_alerter.hooks as webhook_alerter
    from plugins.webhook_alerter.outbox import OutboxAlert

    monkeypatch.setenv("WEBHOOK_URL", "http://127.0.0.1:9/hook")  # nobody listens: kept
    config = base_config(
        db_url,
        model_list=model_list(upstream.base_url, claude.base_url),
        general_settings={"alerting": ["webhook"]},
    )
    client = make_app(config).test_client()
    try:
        metadata = {"user_id": "dev-alice"}
        calls = [
            ("/v1/messages", claude_body(metadata=metadata)),
            ("/v1/responses", {"model": "gpt-4o", "input": "hi", "user": "dev-alice"}),
            ("/v1/completions", {"model": "gpt-4o", "prompt": "hi", "user": "dev-alice"}),
        ]
        for path, body in calls:
            assert client.post(path, json=body, headers=MASTER).status_code == 200
        alerts = [
            json.loads(row.payload)
            for row in OutboxAlert.select()
            .where(OutboxAlert.event == "spend_tracked")
            .order_by(OutboxAlert.created_at)
        ]
        assert [a["customer_id"] for a in alerts] == ["dev-alice"] * 3
        assert alerts[-1]["spend"] == pytest.approx(sum(r.spend for r in SpendLog.select()))
    finally:
        webhook_alerter.shutdown()


# --- each usage part at its own price ---------------------------------------------------


def test_cache_and_reasoning_parts_are_priced_at_their_rates(
    make_app: Callable[..., Flask], db_url: str, upstream: MockOpenAI, claude: MockAnthropic
) -> None:
    read, write = IN_PRICE / 10, IN_PRICE * 1.25
    entries = model_list(upstream.base_url, claude.base_url)
    for entry in entries:
        entry["litellm_params"].update(
            cache_read_input_token_cost=read, cache_creation_input_token_cost=write
        )
    client = make_app(base_config(db_url, model_list=entries)).test_client()
    upstream.cached_tokens = 6
    upstream.reasoning_tokens = 5
    answer = client.post(
        "/v1/responses", json={"model": "gpt-4o", "input": "hello there " * 5}, headers=MASTER
    ).get_json()
    usage = answer["usage"]
    cached = usage["input_tokens_details"]["cached_tokens"]
    assert cached == 6
    # Reasoning is output; cached input at the cache-read rate, the rest at the input rate.
    expected = (usage["input_tokens"] - cached) * IN_PRICE + cached * read
    expected += usage["output_tokens"] * OUT_PRICE
    row = only_row()
    assert row.spend == pytest.approx(expected, rel=1e-9)
    SpendLog.delete().execute()
    system = [{"type": "text", "text": "Rules. " * 50, "cache_control": {"type": "ephemeral"}}]
    usages = [
        client.post("/v1/messages", json=claude_body(system=system), headers=MASTER).get_json()[
            "usage"
        ]
        for _ in range(2)
    ]
    assert usages[0]["cache_creation_input_tokens"] > 0 and usages[1]["cache_read_input_tokens"] > 0
    rows = sorted(SpendLog.select(), key=lambda r: r.start_time)
    for row, usage in zip(rows, usages, strict=True):
        expected = (
            usage["input_tokens"] * IN_PRICE
            + usage["cache_creation_input_tokens"] * write
            + usage["cache_read_input_tokens"] * read
            + usage["output_tokens"] * OUT_PRICE
        )
        assert row.spend == pytest.approx(expected, rel=1e-9)


# --- the other budget levels -------------------------------------------------------------


def test_end_user_team_user_and_proxy_budgets_refuse_the_new_routes(
    make_app: Callable[..., Flask], db_url: str, upstream: MockOpenAI, claude: MockAnthropic
) -> None:
    config = base_config(
        db_url,
        model_list=model_list(upstream.base_url, claude.base_url),
        litellm_settings={"max_user_budget": 0},
    )
    client = make_app(config).test_client()
    # An end user (Claude Code's metadata.user_id) held to max_user_budget 0.
    resp = client.post(
        "/v1/messages", json=claude_body(metadata={"user_id": "dev-bob"}), headers=MASTER
    )
    assert resp.status_code == 401
    assert resp.get_json()["error"]["message"].startswith(
        "Authentication Error, ExceededBudget: User dev-bob has exceeded their budget."
    )
    post_ok(client, "/team/new", {"team_id": "t-0", "max_budget": 0})
    post_ok(client, "/user/new", {"user_id": "u-0", "max_budget": 0})
    for fields, wording in (
        ({"team_id": "t-0"}, "Current Team Spend: 0.0; Max Budget for Team: 0.0"),
        ({"user_id": "u-0"}, "ExceededBudget: User u-0 has exceeded their budget"),
    ):
        key = new_key(client, **fields)
        for path, body in (
            ("/v1/responses", {"model": "gpt-4o", "input": "hi"}),
            ("/v1/completions", {"model": "gpt-4o", "prompt": "hi"}),
        ):
            resp = client.post(path, json=body, headers=bearer(key))
            assert resp.status_code == 401, (path, fields)
            assert wording in resp.get_json()["error"]["message"], (path, fields)
        resp = client.post("/v1/messages", json=claude_body(), headers={"x-api-key": key})
        assert resp.status_code == 401 and wording in resp.get_json()["error"]["message"]
    assert SpendLog.select().count() == 0 and upstream.requests == [] and claude.requests == []


def test_proxy_budget_refuses_the_new_routes(
    make_app: Callable[..., Flask], db_url: str, upstream: MockOpenAI, claude: MockAnthropic
) -> None:
    config = base_config(
        db_url,
        model_list=model_list(upstream.base_url, claude.base_url),
        litellm_settings={"max_budget": 0},
    )
    client = make_app(config).test_client()
    for path, body in (
        ("/v1/responses", {"model": "gpt-4o", "input": "hi"}),
        ("/v1/completions", {"model": "gpt-4o", "prompt": "hi"}),
        ("/v1/messages", claude_body()),
    ):
        resp = client.post(path, json=body, headers=MASTER)
        assert resp.status_code == 401, path
        assert "ExceededBudget: Proxy has exceeded its budget" in resp.get_data(as_text=True)


def test_an_anthropic_upstream_error_keeps_its_status_in_each_routes_shape(
    client: FlaskClient, claude: MockAnthropic
) -> None:
    for _ in range(3):  # the call and its two retries (num_retries defaults to 2)
        claude.fail_next(529, "overloaded_error", "Overloaded")
    resp = client.post("/v1/messages", json=claude_body(), headers=MASTER)
    assert resp.status_code == 529
    assert resp.get_json() == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }
    for _ in range(3):
        claude.fail_next(529, "overloaded_error", "Overloaded")
    chat = {"model": CLAUDE, "messages": USER_TURN, "stream": True}
    resp = client.post("/chat/completions", json=chat, headers=MASTER)
    assert resp.status_code == 529
    assert resp.get_json()["error"]["message"] == "Overloaded"
    assert resp.get_json()["error"]["type"] == "overloaded_error"
    assert SpendLog.select().count() == 0


def test_azure_deployments_answer_responses_and_completions(
    make_app: Callable[..., Flask], db_url: str, upstream: MockOpenAI
) -> None:
    entry = {
        "model_name": "azure-gpt",
        "litellm_params": {
            "model": "azure/my-gpt-deployment",
            "api_base": upstream.root_url,
            "api_key": "azure-key",
            "api_version": "2025-03-01-preview",
            **PRICES,
        },
    }
    client = make_app(base_config(db_url, model_list=[entry])).test_client()
    resp = client.post("/v1/responses", json={"model": "azure-gpt", "input": "hi"}, headers=MASTER)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    sent = upstream.requests[-1]
    assert sent.path == "/openai/responses" and sent.query["api-version"] == "2025-03-01-preview"
    assert sent.json["model"] == "my-gpt-deployment" and sent.headers["api-key"] == "azure-key"
    resp = client.post(
        "/v1/completions", json={"model": "azure-gpt", "prompt": "hi"}, headers=MASTER
    )
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert upstream.requests[-1].path == "/openai/deployments/my-gpt-deployment/completions"
    assert sorted(r.call_type for r in SpendLog.select()) == ["completions", "responses"]


def test_anthropic_base_url_ending_in_anthropic_works_too(client: FlaskClient) -> None:
    headers = {"x-api-key": MASTER_KEY}
    resp = client.post("/anthropic/v1/messages", json=claude_body(), headers=headers)
    assert resp.status_code == 200 and resp.get_json()["type"] == "message"
    count = {"model": CLAUDE, "messages": USER_TURN}
    resp = client.post("/anthropic/v1/messages/count_tokens", json=count, headers=headers)
    assert resp.status_code == 200
    refused = client.post("/anthropic/v1/messages", json=claude_body(), headers={"x-api-key": "x"})
    assert refused.status_code == 401 and refused.get_json()["type"] == "error"


# --- several deployments: a stored response lives at one upstream ---------------------


def test_continuations_and_retrievals_go_to_the_deployment_that_stored_the_response(
    make_app: Callable[..., Flask], db_url: str, upstream: MockOpenAI
) -> None:
    with MockOpenAI() as second:
        entries = [
            {
                "model_name": "gpt-4o",
                "litellm_params": {
                    "model": "openai/gpt-4o",
                    "api_base": base,
                    "api_key": "sk-up",
                    **PRICES,
                },
            }
            for base in (upstream.base_url, second.base_url)
        ]
        client = make_app(base_config(db_url, model_list=entries)).test_client()
        first = client.post(
            "/v1/responses", json={"model": "gpt-4o", "input": "hi"}, headers=MASTER
        ).get_json()
        holder = upstream if first["id"] in upstream.stored_responses else second
        other = second if holder is upstream else upstream
        previous = first["id"]
        for _ in range(8):  # the router alone would pick the other upstream half the time
            body = {"model": "gpt-4o", "input": "and?", "previous_response_id": previous}
            resp = client.post("/v1/responses", json=body, headers=MASTER)
            assert resp.status_code == 200, resp.get_data(as_text=True)
            previous = resp.get_json()["id"]
            assert previous in holder.stored_responses
        assert client.get(f"/v1/responses/{first['id']}", headers=MASTER).status_code == 200
        assert not [r for r in other.requests if r.path.startswith("/v1/responses")]
        assert SpendLog.select().count() == 9
