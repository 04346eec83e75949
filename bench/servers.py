"""The benchmark's fast local servers: a mock OpenAI upstream and a webhook receiver.

Both are one asyncio process answering from precomputed bytes, so neither
is the bottleneck the benchmark measures (the test suite's mock, a
``ThreadingHTTPServer`` that parses every body, is far slower). HTTP/1.1
keep-alive, ``Content-Length`` request bodies only (what urllib3, requests
and wrk send).

* Upstream (``/v1/chat/completions``): a chat completion with usage; with
  ``"stream": true`` in the body, the same answer as server-sent events in
  chunked encoding, one event per word, then the finish chunk, the usage
  chunk and ``[DONE]``.
* Receiver (any ``POST``): ``200 {}``; ``GET /_count`` answers how many
  POSTs it took, so the benchmark can tell how many alerts arrived.

    python -m bench.servers --upstream-port 8901 --receiver-port 8902
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json

MODEL = "gpt-4o-mini"
ANSWER_WORDS = "This is a benchmark answer from the mock upstream of Comptroller .".split()
PROMPT_TOKENS = 21
COMPLETION_TOKENS = len(ANSWER_WORDS)
USAGE = {
    "prompt_tokens": PROMPT_TOKENS,
    "completion_tokens": COMPLETION_TOKENS,
    "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
}
_CREATED = 1_700_000_000


def _response(status: str, content_type: str, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _chat_answer() -> bytes:
    answer = {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": _CREATED,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": " ".join(ANSWER_WORDS)},
                "finish_reason": "stop",
            }
        ],
        "usage": USAGE,
    }
    return _response("200 OK", "application/json", json.dumps(answer).encode())


def _chunk(event: dict) -> bytes:
    data = b"data: " + json.dumps(event).encode() + b"\n\n"
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _chat_stream() -> bytes:
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": _CREATED}
    base["model"] = MODEL
    parts = []
    for i, word in enumerate(ANSWER_WORDS):
        delta = {"role": "assistant", "content": word} if i == 0 else {"content": " " + word}
        parts.append(_chunk({**base, "choices": [{"index": 0, "delta": delta}]}))
    finish = {"index": 0, "delta": {}, "finish_reason": "stop"}
    parts.append(_chunk({**base, "choices": [finish]}))
    parts.append(_chunk({**base, "choices": [], "usage": USAGE}))
    done = b"data: [DONE]\n\n"
    parts.append(f"{len(done):x}\r\n".encode() + done + b"\r\n")
    parts.append(b"0\r\n\r\n")
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    return head + b"".join(parts)


CHAT_ANSWER = _chat_answer()
CHAT_STREAM = _chat_stream()
NOT_FOUND = _response("404 Not Found", "application/json", b'{"error":{"message":"no route"}}')
EMPTY_OK = _response("200 OK", "application/json", b"{}")


class _Connection(asyncio.Protocol):
    """One keep-alive connection: split requests by Content-Length, answer each."""

    def __init__(self, server: BenchServer) -> None:
        self.server = server
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end]
            length = 0
            marker = head.lower().find(b"\r\ncontent-length:")
            if marker >= 0:
                stop = head.find(b"\r\n", marker + 2)
                length = int(head[marker + 17 : stop if stop >= 0 else len(head)])
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            body = self.buffer[end + 4 : total]
            self.buffer = self.buffer[total:]
            method, _, rest = head.partition(b" ")
            path = rest.partition(b" ")[0]
            assert self.transport is not None
            self.transport.write(self.server.answer(method, path, body))


class BenchServer:
    """Answers for one port: ``upstream`` or ``receiver``."""

    def __init__(self, role: str) -> None:
        self.role = role
        self.posts = 0

    def answer(self, method: bytes, path: bytes, body: bytes) -> bytes:
        if self.role == "receiver":
            if method == b"POST":
                self.posts += 1
                return EMPTY_OK
            if path == b"/_count":
                return _response("200 OK", "application/json", b'{"posts": %d}' % self.posts)
            return NOT_FOUND
        if path.endswith(b"/chat/completions") and method == b"POST":
            if b'"stream": true' in body or b'"stream":true' in body:
                return CHAT_STREAM
            return CHAT_ANSWER
        if path == b"/_ready":
            return EMPTY_OK
        return NOT_FOUND


async def serve(upstream_port: int, receiver_port: int) -> None:
    loop = asyncio.get_running_loop()
    servers = []
    for role, port in (("upstream", upstream_port), ("receiver", receiver_port)):
        app = BenchServer(role)
        factory = functools.partial(_Connection, app)
        servers.append(await loop.create_server(factory, "127.0.0.1", port, backlog=1024))
    await asyncio.gather(*(server.serve_forever() for server in servers))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Mock upstream and webhook receiver.")
    parser.add_argument("--upstream-port", type=int, required=True)
    parser.add_argument("--receiver-port", type=int, required=True)
    args = parser.parse_args(argv)
    try:
        asyncio.run(serve(args.upstream_port, args.receiver_port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
