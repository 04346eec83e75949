"""Budget alerts: ``threshold_crossed`` (85%, 95%), ``budget_crossed`` (100%)
and ``soft_budget_crossed``, once per entity per budget period.

Every spend counter is striped (proxy.storage.counters,
proxy.storage.stripes): increments of one entity do not run one after
another, so the total a call reads back from its increment
(``ctx.spend_after``) may miss a concurrent call's cost, and two concurrent
calls may each read back a total below a line that their sum crosses. So
every call that reads back a total at or above a line claims the line's
mark, a row in ``budget_alert_sent`` (primary key: entity, event, line,
period), and the call whose claim inserts it raises the alert: exactly once
per period, at worst one call late. Each process remembers the marks it saw
taken, so calls long past a line send no statement. Rows of periods long
over are deleted now and then (:func:`prune_past_periods`). This module is
not a plugin.
"""

from __future__ import annotations

import logging
import weakref
from typing import TYPE_CHECKING, Any

import peewee

from plugins.budgets.common import EVENT_GROUPS, Guarded, fmt
from proxy.plugin_api import Alert, PluginModel, atomic, database_now

if TYPE_CHECKING:
    from proxy.plugin_api import CallContext

log = logging.getLogger("comptroller.plugins.budget_alerts")

THRESHOLDS = (85, 95)
# Marks seen taken, per process and per database (see the module's docstring): held
# by the database object itself, never by its id(), which a later database may reuse
# once the first is gone (tests hand one process many databases).
_MARKS_REMEMBERED = 4096
_marks_taken: weakref.WeakKeyDictionary[Any, set[tuple[str, str, str, float, float]]] = (
    weakref.WeakKeyDictionary()
)
# A call names its period by the budget_reset_at it read when it started, and
# may record its alert after that moment: longer than any call runs.
PRUNE_AFTER_SECONDS = 3600.0
PRUNE_INTERVAL_SECONDS = 60.0
_next_prune = 0.0
TITLES = {"proxy": "Proxy", "key": "Key", "user": "User", "team": "Team", "customer": "Customer"}


class BudgetAlertSent(PluginModel):
    """One alert raised for an entity in one budget period."""

    entity_kind = peewee.CharField(max_length=16)
    entity_id = peewee.CharField(max_length=255)
    event = peewee.CharField(max_length=32)
    line = peewee.DoubleField()  # the amount crossed, in US dollars
    period = peewee.DoubleField()  # the entity's budget_reset_at, 0 without a duration
    sent_at = peewee.DoubleField(default=database_now)

    class Meta:
        table_name = "budget_alert_sent"
        primary_key = peewee.CompositeKey("entity_kind", "entity_id", "event", "line", "period")


def _first_time(guarded: Guarded, event: str, line: float) -> bool:
    """Record the alert; False when this period already had it."""
    try:
        with atomic():  # a savepoint: a failure cannot abort the spend
            inserted = list(
                BudgetAlertSent.insert(
                    entity_kind=guarded.kind,
                    entity_id=guarded.entity_id,
                    event=event,
                    line=line,
                    period=guarded.period,
                )
                .on_conflict_ignore()
                .returning(BudgetAlertSent.event)
                .execute()
            )
        return bool(inserted)
    except peewee.DatabaseError:
        log.exception("recording a %s alert failed; sending it anyway", event)
        return True  # better twice than never


def housekeeping(moment: float) -> None:
    """Once per :data:`PRUNE_INTERVAL_SECONDS` per process (the budget plugins'
    ``call_finished``, a time check per call, no thread): prune past periods."""
    global _next_prune
    if moment < _next_prune:
        return
    _next_prune = moment + PRUNE_INTERVAL_SECONDS
    try:
        prune_past_periods(moment)
    except peewee.PeeweeException:
        log.warning("deleting the alert marks of past budget periods failed", exc_info=True)


def prune_past_periods(now: float) -> int:
    """Housekeeping: delete the rows of periods that ended over an hour ago.

    Once its period has ended, an entity's reads reset it and name the new
    period, so nobody asks for the old rows again. Rows without a period (0:
    no ``budget_duration``) stay: that "period" never ends.
    """
    S = BudgetAlertSent
    over = (S.period > 0) & (S.period < now - PRUNE_AFTER_SECONDS)
    return int(S.delete().where(over).execute())


def _alert(ctx: CallContext, guarded: Guarded, event: str, title: str, spend: float) -> Alert:
    who = f"{guarded.name}, " if guarded.name else ""
    limit = (
        f"soft_budget={fmt(guarded.soft_budget)}"
        if event == "soft_budget_crossed" and guarded.soft_budget is not None
        else f"max_budget={fmt(guarded.max_budget or 0.0)}"
    )
    return Alert(
        spend=spend,
        max_budget=guarded.max_budget,
        token=ctx.key_hash,
        customer_id=ctx.end_user_id,
        user_id=ctx.user_id,
        team_id=ctx.team_id,
        user_email=ctx.user.user_email if ctx.user is not None else None,
        key_alias=ctx.key.key_alias if ctx.key is not None else None,
        event=event,
        event_group=EVENT_GROUPS[guarded.kind],
        event_message=f"{title}. {who}spend={fmt(spend)}, {limit}",
    )


def raise_crossing_alerts(ctx: CallContext, guarded: Guarded | None, cost: float) -> None:
    """Append to ``ctx.alerts`` every line this call's spend reached first."""
    if guarded is None:
        return
    new = ctx.spend_after.get(guarded.kind)
    if new is None or cost <= 0:
        return
    title = TITLES[guarded.kind]
    lines: list[tuple[str, float, str]] = []
    top = guarded.max_budget
    if top is not None and top > 0:
        for pct in THRESHOLDS:
            text = f"{title} crossed {pct}% of its budget"
            lines.append(("threshold_crossed", top * pct / 100, text))
        lines.append(("budget_crossed", top, f"{title} budget crossed"))
    soft = guarded.soft_budget
    if soft is not None and soft > 0:
        lines.append(("soft_budget_crossed", soft, f"{title} soft budget crossed"))
    for event, line, text in lines:
        if _reached_first(guarded, event, line, new):
            ctx.alerts.append(_alert(ctx, guarded, event, text, new))


def _reached_first(guarded: Guarded, event: str, line: float, new: float) -> bool:
    """A counter at or above ``line``: True for the one call that takes its mark."""
    if new < line:
        return False
    # Per database too: a process that is handed another one (tests) starts afresh.
    proxy = BudgetAlertSent._meta.database  # the proxy the core initialises
    database = getattr(proxy, "obj", proxy)
    taken = _marks_taken.get(database)
    mark = (guarded.kind, guarded.entity_id, event, line, guarded.period)
    if taken is not None and mark in taken:
        return False  # no statement for calls long past the line
    first = _first_time(guarded, event, line)
    if not first:  # taken and committed by another call (ours might yet roll back)
        if taken is None:
            taken = _marks_taken.setdefault(database, set())
        if len(taken) >= _MARKS_REMEMBERED:
            taken.clear()
        taken.add(mark)
    return first
