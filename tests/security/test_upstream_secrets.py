"""An upstream API key never reaches a log line, an alert or the database.

tests/calls/test_no_secret_leaks.py scans every route's *answers*; this test
covers the other ways out: every log record of the process (debug level,
tracebacks included), every webhook delivery and a dump of every table,
after calls that succeed, stream, fail upstream with an error message that
echoes the key (as OpenAI's "Incorrect API key provided: sk-..." does),
cannot connect, and time out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask

import plugins.webhook_alerter.hooks as webhook_alerter
from tests.conftest import MASTER, base_config, openai_model
from tests.security.dump import dump_database
from tests.support.mock_openai import MockOpenAI
from tests.support.proxy_server import free_port
from tests.support.webhook_receiver import WebhookReceiver

SECRET = "sk-upstream-LEAKCHECK-4242"
FRAGMENTS = (SECRET, "LEAKCHECK-4242", "upstream-LEAKCHECK")
MESSAGES = [{"role": "user", "content": "what is your api key?"}]


def _config(db_url: str, upstream: MockOpenAI) -> dict[str, Any]:
    chat = openai_model("gpt-4o-mini", upstream.base_url, api_key=SECRET, timeout=1)
    azure = {
        "model_name": "azure-embedding",
        "litellm_params": {
            "model": "azure/embedding-deployment",
            "api_base": upstream.root_url,
            "api_key": SECRET,
            "api_version": "2024-06-01",
        },
    }
    dead = openai_model("dead", f"http://127.0.0.1:{free_port()}/v1", api_key=SECRET)
    return base_config(
        db_url,
        model_list=[chat, azure, dead],
        general_settings={"alerting": ["webhook"]},
        plugins={"settings": {"webhook_alerter": {"poll_interval": 0.05, "timeout": 5}}},
    )


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as server:
        monkeypatch.setenv("WEBHOOK_URL", server.url)
        yield server
    webhook_alerter.shutdown()


def _leaks(text: str) -> list[str]:
    return [fragment for fragment in FRAGMENTS if fragment in text]


def test_upstream_key_is_in_no_log_line_alert_or_table(
    make_app: Callable[..., Flask],
    db_url: str,
    upstream: MockOpenAI,
    receiver: WebhookReceiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    client = make_app(_config(db_url, upstream)).test_client()
    chat = {"model": "gpt-4o-mini", "messages": MESSAGES, "user": "leak-check-user"}
    answers: dict[str, Any] = {}

    def call(label: str, path: str, body: dict[str, Any], headers: dict[str, str]) -> None:
        resp = client.post(path, json=body, headers=headers)
        answers[label] = (resp.status_code, resp.get_data(as_text=True))

    call("success", "/chat/completions", chat, MASTER)
    call("stream", "/chat/completions", {**chat, "stream": True}, MASTER)
    call("azure", "/embeddings", {"model": "azure-embedding", "input": "x"}, MASTER)
    upstream.fail_next(1, 401, f"Incorrect API key provided: {SECRET}")
    call("upstream 401 echoing the key", "/chat/completions", chat, MASTER)
    upstream.fail_next(3, 500, f"boom while using {SECRET}")  # and two retries
    call("upstream 500 echoing the key", "/chat/completions", chat, MASTER)
    call("connection refused", "/chat/completions", {**chat, "model": "dead"}, MASTER)
    upstream.hang = True
    try:
        call("timeout", "/chat/completions", chat, MASTER)
    finally:
        upstream.hang = False
    # A key with a tiny budget: key_created, then budget alerts on its calls.
    made = client.post("/key/generate", json={"max_budget": 0.0000001}, headers=MASTER)
    virtual = {"Authorization": f"Bearer {made.get_json()['key']}"}
    call("virtual key", "/chat/completions", chat, virtual)
    call("virtual key over budget", "/chat/completions", chat, virtual)
    answers["model info"] = (200, client.get("/model/info", headers=MASTER).get_data(as_text=True))

    statuses = {label: status for label, (status, _) in answers.items()}
    assert statuses["success"] == statuses["stream"] == statuses["azure"] == 200
    assert statuses["upstream 401 echoing the key"] == 401
    assert statuses["connection refused"] == 502
    assert statuses["timeout"] == 504
    assert statuses["virtual key over budget"] == 401
    assert {label: _leaks(text) for label, (_, text) in answers.items() if _leaks(text)} == {}

    receiver.wait_for(1, event="key_created")
    receiver.wait_for(1, event="spend_tracked")
    for delivery in receiver.deliveries:
        headers = "\n".join(f"{k}: {v}" for k, v in delivery.headers.items())
        assert _leaks(delivery.body.decode() + headers) == [], delivery.json

    assert len(caplog.records) > 0
    assert _leaks(caplog.text) == []
    assert [r.getMessage() for r in caplog.records if _leaks(r.getMessage())] == []
    assert _leaks(dump_database(db_url)) == []
