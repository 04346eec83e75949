"""Calls to the upstream LLM providers: ``openai/``, ``azure/`` and ``mock/``.

The hot path uses urllib3's connection pool directly (keep-alive, no
per-call session set-up). Every failure becomes a :class:`ProxyError` with
the OpenAI error shape: upstream 4xx/5xx keep their status and message, a
refused connection is 502, a timeout 504.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import urllib3
from urllib3.exceptions import (
    HTTPError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)
from urllib3.exceptions import (
    TimeoutError as Urllib3Timeout,
)

from proxy.context import Usage
from proxy.deployments import Deployment
from proxy.errors import ProxyError, UpstreamError
from proxy.pricing import estimate_prompt_tokens

log = logging.getLogger("comptroller.upstream")

OPENAI_BASE = "https://api.openai.com/v1"
MOCK_REPLY = "This is a mock response from Comptroller, the metered LLM gateway."


class UpstreamTimeout(ProxyError):
    status = 504
    type = "timeout"


def _paths(call_type: str) -> str:
    return "chat/completions" if call_type == "chat" else "embeddings"


def _error_from_upstream(status: int, raw: bytes) -> ProxyError:
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
    return ProxyError(
        message,
        status=status,
        type=err_type,
        param=None if param is None else str(param),
        code=None if code is None else str(code),
    )


class StreamRelay:
    """Iterates an upstream SSE stream chunk by chunk, remembering usage.

    The bytes are passed on untouched. Lines are parsed on the side to keep
    the ``usage`` chunk and a count of the text relayed, so an interrupted
    stream can still be charged for what the client received.
    """

    def __init__(self, chunks: Iterator[bytes], close: Any = None) -> None:
        self._chunks = chunks
        self._close = close
        self._pending = b""
        self.usage: Usage | None = None
        self.text_chars = 0
        self.finished = False

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            if chunk:
                self._observe(chunk)
                yield chunk
        self.finished = True

    def _observe(self, chunk: bytes) -> None:
        data = self._pending + chunk
        lines = data.split(b"\n")
        self._pending = lines.pop()
        for line in lines:
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if not payload or payload == b"[DONE]":
                continue
            try:
                event = json.loads(payload)
            except ValueError:
                continue
            if not isinstance(event, dict):
                continue
            usage = Usage.from_openai(event.get("usage"))
            if usage is not None:
                self.usage = usage
            for choice in event.get("choices") or []:
                delta = choice.get("delta") if isinstance(choice, dict) else None
                if isinstance(delta, dict) and isinstance(delta.get("content"), str):
                    self.text_chars += len(delta["content"])

    def close(self) -> None:
        if self._close is not None:
            try:
                self._close()
            except Exception:  # closing a dead socket must not mask the real outcome
                log.debug("closing upstream stream failed", exc_info=True)
            self._close = None


class UpstreamClient:
    """One per process; holds the keep-alive pools to every upstream."""

    def __init__(self, pool_size: int = 32) -> None:
        self.pools = urllib3.PoolManager(num_pools=64, maxsize=pool_size, block=False, retries=False)

    def _target(self, dep: Deployment, call_type: str) -> tuple[str, dict[str, str]]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if dep.provider == "azure":
            if not dep.api_base:
                raise UpstreamError(f"model {dep.model_name}: azure deployment has no api_base")
            url = (
                f"{dep.api_base.rstrip('/')}/openai/deployments/{dep.upstream_model}/"
                f"{_paths(call_type)}?api-version={dep.api_version or '2024-06-01'}"
            )
            if dep.api_key:
                headers["api-key"] = dep.api_key
        else:
            url = f"{(dep.api_base or OPENAI_BASE).rstrip('/')}/{_paths(call_type)}"
            if dep.api_key:
                headers["Authorization"] = f"Bearer {dep.api_key}"
        return url, headers

    def _request(
        self, dep: Deployment, call_type: str, body: dict[str, Any], stream: bool
    ) -> urllib3.BaseHTTPResponse:
        url, headers = self._target(dep, call_type)
        timeout = urllib3.Timeout(connect=min(dep.timeout, 10.0), read=dep.timeout)
        try:
            return self.pools.request(
                "POST",
                url,
                body=json.dumps(body).encode(),
                headers=headers,
                timeout=timeout,
                preload_content=not stream,
                redirect=False,
            )
        except NewConnectionError as err:
            raise UpstreamError(f"Upstream connection failed for model {dep.model_name}: {err}")
        except (ReadTimeoutError, Urllib3Timeout):
            raise UpstreamTimeout(
                f"Upstream timed out after {dep.timeout:g}s for model {dep.model_name}"
            ) from None
        except (ProtocolError, HTTPError) as err:
            raise UpstreamError(f"Upstream request failed for model {dep.model_name}: {err}")

    def call(self, dep: Deployment, call_type: str, body: dict[str, Any]) -> dict[str, Any]:
        """A non-streaming call: the upstream's JSON answer."""
        if dep.provider == "mock":
            return mock_answer(dep, call_type, body)
        resp = self._request(dep, call_type, body, stream=False)
        if resp.status >= 400:
            raise _error_from_upstream(resp.status, resp.data)
        try:
            answer = json.loads(resp.data)
        except ValueError:
            raise UpstreamError(f"Upstream sent invalid JSON for model {dep.model_name}") from None
        if not isinstance(answer, dict):
            raise UpstreamError(f"Upstream sent an unexpected answer for model {dep.model_name}")
        return answer

    def stream(self, dep: Deployment, body: dict[str, Any]) -> StreamRelay:
        """A streaming chat call; the status is checked before the first byte."""
        if dep.provider == "mock":
            return StreamRelay(iter(mock_stream(dep, body)))
        resp = self._request(dep, "chat", body, stream=True)
        if resp.status >= 400:
            raw = resp.read()
            resp.release_conn()
            raise _error_from_upstream(resp.status, raw)

        def chunks() -> Iterator[bytes]:
            try:
                if resp.chunked and resp.supports_chunked_reads():
                    yield from resp.read_chunked(decode_content=True)
                else:
                    while True:
                        part = resp.read1(65536) if hasattr(resp, "read1") else resp.read(65536)
                        if not part:
                            break
                        yield part
            except (ReadTimeoutError, Urllib3Timeout):
                raise UpstreamTimeout(
                    f"Upstream timed out after {dep.timeout:g}s for model {dep.model_name}"
                ) from None
            except (ProtocolError, HTTPError) as err:
                raise UpstreamError(f"Upstream stream broke for model {dep.model_name}: {err}")
            finally:
                resp.release_conn()

        def close() -> None:
            # A stream abandoned half-way cannot be reused: drop the socket.
            resp.drain_conn() if resp.isclosed() else resp.close()

        return StreamRelay(chunks(), close)


# --- the built-in mock provider: deterministic, no network -----------------


def _mock_reply(body: dict[str, Any]) -> tuple[str, str]:
    reply = body.get("mock_response")
    words = (reply if isinstance(reply, str) else MOCK_REPLY).split()
    finish = "stop"
    limit = body.get("max_tokens") or body.get("max_completion_tokens")
    if isinstance(limit, int) and 0 < limit < len(words):
        words, finish = words[:limit], "length"
    return " ".join(words), finish


def mock_answer(dep: Deployment, call_type: str, body: dict[str, Any]) -> dict[str, Any]:
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
    content, finish = _mock_reply(body)
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
