"""Once-per-period alert marks do not pile up: marks of periods long over are deleted.

``budget_alert_sent`` (the budget plugins' 85%/95%/100%/soft lines) is pruned
by the per-call housekeeping of the budget plugins, at most once a minute
per process; ``webhook_alert_once`` (``projected_limit_exceeded``) by the
webhook sender's own housekeeping. Marks of the current period, of periods
that ended within the last hour (a call may still finish in them) and of
entities without a period stay, so every alert is still raised once per
period.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from plugins.budgets import alerts as budget_alerts
from plugins.budgets.alerts import BudgetAlertSent
from plugins.webhook_alerter import outbox
from plugins.webhook_alerter.outbox import AlertOnce
from plugins.webhook_alerter.sender import WebhookSender
from plugins.webhook_alerter.settings import WebhookSettings
from proxy.call.alerts import Alert
from proxy.call.auth import hash_key
from proxy.hookspecs import hookimpl
from proxy.storage.db import database
from proxy.storage.models import Key
from tests.support.budgets import CALL_COST, budget_config, chat, make_key, set_spend

HOUR, DAY = 3600.0, 86400.0


class AlertCapture:
    """Keeps every threshold alert it is handed."""

    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    @hookimpl
    def on_alert(self, alert: Alert) -> None:
        if alert.event == "threshold_crossed":
            self.alerts.append(alert)


def mark_sent(entity_id: str, period: float, line: float = 1.0) -> None:
    with database.connection_context():
        BudgetAlertSent.create(
            entity_kind="key",
            entity_id=entity_id,
            event="threshold_crossed",
            line=line,
            period=period,
            sent_at=time.time() - 2 * DAY,
        )


def marked_periods() -> list[tuple[str, float]]:
    with database.connection_context():
        rows = BudgetAlertSent.select().order_by(BudgetAlertSent.entity_id)
        return [(row.entity_id, row.period) for row in rows]


def set_key(plain: str, spend: float) -> None:
    set_spend(Key, hash_key(plain), spend)


def test_budget_alert_marks_of_periods_over_an_hour_ago_are_deleted(db_url, make_app, monkeypatch):
    app = make_app(budget_config(db_url))
    now = time.time()
    mark_sent("ended-yesterday", now - DAY)
    mark_sent("ended-two-hours-ago", now - 2 * HOUR)
    mark_sent("ended-ten-minutes-ago", now - 600)
    mark_sent("current", now + DAY)
    mark_sent("no-period", 0.0)
    monkeypatch.setattr(budget_alerts, "_next_prune", 0.0)  # this process's sweep is due

    assert chat(app).status_code == 200

    assert marked_periods() == [
        ("current", now + DAY),
        ("ended-ten-minutes-ago", now - 600),
        ("no-period", 0.0),
    ]
    assert budget_alerts._next_prune > time.time()  # the next sweep in a minute, not every call
    mark_sent("ended-yesterday", now - DAY)
    assert chat(app).status_code == 200
    assert ("ended-yesterday", now - DAY) in marked_periods()


def test_a_line_crossed_in_the_new_period_alerts_exactly_once(db_url, make_app, monkeypatch):
    capture = AlertCapture()
    app = make_app(budget_config(db_url), plugins=[("capture", capture)])
    now = time.time()
    top = 10 * CALL_COST  # the 85% line is 8.5 calls
    old_period = now - 0.5 * DAY
    plain = make_key(
        max_budget=top,
        budget_duration="1d",
        created_at=now - 1.5 * DAY,
        budget_reset_at=old_period,
        spend=9 * CALL_COST,
    )
    token = hash_key(plain)
    mark_sent(token, old_period, line=0.85 * top)  # the old period had its alert

    monkeypatch.setattr(budget_alerts, "_next_prune", 0.0)
    assert chat(app, plain).status_code == 200  # resets the key, then prunes
    assert marked_periods() == []
    with database.connection_context():
        new_period = Key.get_by_id(token).budget_reset_at
    assert new_period > now

    set_key(plain, spend=8 * CALL_COST)
    assert chat(app, plain).status_code == 200  # 8 -> 9 calls: crosses 85%
    assert [(a.event, a.max_budget) for a in capture.alerts] == [("threshold_crossed", top)]
    assert marked_periods() == [(token, new_period)]

    # The sweep runs again; a second call seeing the same crossing in this period
    # (as a racing worker may, to the last bit of a float) raises nothing.
    monkeypatch.setattr(budget_alerts, "_next_prune", 0.0)
    set_key(plain, spend=8 * CALL_COST)
    assert chat(app, plain).status_code == 200
    assert len(capture.alerts) == 1
    assert marked_periods() == [(token, new_period)]


def once_key(entity: str, period_end: float) -> str:
    """The key ``events.projected_limit_alerts`` marks an entity's period with."""
    return f"projected:{entity}:{period_end!r}"


def once_marks() -> set[str]:
    with database.connection_context():
        return {row.key for row in AlertOnce.select()}


@pytest.fixture
def marks(make_app: Any) -> dict[str, str]:
    """Once-only marks of every kind, all made two days ago."""
    make_app()
    now = time.time()
    keys = {
        "ended": once_key("key:abc", now - 2 * HOUR),
        "ended, id with colons": once_key("customer:acme:eu:42", now - DAY),
        "current": once_key("key:abc", now + DAY),
        "ended minutes ago": once_key("internal_user:u1", now - 600),
        "not a period": "projected:key:abc:",
        "another kind": "some-other-mark",
    }
    with database.connection_context():
        for key in keys.values():
            AlertOnce.create(key=key, created_at=now - 2 * DAY)
    return keys


def test_once_marks_of_periods_over_an_hour_ago_are_deleted(marks):
    with database.connection_context():
        assert outbox.delete_ended_once_marks() == 2
    assert once_marks() == set(marks.values()) - {marks["ended"], marks["ended, id with colons"]}


def test_a_new_mark_is_kept_even_for_a_period_already_over(make_app):
    make_app()
    now = time.time()
    late = once_key("key:abc", now - DAY)  # marked by a call that finished late
    with database.connection_context():
        assert outbox.first_time(late, now)
        assert outbox.delete_ended_once_marks(now) == 0
    assert once_marks() == {late}


def test_the_webhook_sender_prunes_once_marks_and_the_period_still_alerts_once(marks):
    sender = WebhookSender(WebhookSettings(url="http://127.0.0.1:9/hook", retention_days=0))
    try:
        assert sender.deliver_once() is False  # nothing to send: a housekeeping round
    finally:
        database.close()
    assert marks["ended"] not in once_marks()
    assert marks["current"] in once_marks()
    with database.connection_context():
        assert outbox.first_time(marks["current"]) is False  # still once per period
        next_period = once_key("key:abc", time.time() + 2 * DAY)
        assert outbox.first_time(next_period) is True
        assert outbox.first_time(next_period) is False
