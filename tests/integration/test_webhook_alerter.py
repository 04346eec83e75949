"""The webhook alerter in one process: what a real receiver on 127.0.0.1 gets.

Every test runs on SQLite and on PostgreSQL (``db_url``); the app's sender
threads POST to a :class:`WebhookReceiver`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest
from flask import Flask

import plugins.webhook_alerter.hooks as webhook_alerter
from plugins.webhook_alerter.outbox import OutboxAlert
from proxy.call.alerts import Alert
from proxy.call.auth import hash_key
from proxy.config import ConfigError
from proxy.hookspecs import hookimpl
from proxy.storage.db import database
from proxy.storage.models import Budget, Customer, Key, ProxySpend, SpendLog, User
from tests.conftest import MASTER, base_config
from tests.support.proxy_server import wait_until
from tests.support.seeds import (
    WEBHOOK_CALL_BODY,
    WEBHOOK_FIELDS,
    webhook_spend_tracked_payload,
)
from tests.support.webhook_receiver import WebhookReceiver

# Fast retries so that outage tests take a second, not a minute.
FAST = {"poll_interval": 0.05, "backoff_base": 0.05, "max_backoff": 0.3, "timeout": 5}


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as server:
        yield server


@pytest.fixture
def alerting_app(
    make_app: Callable[..., Flask],
    db_url: str,
    receiver: WebhookReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[..., Flask]]:
    """``alerting_app(plugins=[...], general={...}, **plugin_settings)``: alerts on."""
    monkeypatch.setenv("WEBHOOK_URL", receiver.url)

    def factory(
        plugins: list[tuple[str, Any]] | None = None,
        general: dict[str, Any] | None = None,
        litellm: dict[str, Any] | None = None,
        **settings: Any,
    ) -> Flask:
        config = base_config(
            db_url,
            general_settings={"alerting": ["webhook"], **(general or {})},
            litellm_settings=litellm or {},
            plugins={"settings": {"webhook_alerter": {**FAST, **settings}}},
        )
        return make_app(config, plugins=plugins)

    yield factory
    webhook_alerter.shutdown()


def chat(client: Any, headers: dict[str, str] | None = None, **body: Any) -> Any:
    resp = client.post(
        "/chat/completions", json={**WEBHOOK_CALL_BODY, **body}, headers=headers or MASTER
    )
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp


def outbox_rows() -> list[OutboxAlert]:
    with database.connection_context():
        return list(OutboxAlert.select().order_by(OutboxAlert.created_at))


def customer_spend(user_id: str) -> float:
    with database.connection_context():
        return Customer.get_by_id(user_id).spend


# --- spend_tracked -------------------------------------------------------------


def test_seed_call_sends_spend_tracked_with_the_seeds_fields(alerting_app, receiver):
    client = alerting_app().test_client()
    chat(client)
    (delivery,) = receiver.wait_for(1, event="spend_tracked")
    payload = delivery.json
    spend = customer_spend("krrish12")
    assert list(payload) == WEBHOOK_FIELDS
    assert payload == webhook_spend_tracked_payload(spend)
    assert isinstance(payload["spend"], float) and spend > 0
    assert delivery.headers["content-type"] == "application/json"
    assert delivery.webhook_id == outbox_rows()[0].id


def test_spend_tracked_carries_the_customers_new_total(alerting_app, receiver):
    client = alerting_app().test_client()
    chat(client)
    chat(client)
    deliveries = receiver.wait_for(2, event="spend_tracked")
    with database.connection_context():
        costs = [row.spend for row in SpendLog.select().order_by(SpendLog.end_time)]
    spends = sorted(d.json["spend"] for d in deliveries)
    assert spends == pytest.approx([costs[0], costs[0] + costs[1]], abs=1e-12)
    assert spends[1] == customer_spend("krrish12")


def test_spend_tracked_names_the_virtual_key_its_user_and_the_customer_budget(
    alerting_app, receiver
):
    app = alerting_app()
    plain = "sk-webhook-test-key"
    with database.connection_context():
        User.create(user_id="u-7", user_email="u7@example.com", team_id="team-a")
        Key.create(
            token=hash_key(plain), key_name="sk-...-key", key_alias="billing",
            user_id="u-7", team_id="team-a",
        )  # fmt: skip
        Budget.create(budget_id="tier-1", max_budget=25.0)
        Customer.create(user_id="acme", budget_id="tier-1")
    chat(app.test_client(), headers={"Authorization": f"Bearer {plain}"}, user="acme")
    (delivery,) = receiver.wait_for(1, event="spend_tracked")
    payload = delivery.json
    assert payload["token"] == hash_key(plain)
    assert payload["key_alias"] == "billing"
    assert payload["user_id"] == "u-7"
    assert payload["user_email"] == "u7@example.com"
    assert payload["team_id"] == "team-a"
    assert payload["customer_id"] == "acme"
    assert payload["max_budget"] == 25.0
    assert payload["spend"] == customer_spend("acme")


def test_customer_on_the_default_budget_reports_that_max_budget(alerting_app, receiver):
    app = alerting_app(litellm={"max_end_user_budget_id": "default-tier"})
    with database.connection_context():
        Budget.create(budget_id="default-tier", max_budget=10.0)
    chat(app.test_client(), user="new-customer")
    (delivery,) = receiver.wait_for(1, event="spend_tracked")
    assert delivery.json["max_budget"] == 10.0
    assert delivery.json["customer_id"] == "new-customer"


def test_streamed_call_sends_spend_tracked_when_the_stream_ends(alerting_app, receiver):
    client = alerting_app().test_client()
    resp = client.post(
        "/chat/completions", json={**WEBHOOK_CALL_BODY, "stream": True}, headers=MASTER
    )
    assert resp.status_code == 200
    assert b"[DONE]" in resp.get_data()
    (delivery,) = receiver.wait_for(1, event="spend_tracked")
    assert delivery.json["spend"] == customer_spend("krrish12") > 0


def test_call_without_end_user_sends_no_spend_tracked(alerting_app, receiver):
    client = alerting_app().test_client()
    resp = client.post(
        "/chat/completions",
        json={"model": "mistral", "messages": [{"role": "user", "content": "hi"}]},
        headers=MASTER,
    )
    assert resp.status_code == 200
    # Alerts are queued in the spend transaction: by now there would be one.
    assert outbox_rows() == []
    chat(client)
    assert [row.event for row in outbox_rows()] == ["spend_tracked"]
    assert [d.json["customer_id"] for d in receiver.wait_for(1)] == ["krrish12"]


def test_alerting_off_writes_no_outbox_rows(make_app, db_url, receiver, monkeypatch):
    monkeypatch.setenv("WEBHOOK_URL", receiver.url)
    client = make_app(base_config(db_url)).test_client()
    chat(client)
    assert outbox_rows() == []
    assert webhook_alerter.active_sender() is None
    assert receiver.deliveries == []


# --- configuration -------------------------------------------------------------


def test_webhook_alerting_without_url_is_a_startup_error(make_app, db_url, monkeypatch):
    monkeypatch.delenv("WEBHOOK_URL", raising=False)
    config = base_config(db_url, general_settings={"alerting": ["webhook"]})
    with pytest.raises(ConfigError, match="WEBHOOK_URL"):
        make_app(config)


def test_plugin_setting_url_is_used_without_the_environment(
    make_app, db_url, receiver, monkeypatch
):
    monkeypatch.delenv("WEBHOOK_URL", raising=False)
    config = base_config(
        db_url,
        general_settings={"alerting": ["webhook"]},
        plugins={"settings": {"webhook_alerter": {**FAST, "url": receiver.url}}},
    )
    try:
        chat(make_app(config).test_client())
        receiver.wait_for(1, event="spend_tracked")
    finally:
        webhook_alerter.shutdown()


# --- delivery ------------------------------------------------------------------


def test_sender_threads_start_with_the_first_request_and_stop_on_shutdown(alerting_app):
    app = alerting_app()
    sender = webhook_alerter.active_sender()
    assert sender is app.extensions["webhook_alerter"]
    # Not where the app is built (gunicorn --preload builds it before forking).
    assert not sender.running
    app.test_client().get("/health/liveliness")
    assert sender.running
    webhook_alerter.shutdown()
    assert not sender.running
    assert webhook_alerter.active_sender() is None


def test_signed_webhooks_follow_the_standard_webhooks_scheme(alerting_app, receiver):
    raw_key = b"comptroller-test-signing-key-32b"
    secret = "whsec_" + base64.b64encode(raw_key).decode()
    chat(alerting_app(general={"webhook_secret": secret}).test_client())
    (delivery,) = receiver.wait_for(1)
    msg_id = delivery.headers["webhook-id"]
    timestamp = delivery.headers["webhook-timestamp"]
    assert abs(int(timestamp) - time.time()) < 60
    signed = f"{msg_id}.{timestamp}.".encode() + delivery.body
    expected = base64.b64encode(hmac.new(raw_key, signed, hashlib.sha256).digest()).decode()
    assert delivery.headers["webhook-signature"] == f"v1,{expected}"


def test_unsigned_webhooks_carry_no_signature(alerting_app, receiver):
    chat(alerting_app().test_client())
    (delivery,) = receiver.wait_for(1)
    assert delivery.webhook_id
    assert "webhook-signature" not in delivery.headers


def test_failed_deliveries_are_retried_with_the_same_webhook_id(alerting_app, receiver):
    receiver.status = 503
    chat(alerting_app().test_client())
    row = wait_until(lambda: [r for r in outbox_rows() if r.attempts >= 2], timeout=10)[0]
    assert row.sent_at is None and row.last_error == "HTTP 503"
    assert receiver.refused >= 2
    receiver.status = 200
    (delivery,) = receiver.wait_for(1, timeout=10)
    assert delivery.webhook_id == row.id
    sent = wait_until(lambda: [r for r in outbox_rows() if r.sent_at is not None])
    assert sent[0].attempts >= 3
    assert receiver.id_counts() == {row.id: 1}


def test_dead_webhook_fails_no_call_and_every_alert_arrives_when_it_is_back(alerting_app, receiver):
    receiver.stop()
    client = alerting_app().test_client()
    for n in range(8):
        chat(client, user=f"customer-{n}")
    # The sender has tried and failed: the alerts wait in the outbox.
    wait_until(lambda: any(r.last_error for r in outbox_rows()), timeout=10)
    assert all(r.sent_at is None for r in outbox_rows())
    receiver.start()
    deliveries = receiver.wait_for(8, timeout=15)
    assert sorted(d.json["customer_id"] for d in deliveries) == [f"customer-{n}" for n in range(8)]
    wait_until(lambda: all(r.sent_at is not None for r in outbox_rows()))
    assert set(receiver.id_counts().values()) == {1}
    assert len(receiver.deliveries) == 8


def test_an_alert_the_receiver_keeps_refusing_does_not_hold_up_the_others(alerting_app, receiver):
    receiver.refuse = lambda payload: payload.get("customer_id") == "poison"
    client = alerting_app().test_client()
    chat(client, user="poison")
    for n in range(5):
        chat(client, user=f"fine-{n}")
    deliveries = receiver.wait_for(5, timeout=10)
    assert sorted(d.json["customer_id"] for d in deliveries) == [f"fine-{n}" for n in range(5)]
    wait_until(lambda: [r for r in outbox_rows() if r.attempts >= 3 and r.sent_at is None])
    receiver.refuse = None
    receiver.wait_for(6, timeout=10)
    assert receiver.id_counts().most_common(1)[0][1] == 1


def test_slow_webhook_adds_no_latency_to_calls(alerting_app, receiver):
    receiver.delay = 1.5
    client = alerting_app(concurrency=1).test_client()
    chat(client, user="warm-up")
    took = []
    for n in range(5):
        start = time.perf_counter()
        chat(client, user=f"slow-{n}")
        took.append(time.perf_counter() - start)
    # The sender is busy in a 1.5 s POST during all of these calls.
    assert max(took) < 0.5, took
    assert receiver.wait_for(1, timeout=10)


def test_each_alert_wakes_one_sender_thread_whose_claim_finds_it(
    alerting_app, receiver, monkeypatch
):
    """Two sender threads, alerts queued one at a time: each wake-up is one claim, and
    it finds the alert (waking both threads made the second claim find nothing)."""
    import plugins.webhook_alerter.outbox as outbox

    client = alerting_app(concurrency=2, poll_interval=60).test_client()
    chat(client, user="warm-up")
    assert receiver.wait_for(1, timeout=10)
    claims: list[int] = []
    claim_due = outbox.claim_due

    def recorded(*args: Any, **kwargs: Any) -> Any:
        token, claimed = claim_due(*args, **kwargs)
        claims.append(len(claimed))
        return token, claimed

    monkeypatch.setattr(outbox, "claim_due", recorded)
    for n in range(4):
        chat(client, user=f"one-at-a-time-{n}")
        assert receiver.wait_for(2 + n, timeout=10)
    wait_until(lambda: len(claims) >= 4, timeout=5)
    time.sleep(0.2)  # a second thread woken by the last alert would claim within 0.05 s
    assert claims == [1, 1, 1, 1]


# --- alerts from elsewhere -----------------------------------------------------


class FailingAlerter:
    """A plugin whose on_alert runs before ours, breaks its transaction and raises."""

    def __init__(self) -> None:
        self.calls = 0

    def fail(self) -> None:
        self.calls += 1
        # On PostgreSQL a failed statement aborts the whole transaction
        # unless the core isolates the plugin in a savepoint.
        database.execute_sql("SELECT * FROM no_such_table_for_this_test")

    @hookimpl(tryfirst=True)
    def on_alert(self, alert: Alert) -> None:
        self.fail()


class LateFailingAlerter(FailingAlerter):
    """The same, running after ours."""

    @hookimpl(trylast=True)
    def on_alert(self, alert: Alert) -> None:
        self.fail()


@pytest.mark.parametrize("failing", [FailingAlerter, LateFailingAlerter])
def test_a_failing_on_alert_of_another_plugin_does_not_stop_webhooks(
    alerting_app, receiver, failing
):
    plugin = failing()
    client = alerting_app(plugins=[("failing_alerter", plugin)]).test_client()
    chat(client)
    (delivery,) = receiver.wait_for(1, event="spend_tracked")
    assert plugin.calls == 1
    # The spend landed with the alert.
    assert delivery.json["spend"] == customer_spend("krrish12")


class BudgetAlerts:
    """Stands in for a budget plugin: raises a budget alert on every call."""

    @hookimpl
    def post_call_spend(self, ctx: Any, usage: Any, cost: float) -> None:
        ctx.alerts.append(
            Alert(
                spend=ctx.spend_after.get("proxy"),
                max_budget=0.0,
                event="budget_crossed",
                event_group="proxy",
                event_message="Proxy Budget: Budget Crossed",
            )
        )


def test_alerts_from_other_plugins_are_delivered_as_given(alerting_app, receiver):
    client = alerting_app(plugins=[("budget_alerts", BudgetAlerts())]).test_client()
    chat(client)
    (delivery,) = receiver.wait_for(1, event="budget_crossed")
    assert delivery.json["event_group"] == "proxy"
    assert delivery.json["max_budget"] == 0.0
    assert delivery.json["event_message"] == "Proxy Budget: Budget Crossed"
    assert len(receiver.wait_for(2)) == 2  # and the call's spend_tracked


def test_key_created_from_the_admin_api_is_delivered(alerting_app, receiver):
    client = alerting_app().test_client()
    resp = client.post("/key/generate", json={"key_alias": "ops", "max_budget": 5}, headers=MASTER)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    (delivery,) = receiver.wait_for(1, event="key_created")
    assert delivery.json["token"] == resp.get_json()["token"]
    assert delivery.json["key_alias"] == "ops"
    assert delivery.json["event_group"] == "key"


# --- projected_limit_exceeded --------------------------------------------------


def _call_cost(client: Any) -> float:
    chat(client, user=None)
    with database.connection_context():
        return SpendLog.select().order_by(SpendLog.end_time.desc()).first().spend


def test_projected_limit_exceeded_fires_once_per_key_per_period(alerting_app, receiver):
    client = alerting_app().test_client()
    cost = _call_cost(client)
    plain = "sk-projected-key"
    now = time.time()
    with database.connection_context():
        # Half of a one-hour period has passed; the budget is three calls.
        Key.create(
            token=hash_key(plain), key_name="sk-...-key", max_budget=3 * cost,
            budget_duration="1h", created_at=now - 1800,
        )  # fmt: skip
    headers = {"Authorization": f"Bearer {plain}"}
    chat(client, headers=headers, user=None)  # spend 1 call: projects 2 calls, no alert
    chat(client, headers=headers, user=None)  # spend 2 calls: projects 4 > 3, alert
    chat(client, headers=headers, user=None)  # same period: no second alert
    (delivery,) = receiver.wait_for(1, event="projected_limit_exceeded")
    payload = delivery.json
    assert payload["event_group"] == "key"
    assert payload["token"] == hash_key(plain)
    assert payload["spend"] == pytest.approx(2 * cost, rel=1e-9)
    assert payload["max_budget"] == pytest.approx(3 * cost, rel=1e-9)
    assert payload["projected_spend"] == pytest.approx(4 * cost, rel=0.01)
    # At that rate the budget runs out three quarters into the period.
    exceeded = _epoch(payload["projected_exceeded_date"])
    assert exceeded == pytest.approx(now - 1800 + 2700, abs=30)
    wait_until(lambda: all(r.sent_at is not None for r in outbox_rows()))
    assert len(receiver.of_event("projected_limit_exceeded")) == 1


def test_customer_projection_uses_its_budget_rows_period(alerting_app, receiver):
    client = alerting_app().test_client()
    cost = _call_cost(client)
    now = time.time()
    with database.connection_context():
        Budget.create(budget_id="daily", max_budget=1.5 * cost, budget_duration="1d")
        Customer.create(user_id="big-spender", budget_id="daily", created_at=now - 3600)
    chat(client, user="big-spender")
    (delivery,) = receiver.wait_for(1, event="projected_limit_exceeded")
    payload = delivery.json
    assert payload["event_group"] == "customer"
    assert payload["customer_id"] == "big-spender"
    assert payload["projected_spend"] == pytest.approx(cost * 24, rel=0.01)
    assert "Customer=big-spender" in payload["event_message"]


def test_proxy_projection_is_a_proxy_group_alert(alerting_app, receiver):
    cost = _call_cost(alerting_app().test_client())
    # A fresh period counts as 1/30 of a day gone: one call projects 30 calls.
    app = alerting_app(litellm={"max_budget": 20 * cost, "budget_duration": "1d"})
    with database.connection_context():
        SpendLog.delete().execute()
        ProxySpend.update(spend=0.0, budget_reset_at=None, created_at=time.time()).execute()
    chat(app.test_client(), user=None)
    (delivery,) = receiver.wait_for(1, event="projected_limit_exceeded")
    payload = delivery.json
    assert payload["event_group"] == "proxy"
    assert payload["max_budget"] == pytest.approx(20 * cost)
    assert payload["projected_spend"] == pytest.approx(30 * cost, rel=0.01)
    assert payload["event_message"].startswith("Proxy projected to exceed its budget")


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()
