"""The ``anthropic/`` provider: Anthropic's endpoint and headers, and the
translation that lets an OpenAI client call Claude through ``/chat/completions``.

``/v1/messages`` is relayed natively (the body as the client sent it, only
``model`` mapped). A chat completion to an ``anthropic/`` model is translated
both ways: messages, the system prompt, images, tools and tool calls, stop
sequences and the end user on the way up; the answer, its tool calls, finish
reason and usage (cache reads and writes included) on the way down, also
event by event for streams.
"""

from __future__ import annotations

import json
import time
from typing import Any

from proxy.errors import BadRequest

ANTHROPIC_BASE = "https://api.anthropic.com"
DEFAULT_VERSION = "2023-06-01"
# Client headers passed on to Anthropic as they came.
FORWARDED_HEADERS = ("anthropic-version", "anthropic-beta")
# Anthropic requires max_tokens; a chat request without one gets the model's cap or this.
DEFAULT_MAX_TOKENS = 4096

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def endpoint(api_base: str | None, path: str = "messages") -> str:
    """``{api_base}/v1/{path}``; an ``api_base`` that already ends in ``/v1`` is taken as is."""
    base = (api_base or ANTHROPIC_BASE).rstrip("/")
    if not base.endswith("/v1"):
        base += "/v1"
    return f"{base}/{path}"


def headers(api_key: str | None, client_headers: Any) -> dict[str, str]:
    """Anthropic's auth and version headers; the client's version and betas win."""
    out = {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "anthropic-version": DEFAULT_VERSION,
    }
    if client_headers is not None:
        for name in FORWARDED_HEADERS:
            value = client_headers.get(name)
            if value:
                out[name] = value
    if api_key:
        out["x-api-key"] = api_key
    return out


# --- chat completions -> messages ---------------------------------------------


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def _image_block(part: dict[str, Any]) -> dict[str, Any]:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        raise BadRequest("'image_url.url' must be a string", param="messages")
    if url.startswith("data:"):
        header, _, data = url.partition(",")
        media_type = header[5:].split(";", 1)[0] or "image/png"
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    return {"type": "image", "source": {"type": "url", "url": url}}


def _blocks(content: Any) -> list[dict[str, Any]]:
    """OpenAI content (a string or parts) as Anthropic content blocks."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part in content if isinstance(content, list) else []:
        if isinstance(part, str):
            blocks.append({"type": "text", "text": part})
        elif isinstance(part, dict) and part.get("type") == "text":
            block = {"type": "text", "text": str(part.get("text", ""))}
            if isinstance(part.get("cache_control"), dict):
                block["cache_control"] = part["cache_control"]
            blocks.append(block)
        elif isinstance(part, dict) and part.get("type") == "image_url":
            blocks.append(_image_block(part))
    return blocks


def _tool_input(arguments: Any) -> Any:
    if isinstance(arguments, dict):
        return arguments
    try:
        parsed = json.loads(arguments) if isinstance(arguments, str) and arguments else {}
    except ValueError:
        raise BadRequest("tool call 'arguments' must be a JSON object", param="messages") from None
    return parsed if isinstance(parsed, dict) else {"value": parsed}


def _append(messages: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    """Add blocks as a turn of ``role``; consecutive turns of one role become one."""
    if not blocks:
        return
    if messages and messages[-1]["role"] == role:
        messages[-1]["content"].extend(blocks)
    else:
        messages.append({"role": role, "content": blocks})


def _tools(tools: Any) -> list[dict[str, Any]]:
    out = []
    for tool in tools if isinstance(tools, list) else []:
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise BadRequest(
                "each tool must be {'type': 'function', 'function': {'name': ...}}", param="tools"
            )
        entry: dict[str, Any] = {
            "name": function["name"],
            "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
        }
        if isinstance(function.get("description"), str):
            entry["description"] = function["description"]
        out.append(entry)
    return out


def _tool_choice(choice: Any) -> dict[str, Any] | None:
    if choice in (None, "auto"):
        return {"type": "auto"} if choice else None
    if choice == "required":
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"}
    if isinstance(choice, dict):
        function = choice.get("function")
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            return {"type": "tool", "name": function["name"]}
    raise BadRequest(
        "'tool_choice' must be auto, required, none or a named function", param="tool_choice"
    )


def chat_to_messages(
    body: dict[str, Any], upstream_model: str, max_output: int | None
) -> dict[str, Any]:
    """A chat completions body as an Anthropic Messages body."""
    n = body.get("n")
    if isinstance(n, int) and n > 1:
        raise BadRequest("'n' greater than 1 is not supported by anthropic/ models", param="n")
    system: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    for message in body.get("messages") or []:
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            system.extend(_blocks(content))
        elif role == "user":
            _append(messages, "user", _blocks(content))
        elif role == "assistant":
            blocks = _blocks(content)
            for call in message.get("tool_calls") or []:
                function = call.get("function") or {}
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": call.get("id") or f"toolu_{len(blocks)}",
                        "name": function.get("name") or "",
                        "input": _tool_input(function.get("arguments")),
                    }
                )
            _append(messages, "assistant", blocks)
        elif role in ("tool", "function"):
            result = {
                "type": "tool_result",
                "tool_use_id": message.get("tool_call_id") or message.get("name") or "",
                "content": _text_of(content),
            }
            _append(messages, "user", [result])
        else:
            raise BadRequest(
                f"message role {role!r} is not supported by anthropic/ models", param="messages"
            )
    out: dict[str, Any] = {"model": upstream_model, "messages": messages}
    if system:
        out["system"] = system
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    out["max_tokens"] = (
        limit if isinstance(limit, int) and limit > 0 else max_output or DEFAULT_MAX_TOKENS
    )
    for name in ("temperature", "top_p", "top_k"):
        if body.get(name) is not None:
            out[name] = body[name]
    stop = body.get("stop")
    if isinstance(stop, str):
        out["stop_sequences"] = [stop]
    elif isinstance(stop, list) and stop:
        out["stop_sequences"] = stop
    if body.get("tools"):
        out["tools"] = _tools(body["tools"])
    choice = _tool_choice(body.get("tool_choice"))
    if choice is not None:
        out["tool_choice"] = choice
    if isinstance(body.get("user"), str) and body["user"]:
        out["metadata"] = {"user_id": body["user"]}
    if body.get("stream"):
        out["stream"] = True
    return out


# --- messages -> chat completions ---------------------------------------------


def chat_usage(usage: Any) -> dict[str, Any]:
    """Anthropic's usage in OpenAI's convention: prompt tokens include cache reads and writes."""
    usage = usage if isinstance(usage, dict) else {}

    def count(name: str) -> int:
        value = usage.get(name)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    cache_read = count("cache_read_input_tokens")
    cache_write = count("cache_creation_input_tokens")
    prompt = count("input_tokens") + cache_read + cache_write
    completion = count("output_tokens")
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cache_read},
        "cache_read_input_tokens": cache_read,
        "cache_creation_input_tokens": cache_write,
    }


def _tool_call(block: dict[str, Any], index: int) -> dict[str, Any]:
    return {
        "index": index,
        "id": block.get("id"),
        "type": "function",
        "function": {"name": block.get("name"), "arguments": json.dumps(block.get("input") or {})},
    }


def message_to_chat(answer: dict[str, Any], model_name: str) -> dict[str, Any]:
    """An Anthropic message as a ``chat.completion``."""
    text = ""
    calls: list[dict[str, Any]] = []
    for block in answer.get("content") or []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            text += str(block.get("text", ""))
        elif block.get("type") == "tool_use":
            call = _tool_call(block, len(calls))
            call.pop("index")
            calls.append(call)
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        message["tool_calls"] = calls
    return {
        "id": f"chatcmpl-{answer.get('id', '')}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model_name,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": FINISH_REASONS.get(str(answer.get("stop_reason")), "stop"),
            }
        ],
        "usage": chat_usage(answer.get("usage")),
    }


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


class ChatStreamTranslator:
    """Anthropic stream events in, ``chat.completion.chunk`` events out.

    The usage chunk (empty ``choices``) is sent only when the client asked for
    it with ``stream_options.include_usage``, as OpenAI does.
    """

    def __init__(self, model_name: str, include_usage: bool) -> None:
        self.model_name = model_name
        self.include_usage = include_usage
        self.id = "chatcmpl-anthropic"
        self.created = int(time.time())
        self._usage: dict[str, Any] = {}
        self._tool_index: dict[int, int] = {}
        self._ended = False

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return _sse(
            {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model_name,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
        )

    def __call__(self, event: str | None, data: dict[str, Any]) -> bytes:
        kind = data.get("type") or event
        if kind == "message_start":
            message = data.get("message") or {}
            self.id = f"chatcmpl-{message.get('id', '')}"
            self._usage.update(message.get("usage") or {})
            return self._chunk({"role": "assistant", "content": ""})
        if kind == "content_block_start":
            block = data.get("content_block") or {}
            if block.get("type") == "tool_use":
                index = self._tool_index.setdefault(data.get("index", 0), len(self._tool_index))
                call = _tool_call({**block, "input": {}}, index)
                call["function"]["arguments"] = ""
                return self._chunk({"tool_calls": [call]})
            return b""
        if kind == "content_block_delta":
            delta = data.get("delta") or {}
            if delta.get("type") == "text_delta":
                return self._chunk({"content": delta.get("text", "")})
            if delta.get("type") == "input_json_delta":
                index = self._tool_index.get(data.get("index", 0), 0)
                arguments = delta.get("partial_json", "")
                return self._chunk(
                    {"tool_calls": [{"index": index, "function": {"arguments": arguments}}]}
                )
            return b""
        if kind == "message_delta":
            self._usage.update(
                {k: v for k, v in (data.get("usage") or {}).items() if v is not None}
            )
            reason = (data.get("delta") or {}).get("stop_reason")
            return self._chunk({}, FINISH_REASONS.get(str(reason), "stop"))
        if kind == "error":
            error = data.get("error") or {}
            return _sse(
                {
                    "error": {
                        "message": error.get("message"),
                        "type": error.get("type"),
                        "param": None,
                        "code": None,
                    }
                }
            )
        return b""

    def end(self) -> bytes:
        if self._ended:
            return b""
        self._ended = True
        out = b""
        if self.include_usage and self._usage:
            out += _sse(
                {
                    "id": self.id,
                    "object": "chat.completion.chunk",
                    "created": self.created,
                    "model": self.model_name,
                    "choices": [],
                    "usage": chat_usage(self._usage),
                }
            )
        return out + b"data: [DONE]\n\n"


# --- messages -> chat completions (an Anthropic client on an OpenAI-compatible model) ---


STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def _chat_content(blocks: Any) -> str | list[dict[str, Any]]:
    """Anthropic text and image blocks as OpenAI content (a string when text only)."""
    if isinstance(blocks, str):
        return blocks
    parts: list[dict[str, Any]] = []
    for block in blocks if isinstance(blocks, list) else []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            parts.append({"type": "text", "text": str(block.get("text", ""))})
        elif block.get("type") == "image":
            source = block.get("source") or {}
            if source.get("type") == "base64":
                url = (
                    f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
                )
            else:
                url = str(source.get("url", ""))
            parts.append({"type": "image_url", "image_url": {"url": url}})
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def _tool_result_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return _text_of(content)


def messages_to_chat(body: dict[str, Any], upstream_model: str) -> dict[str, Any]:
    """An Anthropic Messages body as a chat completions body."""
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if system:
        messages.append({"role": "system", "content": _chat_content(system)})
    for message in body.get("messages") or []:
        role, content = message.get("role"), message.get("content")
        if isinstance(content, str):
            messages.append({"role": role, "content": content})
            continue
        blocks = [b for b in content or [] if isinstance(b, dict)]
        if role == "assistant":
            calls = [
                {
                    "id": b.get("id"),
                    "type": "function",
                    "function": {
                        "name": b.get("name"),
                        "arguments": json.dumps(b.get("input") or {}),
                    },
                }
                for b in blocks
                if b.get("type") == "tool_use"
            ]
            text = "".join(str(b.get("text", "")) for b in blocks if b.get("type") == "text")
            turn: dict[str, Any] = {"role": "assistant", "content": text or None}
            if calls:
                turn["tool_calls"] = calls
            messages.append(turn)
            continue
        for block in blocks:
            if block.get("type") == "tool_result":
                messages.append(
                    {
                        "role": "tool",
                        "tool_call_id": block.get("tool_use_id"),
                        "content": _tool_result_text(block.get("content")),
                    }
                )
        rest = [b for b in blocks if b.get("type") != "tool_result"]
        if rest:
            messages.append({"role": "user", "content": _chat_content(rest)})
    out: dict[str, Any] = {
        "model": upstream_model,
        "messages": messages,
        "max_tokens": body.get("max_tokens"),
    }
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            out[name] = body[name]
    if body.get("stop_sequences"):
        out["stop"] = body["stop_sequences"]
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict) and "input_schema" in t]
    if tools:
        out["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.get("name"),
                    "description": t.get("description", ""),
                    "parameters": t.get("input_schema"),
                },
            }
            for t in tools
        ]
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        kind = choice.get("type")
        if kind == "any":
            out["tool_choice"] = "required"
        elif kind == "none":
            out["tool_choice"] = "none"
        elif kind == "tool":
            out["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        out["user"] = metadata["user_id"]
    if body.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out


def anthropic_usage(usage: Any) -> dict[str, int]:
    """OpenAI usage in Anthropic's convention: ``input_tokens`` without the cached part."""
    usage = usage if isinstance(usage, dict) else {}
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else 0
    cached = cached if isinstance(cached, int) else 0
    prompt = usage.get("prompt_tokens") if isinstance(usage.get("prompt_tokens"), int) else 0
    output = usage.get("completion_tokens")
    return {
        "input_tokens": max(0, prompt - cached),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
        "output_tokens": output if isinstance(output, int) else 0,
    }


def chat_to_message(answer: dict[str, Any], model_name: str) -> dict[str, Any]:
    """A ``chat.completion`` as an Anthropic message."""
    choices = answer.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if isinstance(message.get("content"), str) and message["content"]:
        content.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id"),
                "name": function.get("name"),
                "input": _tool_input_lenient(function.get("arguments")),
            }
        )
    return {
        "id": f"msg_{answer.get('id', '')}",
        "type": "message",
        "role": "assistant",
        "model": model_name,
        "content": content,
        "stop_reason": STOP_REASONS.get(str(choice.get("finish_reason")), "end_turn"),
        "stop_sequence": None,
        "usage": anthropic_usage(answer.get("usage")),
    }


def _tool_input_lenient(arguments: Any) -> Any:
    try:
        return _tool_input(arguments)
    except BadRequest:
        return {"arguments": arguments}


def _event(kind: str, payload: dict[str, Any]) -> bytes:
    return (
        f"event: {kind}\n".encode()
        + b"data: "
        + json.dumps({"type": kind, **payload}).encode()
        + b"\n\n"
    )


class MessagesStreamTranslator:
    """``chat.completion.chunk`` events in, Anthropic's stream events out.

    ``message_delta`` (with the usage) and ``message_stop`` wait for the end of
    the upstream stream, because OpenAI sends the usage chunk after the one that
    carries the finish reason.
    """

    def __init__(self, model_name: str) -> None:
        self.model_name = model_name
        self._started = False
        self._block: int | None = None
        self._block_kind: str | None = None
        self._blocks = 0
        self._tools: dict[int, int] = {}
        self._stop = "end_turn"
        self._usage: dict[str, Any] = {}

    def _start(self, chunk: dict[str, Any]) -> bytes:
        if self._started:
            return b""
        self._started = True
        message: dict[str, Any] = {
            "id": f"msg_{chunk.get('id', '')}",
            "type": "message",
            "role": "assistant",
            "model": self.model_name,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return _event("message_start", {"message": message})

    def _close_block(self) -> bytes:
        if self._block is None:
            return b""
        index, self._block, self._block_kind = self._block, None, None
        return _event("content_block_stop", {"index": index})

    def _open_block(self, kind: str, block: dict[str, Any]) -> bytes:
        out = self._close_block()
        self._block, self._block_kind = self._blocks, kind
        self._blocks += 1
        return out + _event("content_block_start", {"index": self._block, "content_block": block})

    def __call__(self, event: str | None, data: dict[str, Any]) -> bytes:
        if "error" in data:
            error = data.get("error") or {}
            return _event(
                "error", {"error": {"type": "api_error", "message": str(error.get("message"))}}
            )
        out = self._start(data)
        if isinstance(data.get("usage"), dict):
            self._usage = data["usage"]
        for choice in data.get("choices") or []:
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if isinstance(text, str) and text:
                if self._block_kind != "text":
                    out += self._open_block("text", {"type": "text", "text": ""})
                out += _event(
                    "content_block_delta",
                    {"index": self._block, "delta": {"type": "text_delta", "text": text}},
                )
            for call in delta.get("tool_calls") or []:
                position = call.get("index", 0)
                function = call.get("function") or {}
                if position not in self._tools:
                    block = {
                        "type": "tool_use",
                        "id": call.get("id"),
                        "name": function.get("name"),
                        "input": {},
                    }
                    out += self._open_block("tool_use", block)
                    self._tools[position] = self._block if self._block is not None else 0
                arguments = function.get("arguments")
                if isinstance(arguments, str) and arguments:
                    out += _event(
                        "content_block_delta",
                        {
                            "index": self._tools[position],
                            "delta": {"type": "input_json_delta", "partial_json": arguments},
                        },
                    )
            if choice.get("finish_reason"):
                self._stop = STOP_REASONS.get(str(choice["finish_reason"]), "end_turn")
        return out

    def end(self) -> bytes:
        out = self._start({}) + self._close_block()
        usage = anthropic_usage(self._usage)
        delta = {"delta": {"stop_reason": self._stop, "stop_sequence": None}, "usage": usage}
        return out + _event("message_delta", delta) + _event("message_stop", {})
