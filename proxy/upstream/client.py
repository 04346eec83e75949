"""Calls to the upstream LLM providers: OpenAI's wire format (``openai/`` and every
OpenAI-compatible provider, each at the endpoint :mod:`proxy.upstream.providers`
resolved), Azure's and ``mock/``.

The hot path uses urllib3's connection pool directly (keep-alive, no
per-call session set-up). Every failure becomes a :class:`ProxyError` with
the OpenAI error shape: upstream 4xx/5xx keep their status and message, a
refused connection is 502, a timeout 504.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import urllib3
from urllib3.exceptions import HTTPError, NewConnectionError, ProtocolError
from urllib3.exceptions import TimeoutError as Urllib3Timeout

from proxy.call.context import Usage
from proxy.call.estimate import estimate_prompt_tokens
from proxy.errors import BadRequest, ProxyError, UpstreamError
from proxy.keepalive import Answer, KeepAliveRoutes
from proxy.upstream import anthropic
from proxy.upstream.apis import APIS, CHAT
from proxy.upstream.deployments import Deployment
from proxy.upstream.meters import AnthropicEventMeter, ChatChunkMeter, StreamMeter
from proxy.upstream.mock_apis import mock_api_answer, mock_api_stream, mock_forward

log = logging.getLogger("comptroller.upstream")

MOCK_REPLY = "This is a mock response from Comptroller, the metered LLM gateway."
AZURE_DEFAULT_API_VERSION = "2024-10-21"
# Azure answers 400 "Unrecognized request argument supplied: stream_options" before
# this API version (the seeds' configs use 2023-07-01-preview).
AZURE_STREAM_OPTIONS_SINCE = "2024-09-01"
_DATED_VERSION = re.compile(r"\d{4}-\d{2}-\d{2}")


class UpstreamTimeout(ProxyError):
    status = 504
    type = "timeout"


def accepts_stream_options(dep: Deployment) -> bool:
    """Whether the upstream takes ``stream_options`` (old Azure API versions refuse it)."""
    if dep.wire != "azure":
        return True
    version = (dep.api_version or AZURE_DEFAULT_API_VERSION)[:10]
    return not _DATED_VERSION.fullmatch(version) or version >= AZURE_STREAM_OPTIONS_SINCE


def _without_injected_usage(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` without the ``include_usage`` the proxy added for metering."""
    out = {k: v for k, v in body.items() if k != "stream_options"}
    options = body.get("stream_options")
    if isinstance(options, dict):
        rest = {k: v for k, v in options.items() if k != "include_usage"}
        if rest:
            out["stream_options"] = rest
    return out


def deployment_label(dep: Deployment) -> str:
    """How an error names a deployment to clients: never where it lives (host, port)."""
    return f"model {dep.model_name} (deployment {dep.provider}/{dep.upstream_model})"


def _reason(err: BaseException) -> str:
    """Why a connection failed ("Connection refused"), without urllib3's text
    around it, which names the upstream's host and port."""
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, OSError) and cause.strerror:
            return str(cause.strerror)
        cause = cause.__cause__ or cause.__context__
    if isinstance(err, ProtocolError) and err.args and isinstance(err.args[0], str):
        return err.args[0].rstrip(".")  # "Connection aborted", "Connection broken: ..."
    return type(err).__name__


def _error_from_upstream(status: int, raw: bytes, api_key: str | None = None) -> ProxyError:
    message = raw.decode("utf-8", "replace")[:2000] or f"upstream answered HTTP {status}"
    err_type = "api_error" if status >= 500 else "invalid_request_error"
    param = None
    code = None
    try:
        parsed = json.loads(raw)
        err = parsed.get("error") if isinstance(parsed, dict) else None
        if isinstance(err, dict):
            message = str(err.get("message") or message)
            err_type = str(err.get("type") or err_type)
            param = err.get("param")
            code = err.get("code")
        elif isinstance(err, str):
            message = err
    except ValueError:
        pass
    if api_key:  # some upstreams echo the key they were sent
        message = message.replace(api_key, "***")
    return ProxyError(
        message,
        status=status,
        type=err_type,
        param=None if param is None else str(param),
        code=None if code is None else str(code),
    )


# One server-sent event ends at a blank line.
_EVENT_END = re.compile(rb"\r?\n\r?\n")
# An upstream that never ends an event is relayed anyway past this size.
_MAX_PENDING = 1 << 20


class StreamRelay:
    """Relays an upstream SSE stream event by event, metering it on the side.

    Each upstream chunk is passed on as soon as it has completed one or more
    events (half an event is of no use to a client). Events are parsed on the
    side by ``meter`` (the API's own wire format, :mod:`proxy.upstream.meters`)
    to keep the usage and a count of the text relayed, so an interrupted
    stream can still be charged for what the client received.

    ``translate`` (for a provider that speaks another API than the client,
    :mod:`proxy.upstream.anthropic`) turns each metered event into the bytes
    the client gets instead, and ``translate_end`` what follows the last one.
    """

    def __init__(
        self,
        chunks: Iterator[bytes],
        close: Any = None,
        relay_usage: bool = True,
        meter: StreamMeter | None = None,
        translate: Callable[[str | None, dict[str, Any]], bytes] | None = None,
        translate_end: Callable[[], bytes] | None = None,
    ) -> None:
        self._chunks = chunks
        self._close = close
        self.meter = meter if meter is not None else ChatChunkMeter(relay_usage)
        self._translate = translate
        self._translate_end = translate_end
        self._pending = b""
        self.finished = False

    @property
    def usage(self) -> Usage | None:
        return self.meter.usage

    @property
    def text_chars(self) -> int:
        return self.meter.text_chars

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            if chunk:
                out = self._complete_events(chunk)
                if out:
                    yield out
        rest, self._pending = self._pending, b""
        if rest.strip():
            out = self._observe(rest, last=True)
            if out:
                yield out
        if self._translate_end is not None:
            tail = self._translate_end()
            if tail:
                yield tail
        self.finished = True

    def _complete_events(self, chunk: bytes) -> bytes:
        if not self._pending and chunk.endswith(b"\n\n") and chunk.find(b"\n\n") == len(chunk) - 2:
            if b"\r" not in chunk:
                return self._observe(chunk)  # one whole event (most chunks): as the loop would
        data = self._pending + chunk
        if b"\r" not in data:
            # Events that end at a bare blank line (most streams): a leading run the meter
            # takes from its bytes goes out as it came; the rest split where the loop
            # would find them.
            taken = self.meter.observe_burst(data) if self._translate is None else 0
            *events, self._pending = (data[taken:] if taken else data).split(b"\n\n")
            out = [data[:taken]] if taken else []
            out.extend(self._observe(event + b"\n\n") for event in events)
        else:
            out = []
            start = 0
            for match in _EVENT_END.finditer(data):
                event = data[start : match.end()]
                start = match.end()
                out.append(self._observe(event))
            self._pending = data[start:]
        if len(self._pending) > _MAX_PENDING and self._translate is None:
            out.append(self._pending)
            self._pending = b""
        return b"".join(out)

    def _observe(self, event: bytes, last: bool = False) -> bytes:
        """Meter one event; the bytes to relay for it (``b""`` for none)."""
        name: str | None = None
        body = event.strip()
        if body.startswith(b"data:") and b"\n" not in body and b"\r" not in body:
            payload = body[5:].strip()  # one data line (most events): what the loop below finds
        else:
            lines = [line.strip() for line in event.splitlines()]
            payload = b"\n".join(line[5:].strip() for line in lines if line.startswith(b"data:"))
            names = [line[6:].strip() for line in lines if line.startswith(b"event:")]
            name = names[-1].decode("utf-8", "replace") if names else None
        if not payload and last:
            payload = body  # an upstream that answered plain JSON to a stream
        if self._translate is None and payload:
            relay_now = self.meter.observe_bytes(payload)
            if relay_now is not None:  # metered from its bytes (proxy.upstream.meters)
                return event if relay_now else b""
        parsed: Any = None
        if payload and payload != b"[DONE]":
            try:
                parsed = json.loads(payload)
            except ValueError:
                parsed = None
        if not isinstance(parsed, dict):
            return b"" if self._translate is not None else event
        relay = self.meter.observe(name, parsed)
        if self._translate is not None:
            return self._translate(name, parsed)
        return event if relay else b""

    def close(self) -> None:
        """Close the upstream response first, so no half-read connection is reused."""
        if self._close is not None:
            try:
                self._close()
            except Exception:  # closing a dead socket must not mask the real outcome
                log.debug("closing upstream stream failed", exc_info=True)
            self._close = None
        close_chunks = getattr(self._chunks, "close", None)
        if close_chunks is not None:
            close_chunks()


class UpstreamClient:
    """One per process; holds the keep-alive pools to every upstream."""

    def __init__(self, pool_size: int = 32) -> None:
        self.pools = urllib3.PoolManager(
            num_pools=64, maxsize=pool_size, block=False, retries=False
        )
        # URL -> (its origin's keep-alive connections, the request target).
        self.route = KeepAliveRoutes(self.pools, maxsize=pool_size)

    def _target(
        self, dep: Deployment, path: str, client_headers: Any = None
    ) -> tuple[str, dict[str, str]]:
        """The URL of ``path`` (``chat/completions``, ``responses/<id>``, ...) on
        ``dep``'s upstream, and the headers that authenticate there."""
        if dep.provider == "anthropic":
            return anthropic.endpoint(dep.api_base, path), anthropic.headers(
                dep.api_key, client_headers
            )
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if dep.wire == "azure":
            if not dep.api_base:
                raise UpstreamError(f"model {dep.model_name}: azure deployment has no api_base")
            version = dep.api_version or AZURE_DEFAULT_API_VERSION
            base = dep.api_base.rstrip("/")
            if path.startswith("responses"):
                # Azure's Responses API names the deployment in the body, not the path.
                url = f"{base}/openai/{path}?api-version={version}"
            else:
                url = f"{base}/openai/deployments/{dep.upstream_model}/{path}?api-version={version}"
            if dep.api_key:
                headers["api-key"] = dep.api_key
        else:
            if not dep.api_base:  # resolved at start-up; never a default host
                raise UpstreamError(f"model {dep.model_name}: deployment has no endpoint")
            url = f"{dep.api_base.rstrip('/')}/{path}"
            if dep.api_key:
                headers["Authorization"] = f"Bearer {dep.api_key}"
        return url, headers

    def _request(
        self,
        dep: Deployment,
        path: str,
        body: dict[str, Any] | None,
        client_headers: Any = None,
        method: str = "POST",
    ) -> Answer:
        """Send a request and read its answer's head; the body is read from the answer."""
        url, headers = self._target(dep, path, client_headers)
        origin, target = self.route(url)
        with _mapped_errors(dep):
            return origin.send(
                method,
                target,
                json.dumps(body).encode() if body is not None else None,
                headers,
                connect_timeout=min(dep.timeout, 10.0),
                read_timeout=dep.timeout,
            )

    def _fetch(self, dep: Deployment, path: str, *args: Any, **kwargs: Any) -> tuple[int, bytes]:
        """A whole answer, status and body (the arguments are :meth:`_request`'s)."""
        answer = self._request(dep, path, *args, **kwargs)
        with _mapped_errors(dep):
            return answer.status, answer.read()

    def call(self, dep: Deployment, call_type: str, body: dict[str, Any]) -> dict[str, Any]:
        """A non-streaming call: the upstream's JSON answer."""
        return self.call_raw(dep, call_type, body)[0]

    def call_raw(
        self,
        dep: Deployment,
        call_type: str,
        body: dict[str, Any],
        client_headers: Any = None,
    ) -> tuple[dict[str, Any], bytes | None]:
        """:meth:`call`, with the answer's bytes as the upstream sent them (None for
        ``mock/`` and translated answers), so the gateway can relay them without
        serialising them again."""
        if dep.answers_itself:
            return mock_answer(dep, call_type, body), None
        to_claude = dep.provider == "anthropic" and call_type == "chat"
        from_claude = dep.provider != "anthropic" and call_type == "messages"
        if to_claude:
            body = anthropic.chat_to_messages(body, dep.upstream_model, dep.price.max_output_tokens)
        elif from_claude:
            body = anthropic.messages_to_chat(body, dep.upstream_model)
        status, data = self._fetch(dep, upstream_path(dep, call_type), body, client_headers)
        if status >= 400:
            raise _error_from_upstream(status, data, dep.api_key)
        try:
            answer = json.loads(data)
        except ValueError:
            raise UpstreamError(f"Upstream sent invalid JSON for model {dep.model_name}") from None
        if not isinstance(answer, dict):
            raise UpstreamError(f"Upstream sent an unexpected answer for model {dep.model_name}")
        if to_claude:
            return anthropic.message_to_chat(answer, dep.model_name), None
        if from_claude:
            return anthropic.chat_to_message(answer, dep.model_name), None
        return answer, data

    def stream(
        self,
        dep: Deployment,
        body: dict[str, Any],
        relay_usage: bool = True,
        call_type: str = "chat",
        client_headers: Any = None,
    ) -> StreamRelay:
        """A streaming call; the status is checked before the first byte.

        ``relay_usage``: whether the client itself asked for the usage chunk.
        """
        api = APIS[call_type]
        if dep.answers_itself:
            events = (
                mock_stream(dep, body)
                if call_type == "chat"
                else mock_api_stream(dep, call_type, body)
            )
            return StreamRelay(iter(events), meter=api.make_meter(relay_usage))
        translator: anthropic.ChatStreamTranslator | anthropic.MessagesStreamTranslator | None
        translator = None
        meter = api.make_meter(relay_usage)
        if dep.provider == "anthropic" and call_type == "chat":
            translator = anthropic.ChatStreamTranslator(dep.model_name, relay_usage)
            body = anthropic.chat_to_messages(body, dep.upstream_model, dep.price.max_output_tokens)
            meter = AnthropicEventMeter()
        elif call_type == "messages" and dep.provider != "anthropic":
            translator = anthropic.MessagesStreamTranslator(dep.model_name)
            body = anthropic.messages_to_chat(body, dep.upstream_model)
            meter = ChatChunkMeter()
            if not accepts_stream_options(dep):
                body = _without_injected_usage(body)  # metered from the text relayed
        elif not relay_usage and not accepts_stream_options(dep):
            # Metered from the text relayed instead (see gateway.settle_stream).
            body = _without_injected_usage(body)
        answer = self._request(dep, upstream_path(dep, call_type), body, client_headers)
        if answer.status >= 400:
            # Read unmapped, as before (a body that breaks here is not an upstream answer).
            raise _error_from_upstream(answer.status, answer.read(), dep.api_key)

        def chunks() -> Iterator[bytes]:
            try:
                yield from answer.chunks()
            except Urllib3Timeout:
                raise _timed_out(dep) from None
            except HTTPError as err:
                raise UpstreamError(
                    f"Upstream stream broke for {deployment_label(dep)}: {_reason(err)}"
                ) from err
            finally:
                answer.release()

        def close() -> None:
            # A stream abandoned half-way cannot be reused: drop the socket.
            answer.release()

        return StreamRelay(
            chunks(),
            close,
            meter=meter,
            translate=translator,
            translate_end=translator.end if translator is not None else None,
        )

    def forward(
        self,
        dep: Deployment,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        client_headers: Any = None,
    ) -> tuple[int, bytes]:
        """An unmetered call passed through as it is (``GET /responses/<id>``,
        ``count_tokens``): the upstream's status and body."""
        if dep.answers_itself:
            return mock_forward(dep, method, path, body)
        return self._fetch(dep, path, body, client_headers, method=method)


@contextmanager
def _mapped_errors(dep: Deployment) -> Iterator[None]:
    """urllib3's errors of a request to ``dep`` as the gateway's upstream errors."""
    try:
        yield
    except NewConnectionError as err:
        raise UpstreamError(
            f"Upstream connection failed for {deployment_label(dep)}: {_reason(err)}"
        ) from err
    except Urllib3Timeout:
        raise _timed_out(dep) from None
    except HTTPError as err:
        raise UpstreamError(
            f"Upstream request failed for {deployment_label(dep)}: {_reason(err)}"
        ) from err


def _timed_out(dep: Deployment) -> UpstreamTimeout:
    return UpstreamTimeout(f"Upstream timed out after {dep.timeout:g}s for model {dep.model_name}")


def upstream_path(dep: Deployment, call_type: str) -> str:
    """The path of ``call_type`` on ``dep``'s upstream."""
    if dep.provider == "anthropic":
        if call_type not in ("chat", "messages"):
            raise BadRequest(
                f"model {dep.model_name} is an anthropic/ model: it answers /v1/messages and "
                f"/chat/completions, not {call_type}",
                param="model",
            )
        return "messages"
    if call_type == "messages":
        return CHAT.path  # translated (proxy.upstream.anthropic.messages_to_chat)
    return APIS[call_type].path


# --- the built-in mock provider: deterministic, no network -----------------


def _mock_reply(body: dict[str, Any], default: str | None) -> tuple[str, str]:
    """The request's ``mock_response``, else the deployment's, else :data:`MOCK_REPLY`."""
    reply = body.get("mock_response")
    words = (reply if isinstance(reply, str) else default or MOCK_REPLY).split()
    finish = "stop"
    limit = body.get("max_tokens") or body.get("max_completion_tokens")
    if isinstance(limit, int) and 0 < limit < len(words):
        words, finish = words[:limit], "length"
    return " ".join(words), finish


def mock_answer(dep: Deployment, call_type: str, body: dict[str, Any]) -> dict[str, Any]:
    if call_type not in ("chat", "embeddings"):
        return mock_api_answer(dep, call_type, body)
    prompt_tokens = max(1, estimate_prompt_tokens(body, call_type))
    if call_type == "embeddings":
        inputs = body.get("input")
        count = len(inputs) if isinstance(inputs, list) and inputs else 1
        return {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": [0.0125 * (i + 1)] * 8}
                for i in range(count)
            ],
            "model": dep.upstream_model,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
        }
    content, finish = _mock_reply(body, dep.mock_response)
    completion_tokens = len(content.split())
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": dep.upstream_model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def _sse(event: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(event).encode() + b"\n\n"


def mock_stream(dep: Deployment, body: dict[str, Any]) -> Iterator[bytes]:
    answer = mock_answer(dep, "chat", body)
    content = answer["choices"][0]["message"]["content"]
    base = {
        "id": answer["id"],
        "object": "chat.completion.chunk",
        "created": answer["created"],
        "model": answer["model"],
    }
    words = content.split(" ")
    for i, word in enumerate(words):
        delta = {"content": word if i == 0 else " " + word}
        if i == 0:
            delta["role"] = "assistant"
        yield _sse({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
    finish = answer["choices"][0]["finish_reason"]
    yield _sse({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    options = body.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage"):
        yield _sse({**base, "choices": [], "usage": answer["usage"]})
    yield b"data: [DONE]\n\n"
