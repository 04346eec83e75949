"""A Claude Code session replayed against a key with a budget.

Claude Code pointed at the gateway (``ANTHROPIC_BASE_URL``, the key in
``ANTHROPIC_API_KEY``) sends what is replayed here: ``POST
/v1/messages?beta=true`` with its ``anthropic-beta`` features, a system prompt
in blocks with ``cache_control`` breakpoints, its tool definitions, a
``metadata.user_id``, ``max_tokens: 32000`` and streaming; a token count
before a turn; a one-token quota probe at start-up. Each turn's conversation
grows by the previous answer and a tool result, as an agent's does.

Every request is metered once, the prompt cache is read from the second turn
on, and once the key's spend reaches its budget the next request is refused
in Anthropic's error shape with the seeds' wording, before the upstream sees it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from proxy.call.auth import hash_key
from proxy.storage.db import database, init_database
from proxy.storage.models import Customer, Key, SpendLog
from tests.conftest import MASTER, MASTER_KEY
from tests.support.mock_anthropic import MockAnthropic
from tests.support.proxy_server import ProxyServer, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

UPSTREAM_KEY = "sk-ant-upstream"
IN_PRICE = 3e-6
OUT_PRICE = 15e-6
BUDGET = 0.012
BETAS = (
    "claude-code-20250219,interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14"
)
SESSION_USER = "user_4f9a_account__session_0b7c1d2e"
SYSTEM = [
    {
        "type": "text",
        "text": "You are Claude Code, Anthropic's official CLI for Claude.",
        "cache_control": {"type": "ephemeral"},
    },
    {
        "type": "text",
        "text": "You are an interactive CLI tool that helps users with software engineering "
        "tasks. Use the instructions below and the tools available to you. " * 25,
        "cache_control": {"type": "ephemeral"},
    },
]
TOOLS = [
    {
        "name": name,
        "description": f"{name}: {what}",
        "input_schema": {
            "type": "object",
            "properties": {arg: {"type": "string", "description": f"The {arg}"}},
            "required": [arg],
        },
    }
    for name, what, arg in (
        ("Bash", "Executes a bash command in a persistent shell session", "command"),
        ("Read", "Reads a file from the local filesystem", "file_path"),
        ("Edit", "Performs exact string replacements in files", "file_path"),
        ("Grep", "A powerful search tool built on ripgrep", "pattern"),
    )
]


@pytest.fixture(scope="module")
def claude_upstream() -> Iterator[MockAnthropic]:
    with MockAnthropic(api_key=UPSTREAM_KEY) as server:
        yield server


@pytest.fixture(scope="module")
def server(
    database_url: str, claude_upstream: MockAnthropic, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyServer]:
    params = {"api_base": claude_upstream.base_url, "api_key": UPSTREAM_KEY}
    # Cache reads and writes at the input price: what is checked here is that every
    # request is metered once from its usage, not the cache discount.
    prices = {
        "input_cost_per_token": IN_PRICE,
        "output_cost_per_token": OUT_PRICE,
        "cache_read_input_token_cost": IN_PRICE,
        "cache_creation_input_token_cost": IN_PRICE,
    }
    config = {
        "model_list": [
            {
                "model_name": name,
                "litellm_params": {"model": f"anthropic/{name}", **params, **prices},
            }
            for name in ("claude-sonnet-4-5-20250929", "claude-haiku-4-5-20251001")
        ],
        "general_settings": {"master_key": MASTER_KEY, "database_url": database_url},
    }
    with ProxyServer(config, tmp_path_factory.mktemp("claude-code"), workers=2, threads=4) as p:
        init_database(database_url)
        yield p
    database.close()


def claude_code_headers(key: str) -> dict[str, str]:
    return {
        "x-api-key": key,
        "anthropic-version": "2023-06-01",
        "anthropic-beta": BETAS,
        "anthropic-dangerous-direct-browser-access": "true",
        "x-app": "cli",
        "user-agent": "claude-cli/2.0.14 (external, cli)",
        "content-type": "application/json",
    }


def turn_body(messages: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "model": "claude-sonnet-4-5-20250929",
        "max_tokens": 32000,
        "stream": True,
        "temperature": 1,
        "system": SYSTEM,
        "tools": TOOLS,
        "metadata": {"user_id": SESSION_USER},
        "messages": messages,
    }


def events(raw: bytes) -> list[dict[str, Any]]:
    out = []
    for block in raw.decode().split("\n\n"):
        data = [line[5:].strip() for line in block.splitlines() if line.startswith("data:")]
        if data:
            out.append(json.loads(data[0]))
    return out


def spend_rows() -> list[SpendLog]:
    with database.connection_context():
        return list(SpendLog.select())


def test_claude_code_session_is_metered_then_refused_over_budget(
    proxy: ProxyServer, claude_upstream: MockAnthropic
) -> None:
    claude_upstream.wait_idle()
    claude_upstream.reset()
    made = requests.post(
        f"{proxy.url}/key/generate", json={"max_budget": BUDGET}, headers=MASTER, timeout=10
    )
    key = made.json()["key"]
    headers = claude_code_headers(key)
    url = f"{proxy.url}/v1/messages?beta=true"
    # Start-up: the quota probe (one token, haiku, not streamed).
    probe = {
        "model": "claude-haiku-4-5-20251001",
        "max_tokens": 1,
        "messages": [{"role": "user", "content": "quota"}],
        "metadata": {"user_id": SESSION_USER},
    }
    resp = requests.post(url, json=probe, headers=headers, timeout=20)
    assert resp.status_code == 200, resp.text
    metered = 1
    messages: list[dict[str, Any]] = [
        {
            "role": "user",
            "content": [
                {
                    "type": "text",
                    "text": "Fix the failing test in tests/test_app.py",
                    "cache_control": {"type": "ephemeral"},
                }
            ],
        }
    ]
    refusal: requests.Response | None = None
    for turn in range(12):
        count = requests.post(
            f"{proxy.url}/v1/messages/count_tokens?beta=true",
            json={
                k: v
                for k, v in turn_body(messages).items()
                if k in ("model", "system", "tools", "messages")
            },
            headers=headers,
            timeout=20,
        )
        assert count.status_code == 200 and count.json()["input_tokens"] > 0
        upstream_calls = len(claude_upstream.requests)
        resp = requests.post(url, json=turn_body(messages), headers=headers, timeout=20)
        if resp.status_code != 200:
            refusal = resp
            assert len(claude_upstream.requests) == upstream_calls  # refused before upstream
            break
        metered += 1
        stream = events(resp.content)
        assert stream[0]["type"] == "message_start" and stream[-1]["type"] == "message_stop"
        sent = claude_upstream.requests[-1]
        assert sent.headers["anthropic-beta"] == BETAS
        assert sent.headers["x-api-key"] == UPSTREAM_KEY
        assert sent.json["system"] == SYSTEM and sent.json["metadata"]["user_id"] == SESSION_USER
        usage = stream[0]["message"]["usage"]
        if turn > 0:
            assert usage["cache_read_input_tokens"] > 0  # the system prompt's cached prefix
        wait_until(lambda n=metered: len(spend_rows()) == n, timeout=15)
        row = max(spend_rows(), key=lambda r: r.start_time)
        output = next(e for e in stream if e["type"] == "message_delta")["usage"]["output_tokens"]
        prompt = (
            usage["input_tokens"]
            + usage["cache_creation_input_tokens"]
            + usage["cache_read_input_tokens"]
        )
        assert (row.prompt_tokens, row.completion_tokens) == (prompt, output)
        assert row.spend == pytest.approx(prompt * IN_PRICE + output * OUT_PRICE)
        # The agent's next request carries the answer and a tool result or a new ask.
        blocks = [e["content_block"] for e in stream if e["type"] == "content_block_start"]
        tool = next((b for b in blocks if b["type"] == "tool_use"), None)
        if tool is not None:
            reply = {"role": "assistant", "content": [{**tool, "input": {"command": "pytest"}}]}
            result = {"type": "tool_result", "tool_use_id": tool["id"], "content": "1 failed " * 40}
            messages = [*messages, reply, {"role": "user", "content": [result]}]
        else:
            text = "".join(e["delta"]["text"] for e in stream if e["type"] == "content_block_delta")
            messages = [
                *messages,
                {"role": "assistant", "content": [{"type": "text", "text": text}]},
                {"role": "user", "content": "Now run the whole suite and fix what fails."},
            ]
    assert refusal is not None, "the budget never refused"
    assert metered >= 3
    rows = spend_rows()
    assert len(rows) == metered and {r.call_type for r in rows} == {"messages"}
    with database.connection_context():
        spend = Key.get_by_id(hash_key(key)).spend
        assert Customer.get_by_id(SESSION_USER).spend == pytest.approx(spend)
    assert spend == pytest.approx(sum(r.spend for r in rows))
    last = max(rows, key=lambda r: r.start_time)
    assert spend - last.spend < BUDGET <= spend  # metered while under, refused once over
    assert refusal.status_code == 401
    error = refusal.json()
    assert error["type"] == "error"
    assert error["error"]["type"] == "authentication_error"
    assert error["error"]["message"] == (
        f"Authentication Error, ExceededTokenBudget: Current spend for token: {spend}; "
        f"Max Budget for Token: {BUDGET}"
    )
