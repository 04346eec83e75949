"""An upstream that bills more than the call's worst case: charged in full, never silent.

The upstream bills the adversarial amount (exactly the documented bound) plus
1,000 prompt tokens (tests/support/billing.py, its own count), so the overrun
is those tokens at the input price.
"""

from __future__ import annotations

from typing import Any

import pytest

from proxy.call.alerts import Alert
from proxy.call.auth import hash_key
from proxy.hookspecs import hookimpl
from proxy.storage.db import database
from proxy.storage.models import Key, SpendLog
from tests.conftest import MASTER, base_config, openai_model
from tests.support.billing import AdversarialBilling, OverBilling
from tests.support.budgets import chat, make_key
from tests.support.webhook_receiver import WebhookReceiver

IN, OUT = 2.0**-20, 2.0**-18
EXTRA = 1000
BODY: dict[str, Any] = {
    "messages": [{"role": "user", "content": "预算 budget 🙂"}],
    "max_tokens": 7,
    "n": 2,
}


class AlertCapture:
    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    @hookimpl
    def on_alert(self, alert: Alert) -> None:
        if alert.event == "cost_overrun":
            self.alerts.append(alert)


def config(db_url: str, upstream: Any, mode: str = "strict", **general: Any) -> dict:
    model = openai_model(
        "gpt-4o", upstream.base_url, input_cost_per_token=IN, output_cost_per_token=OUT
    )
    return base_config(
        db_url, model_list=[model], general_settings={"budget_enforcement": mode, **general}
    )


def bill_of(billing: Any) -> float:
    usage = billing.chat_usage({"model": "gpt-4o", **BODY}, answer_words=0)
    return usage["prompt_tokens"] * IN + usage["completion_tokens"] * OUT


@pytest.mark.parametrize("mode", ["strict", "check"])
def test_an_overbilled_call_is_charged_in_full_recorded_and_alerted(
    db_url, make_app, upstream, mode
) -> None:
    capture = AlertCapture()
    app = make_app(config(db_url, upstream, mode), plugins=[("capture", capture)])
    upstream.billing = OverBilling(extra=EXTRA)
    plain = make_key(max_budget=1.0)
    resp = chat(app, plain, model="gpt-4o", **BODY)
    assert resp.status_code == 200, resp.get_json()
    billed = bill_of(OverBilling(extra=EXTRA))
    reserved = bill_of(AdversarialBilling())
    with database.connection_context():
        row = SpendLog.get()
        key_spend = Key.get_by_id(hash_key(plain)).spend
    assert row.spend == billed == key_spend  # charged in full (powers of two: exact)
    assert row.overrun == billed - reserved == EXTRA * IN
    [alert] = capture.alerts
    assert alert.event_group == "proxy" and alert.token == hash_key(plain)
    assert alert.spend == billed and "more than its worst case" in alert.event_message
    metrics = app.test_client().get("/metrics", headers=MASTER).get_data(as_text=True)
    assert "comptroller_cost_overrun_calls_total 1" in metrics
    assert f"comptroller_cost_overrun_usd_total {EXTRA * IN!r}" in metrics
    as_json = app.test_client().get("/metrics", headers={**MASTER, "Accept": "application/json"})
    assert as_json.get_json()["cost_overruns"] == {"calls": 1, "usd": EXTRA * IN}


def test_a_call_within_its_bound_records_no_overrun(db_url, make_app, upstream) -> None:
    capture = AlertCapture()
    app = make_app(config(db_url, upstream), plugins=[("capture", capture)])
    upstream.billing = AdversarialBilling()
    plain = make_key(max_budget=1.0)
    assert chat(app, plain, model="gpt-4o", **BODY).status_code == 200
    with database.connection_context():
        row = SpendLog.get()
    assert row.spend == bill_of(AdversarialBilling()) and row.overrun == 0.0
    assert capture.alerts == []
    metrics = app.test_client().get("/metrics", headers=MASTER).get_data(as_text=True)
    assert "comptroller_cost_overrun_calls_total 0" in metrics


def test_the_webhook_alerter_delivers_the_overrun(db_url, make_app, upstream, monkeypatch):
    with WebhookReceiver() as receiver:
        monkeypatch.setenv("WEBHOOK_URL", receiver.url)
        app = make_app(config(db_url, upstream, alerting=["webhook"]))
        upstream.billing = OverBilling(extra=EXTRA)
        plain = make_key(max_budget=1.0)
        assert chat(app, plain, model="gpt-4o", **BODY).status_code == 200
        [delivery] = receiver.wait_for(1, event="cost_overrun")
    payload = delivery.json
    assert payload["event"] == "cost_overrun" and payload["event_group"] == "proxy"
    assert payload["token"] == hash_key(plain)
    assert payload["spend"] == bill_of(OverBilling(extra=EXTRA))
