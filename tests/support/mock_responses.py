"""The mock OpenAI server's Responses API and legacy completions.

Wire format as OpenAI documents it: a ``response`` object with ``output``
items and ``usage.input_tokens`` / ``input_tokens_details.cached_tokens`` /
``output_tokens`` / ``output_tokens_details.reasoning_tokens``; streams of
typed events (``event: response.output_text.delta`` ...) ending with
``response.completed`` (no ``[DONE]``); ``text_completion`` objects and
chunks for ``/v1/completions`` (``max_tokens`` defaults to 16 there).

Usage is counted by :mod:`tests.support.wire_tokens`, never by the proxy's
estimator. A continuation (``previous_response_id``) is billed the stored
conversation (the previous response's input and output) as input, as
OpenAI does. ``mock.cached_tokens`` and ``mock.reasoning_tokens`` make the
next answers report that many cached input and reasoning output tokens.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from tests.support.wire_tokens import count_tokens, count_value

if TYPE_CHECKING:
    from tests.support.mock_openai import MockOpenAI, _Handler

COMPLETIONS_DEFAULT_MAX_TOKENS = 16


def _error(status: int, message: str, param: str | None = None) -> Exception:
    from tests.support.mock_openai import _MockError

    return _MockError(status, message, param=param)


def _words(mock: MockOpenAI, body: dict[str, Any], limit: int | None) -> tuple[list[str], bool]:
    from tests.support.mock_openai import DEFAULT_CONTENT

    override = body.get("mock_response")
    words = (override if isinstance(override, str) else DEFAULT_CONTENT).split()
    if limit is not None and 0 < limit < len(words):
        return words[:limit], True
    return words, False


def response_input_tokens(mock: MockOpenAI, body: dict[str, Any]) -> int:
    """Input billed for a Responses call: its items, instructions and tools, 4 per
    item of framing, and the stored conversation it continues."""
    items = body.get("input")
    framing = 4 * (len(items) if isinstance(items, list) else 1)
    tokens = count_value(items) + framing
    tokens += count_value(body.get("instructions")) + count_value(body.get("tools"))
    previous = body.get("previous_response_id")
    if previous is not None:
        stored = mock.stored_responses.get(previous)
        if stored is None:
            raise _error(
                400, f"Previous response with id '{previous}' not found.", "previous_response_id"
            )
        usage = stored["usage"]
        tokens += usage["input_tokens"] + usage["output_tokens"]
    return tokens


def create_response(handler: _Handler, mock: MockOpenAI, body: dict[str, Any]) -> None:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _error(400, "Missing required parameter: 'model'.", "model")
    if "input" not in body:
        raise _error(400, "Missing required parameter: 'input'.", "input")
    limit = body.get("max_output_tokens")
    reasoning = mock.reasoning_tokens
    visible_limit = limit - reasoning if isinstance(limit, int) else None
    words, cut = _words(mock, body, visible_limit)
    input_tokens = response_input_tokens(mock, body)
    # Unique across mock servers, as the real ids are (several upstreams in one test).
    ident = f"resp_mock{mock.port}_{mock._next_id()}"
    item_id = f"msg_mock{mock._next_id()}"
    text = " ".join(words)
    output_tokens = len(words) + reasoning
    response = {
        "id": ident,
        "object": "response",
        "created_at": int(time.time()),
        "status": "incomplete" if cut else "completed",
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if cut else None,
        "instructions": body.get("instructions"),
        "max_output_tokens": limit,
        "model": model,
        "output": [
            {
                "type": "message",
                "id": item_id,
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ],
        "parallel_tool_calls": True,
        "previous_response_id": body.get("previous_response_id"),
        "store": body.get("store", True),
        "temperature": 1.0,
        "tool_choice": "auto",
        "tools": body.get("tools") or [],
        "top_p": 1.0,
        "usage": {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": min(mock.cached_tokens, input_tokens)},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": input_tokens + output_tokens,
        },
        "user": body.get("user"),
        "metadata": body.get("metadata") or {},
    }
    if body.get("store", True) is not False:
        mock.stored_responses[ident] = response
    if body.get("stream") is not True:
        handler._send_json(200, response, {"x-request-id": f"req_{ident}"})
        return
    _stream_response(handler, mock, response, words)


def _stream_response(
    handler: _Handler, mock: MockOpenAI, response: dict[str, Any], words: list[str]
) -> None:
    item = response["output"][0]
    pending = {**response, "status": "in_progress", "output": [], "usage": None}
    empty_item = {**item, "status": "in_progress", "content": []}
    part = {"type": "output_text", "text": "", "annotations": []}
    where = {"item_id": item["id"], "output_index": 0, "content_index": 0}
    events: list[tuple[str, dict[str, Any]]] = [
        ("response.created", {"response": pending}),
        ("response.in_progress", {"response": pending}),
        ("response.output_item.added", {"output_index": 0, "item": empty_item}),
        ("response.content_part.added", {**where, "part": part}),
    ]
    for i, word in enumerate(words):
        events.append(
            ("response.output_text.delta", {**where, "delta": word if i == 0 else " " + word})
        )
    text = item["content"][0]["text"]
    events += [
        ("response.output_text.done", {**where, "text": text}),
        ("response.content_part.done", {**where, "part": item["content"][0]}),
        ("response.output_item.done", {"output_index": 0, "item": item}),
    ]
    final = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
    events.append((final, {"response": response}))
    _send_events(
        handler, mock, [(name, {"type": name, **data}) for name, data in events], numbered=True
    )


def _send_events(
    handler: _Handler,
    mock: MockOpenAI,
    events: list[tuple[str | None, dict[str, Any]]],
    numbered: bool = False,
    done: bool = False,
) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "text/event-stream; charset=utf-8")
    handler.send_header("Cache-Control", "no-cache")
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    handler.wfile.flush()
    try:
        for seq, (name, data) in enumerate(events):
            if seq and not mock._sleep(mock.stream_chunk_delay):
                handler.close_connection = True
                return
            if numbered:
                data = {**data, "sequence_number": seq}
            head = f"event: {name}\n".encode() if name else b""
            handler._write_chunk(head + b"data: " + json.dumps(data).encode() + b"\n\n")
        if done:
            handler._write_chunk(b"data: [DONE]\n\n")
        handler.wfile.write(b"0\r\n\r\n")
        handler.wfile.flush()
    except OSError:
        mock._stream_aborted()
        handler.close_connection = True


def response_item(handler: _Handler, mock: MockOpenAI, method: str, path: str) -> None:
    parts = path.split("?", 1)[0].strip("/").split("/")
    if parts[0] == "v1":
        parts = parts[1:]
    ident = parts[1]
    stored = mock.stored_responses.get(ident)
    if stored is None:
        raise _error(404, f"No response found with id '{ident}'.")
    if method == "DELETE":
        del mock.stored_responses[ident]
        handler._send_json(200, {"id": ident, "object": "response", "deleted": True})
    elif len(parts) > 2 and parts[2] == "input_items":
        handler._send_json(
            200,
            {"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False},
        )
    else:
        handler._send_json(200, stored)


def _prompts(prompt: Any) -> list[Any]:
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        return [prompt]
    if isinstance(prompt, list) and prompt:
        return prompt
    raise _error(400, "'prompt' must be a string, a list of strings or token lists", "prompt")


def create_completion(
    handler: _Handler, mock: MockOpenAI, body: dict[str, Any], deployment: str | None
) -> None:
    model = deployment or body.get("model")
    if not isinstance(model, str) or not model:
        raise _error(400, "you must provide a model parameter", "model")
    if "prompt" not in body:
        raise _error(400, "'prompt' is a required property", "prompt")
    prompts = _prompts(body["prompt"])
    n = body.get("n") if isinstance(body.get("n"), int) else 1
    best_of = body.get("best_of") if isinstance(body.get("best_of"), int) else n
    limit = body.get("max_tokens")
    words, cut = _words(
        mock, body, limit if isinstance(limit, int) else COMPLETIONS_DEFAULT_MAX_TOKENS
    )
    prompt_tokens = sum(len(p) if isinstance(p, list) else count_tokens(p) for p in prompts)
    # Every one of best_of candidates is generated and billed; n of them are returned.
    completion_tokens = len(words) * max(n, best_of) * len(prompts)
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    ident = f"cmpl-mock{mock._next_id()}"
    created = int(time.time())
    finish = "length" if cut else "stop"
    text = " ".join(words)
    count = n * len(prompts)
    if body.get("stream") is not True:
        handler._send_json(
            200,
            {
                "id": ident,
                "object": "text_completion",
                "created": created,
                "model": model,
                "choices": [
                    {"text": text, "index": i, "logprobs": None, "finish_reason": finish}
                    for i in range(count)
                ],
                "usage": usage,
            },
        )
        return
    base = {"id": ident, "object": "text_completion", "created": created, "model": model}
    events: list[tuple[str | None, dict[str, Any]]] = []
    for index in range(count):
        for i, word in enumerate(words):
            choice = {
                "text": word if i == 0 else " " + word,
                "index": index,
                "logprobs": None,
                "finish_reason": None,
            }
            events.append((None, {**base, "choices": [choice]}))
        events.append(
            (
                None,
                {
                    **base,
                    "choices": [
                        {"text": "", "index": index, "logprobs": None, "finish_reason": finish}
                    ],
                },
            )
        )
    options = body.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        events.append((None, {**base, "choices": [], "usage": usage}))
    _send_events(handler, mock, events, done=True)
