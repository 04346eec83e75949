"""The outbox: alerts waiting for delivery, and the claims that hand them out.

``enqueue`` runs inside the spend transaction (an alert exists exactly when
the spend that caused it does). Senders in any worker or host take due rows
in one short transaction (``claim_due``): on PostgreSQL the candidate rows
are picked ``FOR UPDATE SKIP LOCKED`` (concurrent senders take different
rows, nobody waits), on SQLite the transaction holds the write lock. A
claim carries a random token and an expiry, so a sender that dies mid-batch
only delays its rows until the claim runs out, and a sender whose claim
expired cannot mark someone else's attempt.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

import peewee

from proxy.plugin_api import (
    Alert,
    PluginModel,
    atomic,
    database_now,
    defer_write,
    features,
    in_transaction,
    lock_rows,
    run,
)


class OutboxAlert(PluginModel):
    """One alert to POST. ``id`` is the alert id, sent as ``webhook-id``."""

    id = peewee.CharField(primary_key=True, max_length=64)
    event = peewee.CharField(max_length=64)
    # The exact JSON body: serialised once, so every retry sends the same bytes.
    payload = peewee.TextField()
    created_at = peewee.DoubleField()
    next_attempt_at = peewee.DoubleField()
    attempts = peewee.IntegerField(default=0)
    claimed_until = peewee.DoubleField(null=True)
    claim_token = peewee.CharField(null=True, max_length=32)
    sent_at = peewee.DoubleField(null=True)
    last_error = peewee.TextField(null=True)

    class Meta:
        table_name = "webhook_outbox"


# Partial indexes: senders look only at unsent rows, pruning only at sent
# ones, and an INSERT (unsent) touches just the first.
OutboxAlert.add_index(
    OutboxAlert.index(OutboxAlert.next_attempt_at, name="webhook_outbox_due").where(
        OutboxAlert.sent_at.is_null()
    )
)
OutboxAlert.add_index(
    OutboxAlert.index(OutboxAlert.sent_at, name="webhook_outbox_sent").where(
        OutboxAlert.sent_at.is_null(False)
    )
)


class AlertOnce(PluginModel):
    """Alerts that fire once per entity per budget period, by a stable key.

    A key ends with the end of the period it covers, ``...:<budget_reset_at>``
    (see ``events.projected_limit_alerts``): :func:`delete_ended_once_marks`
    reads it there.
    """

    key = peewee.CharField(primary_key=True, max_length=512)
    created_at = peewee.DoubleField()

    class Meta:
        table_name = "webhook_alert_once"


@dataclass
class ClaimedAlert:
    id: str
    payload: str
    attempts: int


_ENQUEUE = (
    "INSERT INTO webhook_outbox (id, event, payload, created_at, next_attempt_at, attempts) "
    "VALUES (%s, %s, %s, %s, %s, 0) ON CONFLICT (id) DO NOTHING"
)


def enqueue(alert: Alert, now: float | None = None) -> None:
    """Queue ``alert`` in the current transaction (idempotent by alert id).

    Nothing reads the statement's answer, so in the spend transaction on
    PostgreSQL it travels with the COMMIT (no round trip of its own).
    """
    moment = database_now() if now is None else now
    params = [alert.alert_id, alert.event, json.dumps(alert.payload()), moment, moment]
    defer_write(_ENQUEUE, params)


def first_time(key: str, now: float | None = None) -> bool:
    """True exactly once per ``key``, however many workers ask at once."""
    moment = database_now() if now is None else now
    inserted = AlertOnce.insert(key=key, created_at=moment).on_conflict_ignore()
    return bool(inserted.as_rowcount().execute())


def _due(now: float) -> peewee.Expression:
    claim_free = OutboxAlert.claimed_until.is_null() | (OutboxAlert.claimed_until < now)
    return OutboxAlert.sent_at.is_null() & (OutboxAlert.next_attempt_at <= now) & claim_free


# The SQL of the sender's every round, written out: building it with peewee's query
# builder cost more CPU than the round trip (a few hundred microseconds a query).
_ANY_DUE = (
    "SELECT EXISTS (SELECT 1 FROM webhook_outbox WHERE sent_at IS NULL "
    "AND next_attempt_at <= %s AND (claimed_until IS NULL OR claimed_until < %s))"
)


def any_due(now: float | None = None) -> bool:
    """Whether an alert is due and unclaimed (:func:`_due`)."""
    moment = database_now() if now is None else now
    return bool(run(_ANY_DUE, [moment, moment]).fetchone()[0])


def claim_due(
    limit: int, claim_seconds: float, now: float | None = None
) -> tuple[str, list[ClaimedAlert]]:
    """Claim up to ``limit`` due alerts, oldest first; returns (claim token, rows)."""
    moment = database_now() if now is None else now
    token = uuid.uuid4().hex
    if features().row_locks and not in_transaction():
        return token, _claim_due_in_one_statement(limit, moment + claim_seconds, token, moment)
    candidates = (
        OutboxAlert.select(OutboxAlert.id)
        .where(_due(moment))
        .order_by(OutboxAlert.next_attempt_at, OutboxAlert.created_at)
        .limit(limit)
    )
    candidates = lock_rows(candidates, skip_locked=True)
    # Two statements in one transaction, not UPDATE ... WHERE id IN (SELECT ...
    # LIMIT n): PostgreSQL may re-run such a subquery per row and claim more.
    with atomic():
        ids = [row.id for row in candidates]
        if not ids:
            return token, []
        query = (
            OutboxAlert.update(claimed_until=moment + claim_seconds, claim_token=token)
            .where(OutboxAlert.id.in_(ids))
            .returning(
                OutboxAlert.id, OutboxAlert.payload, OutboxAlert.attempts, OutboxAlert.created_at
            )
        )
        rows = sorted(query.execute(), key=lambda row: row.created_at)
    return token, [ClaimedAlert(row.id, row.payload, row.attempts) for row in rows]


# One statement, its own transaction. The candidates are picked once, in a
# MATERIALIZED CTE (never re-run per row, so never more than the limit), and
# locked SKIP LOCKED, so concurrent senders take different rows.
_CLAIM_SKIP_LOCKED = (
    "WITH picked AS MATERIALIZED (SELECT id FROM webhook_outbox WHERE sent_at IS NULL "
    "AND next_attempt_at <= %s AND (claimed_until IS NULL OR claimed_until < %s) "
    "ORDER BY next_attempt_at, created_at LIMIT %s FOR UPDATE SKIP LOCKED) "
    "UPDATE webhook_outbox AS o SET claimed_until = %s, claim_token = %s FROM picked "
    "WHERE o.id = picked.id RETURNING o.id, o.payload, o.attempts, o.created_at"
)


def _claim_due_in_one_statement(
    limit: int, claimed_until: float, token: str, now: float
) -> list[ClaimedAlert]:
    """:func:`claim_due` in one round trip instead of four (BEGIN, pick, claim, COMMIT)."""
    params = [now, now, limit, claimed_until, token]
    rows = sorted(run(_CLAIM_SKIP_LOCKED, params, prepare=False).fetchall(), key=lambda r: r[3])
    return [ClaimedAlert(row[0], row[1], row[2]) for row in rows]


def _claimed(alert_id: str, token: str) -> peewee.Expression:
    return (OutboxAlert.id == alert_id) & (OutboxAlert.claim_token == token)


_MARK_ALL_SENT = (
    "UPDATE webhook_outbox SET sent_at = %s, attempts = attempts + 1, claimed_until = NULL, "
    "claim_token = NULL, last_error = NULL WHERE id IN ({ids}) AND claim_token = %s"
)


def mark_sent(alert_id: str, token: str, now: float | None = None) -> bool:
    """True if this claim still held the alert (a stale token marks nothing)."""
    return mark_all_sent([alert_id], token, now) == 1


def mark_all_sent(alert_ids: list[str], token: str, now: float | None = None) -> int:
    """:func:`mark_sent` for several alerts of one claim, in one statement."""
    if not alert_ids:
        return 0
    moment = database_now() if now is None else now
    ids = ", ".join(["%s"] * len(alert_ids))
    sql = _MARK_ALL_SENT.format(ids=ids)
    # Not prepared: the statement differs with the number of alerts.
    return int(run(sql, [moment, *alert_ids, token], prepare=False).rowcount)


def mark_failed(alert_id: str, token: str, error: str, retry_at: float) -> bool:
    changed = (
        OutboxAlert.update(
            attempts=OutboxAlert.attempts + 1,
            next_attempt_at=retry_at,
            claimed_until=None,
            claim_token=None,
            last_error=error[:1000],
        )
        .where(_claimed(alert_id, token))
        .execute()
    )
    return bool(changed)


def release(alert_ids: list[str], token: str) -> int:
    """Give back claimed alerts that were not attempted (no attempt counted)."""
    if not alert_ids:
        return 0
    return (
        OutboxAlert.update(claimed_until=None, claim_token=None)
        .where(OutboxAlert.id.in_(alert_ids) & (OutboxAlert.claim_token == token))
        .execute()
    )


def delete_sent_before(cutoff: float) -> int:
    return OutboxAlert.delete().where(OutboxAlert.sent_at < cutoff).execute()


# A call names its period by the budget_reset_at it read when it started, and
# may mark its alert after that moment: longer than any call runs.
ONCE_MARK_GRACE_SECONDS = 3600.0
_PERIOD_END_CHARS = "0123456789."


def delete_ended_once_marks(now: float | None = None) -> int:
    """Delete the once-only marks of periods that ended over an hour ago.

    Once an entity's period has ended, its reads reset it and name the next
    period, so nobody asks for the old key again. A key that does not end
    with ``:<number>`` is never deleted.
    """
    cutoff = (database_now() if now is None else now) - ONCE_MARK_GRACE_SECONDS
    key = AlertOnce.key
    head = peewee.fn.RTRIM(key, _PERIOD_END_CHARS)  # the key without its period end
    ends_with_period = head.endswith(":") & (peewee.fn.LENGTH(head) < peewee.fn.LENGTH(key))
    # CASE: the cast only ever sees a number (PostgreSQL would fail the statement).
    period_end = peewee.Case(
        None,
        [(ends_with_period, peewee.fn.SUBSTR(key, peewee.fn.LENGTH(head) + 1).cast("FLOAT"))],
    )
    ended = (AlertOnce.created_at < cutoff) & (period_end < cutoff)
    return int(AlertOnce.delete().where(ended).execute())
