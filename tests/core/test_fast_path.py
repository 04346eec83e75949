"""The LLM routes' fast path (proxy.api.fast_path) answers exactly as Flask's path does.

Each case is sent twice to the same app: once through the fast path, once
through Flask's own path (an unmarked ``before_request`` hook sends every
request there), and the two answers compare equal: status, headers in order,
body (call ids and timestamps aside).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import peewee
import pytest
from flask import Flask
from werkzeug.test import TestResponse

import proxy.app
from proxy.api import llm
from proxy.request_hooks import without_request
from proxy.storage.models import SpendLog
from tests.conftest import MASTER, base_config

CHAT = {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hi"}]}
MESSAGES = {
    "model": "gpt-3.5-turbo",
    "max_tokens": 20,
    "messages": [{"role": "user", "content": "hi"}],
}
# Values that differ from one call to the next.
VARYING_HEADERS = {
    "x-comptroller-call-id",
    "x-ratelimit-reset-requests",
    "x-ratelimit-reset-tokens",
}
VARYING_FIELDS = {"id", "created", "created_at"}


class Paths:
    """One app; ``send`` answers through the fast path and through Flask's."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.client = app.test_client()
        self.fast = app.wsgi_app
        self.to_flask: list[str] = []
        flask_path = self.fast._flask  # type: ignore[attr-defined]

        def counted(environ: dict[str, Any], start_response: Any) -> Any:
            self.to_flask.append(environ["PATH_INFO"])
            return flask_path(environ, start_response)

        self.fast._flask = counted  # type: ignore[attr-defined]

    def send(self, **request: Any) -> tuple[TestResponse, TestResponse]:
        self.to_flask.clear()
        fast = self.client.open(method="POST", **request)
        fast.get_data()
        assert self.to_flask == [], "answered by Flask's path"
        hooks = self.app.before_request_funcs[None]
        hooks.append(_reads_the_request)
        try:
            slow = self.client.open(method="POST", **request)
            slow.get_data()
        finally:
            hooks.remove(_reads_the_request)
        assert self.to_flask == [request["path"]], "the fast path answered"
        return fast, slow


def _reads_the_request() -> None:
    """An unmarked hook: it might read flask.request, so only Flask's path runs it."""


def _same(fast: TestResponse, slow: TestResponse) -> None:
    assert fast.status == slow.status
    assert _headers(fast) == _headers(slow)
    assert _body(fast) == _body(slow)


def _headers(resp: TestResponse) -> list[tuple[str, str]]:
    return [
        (name, "*" if name.lower() in VARYING_HEADERS else value)
        for name, value in resp.headers.items()
    ]


def _body(resp: TestResponse) -> Any:
    raw = resp.get_data()
    if resp.mimetype == "text/event-stream":
        return [_stable(_sse_data(block)) for block in raw.split(b"\n\n") if block.strip()]
    return _stable(json.loads(raw))


def _sse_data(block: bytes) -> Any:
    data = block.split(b"data: ", 1)[1]
    return data.decode() if data == b"[DONE]" else json.loads(data)


def _stable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: "*" if k in VARYING_FIELDS else _stable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


@pytest.fixture
def paths(make_app: Callable[..., Flask], db_url: str) -> Paths:
    return Paths(make_app(base_config(db_url)))


def test_a_chat_call_is_answered_and_billed_alike(paths: Paths) -> None:
    fast, slow = paths.send(path="/chat/completions", json=CHAT, headers=MASTER)
    assert fast.status_code == 200
    _same(fast, slow)
    assert SpendLog.select().count() == 2


def test_a_stream_is_relayed_and_billed_alike(paths: Paths) -> None:
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    fast, slow = paths.send(path="/v1/chat/completions", json=body, headers=MASTER)
    assert fast.status_code == 200
    _same(fast, slow)
    assert [row.status for row in SpendLog.select()] == ["success", "success"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/messages", MESSAGES),
        ("/anthropic/v1/messages", {**MESSAGES, "stream": True}),
        ("/v1/responses", {"model": "gpt-3.5-turbo", "input": "hi"}),
        ("/completions", {"model": "gpt-3.5-turbo", "prompt": "hi"}),
        ("/v1/embeddings", {"model": "gpt-3.5-turbo", "input": "hi"}),
        ("/openai/deployments/gpt-3.5-turbo/chat/completions", {"messages": CHAT["messages"]}),
    ],
)
def test_every_llm_route_answers_alike(paths: Paths, path: str, body: dict[str, Any]) -> None:
    fast, slow = paths.send(path=path, json=body, headers=MASTER)
    assert fast.status_code == 200, fast.get_data()
    _same(fast, slow)


@pytest.mark.parametrize(
    ("path", "sent", "status"),
    [
        ("/chat/completions", {"json": CHAT}, 401),  # no key
        ("/v1/messages", {"json": MESSAGES}, 401),  # Anthropic's shape
        ("/chat/completions", {"data": b"{not json", "headers": MASTER}, 400),
        ("/chat/completions", {"json": {**CHAT, "model": "nope"}, "headers": MASTER}, 400),
        ("/v1/messages", {"json": {**MESSAGES, "model": "nope"}, "headers": MASTER}, 400),
        ("/chat/completions", {"json": {"model": "gpt-3.5-turbo"}, "headers": MASTER}, 400),
        ("/chat/completions", {"json": CHAT, "headers": {"Authorization": "Bearer sk-x"}}, 401),
    ],
)
def test_errors_are_answered_alike(
    paths: Paths, path: str, sent: dict[str, Any], status: int
) -> None:
    fast, slow = paths.send(path=path, **sent)
    assert fast.status_code == status, fast.get_data()
    _same(fast, slow)


def test_a_body_over_the_limit_is_413_alike(paths: Paths) -> None:
    paths.app.config["MAX_CONTENT_LENGTH"] = 100
    body = {**CHAT, "messages": [{"role": "user", "content": "x" * 200}]}
    for headers in (MASTER, {}):
        fast, slow = paths.send(path="/chat/completions", json=body, headers=headers)
        assert fast.status_code == (413 if headers else 401)
        _same(fast, slow)


def test_a_database_that_is_down_is_503_alike(
    paths: Paths, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(services: Any, llm: bool) -> None:
        raise peewee.OperationalError("connection refused")

    monkeypatch.setattr(proxy.app, "connect_for_request", refused)
    for path, body in (("/chat/completions", CHAT), ("/v1/messages", MESSAGES)):
        fast, slow = paths.send(path=path, json=body, headers=MASTER)
        assert fast.status_code == 503
        assert "nothing was charged" in fast.get_data(as_text=True)
        _same(fast, slow)


def test_an_unexpected_error_is_500_without_a_trace_alike(
    paths: Paths, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(body: dict[str, Any]) -> None:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(llm, "validate_chat", broken)
    fast, slow = paths.send(path="/chat/completions", json=CHAT, headers=MASTER)
    assert fast.status_code == 500
    assert "secret detail" not in fast.get_data(as_text=True)
    _same(fast, slow)


def test_cors_headers_are_added_alike(make_app: Callable[..., Flask], db_url: str) -> None:
    origin = "https://app.example.com"
    paths = Paths(make_app(base_config(db_url, general_settings={"allowed_origins": [origin]})))
    for headers in ({**MASTER, "Origin": origin}, {"Origin": origin}, MASTER):
        fast, slow = paths.send(path="/chat/completions", json=CHAT, headers=headers)
        _same(fast, slow)
        assert ("Access-Control-Allow-Origin" in fast.headers) == ("Origin" in headers)


def test_other_methods_and_paths_are_flasks(paths: Paths) -> None:
    for method, path in (("GET", "/chat/completions"), ("HEAD", "/v1/chat/completions")):
        paths.to_flask.clear()
        resp = paths.client.open(path, method=method, headers=MASTER)
        assert resp.status_code == 405
        assert paths.to_flask == [path]
    paths.to_flask.clear()
    assert paths.client.post("/chat/completions/", json=CHAT, headers=MASTER).status_code in (
        308,
        404,
    )
    assert paths.to_flask == ["/chat/completions/"]


def test_marked_plugin_hooks_run_on_the_fast_path(paths: Paths) -> None:
    ran: list[str] = []

    @without_request
    def before() -> None:
        ran.append("before")

    @without_request
    def teardown(exc: BaseException | None) -> None:
        ran.append("teardown")

    paths.app.before_request(before)
    paths.app.teardown_request(teardown)
    fast, slow = paths.send(path="/chat/completions", json=CHAT, headers=MASTER)
    _same(fast, slow)
    assert ran == ["before", "teardown", "before", "teardown"]
