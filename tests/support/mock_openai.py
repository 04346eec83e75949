"""A real HTTP server that answers like the OpenAI and Azure OpenAI APIs.

Used by the tests (in-process, ``with MockOpenAI() as mock: ...``) and by the
benchmarks (as its own process: ``python -m tests.support.mock_openai --port 8099``).
Pure standard library so that it adds nothing to the gateway's dependencies.

Answers are deterministic:

* ``prompt_tokens`` = ceil(characters of all message contents / 4) + 3 per message,
  at least 1 (embeddings: ceil(chars / 4) per input string, or the length of a
  token list);
* the answer is :data:`DEFAULT_CONTENT` (or the body's ``mock_response``), cut to
  ``max_tokens`` words with ``finish_reason: "length"``; ``completion_tokens`` is its
  number of words.

Behaviour (``delay``, ``fail_status``, ``fail_message``, ``fail_next``, ``hang``,
``stream_chunk_delay``, ``stream_break_after``) can be changed at any time from
another thread, or over HTTP through ``POST /_mock/config``. The ``/_mock/*``
routes are never recorded, delayed or failed.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import itertools
import json
import math
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, cast
from urllib.parse import parse_qsl, urlsplit

from tests.support import mock_responses
from tests.support.http_server import BackgroundHTTPServer, TrackedHandler

DEFAULT_CONTENT = "This is a mock response from the Comptroller test upstream."
DEFAULT_MODELS = (
    "gpt-3.5-turbo",
    "gpt-4o",
    "gpt-4o-mini",
    "text-embedding-ada-002",
    "text-embedding-3-small",
)
EMBEDDING_DIMENSIONS = 8
# How long a ``hang`` lasts at most when nobody clears it or stops the server.
HANG_SECONDS = 3600.0
# Idle keep-alive connections are dropped after this long, so a benchmark that
# opens many connections does not keep a thread per connection forever.
IDLE_TIMEOUT = 120.0

_CONTROL_PREFIX = "/_mock/"
_BEHAVIOUR_KEYS = (
    "delay",
    "fail_status",
    "fail_message",
    "hang",
    "stream_chunk_delay",
    "reported_usage",
    "stream_break_after",
)


@dataclass
class RecordedRequest:
    """One API call as the mock received it."""

    method: str
    path: str  # without the query string
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased
    json: Any  # the parsed body, or None when absent or malformed
    raw_body: bytes = b""
    received_at: float = field(default_factory=time.time)


class _MockError(Exception):
    """An OpenAI-shaped error answer."""

    def __init__(
        self,
        status: int,
        message: str,
        err_type: str | None = None,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        default_type, default_code = _error_kind(status)
        self.err_type = err_type or default_type
        self.param = param
        self.code = code if code is not None else default_code

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.err_type,
                "param": self.param,
                "code": self.code,
            }
        }


def _error_kind(status: int) -> tuple[str, str | None]:
    """The ``type`` and ``code`` the real API uses for an HTTP status."""
    if status == 401:
        return "invalid_request_error", "invalid_api_key"
    if status == 429:
        return "requests", "rate_limit_exceeded"
    if status >= 500:
        return "server_error", None
    return "invalid_request_error", None


def estimate_tokens(text_chars: int) -> int:
    return math.ceil(text_chars / 4)


def _content_chars(content: Any) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        total = 0
        for part in content:
            if isinstance(part, str):
                total += len(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                total += len(part["text"])
        return total
    return 0


def chat_prompt_tokens(messages: list[Any]) -> int:
    chars = sum(_content_chars(m.get("content")) for m in messages if isinstance(m, dict))
    return max(1, estimate_tokens(chars) + 3 * len(messages))


def _embedding_inputs(value: Any) -> list[Any]:
    """Split an embeddings ``input`` into items: str, list[str], list[int], list[list[int]]."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(v, int) for v in value):
            return [value]
        if all(isinstance(v, str) for v in value) or all(
            isinstance(v, list) and all(isinstance(t, int) for t in v) for v in value
        ):
            return list(value)
    raise _MockError(
        400, "'input' must be a string, a list of strings or token lists", None, "input"
    )


def _input_tokens(item: Any) -> int:
    return estimate_tokens(len(item)) if isinstance(item, str) else len(item)


def _vector(item: Any, dimensions: int) -> list[float]:
    """A deterministic unit-ish vector derived from the input's hash."""
    seed = json.dumps(item).encode()
    out: list[float] = []
    counter = 0
    while len(out) < dimensions:
        digest = hashlib.sha256(seed + counter.to_bytes(4, "big")).digest()
        for i in range(0, len(digest), 4):
            value = int.from_bytes(digest[i : i + 4], "big") / 0xFFFFFFFF
            out.append(round(value * 2 - 1, 6))
        counter += 1
    return out[:dimensions]


class MockOpenAI(BackgroundHTTPServer):
    """An OpenAI-compatible HTTP server on 127.0.0.1 for tests and benchmarks.

    ``api_key``: when set, calls must carry ``Authorization: Bearer <api_key>`` or
    ``api-key: <api_key>``, else they get a 401. ``stop()`` closes every open
    connection too, so a stopped mock really looks like a dead upstream; ``start()``
    again reuses the same port.
    """

    request_queue_size = 256
    thread_name = "mock-openai"

    def __init__(
        self,
        port: int = 0,
        host: str = "127.0.0.1",
        api_key: str | None = None,
        models: tuple[str, ...] | list[str] = DEFAULT_MODELS,
    ) -> None:
        super().__init__(port=port, host=host)
        self.api_key = api_key
        self.models = list(models)
        # Notified whenever behaviour changes or the server stops, to wake hangs.
        self._changed = threading.Condition(self._lock)
        self._ids = itertools.count(1)
        self._requests: list[RecordedRequest] = []
        self._in_flight = 0
        self._max_in_flight = 0
        self._aborted_streams = 0
        self._delay = 0.0
        self._fail_status: int | None = None
        self._fail_message = "mock upstream failure"
        self._fail_next: list[tuple[int, str]] = []
        self._hang = False
        self._stream_chunk_delay = 0.0
        # The Responses API: stored responses by id; what the next calls report as
        # cached input and reasoning output (tests set these to price those parts).
        self.stored_responses: dict[str, dict[str, Any]] = {}
        self.cached_tokens = 0
        self.reasoning_tokens = 0
        # How calls are billed: None for the estimate described above, or an object
        # with ``chat_usage(body, answer_words)`` / ``embedding_usage(body)`` returning
        # the usage dict (tests/support/billing.py: tokenizer-like, adversarial, over).
        self.billing: Any = None
        self._reported_usage: dict[str, Any] | None = None
        self._stream_break_after: int | None = None

    def _on_stop(self) -> None:
        # Wakes calls waiting in a ``hang``.
        with self._changed:
            self._changed.notify_all()

    @property
    def root_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    # --- records and counters -----------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of the API calls received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    def wait_in_flight(self, count: int = 0, timeout: float = 5.0) -> None:
        """Wait until exactly ``count`` calls are being answered. A handler finishes
        just after its client has read the whole answer, so a test that counts on a
        call being over waits for it here."""
        with self._changed:
            if not self._changed.wait_for(lambda: self._in_flight == count, timeout=timeout):
                raise TimeoutError(
                    f"{self._in_flight} calls in flight, not {count}, after {timeout}s"
                )

    @property
    def max_in_flight(self) -> int:
        with self._lock:
            return self._max_in_flight

    @property
    def aborted_streams(self) -> int:
        """Streams the client hung up on before ``[DONE]`` was written."""
        with self._lock:
            return self._aborted_streams

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "requests": len(self._requests),
                "in_flight": self._in_flight,
                "max_in_flight": self._max_in_flight,
                "aborted_streams": self._aborted_streams,
            }

    def reset(self, behaviour: bool = True) -> None:
        """Forget recorded calls and counters and, unless ``behaviour=False``, go back
        to answering at once and successfully. ``in_flight`` keeps counting calls that
        are still being answered."""
        with self._changed:
            self._requests.clear()
            self._max_in_flight = self._in_flight
            self._aborted_streams = 0
            if behaviour:
                self._delay = 0.0
                self._fail_status = None
                self._fail_message = "mock upstream failure"
                self._fail_next.clear()
                self._hang = False
                self._stream_chunk_delay = 0.0
                self.cached_tokens = 0
                self.reasoning_tokens = 0
                self.billing = None
                self._reported_usage = None
                self._stream_break_after = None
            self._changed.notify_all()

    # --- behaviour ----------------------------------------------------------

    def _set(self, name: str, value: Any) -> None:
        with self._changed:
            setattr(self, name, value)
            self._changed.notify_all()

    @property
    def delay(self) -> float:
        """Seconds to wait before answering each call."""
        return self._delay

    @delay.setter
    def delay(self, value: float) -> None:
        self._set("_delay", float(value or 0))

    @property
    def fail_status(self) -> int | None:
        """When set, every call is answered with this status and an error body."""
        return self._fail_status

    @fail_status.setter
    def fail_status(self, value: int | None) -> None:
        self._set("_fail_status", int(value) if value else None)

    @property
    def fail_message(self) -> str:
        return self._fail_message

    @fail_message.setter
    def fail_message(self, value: str) -> None:
        self._set("_fail_message", str(value))

    @property
    def hang(self) -> bool:
        """When true, calls wait (up to an hour) until it is cleared or the mock stops."""
        return self._hang

    @hang.setter
    def hang(self, value: bool) -> None:
        self._set("_hang", bool(value))

    @property
    def stream_chunk_delay(self) -> float:
        """Seconds between two SSE chunks of a streamed answer."""
        return self._stream_chunk_delay

    @stream_chunk_delay.setter
    def stream_chunk_delay(self, value: float) -> None:
        self._set("_stream_chunk_delay", float(value or 0))

    @property
    def reported_usage(self) -> dict[str, Any] | None:
        """A misbehaving upstream: the ``usage`` it reports instead of its own count."""
        return self._reported_usage

    @reported_usage.setter
    def reported_usage(self, value: dict[str, Any] | None) -> None:
        self._set("_reported_usage", dict(value) if value else None)

    @property
    def stream_break_after(self) -> int | None:
        """When set, a stream's connection is dropped after this many events (0: right
        after the 200 headers, before any event), without ``[DONE]``."""
        return self._stream_break_after

    @stream_break_after.setter
    def stream_break_after(self, value: int | None) -> None:
        self._set("_stream_break_after", None if value is None else int(value))

    def fail_next(self, n: int = 1, status: int = 500, message: str | None = None) -> None:
        """Answer only the next ``n`` calls with ``status`` (queued after earlier ones)."""
        text = message if message is not None else "mock upstream failure"
        with self._changed:
            self._fail_next.extend([(int(status), text)] * int(n))

    def configure(self, **settings: Any) -> dict[str, Any]:
        """Set several behaviours at once (the keys of ``POST /_mock/config``).

        ``fail_next`` takes ``{"n": 2, "status": 503, "message": "..."}``.
        """
        unknown = set(settings) - {*_BEHAVIOUR_KEYS, "fail_next"}
        if unknown:
            raise ValueError(f"unknown mock settings: {sorted(unknown)}")
        for key in _BEHAVIOUR_KEYS:
            if key in settings:
                setattr(self, key, settings[key])
        nxt = settings.get("fail_next")
        if isinstance(nxt, dict):
            self.fail_next(int(nxt.get("n", 1)), int(nxt.get("status", 500)), nxt.get("message"))
        elif nxt is not None:
            self.fail_next(int(nxt))
        return self.config()

    def config(self) -> dict[str, Any]:
        with self._lock:
            return {
                "delay": self._delay,
                "fail_status": self._fail_status,
                "fail_message": self._fail_message,
                "fail_next": len(self._fail_next),
                "hang": self._hang,
                "stream_chunk_delay": self._stream_chunk_delay,
                "reported_usage": self._reported_usage,
                "stream_break_after": self._stream_break_after,
            }

    # --- used by the handler ------------------------------------------------

    def _begin(self, record: RecordedRequest) -> None:
        with self._changed:
            self._requests.append(record)
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            self._changed.notify_all()

    def _end(self) -> None:
        with self._changed:
            self._in_flight -= 1
            self._changed.notify_all()

    def _stream_aborted(self) -> None:
        with self._lock:
            self._aborted_streams += 1

    def _next_id(self) -> int:
        return next(self._ids)

    def _sleep(self, seconds: float) -> bool:
        """Sleep unless the server stops first; False when it stopped."""
        if seconds > 0:
            return not self._stopping.wait(seconds)
        return not self._stopping.is_set()

    def _wait_while_hanging(self) -> bool:
        with self._changed:
            self._changed.wait_for(
                lambda: not self._hang or self._stopping.is_set(), timeout=HANG_SECONDS
            )
        return not self._stopping.is_set()

    def _forced_failure(self) -> _MockError | None:
        with self._lock:
            if self._fail_next:
                status, message = self._fail_next.pop(0)
                return _MockError(status, message)
            if self._fail_status:
                return _MockError(self._fail_status, self._fail_message)
        return None


class _Handler(TrackedHandler):
    server_version = "MockOpenAI/1.0"
    timeout = IDLE_TIMEOUT

    @property
    def mock(self) -> MockOpenAI:
        return cast(MockOpenAI, self.server.owner)

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    # --- plumbing -----------------------------------------------------------

    def _read_body(self) -> bytes:
        """Read the whole body (also when chunked) so keep-alive stays in sync."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts: list[bytes] = []
            while True:
                size_line = self.rfile.readline(65537)
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline(65537)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send_json(
        self, status: int, payload: Any, extra_headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (extra_headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, err: _MockError) -> None:
        self._send_json(err.status, err.body())

    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        path = split.path.rstrip("/") or "/"
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        try:
            raw = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            self._send_error(_MockError(400, "could not read the request body"))
            return
        body: Any = None
        malformed = False
        if raw:
            try:
                body = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                malformed = True
        if path.startswith(_CONTROL_PREFIX):
            self._control(path, body, malformed)
            return
        mock = self.mock
        record = RecordedRequest(
            method=self.command,
            path=path,
            query=query,
            headers={k.lower(): v for k, v in self.headers.items()},
            json=body,
            raw_body=raw,
        )
        mock._begin(record)
        try:
            self._api(path, query, body, malformed)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True
        finally:
            mock._end()

    # --- the mock's own control routes --------------------------------------

    def _control(self, path: str, body: Any, malformed: bool) -> None:
        mock = self.mock
        name = path[len(_CONTROL_PREFIX) :]
        if malformed or (body is not None and not isinstance(body, dict)):
            self._send_error(_MockError(400, "body must be a JSON object"))
            return
        if name == "config" and self.command == "POST":
            try:
                self._send_json(200, mock.configure(**(body or {})))
            except (ValueError, TypeError) as exc:
                self._send_error(_MockError(400, str(exc)))
        elif name == "config" and self.command == "GET":
            self._send_json(200, mock.config())
        elif name == "stats" and self.command == "GET":
            self._send_json(200, mock.stats())
        elif name == "reset" and self.command == "POST":
            mock.reset(behaviour=bool((body or {}).get("behaviour", True)))
            self._send_json(200, mock.stats())
        elif name == "requests" and self.command == "GET":
            records = []
            for r in mock.requests:
                item = asdict(r)
                item.pop("raw_body")
                records.append(item)
            self._send_json(200, {"requests": records})
        else:
            self._send_error(_MockError(404, f"Unknown mock control route {path}"))

    # --- the API ------------------------------------------------------------

    def _api(self, path: str, query: dict[str, str], body: Any, malformed: bool) -> None:
        mock = self.mock
        if not mock._sleep(mock.delay) or not mock._wait_while_hanging():
            self.close_connection = True  # stopped while waiting: drop the call
            return
        failure = mock._forced_failure()
        if failure is not None:
            self._send_error(failure)
            return
        try:
            route, deployment = self._route(path)
            self._check_auth(azure=deployment is not None, query=query)
            if malformed:
                raise _MockError(400, "We could not parse the JSON body of your request.")
            route(body, deployment)
        except _MockError as err:
            self._send_error(err)

    def _route(self, path: str) -> tuple[Callable[[Any, str | None], None], str | None]:
        """The endpoint for ``path`` and, for Azure paths, the deployment name."""
        method = self.command
        parts = path.strip("/").split("/")
        deployment: str | None = None
        if len(parts) >= 4 and parts[:2] == ["openai", "deployments"]:
            deployment, parts = parts[2], parts[3:]
        elif parts[0] == "v1" or parts[:2] == ["openai", "responses"]:
            # Azure's Responses API (/openai/responses) names the deployment in the body.
            parts = parts[1:]
        name = "/".join(parts)
        routes: dict[str, tuple[str, Callable[[Any, str | None], None]]] = {
            "chat/completions": ("POST", self._chat),
            "embeddings": ("POST", self._embeddings),
            "completions": ("POST", self._completions),
        }
        if deployment is None:
            routes["models"] = ("GET", self._models)
            routes["responses"] = ("POST", self._responses)
            if name.startswith("responses/") and method in ("GET", "DELETE"):
                routes[name] = (method, self._response_item)
        if name not in routes:
            raise _MockError(404, f"Invalid URL ({method} {path})", code="unknown_url")
        wanted, handler = routes[name]
        if method != wanted:
            raise _MockError(405, f"Method {method} not allowed for {path}", code="unknown_url")
        return handler, deployment

    def _check_auth(self, azure: bool, query: dict[str, str]) -> None:
        expected = self.mock.api_key
        bearer = self.headers.get("Authorization", "")
        key = self.headers.get("api-key")
        if azure:
            if not key:
                raise _MockError(
                    401,
                    "Access denied due to missing subscription key. Make sure to include "
                    "the api-key header when making requests to the API.",
                )
            if expected is not None and key != expected:
                raise _MockError(401, "Access denied due to invalid subscription key.")
            if not query.get("api-version"):
                raise _MockError(
                    400, "Missing required query parameter 'api-version'.", param="api-version"
                )
            return
        if expected is None:
            return
        if bearer == f"Bearer {expected}" or key == expected:
            return
        if not bearer and not key:
            raise _MockError(401, "You didn't provide an API key.", code=None)
        raise _MockError(401, "Incorrect API key provided.")

    # --- endpoints ----------------------------------------------------------

    def _require_object(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise _MockError(400, "The request body must be a JSON object.")
        return body

    def _chat(self, body: Any, deployment: str | None) -> None:
        body = self._require_object(body)
        model = deployment or body.get("model")
        if not isinstance(model, str) or not model:
            raise _MockError(400, "you must provide a model parameter", param="model")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _MockError(400, "'messages' must be a non-empty array", param="messages")
        content, finish = self._answer_text(body)
        prompt_tokens = chat_prompt_tokens(messages)
        words = content.split()
        usage: dict[str, Any] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(words),
            "total_tokens": prompt_tokens + len(words),
        }
        if self.mock.billing is not None:
            usage = self.mock.billing.chat_usage(body, len(words))
        usage = self.mock.reported_usage or usage
        ident = f"chatcmpl-mock{self.mock._next_id()}"
        created = int(time.time())
        if body.get("stream") is True:
            options = body.get("stream_options")
            include_usage = isinstance(options, dict) and options.get("include_usage") is True
            self._stream(ident, created, model, words, finish, usage if include_usage else None)
            return
        self._send_json(
            200,
            {
                "id": ident,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_mock",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content, "refusal": None},
                        "logprobs": None,
                        "finish_reason": finish,
                    }
                ],
                "usage": usage,
            },
            {"x-request-id": f"req_{ident}"},
        )

    @staticmethod
    def _answer_text(body: dict[str, Any]) -> tuple[str, str]:
        override = body.get("mock_response")
        words = (override if isinstance(override, str) else DEFAULT_CONTENT).split()
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        if isinstance(limit, int) and not isinstance(limit, bool) and 0 < limit < len(words):
            return " ".join(words[:limit]), "length"
        return " ".join(words), "stop"

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _stream(
        self,
        ident: str,
        created: int,
        model: str,
        words: list[str],
        finish: str,
        usage: dict[str, Any] | None,
    ) -> None:
        """Server-sent events, one chunk per word, each written and flushed on its own."""
        mock = self.mock
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("x-request-id", f"req_{ident}")
        self.end_headers()
        self.wfile.flush()

        def chunk(delta: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
            event: dict[str, Any] = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_mock",
                "choices": [
                    {
                        "index": 0,
                        "delta": delta,
                        "logprobs": None,
                        "finish_reason": finish_reason,
                    }
                ],
            }
            if usage is not None:
                event["usage"] = None  # as the real API does when include_usage is on
            return event

        events: list[dict[str, Any]] = [chunk({"role": "assistant", "content": ""}, None)]
        events += [chunk({"content": w if i == 0 else " " + w}, None) for i, w in enumerate(words)]
        events.append(chunk({}, finish))
        if usage is not None:
            last = chunk({}, None)
            last["choices"] = []
            last["usage"] = usage
            events.append(last)
        break_after = mock.stream_break_after
        try:
            for i, event in enumerate(events):
                if break_after is not None and i >= break_after:
                    self.close_connection = True  # a broken stream: no [DONE], no last chunk
                    return
                if i and not mock._sleep(mock.stream_chunk_delay):
                    self.close_connection = True
                    return
                self._write_chunk(b"data: " + json.dumps(event).encode() + b"\n\n")
            self._write_chunk(b"data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            mock._stream_aborted()
            self.close_connection = True

    def _embeddings(self, body: Any, deployment: str | None) -> None:
        body = self._require_object(body)
        model = deployment or body.get("model")
        if not isinstance(model, str) or not model:
            raise _MockError(400, "you must provide a model parameter", param="model")
        if "input" not in body:
            raise _MockError(400, "'input' is a required property", param="input")
        items = _embedding_inputs(body["input"])
        dims = body.get("dimensions")
        size = dims if isinstance(dims, int) and 0 < dims <= 4096 else EMBEDDING_DIMENSIONS
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for i, item in enumerate(items):
            vector = _vector(item, size)
            embedding: Any = vector
            if as_base64:
                packed = struct.pack(f"<{len(vector)}f", *vector)
                embedding = base64.b64encode(packed).decode()
            data.append({"object": "embedding", "index": i, "embedding": embedding})
        tokens = max(1, sum(_input_tokens(item) for item in items))
        usage: dict[str, Any] = {"prompt_tokens": tokens, "total_tokens": tokens}
        if self.mock.billing is not None:
            usage = self.mock.billing.embedding_usage(body)
        self._send_json(
            200,
            {"object": "list", "data": data, "model": model, "usage": usage},
        )

    def _models(self, body: Any, deployment: str | None) -> None:
        self._send_json(
            200,
            {
                "object": "list",
                "data": [
                    {"id": name, "object": "model", "created": 1700000000, "owned_by": "openai"}
                    for name in self.mock.models
                ],
            },
        )

    # --- the Responses API and legacy completions (tests.support.mock_responses) ---

    def _responses(self, body: Any, deployment: str | None) -> None:
        mock_responses.create_response(self, self.mock, self._require_object(body))

    def _response_item(self, body: Any, deployment: str | None) -> None:
        mock_responses.response_item(self, self.mock, self.command, self.path)

    def _completions(self, body: Any, deployment: str | None) -> None:
        mock_responses.create_completion(self, self.mock, self._require_object(body), deployment)


MockOpenAI.handler_class = _Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a mock OpenAI API until killed.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--api-key", default=None, help="require this key (default: any)")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--stream-chunk-delay", type=float, default=0.0)
    args = parser.parse_args(argv)
    mock = MockOpenAI(port=args.port, host=args.host, api_key=args.api_key)
    mock.delay = args.delay
    mock.stream_chunk_delay = args.stream_chunk_delay
    mock.start()
    print(mock.base_url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        mock.stop()


if __name__ == "__main__":
    main()
