"""Bodies over ``general_settings.max_request_size_mb`` (10 MB by default) get 413.

On a live gunicorn proxy, with a ``Content-Length`` and chunked (no length:
the server cannot refuse it up front, and Werkzeug would silently cut it at
the limit), on an LLM route and an admin route. A body just under the limit
is served.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import MASTER, base_config
from tests.support.proxy_server import ProxyServer

MB = 1024 * 1024
JSON = {**MASTER, "Content-Type": "application/json"}


def chat_body(size: int) -> bytes:
    """A valid chat request of about ``size`` bytes."""
    body = {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": ""}]}
    overhead = len(json.dumps(body))
    body["messages"][0]["content"] = "x" * (size - overhead)
    return json.dumps(body).encode()


def chunks(data: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    """As a generator, so requests sends ``Transfer-Encoding: chunked``."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


def assert_413(resp: requests.Response, limit_bytes: int) -> None:
    assert resp.status_code == 413, resp.text[:300]
    assert resp.json() == {
        "error": {
            "message": f"Request body too large: the limit is {limit_bytes} bytes.",
            "type": "invalid_request_error",
            "param": "None",
            "code": "413",
        }
    }


def post(url: str, data: Any) -> requests.Response:
    return requests.post(url, data=data, headers=JSON, timeout=30)


@pytest.mark.slow
@pytest.mark.parametrize("setting", [None, 1.5])
def test_a_body_over_the_limit_is_413_with_or_without_a_length(
    tmp_path: Path, setting: float | None
) -> None:
    general = {} if setting is None else {"max_request_size_mb": setting}
    config = base_config(f"sqlite:///{tmp_path / 'size.db'}", general_settings=general)
    limit = int((setting or 10) * MB)
    over = chat_body(limit + 1024)
    under = chat_body(limit - 1024)
    with ProxyServer(config, tmp_path, workers=1, threads=4) as server:
        for path in ("/chat/completions", "/key/generate"):
            assert_413(post(f"{server.url}{path}", over), limit)
            assert_413(post(f"{server.url}{path}", chunks(over)), limit)
        assert post(f"{server.url}/chat/completions", under).status_code == 200
        assert post(f"{server.url}/chat/completions", chunks(under)).status_code == 200
        # The refusals left the proxy serving.
        assert requests.get(f"{server.url}/health/readiness", timeout=5).status_code == 200
