"""Each API's wire format read and written without a server: usage parsers, stream
meters, the Anthropic translation, endpoints and error shapes."""

from __future__ import annotations

import json

from proxy.call import api_bounds
from proxy.call.context import Usage
from proxy.errors import AuthError, ProxyError, RateLimited
from proxy.upstream import anthropic
from proxy.upstream.client import StreamRelay
from proxy.upstream.meters import AnthropicEventMeter, ResponsesEventMeter


def sse(name: str | None, payload: dict) -> bytes:
    head = f"event: {name}\n".encode() if name else b""
    return head + b"data: " + json.dumps(payload).encode() + b"\n\n"


def test_responses_usage_counts_cached_and_reasoning_inside_the_totals() -> None:
    usage = Usage.from_responses(
        {
            "input_tokens": 100,
            "input_tokens_details": {"cached_tokens": 80},
            "output_tokens": 30,
            "output_tokens_details": {"reasoning_tokens": 20},
        }
    )
    assert usage is not None
    assert (usage.prompt_tokens, usage.cache_read_tokens) == (100, 80)
    assert (usage.completion_tokens, usage.reasoning_tokens) == (30, 20)
    assert Usage.from_responses(None) is None
    assert Usage.from_responses({"prompt_tokens": 3}) is None


def test_anthropic_usage_adds_the_cache_to_the_prompt() -> None:
    usage = Usage.from_anthropic(
        {
            "input_tokens": 10,
            "cache_creation_input_tokens": 200,
            "cache_read_input_tokens": 1000,
            "output_tokens": 7,
        }
    )
    assert usage is not None
    assert usage.prompt_tokens == 1210
    assert (usage.cache_write_tokens, usage.cache_read_tokens) == (200, 1000)
    assert usage.completion_tokens == 7


def test_responses_meter_takes_usage_from_the_final_event_and_the_id_from_the_first() -> None:
    meter = ResponsesEventMeter()
    created = {"type": "response.created", "response": {"id": "resp_1", "usage": None}}
    assert meter.observe("response.created", created)
    meter.observe(None, {"type": "response.output_text.delta", "delta": "Hello"})
    assert (meter.response_id, meter.text_chars, meter.usage) == ("resp_1", 5, None)
    final = {"id": "resp_1", "usage": {"input_tokens": 4, "output_tokens": 2}}
    meter.observe("response.incomplete", {"type": "response.incomplete", "response": final})
    assert meter.complete and meter.usage == Usage(4, 2)


def test_anthropic_meter_merges_message_start_and_cumulative_message_deltas() -> None:
    meter = AnthropicEventMeter()
    start = {
        "id": "msg_1",
        "usage": {"input_tokens": 5, "cache_read_input_tokens": 50, "output_tokens": 1},
    }
    meter.observe("message_start", {"type": "message_start", "message": start})
    assert meter.usage == Usage(55, 1, cache_read_tokens=50) and not meter.complete
    delta = {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": "Hi!"},
    }
    meter.observe("content_block_delta", delta)
    for output in (3, 9):  # cumulative: the last one wins
        meter.observe(
            "message_delta", {"type": "message_delta", "usage": {"output_tokens": output}}
        )
    assert meter.usage == Usage(55, 9, cache_read_tokens=50)
    assert meter.complete and meter.text_chars == 3


def test_relay_passes_named_events_through_unchanged() -> None:
    events = [
        sse("message_start", {"type": "message_start", "message": {"usage": {"input_tokens": 3}}}),
        sse("ping", {"type": "ping"}),
        sse("message_delta", {"type": "message_delta", "usage": {"output_tokens": 2}}),
    ]
    raw = b"".join(events)
    relay = StreamRelay(iter([raw[:17], raw[17:]]), meter=AnthropicEventMeter())
    assert b"".join(relay) == raw
    assert relay.usage == Usage(3, 2)


def test_chat_request_becomes_a_messages_request() -> None:
    body = {
        "model": "claude",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "a", "arguments": "{}"}},
                    {
                        "id": "c2",
                        "type": "function",
                        "function": {"name": "b", "arguments": '{"x": 1}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "one"},
            {"role": "tool", "tool_call_id": "c2", "content": "two"},
        ],
        "stop": "END",
        "max_completion_tokens": 50,
        "tool_choice": "required",
    }
    out = anthropic.chat_to_messages(body, "claude-sonnet-4-5", 8192)
    assert out["system"] == [{"type": "text", "text": "Be brief."}]
    assert out["max_tokens"] == 50 and out["stop_sequences"] == ["END"]
    assert out["tool_choice"] == {"type": "any"}
    user, assistant, results = out["messages"]
    assert user["content"][1]["source"] == {
        "type": "base64",
        "media_type": "image/png",
        "data": "AAAA",
    }
    assert [b["input"] for b in assistant["content"]] == [{}, {"x": 1}]
    # Consecutive tool results travel in one user turn, as Anthropic requires.
    assert results["role"] == "user" and len(results["content"]) == 2
    assert anthropic.chat_to_messages({"messages": []}, "m", None)["max_tokens"] == 4096


def test_message_becomes_a_chat_completion_with_openai_usage() -> None:
    answer = {
        "id": "msg_9",
        "content": [{"type": "text", "text": "Hi"}],
        "stop_reason": "max_tokens",
        "usage": {"input_tokens": 2, "cache_read_input_tokens": 8, "output_tokens": 1},
    }
    chat = anthropic.message_to_chat(answer, "claude")
    assert chat["choices"][0]["finish_reason"] == "length"
    assert chat["usage"]["prompt_tokens"] == 10
    assert chat["usage"]["prompt_tokens_details"] == {"cached_tokens": 8}
    assert Usage.from_openai(chat["usage"]) == Usage(10, 1, cache_read_tokens=8)


def test_anthropic_endpoint_and_headers() -> None:
    assert anthropic.endpoint(None) == "https://api.anthropic.com/v1/messages"
    assert anthropic.endpoint("http://h:1/v1/") == "http://h:1/v1/messages"
    assert (
        anthropic.endpoint("http://h:1", "messages/count_tokens")
        == "http://h:1/v1/messages/count_tokens"
    )
    sent = anthropic.headers("sk-ant", {"anthropic-beta": "x,y", "authorization": "Bearer client"})
    assert sent["x-api-key"] == "sk-ant" and sent["anthropic-beta"] == "x,y"
    assert sent["anthropic-version"] == anthropic.DEFAULT_VERSION
    assert "authorization" not in {k.lower() for k in sent}


def test_errors_in_anthropic_shape_keep_the_message() -> None:
    assert AuthError("Authentication Error, ExceededBudget: ...").anthropic_body() == {
        "type": "error",
        "error": {
            "type": "authentication_error",
            "message": "Authentication Error, ExceededBudget: ...",
        },
    }
    assert RateLimited("slow down").anthropic_body()["error"]["type"] == "rate_limit_error"
    upstream = ProxyError("Overloaded", status=529, type="overloaded_error")
    assert upstream.anthropic_body()["error"]["type"] == "overloaded_error"
    assert (
        ProxyError("x", status=502, type="api_error").anthropic_body()["error"]["type"]
        == "api_error"
    )


def test_chat_chunks_become_anthropic_events_with_tool_use() -> None:
    translate = anthropic.MessagesStreamTranslator("gpt-4o")
    base = {"id": "c1", "object": "chat.completion.chunk"}
    chunks = [
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}}]},
        {
            **base,
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "call_1",
                                "function": {"name": "f", "arguments": '{"a"'},
                            }
                        ]
                    },
                }
            ],
        },
        {
            **base,
            "choices": [
                {
                    "index": 0,
                    "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]},
                }
            ],
        },
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        {
            **base,
            "choices": [],
            "usage": {
                "prompt_tokens": 9,
                "completion_tokens": 4,
                "prompt_tokens_details": {"cached_tokens": 2},
            },
        },
    ]
    raw = b"".join(translate(None, chunk) for chunk in chunks) + translate.end()
    events = [
        json.loads(line[5:]) for line in raw.decode().splitlines() if line.startswith("data:")
    ]
    kinds = [e["type"] for e in events]
    assert kinds == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[4]["content_block"] == {
        "type": "tool_use",
        "id": "call_1",
        "name": "f",
        "input": {},
    }
    arguments = "".join(e["delta"].get("partial_json", "") for e in events[5:7])
    assert json.loads(arguments) == {"a": 1}
    assert events[8]["delta"]["stop_reason"] == "tool_use"
    assert events[8]["usage"] == {
        "input_tokens": 7,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 2,
        "output_tokens": 4,
    }


def test_messages_request_becomes_a_chat_request() -> None:
    body = {
        "model": "gpt-4o",
        "max_tokens": 100,
        "system": "Be brief.",
        "messages": [
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "t1", "name": "w", "input": {"city": "Paris"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "content": [{"type": "text", "text": "Sunny"}],
                    },
                    {"type": "text", "text": "thanks"},
                ],
            },
        ],
        "tool_choice": {"type": "tool", "name": "w"},
    }
    chat = anthropic.messages_to_chat(body, "gpt-4o-2024-08-06")
    assert chat["model"] == "gpt-4o-2024-08-06" and chat["max_tokens"] == 100
    system, user, assistant, tool, after = chat["messages"]
    assert system == {"role": "system", "content": "Be brief."}
    assert assistant["tool_calls"][0]["function"] == {"name": "w", "arguments": '{"city": "Paris"}'}
    assert tool == {"role": "tool", "tool_call_id": "t1", "content": "Sunny"}
    assert after == {"role": "user", "content": "thanks"}
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "w"}}
    answer = {
        "id": "x",
        "choices": [
            {
                "message": {
                    "content": None,
                    "tool_calls": [
                        {"id": "t2", "function": {"name": "w", "arguments": '{"city": "Rome"}'}}
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3},
    }
    message = anthropic.chat_to_message(answer, "gpt-4o")
    assert message["content"] == [
        {"type": "tool_use", "id": "t2", "name": "w", "input": {"city": "Rome"}}
    ]
    assert message["stop_reason"] == "tool_use" and message["usage"]["input_tokens"] == 5


def test_every_field_but_the_parameters_counts_as_input_of_the_new_apis() -> None:
    base = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    plain = api_bounds.input_bound(base, "messages", image_tokens=100)
    unknown = api_bounds.input_bound({**base, "future_context": "x" * 1000}, "messages", 100)
    assert unknown >= plain + 1000
    same = api_bounds.input_bound({**base, "temperature": 0.5, "thinking": {}}, "messages", 100)
    assert same == plain
    image = {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}
    with_image = {**base, "messages": [{"role": "user", "content": [image]}]}
    assert api_bounds.input_bound(with_image, "messages", 100) >= plain + 100
    chinese = {"model": "m", "input": "三" * 100}
    assert api_bounds.input_bound(chinese, "responses", 100) >= 300  # 3 UTF-8 bytes each


def test_strict_mode_names_what_cannot_be_bounded() -> None:
    assert api_bounds.unbounded_part({"prompt": {"id": "pmpt_1"}}, "responses") == (
        "prompt",
        "'prompt' adds stored input the request does not bound",
    )
    assert api_bounds.unbounded_part({"prompt": "Say this"}, "completions") is None
    tools = {"tools": [{"type": "web_search_20250305", "name": "web_search"}]}
    assert api_bounds.unbounded_part(tools, "messages") is not None
    assert (
        api_bounds.unbounded_part({"tools": [{"name": "Bash", "input_schema": {}}]}, "messages")
        is None
    )
