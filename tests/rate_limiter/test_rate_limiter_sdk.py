"""The OpenAI SDK's own retry on 429 gets through once the window opens."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from werkzeug.serving import make_server

from tests.conftest import base_config
from tests.support.rate_limits import end_windows_in, make_key


class StatusRecorder:
    """WSGI middleware that remembers the status of every LLM call it answers."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.statuses: list[int] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        def recording_start(status: str, headers: Any, *args: Any) -> Any:
            if environ["PATH_INFO"].endswith("/chat/completions"):
                self.statuses.append(int(status.split()[0]))
            return start_response(status, headers, *args)

        return self.app(environ, recording_start)


@pytest.fixture
def served(make_app: Any, db_url: str) -> Iterator[tuple[str, StatusRecorder]]:
    recorder = StatusRecorder(make_app(base_config(db_url)))
    server = make_server("127.0.0.1", 0, recorder, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", recorder
    finally:
        server.shutdown()
        thread.join(5)


def ask(client: openai.OpenAI) -> Any:
    return client.chat.completions.create(
        model="gpt-3.5-turbo", messages=[{"role": "user", "content": "hello"}]
    )


def test_sdk_retry_succeeds_when_the_window_opens(served):
    url, recorder = served
    plain = make_key(rpm_limit=1)
    client = openai.OpenAI(api_key=plain, base_url=url, max_retries=2)
    assert ask(client).choices[0].message.content
    # The window has 1.5 s left: the SDK is told so and waits exactly that long.
    end_windows_in(1.5)
    started = time.monotonic()
    answer = ask(client)
    waited = time.monotonic() - started
    assert answer.choices[0].message.content
    assert recorder.statuses == [200, 429, 200]
    assert 1.0 <= waited < 10


def test_sdk_without_retries_sees_the_rate_limit_error(served, clock):
    url, recorder = served
    plain = make_key(alias="sdk", rpm_limit=1)
    client = openai.OpenAI(api_key=plain, base_url=url, max_retries=0)
    ask(client)
    with pytest.raises(openai.RateLimitError) as caught:
        ask(client)
    err = caught.value
    assert err.status_code == 429
    assert err.body == {
        "message": "Rate limit exceeded for key sdk: rpm_limit=1, current=1",
        "type": "rate_limit_error",
        "param": "None",
        "code": "429",
    }
    assert 55 <= int(err.response.headers["retry-after"]) <= 60
    assert recorder.statuses == [200, 429]
