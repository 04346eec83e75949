"""What a client sees from real gunicorn for requests at the edges of HTTP.

Requests gunicorn refuses before the app sees them (a request line over
``limit_request_line``, too many or too large headers, a malformed request
line) answer in the OpenAI error shape like every other error; a non-ASCII
end-user id sent as UTF-8 bytes in a header is the same customer as in the body.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import MASTER_KEY
from tests.support.proxy_server import ProxyServer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyServer]:
    tmp: Path = tmp_path_factory.mktemp("http_edges")
    config = {
        "general_settings": {
            "master_key": MASTER_KEY,
            "database_url": f"sqlite:///{tmp / 'edges.db'}",
        }
    }
    with ProxyServer(config, tmp, workers=1, threads=2) as proxy:
        yield proxy


def exchange(server: ProxyServer, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes, read the whole answer (the server closes or says its length)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(raw)
        data = b""
        while b"\r\n\r\n" not in data:
            part = sock.recv(65536)
            if not part:
                break
            data += part
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            part = sock.recv(65536)
            if not part:
                break
            body += part
    return int(lines[0].split()[1]), headers, body


def assert_openai_error(status: int, headers: dict[str, str], body: bytes, expected: int) -> dict:
    assert status == expected, body
    assert headers["content-type"] == "application/json"
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == str(expected) and error["type"] == "invalid_request_error"
    assert b"<html" not in body
    return error


def test_a_request_line_too_long_is_414_in_the_error_shape(server: ProxyServer) -> None:
    raw = b"GET /v1/models?q=" + b"x" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    error = assert_openai_error(*exchange(server, raw), 414)
    assert error["message"].startswith("URI Too Long")


def test_a_header_too_large_is_431_in_the_error_shape(server: ProxyServer) -> None:
    raw = b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: " + b"y" * 9000 + b"\r\n\r\n"
    error = assert_openai_error(*exchange(server, raw), 431)
    assert error["message"].startswith("Request Header Fields Too Large")


def test_too_many_headers_are_431_in_the_error_shape(server: ProxyServer) -> None:
    many = b"".join(b"X-H%d: v\r\n" % n for n in range(150))
    raw = b"GET /v1/models HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n"
    assert_openai_error(*exchange(server, raw), 431)


def test_a_malformed_request_line_is_400_in_the_error_shape(server: ProxyServer) -> None:
    assert_openai_error(*exchange(server, b"NOT A REQUEST\r\n\r\n"), 400)


def _chat(server: ProxyServer, extra_header: bytes, body: dict) -> tuple[int, dict]:
    payload = json.dumps(
        {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hi"}], **body}
    ).encode()
    raw = (
        b"POST /chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Authorization: Bearer " + MASTER_KEY.encode() + b"\r\n"
        b"Content-Type: application/json\r\n"
        + extra_header
        + b"Content-Length: %d\r\n\r\n" % len(payload)
        + payload
    )
    status, _, answer = exchange(server, raw)
    return status, json.loads(answer)


def test_a_utf8_customer_header_is_the_customer_of_the_same_name(server: ProxyServer) -> None:
    name = "Zoë-客户"
    status, _ = _chat(server, b"x-litellm-customer-id: " + name.encode("utf-8") + b"\r\n", {})
    assert status == 200
    assert _chat(server, b"", {"user": name})[0] == 200
    raw = (
        b"GET /customer/list HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Authorization: Bearer " + MASTER_KEY.encode() + b"\r\n\r\n"
    )
    status, _, body = exchange(server, raw)
    assert status == 200
    assert [c["user_id"] for c in json.loads(body)] == [name]
