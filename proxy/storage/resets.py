"""Budget resets applied exactly at read time.

An entity with a ``budget_duration`` has a ``budget_reset_at``. The first
read on or after that moment resets it with one conditional update
(``... WHERE budget_reset_at = <the value read>``): of two workers racing,
exactly one wins, and the schedule advances by whole periods from the
entity's creation, so a late reset never drifts. A changed period (an
admin update) restarts the schedule from creation without a reset:
:func:`reschedule`.
"""

from __future__ import annotations

from typing import Any

import peewee

from proxy.durations import first_reset, next_reset_after
from proxy.storage import clock, counters
from proxy.storage.models import ProxySpend

# Rows rescheduled per UPDATE: three bound values each, within the 999 of old SQLite.
_RESCHEDULE_BATCH = 300


def _reset_one(row: Any, pk_field: peewee.Field, duration: str | None, now: float) -> None:
    """Bring ``row`` (a key, user, customer or the proxy counter) up to date."""
    if not duration:
        return
    current = row.budget_reset_at
    if current is not None and current > now:
        return  # not due: no statement
    # Every counter is striped (proxy.storage.counters, proxy.storage.stripes): the
    # row's conditional update decides which worker resets, and that worker zeroes
    # the stripes in the same transaction.
    with ProxySpend._meta.database.atomic():
        if _reset_row(row, pk_field, duration, now):
            if type(row) is ProxySpend:
                counters.zero_stripes()
            else:
                counters.zero_entity_stripes(row.spend_kind, getattr(row, pk_field.name))


def _reset_row(row: Any, pk_field: peewee.Field, duration: str, now: float) -> bool:
    """The conditional update of one due row; True when this call zeroed its spend."""
    model = type(row)
    current = row.budget_reset_at
    pk = getattr(row, pk_field.name)
    if current is None:
        # First sight of a duration: schedule from creation, reset now if overdue.
        scheduled = first_reset(row.created_at or now, duration)
        target = next_reset_after(scheduled, duration, now)
        updates: dict[Any, Any] = {model.budget_reset_at: target}
        if scheduled <= now:
            updates[model.spend] = 0.0
        changed = (
            model.update(updates)
            .where((pk_field == pk) & (model.budget_reset_at.is_null()))
            .execute()
        )
    else:
        scheduled = current
        target = next_reset_after(current, duration, now)
        changed = (
            model.update({model.spend: 0.0, model.budget_reset_at: target})
            .where((pk_field == pk) & (model.budget_reset_at == current))
            .execute()
        )
    if changed:
        row.budget_reset_at = target
        if scheduled <= now:
            row.spend = 0.0
            return True
        return False
    # Another worker reset it first: read what it wrote.
    if model is ProxySpend:
        fresh = counters.proxy_counter()
    else:
        total = model.total_spend().alias("spend")  # base and stripes (models.StripedSpend)
        fresh = model.select(total, model.budget_reset_at).where(pk_field == pk).first()
    if fresh is not None:
        row.spend, row.budget_reset_at = fresh.spend, fresh.budget_reset_at
    return False


def apply_due_resets(*entities: tuple[Any, str | None], now: float | None = None) -> None:
    """Reset every ``(row, budget_duration)`` pair whose period has ended."""
    moment = clock.now() if now is None else now
    for row, duration in entities:
        if row is not None:
            _reset_one(row, type(row)._meta.primary_key, duration, moment)


def current_proxy_spend(budget_duration: str | None) -> float:
    """The proxy-wide counter as of now: a reset that is due is applied first,
    as every admin read does for the rows it shows."""
    row = counters.proxy_counter()
    if row is None:
        return 0.0
    apply_due_resets((row, budget_duration))
    return float(row.spend)


def scheduled_reset(created_at: float, duration: str | None, now: float) -> float | None:
    """The next reset after ``now``, in whole periods from creation (None: never)."""
    if not duration:
        return None
    return next_reset_after(first_reset(created_at, duration), duration, now)


def reschedule(model: Any, where: peewee.Expression, duration: str | None, now: float) -> int:
    """Put every ``model`` row matching ``where`` on ``duration``'s schedule.

    A changed period restarts each row's schedule from its creation, without
    a reset now; no period (``None``) clears ``budget_reset_at``. Runs in the
    caller's transaction; returns the number of rows rescheduled.
    """
    if not duration:
        return int(model.update({model.budget_reset_at: None}).where(where).execute())
    pk = model._meta.primary_key
    rows = model.select(pk, model.created_at).where(where).tuples()
    targets = [(key, scheduled_reset(created or now, duration, now)) for key, created in rows]
    for start in range(0, len(targets), _RESCHEDULE_BATCH):
        batch = targets[start : start + _RESCHEDULE_BATCH]
        model.update({model.budget_reset_at: peewee.Case(pk, batch)}).where(
            pk.in_([key for key, _ in batch])
        ).execute()
    return len(targets)
