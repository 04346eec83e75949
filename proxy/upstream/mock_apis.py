"""The built-in ``mock/`` provider for the Responses, legacy completions and
Anthropic Messages APIs: deterministic answers in each API's own shape, with
usage, so every curl in the README works without an LLM account.

Prompt tokens are a quarter of the characters of the request's input JSON
(an estimate; the mock is for trying Comptroller out, not for billing tests).
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from proxy.upstream.deployments import Deployment

MOCK_REPLY = "This is a mock response from Comptroller, the metered LLM gateway."
# Which body fields hold each API's input, and its output limit.
_INPUT_FIELDS = {
    "responses": ("input", "instructions", "tools"),
    "completions": ("prompt",),
    "messages": ("system", "messages", "tools"),
}
_LIMIT_FIELDS = {
    "responses": "max_output_tokens",
    "completions": "max_tokens",
    "messages": "max_tokens",
}
# Ids of the mock provider's responses, so GET/DELETE /v1/responses/<id> find them.
_stored: dict[str, dict[str, Any]] = {}


def _prompt_tokens(call_type: str, body: dict[str, Any]) -> int:
    parts = [body.get(name) for name in _INPUT_FIELDS[call_type] if body.get(name) is not None]
    return max(1, math.ceil(len(json.dumps(parts)) / 4))


def _reply(dep: Deployment, call_type: str, body: dict[str, Any]) -> tuple[list[str], bool]:
    """The answer's words and whether the output limit cut it."""
    text = body.get("mock_response")
    words = (text if isinstance(text, str) else dep.mock_response or MOCK_REPLY).split()
    limit = body.get(_LIMIT_FIELDS[call_type])
    if isinstance(limit, int) and 0 < limit < len(words):
        return words[:limit], True
    return words, False


def mock_api_answer(dep: Deployment, call_type: str, body: dict[str, Any]) -> dict[str, Any]:
    words, cut = _reply(dep, call_type, body)
    text = " ".join(words)
    prompt = _prompt_tokens(call_type, body)
    if call_type == "completions":
        n = body.get("n")
        choices = max(1, n if isinstance(n, int) else 1)
        return {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": dep.upstream_model,
            "choices": [
                {
                    "text": text,
                    "index": i,
                    "logprobs": None,
                    "finish_reason": "length" if cut else "stop",
                }
                for i in range(choices)
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": len(words) * choices,
                "total_tokens": prompt + len(words) * choices,
            },
        }
    if call_type == "messages":
        return {
            "id": f"msg_{uuid.uuid4().hex}",
            "type": "message",
            "role": "assistant",
            "model": dep.upstream_model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "max_tokens" if cut else "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": prompt,
                "output_tokens": len(words),
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        }
    response_id = f"resp_{uuid.uuid4().hex}"
    answer = {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": "incomplete" if cut else "completed",
        "incomplete_details": {"reason": "max_output_tokens"} if cut else None,
        "model": dep.upstream_model,
        "output": [
            {
                "type": "message",
                "id": f"msg_{uuid.uuid4().hex}",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": len(words),
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + len(words),
        },
    }
    _stored[response_id] = answer
    while len(_stored) > 1000:
        _stored.pop(next(iter(_stored)))
    return answer


def _event(name: str | None, payload: dict[str, Any]) -> bytes:
    head = f"event: {name}\n".encode() if name else b""
    return head + b"data: " + json.dumps(payload).encode() + b"\n\n"


def mock_api_stream(dep: Deployment, call_type: str, body: dict[str, Any]) -> Iterator[bytes]:
    answer = mock_api_answer(dep, call_type, body)
    if call_type == "completions":
        base = {k: answer[k] for k in ("id", "object", "created", "model")}
        words = answer["choices"][0]["text"].split(" ")
        for i, word in enumerate(words):
            text = word if i == 0 else " " + word
            yield _event(
                None,
                {
                    **base,
                    "choices": [
                        {"text": text, "index": 0, "logprobs": None, "finish_reason": None}
                    ],
                },
            )
        finish = answer["choices"][0]["finish_reason"]
        yield _event(
            None,
            {
                **base,
                "choices": [{"text": "", "index": 0, "logprobs": None, "finish_reason": finish}],
            },
        )
        options = body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage"):
            yield _event(None, {**base, "choices": [], "usage": answer["usage"]})
        yield b"data: [DONE]\n\n"
        return
    if call_type == "messages":
        usage = answer["usage"]
        start = {
            **answer,
            "content": [],
            "stop_reason": None,
            "usage": {**usage, "output_tokens": 1},
        }
        yield _event("message_start", {"type": "message_start", "message": start})
        block = {"type": "text", "text": ""}
        yield _event(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": block},
        )
        for i, word in enumerate(answer["content"][0]["text"].split(" ")):
            delta = {"type": "text_delta", "text": word if i == 0 else " " + word}
            yield _event(
                "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}
            )
        yield _event("content_block_stop", {"type": "content_block_stop", "index": 0})
        end = {"stop_reason": answer["stop_reason"], "stop_sequence": None}
        yield _event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": end,
                "usage": {"output_tokens": usage["output_tokens"]},
            },
        )
        yield _event("message_stop", {"type": "message_stop"})
        return
    seq = iter(range(1_000_000))
    created = {**answer, "status": "in_progress", "output": [], "usage": None}
    yield _event(
        "response.created",
        {"type": "response.created", "sequence_number": next(seq), "response": created},
    )
    item = answer["output"][0]
    for i, word in enumerate(item["content"][0]["text"].split(" ")):
        yield _event(
            "response.output_text.delta",
            {
                "type": "response.output_text.delta",
                "sequence_number": next(seq),
                "item_id": item["id"],
                "output_index": 0,
                "content_index": 0,
                "delta": word if i == 0 else " " + word,
            },
        )
    final = "response.incomplete" if answer["status"] == "incomplete" else "response.completed"
    yield _event(final, {"type": final, "sequence_number": next(seq), "response": answer})


def mock_forward(
    dep: Deployment, method: str, path: str, body: dict[str, Any] | None
) -> tuple[int, bytes]:
    """The mock's answers to the unmetered pass-through routes."""
    if path == "messages/count_tokens":
        return 200, json.dumps({"input_tokens": _prompt_tokens("messages", body or {})}).encode()
    parts = path.split("/")
    if parts[0] == "responses" and len(parts) >= 2 and parts[1] in _stored:
        if method == "DELETE":
            _stored.pop(parts[1])
            return 200, json.dumps({"id": parts[1], "object": "response", "deleted": True}).encode()
        if len(parts) == 2:
            return 200, json.dumps(_stored[parts[1]]).encode()
        if parts[2] == "input_items":
            return 200, json.dumps({"object": "list", "data": [], "has_more": False}).encode()
    error = {
        "message": f"No response found with id '{parts[-1]}'.",
        "type": "invalid_request_error",
    }
    return 404, json.dumps({"error": {**error, "param": None, "code": None}}).encode()
