"""The official OpenAI SDK on the Responses API and legacy completions, and the
official Anthropic SDK on Messages (create, stream, tool use), against Comptroller
under real gunicorn on PostgreSQL, in front of mock upstreams that speak each
provider's wire format and count tokens their own way.

Every call is billed exactly once (one spend-log row, key spend = the sum of
its rows) at the price the upstream's usage gives, and a key over its budget
is refused in each SDK's own error type with the seeds' wording.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import openai
import pytest
import requests

from proxy.call.auth import hash_key
from proxy.storage.db import database, init_database
from proxy.storage.models import Key, SpendLog
from tests.conftest import MASTER, MASTER_KEY
from tests.support.mock_anthropic import MockAnthropic
from tests.support.mock_openai import DEFAULT_CONTENT, MockOpenAI
from tests.support.proxy_server import ProxyServer, wait_until

if TYPE_CHECKING:
    import anthropic

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

IN_PRICE = 3e-6
OUT_PRICE = 15e-6
# Cache reads and writes at the input price here: these tests check that every call
# is billed once from the upstream's usage; per-part prices are the pricing tests'.
PRICES = {
    "input_cost_per_token": IN_PRICE,
    "output_cost_per_token": OUT_PRICE,
    "cache_read_input_token_cost": IN_PRICE,
    "cache_creation_input_token_cost": IN_PRICE,
}
ANTHROPIC_UPSTREAM_KEY = "sk-ant-upstream"
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "The current weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def claude_upstream() -> Iterator[MockAnthropic]:
    with MockAnthropic(api_key=ANTHROPIC_UPSTREAM_KEY) as server:
        yield server


@pytest.fixture(scope="module")
def server(
    database_url: str,
    mock_openai: MockOpenAI,
    claude_upstream: MockAnthropic,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ProxyServer]:
    config = {
        "model_list": [
            {
                "model_name": "gpt-4o-mini",
                "litellm_params": {
                    "model": "openai/gpt-4o-mini",
                    "api_base": mock_openai.base_url,
                    "api_key": "sk-up",
                    **PRICES,
                },
            },
            {
                "model_name": "claude-sonnet-4-5",
                "litellm_params": {
                    "model": "anthropic/claude-sonnet-4-5-20250929",
                    "api_base": claude_upstream.base_url,
                    "api_key": "os.environ/TEST_ANTHROPIC_KEY",
                    **PRICES,
                },
            },
        ],
        "general_settings": {"master_key": MASTER_KEY, "database_url": database_url},
    }
    env = {"TEST_ANTHROPIC_KEY": ANTHROPIC_UPSTREAM_KEY}
    tmp = tmp_path_factory.mktemp("sdk-apis")
    with ProxyServer(config, tmp, workers=2, threads=4, env=env) as proxy:
        init_database(database_url)
        yield proxy
    database.close()


@pytest.fixture
def claude(claude_upstream: MockAnthropic) -> MockAnthropic:
    claude_upstream.wait_idle()
    claude_upstream.reset()
    return claude_upstream


def new_key(proxy: ProxyServer, **fields: Any) -> str:
    resp = requests.post(f"{proxy.url}/key/generate", json=fields, headers=MASTER, timeout=10)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["key"])


def rows() -> list[SpendLog]:
    with database.connection_context():
        return sorted(SpendLog.select(), key=lambda row: row.start_time)


def wait_rows(count: int) -> list[SpendLog]:
    """The spend rows once there are ``count`` (streams are settled after the last byte)."""

    def enough() -> list[SpendLog] | None:
        found = rows()
        return found if len(found) >= count else None

    result: list[SpendLog] = wait_until(enough, timeout=15)
    return result


def key_spend(key: str) -> float:
    with database.connection_context():
        return float(Key.get_by_id(hash_key(key)).spend)


def price(prompt: int, completion: int) -> float:
    return prompt * IN_PRICE + completion * OUT_PRICE


def assert_billed_once(key: str, usages: list[tuple[int, int]], call_type: str) -> None:
    """One row per call, each at its price from the upstream's usage; the key holds the sum."""
    found = wait_rows(len(usages))
    assert len(found) == len(usages)
    for row, (prompt, completion) in zip(found, usages, strict=True):
        assert row.call_type == call_type
        assert (row.prompt_tokens, row.completion_tokens) == (prompt, completion)
        assert row.spend == pytest.approx(price(prompt, completion), rel=1e-9)
    assert key_spend(key) == pytest.approx(sum(row.spend for row in found), rel=1e-9)


def test_openai_sdk_responses_create_and_stream(proxy: ProxyServer, upstream: MockOpenAI) -> None:
    key = new_key(proxy)
    client = openai.OpenAI(api_key=key, base_url=f"{proxy.url}/v1", max_retries=0, timeout=20)
    response = client.responses.create(
        model="gpt-4o-mini", instructions="Be brief.", input="Tell me a story", max_output_tokens=64
    )
    assert response.output_text == DEFAULT_CONTENT
    assert response.usage is not None
    usages = [(response.usage.input_tokens, response.usage.output_tokens)]
    with client.responses.stream(
        model="gpt-4o-mini", input=[{"role": "user", "content": "More"}]
    ) as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert text == DEFAULT_CONTENT
    assert final.usage is not None
    usages.append((final.usage.input_tokens, final.usage.output_tokens))
    events = list(client.responses.create(model="gpt-4o-mini", input="Again", stream=True))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    done = events[-1].response.usage
    usages.append((done.input_tokens, done.output_tokens))
    assert_billed_once(key, usages, "responses")
    # Stored responses: the creating key reads and deletes; another key sees nothing.
    other = openai.OpenAI(api_key=new_key(proxy), base_url=f"{proxy.url}/v1", max_retries=0)
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(response.id)
    assert client.responses.retrieve(response.id).id == response.id
    client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
    assert len(rows()) == 3


def test_openai_sdk_legacy_completions(proxy: ProxyServer, upstream: MockOpenAI) -> None:
    key = new_key(proxy)
    client = openai.OpenAI(api_key=key, base_url=proxy.url, max_retries=0, timeout=20)
    completion = client.completions.create(
        model="gpt-4o-mini", prompt=["Say", "this"], n=2, max_tokens=3
    )
    assert [c.text for c in completion.choices] == [" ".join(DEFAULT_CONTENT.split()[:3])] * 4
    assert completion.usage is not None
    chunks = list(
        client.completions.create(model="gpt-4o-mini", prompt="Say", stream=True, max_tokens=5)
    )
    assert "".join(c.choices[0].text for c in chunks) == " ".join(DEFAULT_CONTENT.split()[:5])
    stream_usage = upstream.requests[-1]
    assert stream_usage.json["stream_options"] == {"include_usage": True}
    found = wait_rows(2)
    assert (found[0].prompt_tokens, found[0].completion_tokens) == (
        completion.usage.prompt_tokens,
        completion.usage.completion_tokens,
    )
    assert found[1].completion_tokens == 5
    assert key_spend(key) == pytest.approx(found[0].spend + found[1].spend)


def anthropic_client(proxy: ProxyServer, key: str) -> anthropic.Anthropic:
    # Imported here: the SDK takes 2 s of CPU to import, which every pytest process
    # collecting this module would pay, the fast tier's too (it deselects these tests).
    import anthropic

    # What Claude Code and the SDK do with ANTHROPIC_BASE_URL pointed at the gateway.
    return anthropic.Anthropic(api_key=key, base_url=proxy.url, max_retries=0, timeout=20)


def test_anthropic_sdk_create_stream_and_tool_use(
    proxy: ProxyServer, claude: MockAnthropic
) -> None:
    key = new_key(proxy)
    client = anthropic_client(proxy, key)
    message = client.messages.create(model="claude-sonnet-4-5", max_tokens=256, messages=ASK)
    assert message.content[0].type == "text" and message.content[0].text == DEFAULT_CONTENT
    usages = [(message.usage.input_tokens, message.usage.output_tokens)]
    assert claude.requests[-1].headers["x-api-key"] == ANTHROPIC_UPSTREAM_KEY
    assert claude.requests[-1].json["model"] == "claude-sonnet-4-5-20250929"

    tool_use = client.messages.create(
        model="claude-sonnet-4-5", max_tokens=256, messages=ASK, tools=[WEATHER_TOOL]
    )
    assert tool_use.stop_reason == "tool_use"
    call = next(block for block in tool_use.content if block.type == "tool_use")
    assert call.name == "get_weather" and call.input == {"city": "Paris"}
    usages.append((tool_use.usage.input_tokens, tool_use.usage.output_tokens))
    with client.messages.stream(
        model="claude-sonnet-4-5",
        max_tokens=256,
        tools=[WEATHER_TOOL],
        messages=[
            *ASK,
            {"role": "assistant", "content": [b.model_dump() for b in tool_use.content]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "Sunny"}],
            },
        ],
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == DEFAULT_CONTENT and final.stop_reason == "end_turn"
    usages.append((final.usage.input_tokens, final.usage.output_tokens))
    with client.messages.stream(
        model="claude-sonnet-4-5", max_tokens=256, messages=ASK, tools=[WEATHER_TOOL]
    ) as stream:
        streamed_call = stream.get_final_message()
    assert streamed_call.content[-1].type == "tool_use"
    assert streamed_call.content[-1].input == {"city": "Paris"}
    usages.append((streamed_call.usage.input_tokens, streamed_call.usage.output_tokens))
    assert_billed_once(key, usages, "messages")


def test_anthropic_sdk_on_an_openai_model_is_translated(
    proxy: ProxyServer, upstream: MockOpenAI
) -> None:
    key = new_key(proxy)
    client = anthropic_client(proxy, key)
    message = client.messages.create(model="gpt-4o-mini", max_tokens=256, messages=ASK)
    assert message.content[0].type == "text" and message.content[0].text == DEFAULT_CONTENT
    with client.messages.stream(model="gpt-4o-mini", max_tokens=256, messages=ASK) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == DEFAULT_CONTENT and final.stop_reason == "end_turn"
    assert upstream.requests[-1].path == "/v1/chat/completions"
    usages = [
        (message.usage.input_tokens, message.usage.output_tokens),
        (final.usage.input_tokens, final.usage.output_tokens),
    ]
    assert_billed_once(key, usages, "messages")


def test_openai_sdk_chat_to_claude_is_translated(proxy: ProxyServer, claude: MockAnthropic) -> None:
    key = new_key(proxy)
    client = openai.OpenAI(api_key=key, base_url=proxy.url, max_retries=0, timeout=20)
    reply = client.chat.completions.create(
        model="claude-sonnet-4-5",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    )
    assert reply.choices[0].message.content == DEFAULT_CONTENT
    assert reply.usage is not None
    stream = client.chat.completions.create(
        model="claude-sonnet-4-5", messages=[{"role": "user", "content": "Hi"}], stream=True
    )
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream) == DEFAULT_CONTENT
    found = wait_rows(2)
    assert [r.call_type for r in found] == ["chat", "chat"]
    assert (found[0].prompt_tokens, found[0].completion_tokens) == (
        reply.usage.prompt_tokens,
        reply.usage.completion_tokens,
    )
    assert key_spend(key) == pytest.approx(sum(r.spend for r in found))


def test_budget_refusals_in_each_sdks_error_type(proxy: ProxyServer, claude: MockAnthropic) -> None:
    import anthropic

    key = new_key(proxy, max_budget=0.0001)
    oa = openai.OpenAI(api_key=key, base_url=f"{proxy.url}/v1", max_retries=0, timeout=20)
    an = anthropic_client(proxy, key)
    # The first call fits (spend < max_budget is checked before the call) and overspends.
    an.messages.create(
        model="claude-sonnet-4-5", max_tokens=256, messages=ASK, tools=[WEATHER_TOOL]
    )
    spent = wait_rows(1)[0].spend
    assert spent > 0.0001
    wording = f"ExceededTokenBudget: Current spend for token: {spent}; Max Budget for Token: 0.0001"
    with pytest.raises(anthropic.AuthenticationError) as refused:
        an.messages.create(model="claude-sonnet-4-5", max_tokens=256, messages=ASK)
    assert refused.value.status_code == 401
    assert refused.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": f"Authentication Error, {wording}"},
    }
    with pytest.raises(anthropic.AuthenticationError):
        with an.messages.stream(model="claude-sonnet-4-5", max_tokens=256, messages=ASK) as s:
            s.get_final_message()
    with pytest.raises(openai.AuthenticationError) as oa_refused:
        oa.responses.create(model="gpt-4o-mini", input="hi")
    assert wording in oa_refused.value.message
    with pytest.raises(openai.AuthenticationError):
        oa.completions.create(model="gpt-4o-mini", prompt="hi")
    assert len(rows()) == 1
