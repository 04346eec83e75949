"""Virtual keys are stored only as their SHA-256: a dump of every table holds no plain key.

The keys are made by the two routes that make keys, then used for metered
calls with every limit set (so the budget, rate-limit and alert plugins write
their own tables too) and read back by their plain form. The whole database
is then dumped, every plugin's table included, and searched.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import pytest
from flask import Flask

import plugins.webhook_alerter.hooks as webhook_alerter
from proxy.call.auth import hash_key
from tests.conftest import MASTER, base_config
from tests.security.dump import dump_database
from tests.support.webhook_receiver import WebhookReceiver

LIMITS = {"max_budget": 10, "soft_budget": 0.000001, "rpm_limit": 100, "tpm_limit": 100000}
CHAT = {
    "model": "gpt-3.5-turbo",
    "messages": [{"role": "user", "content": "hello"}],
    "user": "storage-end-user",
}


@pytest.fixture
def alerting_app(
    make_app: Callable[..., Flask], db_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Flask]:
    with WebhookReceiver() as receiver:
        monkeypatch.setenv("WEBHOOK_URL", receiver.url)
        config = base_config(
            db_url,
            general_settings={"alerting": ["webhook"], "budget_enforcement": "strict"},
        )
        yield make_app(config)
        webhook_alerter.shutdown()


def _secret_forms(plain: str) -> list[str]:
    """The key as sent, and without its ``sk-`` prefix (a stored random part leaks it too)."""
    return [plain, plain.removeprefix("sk-")]


def test_a_dump_of_every_table_holds_no_plain_key(
    alerting_app: Flask, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = alerting_app.test_client()
    generated = client.post(
        "/key/generate", json={**LIMITS, "max_parallel_requests": 2}, headers=MASTER
    )
    assert generated.status_code == 200, generated.get_data(as_text=True)
    user = client.post("/user/new", json={"user_id": "storage-user", **LIMITS}, headers=MASTER)
    assert user.status_code == 200, user.get_data(as_text=True)
    plains = [generated.get_json()["key"], user.get_json()["key"]]
    for plain in plains:
        headers = {"Authorization": f"Bearer {plain}"}
        for _ in range(3):
            resp = client.post("/chat/completions", json=CHAT, headers=headers)
            assert resp.status_code == 200, resp.get_data(as_text=True)
        assert (
            client.get("/key/info", query_string={"key": plain}, headers=MASTER).status_code == 200
        )
        update = client.post("/key/update", json={"key": plain, "rpm_limit": 50}, headers=MASTER)
        assert update.status_code == 200

    dump = dump_database(db_url)
    for plain in plains:
        # The dump is not empty of keys: each key's hash is there, its secret is not.
        assert hash_key(plain) in dump
        for form in _secret_forms(plain):
            assert form not in dump
            assert not [r.getMessage() for r in caplog.records if form in r.getMessage()]
