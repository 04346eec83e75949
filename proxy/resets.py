"""Budget resets applied exactly at read time.

An entity with a ``budget_duration`` has a ``budget_reset_at``. The first
read on or after that moment resets it with one conditional update
(``... WHERE budget_reset_at = <the value read>``): of two workers racing,
exactly one wins, and the schedule advances by whole periods from the
entity's creation, so a late reset never drifts.
"""

from __future__ import annotations

import time
from typing import Any

import peewee

from proxy.durations import first_reset, next_reset_after


def _reset_one(row: Any, pk_field: peewee.Field, duration: str | None, now: float) -> None:
    """Bring ``row`` (a key, user, customer or the proxy counter) up to date."""
    if not duration:
        return
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
    elif current <= now:
        target = next_reset_after(current, duration, now)
        changed = (
            model.update({model.spend: 0.0, model.budget_reset_at: target})
            .where((pk_field == pk) & (model.budget_reset_at == current))
            .execute()
        )
    else:
        return
    if changed:
        row.budget_reset_at = target
        if current is not None or scheduled <= now:
            row.spend = 0.0
    else:
        # Another worker reset it first: read what it wrote.
        fresh = model.select(model.spend, model.budget_reset_at).where(pk_field == pk).first()
        if fresh is not None:
            row.spend, row.budget_reset_at = fresh.spend, fresh.budget_reset_at


def apply_due_resets(*entities: tuple[Any, str | None], now: float | None = None) -> None:
    """Reset every ``(row, budget_duration)`` pair whose period has ended."""
    moment = time.time() if now is None else now
    for row, duration in entities:
        if row is not None:
            _reset_one(row, type(row)._meta.primary_key, duration, moment)
