"""A real HTTP server that answers like Anthropic's Messages API.

Wire format as Anthropic documents it: ``x-api-key`` and
``anthropic-version`` headers; ``message`` objects with content blocks
(``text``, ``tool_use``), ``stop_reason`` and ``usage`` (``input_tokens``
without the cache, ``cache_creation_input_tokens``,
``cache_read_input_tokens``, ``output_tokens``); streams of
``message_start``, ``content_block_start``, ``ping``,
``content_block_delta`` (``text_delta``, ``input_json_delta``),
``content_block_stop``, ``message_delta`` (cumulative ``usage.output_tokens``)
and ``message_stop``; errors as ``{"type": "error", "error": {"type",
"message"}}``; ``POST /v1/messages/count_tokens``.

Usage is counted by :mod:`tests.support.wire_tokens`, never by the proxy's
estimator. Prompt caching is simulated: the prefix up to each
``cache_control`` breakpoint (tools, then system, then messages) is written
to the cache the first time it is seen and read from it after.

Tool use: when the request has tools and its last message is not a tool
result, the answer calls the first tool (``stop_reason: "tool_use"``) with an
input built from the tool's required properties.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
from typing import Any, cast

from tests.support.http_server import BackgroundHTTPServer, TrackedHandler
from tests.support.mock_openai import DEFAULT_CONTENT, RecordedRequest
from tests.support.wire_tokens import count_value

# Framing tokens per message, and per request with tools (Anthropic's tool prompt).
MESSAGE_TOKENS = 3
TOOLS_TOKENS = 300


class AnthropicError(Exception):
    def __init__(self, status: int, err_type: str, message: str) -> None:
        super().__init__(message)
        self.status, self.err_type, self.message = status, err_type, message

    def body(self) -> dict[str, Any]:
        return {"type": "error", "error": {"type": self.err_type, "message": self.message}}


class MockAnthropic(BackgroundHTTPServer):
    """Anthropic's API on 127.0.0.1; ``api_key`` (when set) must come as ``x-api-key``."""

    thread_name = "mock-anthropic"

    def __init__(self, port: int = 0, api_key: str | None = "sk-ant-up") -> None:
        super().__init__(port=port)
        self.api_key = api_key
        self._requests: list[RecordedRequest] = []
        self._ids = itertools.count(1)
        self._cache: set[str] = set()
        self._fail_next: list[tuple[int, str, str]] = []
        self._in_flight = 0
        self._idle = threading.Condition(self._lock)
        # Bill every answer the most output its max_tokens allows (an adversarial upstream).
        self.output_at_limit = False
        # Seconds between a stream's events, as a model generating them spaces them.
        self.stream_event_delay = 0.0

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def reset(self) -> None:
        with self._lock:
            self._requests.clear()
            self._cache.clear()
            self._fail_next.clear()
            self.output_at_limit = False
            self.stream_event_delay = 0.0

    def fail_next(
        self, status: int = 529, err_type: str = "overloaded_error", message: str = "Overloaded"
    ) -> None:
        with self._lock:
            self._fail_next.append((status, err_type, message))

    def wait_idle(self, timeout: float = 10.0) -> None:
        with self._idle:
            if not self._idle.wait_for(lambda: self._in_flight == 0, timeout=timeout):
                raise TimeoutError(f"{self._in_flight} calls still in flight")

    # --- the model --------------------------------------------------------------

    def _cached_prefix(self, body: dict[str, Any]) -> tuple[int, int]:
        """(cache-write, cache-read) tokens: the prefix up to the last breakpoint is
        read if this exact prefix was seen before, else written."""
        pieces: list[Any] = []
        prefix_end = 0
        for section in ("tools", "system", "messages"):
            value = body.get(section)
            if isinstance(value, str):
                value = [{"type": "text", "text": value}]
            for item in value if isinstance(value, list) else []:
                blocks = item.get("content") if section == "messages" else [item]
                if isinstance(blocks, str):
                    blocks = [{"type": "text", "text": blocks}]
                for block in blocks if isinstance(blocks, list) else []:
                    pieces.append(block)
                    if isinstance(block, dict) and block.get("cache_control"):
                        prefix_end = len(pieces)
        if prefix_end == 0:
            return 0, 0
        prefix = pieces[:prefix_end]
        digest = hashlib.sha256(json.dumps(prefix, sort_keys=True).encode()).hexdigest()
        tokens = count_value(prefix)
        with self._lock:
            if digest in self._cache:
                return 0, tokens
            self._cache.add(digest)
        return tokens, 0

    def input_tokens(self, body: dict[str, Any]) -> int:
        """Every billed input token: system, messages (with framing) and tools."""
        messages = body.get("messages") or []
        tokens = count_value(body.get("system")) + count_value(messages)
        tokens += MESSAGE_TOKENS * len(messages)
        if body.get("tools"):
            tokens += count_value(body["tools"]) + TOOLS_TOKENS
        return tokens

    def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        messages = body.get("messages") or []
        last = messages[-1] if messages else {}
        content = last.get("content") if isinstance(last, dict) else None
        after_tool = isinstance(content, list) and any(
            isinstance(b, dict) and b.get("type") == "tool_result" for b in content
        )
        blocks: list[dict[str, Any]]
        tools = body.get("tools") or []
        if tools and not after_tool:
            tool = tools[0]
            schema = tool.get("input_schema") or {}
            tool_input = {name: "Paris" for name in schema.get("required") or []}
            blocks = [
                {"type": "text", "text": "Let me check."},
                {
                    "type": "tool_use",
                    "id": f"toolu_mock{next(self._ids)}",
                    "name": tool.get("name"),
                    "input": tool_input,
                },
            ]
            stop = "tool_use"
            output = 3 + count_value(tool_input) + 10
        else:
            words = DEFAULT_CONTENT.split()
            limit = body.get("max_tokens")
            stop = "end_turn"
            if isinstance(limit, int) and limit < len(words):
                words, stop = words[:limit], "max_tokens"
            blocks = [{"type": "text", "text": " ".join(words)}]
            output = len(words)
            if self.output_at_limit and isinstance(limit, int):
                output = limit
        write, read = self._cached_prefix(body)
        total_input = self.input_tokens(body)
        return {
            "id": f"msg_mock{next(self._ids)}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model"),
            "content": blocks,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {
                "input_tokens": max(0, total_input - write - read),
                "cache_creation_input_tokens": write,
                "cache_read_input_tokens": read,
                "output_tokens": output,
            },
        }


class _Handler(TrackedHandler):
    server_version = "MockAnthropic/1.0"

    @property
    def mock(self) -> MockAnthropic:
        return cast(MockAnthropic, self.server.owner)

    def do_POST(self) -> None:
        mock = self.mock
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        path = self.path.split("?", 1)[0]
        with mock._lock:
            mock._requests.append(
                RecordedRequest(
                    method="POST",
                    path=path,
                    query={},
                    headers={k.lower(): v for k, v in self.headers.items()},
                    json=body,
                    raw_body=raw,
                )
            )
            mock._in_flight += 1
            failure = mock._fail_next.pop(0) if mock._fail_next else None
        try:
            if failure is not None:
                raise AnthropicError(*failure)
            self._check(body)
            if path == "/v1/messages/count_tokens":
                self._json(200, {"input_tokens": mock.input_tokens(body)})
            elif path == "/v1/messages":
                if not isinstance(body.get("max_tokens"), int):
                    raise AnthropicError(400, "invalid_request_error", "max_tokens: Field required")
                answer = mock.answer(body)
                if body.get("stream") is True:
                    self._stream(answer)
                else:
                    self._json(200, answer)
            else:
                raise AnthropicError(404, "not_found_error", f"Not Found: {path}")
        except AnthropicError as err:
            self._json(err.status, err.body())
        except OSError:
            self.close_connection = True
        finally:
            with mock._idle:
                mock._in_flight -= 1
                mock._idle.notify_all()

    def _check(self, body: Any) -> None:
        expected = self.mock.api_key
        if expected is not None and self.headers.get("x-api-key") != expected:
            raise AnthropicError(401, "authentication_error", "invalid x-api-key")
        if not self.headers.get("anthropic-version"):
            raise AnthropicError(
                400, "invalid_request_error", "anthropic-version: header is required"
            )
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("messages"), list)
            or not body["messages"]
        ):
            raise AnthropicError(400, "invalid_request_error", "messages: Field required")

    def _json(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("request-id", "req_mock")
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, answer: dict[str, Any]) -> None:
        usage = answer["usage"]
        start = {
            **answer,
            "content": [],
            "stop_reason": None,
            "usage": {**usage, "output_tokens": 1},
        }
        events: list[dict[str, Any]] = [
            {"type": "message_start", "message": start},
            {"type": "ping"},
        ]
        for index, block in enumerate(answer["content"]):
            if block["type"] == "text":
                events.append(
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {"type": "text", "text": ""},
                    }
                )
                for i, word in enumerate(block["text"].split(" ")):
                    delta = {"type": "text_delta", "text": word if i == 0 else " " + word}
                    events.append({"type": "content_block_delta", "index": index, "delta": delta})
            else:
                events.append(
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {**block, "input": {}},
                    }
                )
                arguments = json.dumps(block["input"])
                for piece in (arguments[: len(arguments) // 2], arguments[len(arguments) // 2 :]):
                    delta = {"type": "input_json_delta", "partial_json": piece}
                    events.append({"type": "content_block_delta", "index": index, "delta": delta})
            events.append({"type": "content_block_stop", "index": index})
        events.append(
            {
                "type": "message_delta",
                "delta": {"stop_reason": answer["stop_reason"], "stop_sequence": None},
                "usage": {"output_tokens": usage["output_tokens"]},
            }
        )
        events.append({"type": "message_stop"})
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for i, event in enumerate(events):
            if (
                i
                and self.mock.stream_event_delay
                and self.mock._stopping.wait(self.mock.stream_event_delay)
            ):
                return  # the server is stopping
            data = f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def log_message(self, format: str, *args: Any) -> None:
        pass


MockAnthropic.handler_class = _Handler
