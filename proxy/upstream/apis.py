"""The LLM APIs Comptroller meters, as they look on the wire.

One :class:`Api` per client-facing API: the ``call_type`` its spend-log rows
carry, the path it has under an OpenAI-compatible ``api_base``, how its
answers report usage, which stream meter reads its events, and the shape its
errors take (Anthropic's on ``/v1/messages``, OpenAI's everywhere else).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from proxy.call.context import Usage
from proxy.errors import ProxyError
from proxy.upstream.meters import (
    AnthropicEventMeter,
    ChatChunkMeter,
    ResponsesEventMeter,
    StreamMeter,
)


def _sse(payload: dict[str, Any], event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + json.dumps(payload).encode() + b"\n\n"


def openai_stream_error(err: ProxyError) -> bytes:
    """A chunk with OpenAI's error object (what its SDK raises from mid-stream)."""
    return _sse(err.body())


def responses_stream_error(err: ProxyError) -> bytes:
    """The Responses API's ``error`` event."""
    payload = {
        "type": "error",
        "code": err.code,
        "message": err.message,
        "param": err.param,
        "sequence_number": 0,
    }
    return _sse(payload, "error")


def anthropic_stream_error(err: ProxyError) -> bytes:
    """Anthropic's ``error`` event, which its SDK raises as an APIStatusError."""
    return _sse(err.anthropic_body(), "error")


def _message_chars(answer: dict[str, Any]) -> int:
    blocks = answer.get("content")
    if not isinstance(blocks, list):
        return 0
    return sum(len(b.get("text") or "") for b in blocks if isinstance(b, dict))


def _response_chars(answer: dict[str, Any]) -> int:
    total = 0
    for item in answer.get("output") or []:
        for part in (item.get("content") or []) if isinstance(item, dict) else []:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                total += len(part["text"])
    return total


def _choice_chars(answer: dict[str, Any]) -> int:
    meter = ChatChunkMeter()
    meter.observe(None, {"choices": answer.get("choices")})
    return meter.text_chars


@dataclass(frozen=True)
class Api:
    call_type: str
    # Path under an OpenAI-compatible api_base (Anthropic's is proxy.upstream.anthropic's).
    path: str
    usage: Callable[[Any], Usage | None]
    make_meter: Callable[[bool], StreamMeter]
    # Characters of output in a non-streamed answer (to estimate missing usage).
    output_chars: Callable[[dict[str, Any]], int] = _choice_chars
    stream_error: Callable[[ProxyError], bytes] = openai_stream_error
    streams: bool = True
    # Streams are asked for ``stream_options.include_usage`` on the client's behalf.
    stream_usage_option: bool = False
    error_shape: str = "openai"  # or "anthropic"
    # The body's ``metadata`` is the API's own field (kept), not Comptroller's (dropped).
    upstream_metadata: bool = False

    def answer_usage(self, answer: dict[str, Any]) -> Usage | None:
        return self.usage(answer.get("usage"))


CHAT = Api(
    "chat",
    "chat/completions",
    Usage.from_openai,
    ChatChunkMeter,
    stream_usage_option=True,
)
EMBEDDINGS = Api("embeddings", "embeddings", Usage.from_openai, ChatChunkMeter, streams=False)
COMPLETIONS = Api(
    "completions",
    "completions",
    Usage.from_openai,
    ChatChunkMeter,
    stream_usage_option=True,
)
RESPONSES = Api(
    "responses",
    "responses",
    Usage.from_responses,
    lambda _relay_usage: ResponsesEventMeter(),
    output_chars=_response_chars,
    stream_error=responses_stream_error,
    upstream_metadata=True,
)
MESSAGES = Api(
    "messages",
    "messages",
    Usage.from_anthropic,
    lambda _relay_usage: AnthropicEventMeter(),
    output_chars=_message_chars,
    stream_error=anthropic_stream_error,
    error_shape="anthropic",
    upstream_metadata=True,
)

APIS: dict[str, Api] = {
    api.call_type: api for api in (CHAT, EMBEDDINGS, COMPLETIONS, RESPONSES, MESSAGES)
}
