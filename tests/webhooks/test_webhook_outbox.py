"""The outbox's claims, on SQLite and PostgreSQL: who may send which alert when."""

from __future__ import annotations

import time

import pytest

from plugins.webhook_alerter import outbox
from plugins.webhook_alerter.outbox import OutboxAlert
from proxy.call.alerts import Alert
from proxy.storage.db import database

CLAIM = 30.0


@pytest.fixture
def db(make_app):
    """An app on this test's database (creates the plugin's tables), connected."""
    make_app()
    with database.connection_context():
        yield


def queue(n: int, now: float) -> list[str]:
    ids = []
    for i in range(n):
        alert = Alert(event="spend_tracked", event_group="customer", event_message=f"m{i}")
        outbox.enqueue(alert, now=now + i * 0.001)
        ids.append(alert.alert_id)
    return ids


def test_enqueue_stores_the_exact_payload_once(db):
    alert = Alert(spend=0.0011120000000000001, event="spend_tracked", event_group="customer",
                  event_message="x")  # fmt: skip
    outbox.enqueue(alert)
    outbox.enqueue(alert)  # the same alert twice is still one row
    (row,) = OutboxAlert.select()
    assert row.id == alert.alert_id
    assert '"spend": 0.0011120000000000001' in row.payload
    assert row.sent_at is None and row.attempts == 0


def test_claims_never_hand_one_alert_to_two_senders(db):
    now = time.time()
    ids = queue(5, now)
    token_a, first = outbox.claim_due(3, CLAIM, now=now + 1)
    token_b, second = outbox.claim_due(3, CLAIM, now=now + 1)
    _, third = outbox.claim_due(3, CLAIM, now=now + 1)
    assert [a.id for a in first] == ids[:3]  # oldest first
    assert [a.id for a in second] == ids[3:]
    assert third == []
    assert token_a != token_b


def test_an_expired_claim_can_be_taken_again(db):
    now = time.time()
    (alert_id,) = queue(1, now)
    stale_token, _ = outbox.claim_due(1, CLAIM, now=now)
    assert outbox.claim_due(1, CLAIM, now=now + CLAIM - 1)[1] == []
    token, (again,) = outbox.claim_due(1, CLAIM, now=now + CLAIM + 1)
    assert again.id == alert_id
    # The sender whose claim ran out cannot record its late attempt.
    assert outbox.mark_sent(alert_id, stale_token) is False
    assert outbox.mark_sent(alert_id, token) is True
    row = OutboxAlert.get_by_id(alert_id)
    assert row.sent_at is not None and row.attempts == 1 and row.claim_token is None


def test_sent_alerts_are_never_claimed_again(db):
    now = time.time()
    (alert_id,) = queue(1, now)
    token, _ = outbox.claim_due(1, CLAIM, now=now)
    outbox.mark_sent(alert_id, token)
    assert outbox.claim_due(10, CLAIM, now=now + 10 * CLAIM)[1] == []


def test_a_failed_alert_waits_for_its_retry_time(db):
    now = time.time()
    (alert_id,) = queue(1, now)
    token, _ = outbox.claim_due(1, CLAIM, now=now)
    assert outbox.mark_failed(alert_id, token, "HTTP 500", retry_at=now + 8)
    assert outbox.claim_due(1, CLAIM, now=now + 7)[1] == []
    _, (retry,) = outbox.claim_due(1, CLAIM, now=now + 9)
    assert retry.id == alert_id and retry.attempts == 1
    assert OutboxAlert.get_by_id(alert_id).last_error == "HTTP 500"


def test_released_alerts_are_due_at_once_without_counting_an_attempt(db):
    now = time.time()
    ids = queue(2, now)
    token, _ = outbox.claim_due(2, CLAIM, now=now + 1)
    assert outbox.release(ids, token) == 2
    _, again = outbox.claim_due(2, CLAIM, now=now + 1)
    assert [a.id for a in again] == ids and all(a.attempts == 0 for a in again)


def test_first_time_is_true_once_per_key(db):
    assert outbox.first_time("projected:key:abc:1.5") is True
    assert outbox.first_time("projected:key:abc:1.5") is False
    assert outbox.first_time("projected:key:abc:2.5") is True


def test_old_sent_alerts_are_deleted_and_unsent_ones_kept(db):
    now = time.time()
    sent_id, waiting_id = queue(2, now)
    token, _ = outbox.claim_due(1, CLAIM, now=now)
    outbox.mark_sent(sent_id, token, now=now - 10 * 86400)
    assert outbox.delete_sent_before(now - 7 * 86400) == 1
    assert [row.id for row in OutboxAlert.select()] == [waiting_id]


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)  # SQLite's clock is the host's
def test_a_sender_whose_clock_is_off_queues_and_claims_by_the_databases_clock(
    db, monkeypatch: pytest.MonkeyPatch
):
    """Another host's sender must not take a claim early (or late): every host times
    claims and due times with the database's clock, whatever its own says."""
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() - 30)  # this host is 30 s behind
    outbox.enqueue(Alert(event="spend_tracked", event_group="customer", event_message="m"))
    token, claimed = outbox.claim_due(1, CLAIM)
    assert len(claimed) == 1  # due at once, not in 30 s
    (row,) = OutboxAlert.select()
    assert row.created_at == pytest.approx(real(), abs=2)
    assert row.claimed_until == pytest.approx(real() + CLAIM, abs=2)
    assert row.claim_token == token
