"""Builtin plugin ``strict_budgets``: reserve before, settle after.

On with ``general_settings.budget_enforcement: strict``. Each budget plugin's
check *claims* the call's worst case (``ctx.estimated_cost``) against the
entity it guards (:func:`plugins.budgets.common.claim`). Once every check
has passed, this plugin's wrapper around ``pre_request_check`` reserves all
claims in one transaction: it locks its own row for each entity
(``budget_reservation_lock``, in the order the spend transaction updates the
entities), reads their committed spend and what calls in flight hold in one
statement (one snapshot), and writes one ``budget_reservation`` row per
entity only if ``reserved + spend + estimate <= max_budget`` holds for every
one of them; otherwise nothing is written and the call is refused (or, with
``clamp_max_tokens``, sent with a ``max_tokens`` that fits).

A reservation is settled inside the spend transaction (the core adds the
real cost to spend, the deferred ``DELETE`` of the reservation travels with
its commit: both land together) and released when the call fails, is
refused later or the client goes away. Every reservation also carries an
expiry: what a call holds is the sum of its unexpired rows, so a worker that
dies mid-call stops holding budget when its rows expire, without anyone
having to notice. Expired rows are deleted now and then, as housekeeping.

Disabled (``plugins.disable: [strict_budgets]``), strict mode checks as
``check`` mode does: nothing is reserved.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import peewee

from plugins.budgets import clamp
from plugins.budgets.common import CHECK_ORDER, CLAIMS, LOCK_ORDER, Guarded, fmt
from proxy.plugin_api import (
    CallContext,
    PluginModel,
    Refusal,
    Usage,
    after_commit,
    database_now,
    defer_write,
    hookimpl,
    lock_rows,
    run,
    spend_expression,
    transaction,
)

log = logging.getLogger("comptroller.plugins.reservations")

STATE_KEY = "strict_budgets"
# A call waits at most its timeout to connect and again to read the answer;
# a reservation outlives that by a margin for recording the spend.
TTL_MARGIN_SECONDS = 5.0
GC_INTERVAL_SECONDS = 60.0
_next_gc = 0.0


class BudgetReservation(PluginModel):
    """Money a call in flight holds against one entity's budget."""

    id = peewee.AutoField()
    request_id = peewee.CharField(max_length=64, index=True)
    entity_kind = peewee.CharField(max_length=16)
    entity_id = peewee.CharField(max_length=255)
    amount = peewee.DoubleField()
    expires_at = peewee.DoubleField()
    created_at = peewee.DoubleField(default=database_now)

    class Meta:
        table_name = "budget_reservation"
        indexes = ((("entity_kind", "entity_id", "expires_at"), False),)


class ReservationLock(PluginModel):
    """One row per entity ever reserved against: what reservations lock, so that
    two reservations of one entity take turns."""

    entity_kind = peewee.CharField(max_length=16)
    entity_id = peewee.CharField(max_length=255)
    locked_at = peewee.DoubleField()

    class Meta:
        table_name = "budget_reservation_lock"
        primary_key = peewee.CompositeKey("entity_kind", "entity_id")


@dataclass
class _Reserved:
    settled: bool = False

    def mark_settled(self) -> None:
        self.settled = True


def ttl(ctx: CallContext) -> float:
    """How long a reservation holds. A stream reads each chunk within the timeout, so
    a stream longer than this stops holding its worst case (it is still charged)."""
    return 2 * ctx.max_upstream_seconds + TTL_MARGIN_SECONDS


@hookimpl
def plugin_migrations() -> tuple[str, str]:
    return ("strict_budgets", "plugins.budgets.strict_migrations")


@hookimpl(wrapper=True)
def pre_request_check(ctx: CallContext) -> Generator[None, Any, Refusal | None]:
    """Around all checks: once none refused, reserve what the budget plugins claimed."""
    refusal = yield
    claims: list[Guarded] = ctx.plugin_state.pop(CLAIMS, [])
    if refusal is not None or not claims:
        return refusal
    return reserve(ctx, claims)


@hookimpl
def post_call_spend(ctx: CallContext, usage: Usage, cost: float) -> None:
    """In the spend transaction: the real cost is now in spend, drop the reservation."""
    reserved: _Reserved | None = ctx.plugin_state.get(STATE_KEY)
    if reserved is None:
        return
    defer_write("DELETE FROM budget_reservation WHERE request_id = %s", [ctx.request_id])
    after_commit(reserved.mark_settled)


@hookimpl
def call_finished(ctx: CallContext, outcome: str) -> None:
    """The call is over: whatever it still holds goes back (nothing after a settle)."""
    reserved: _Reserved | None = ctx.plugin_state.pop(STATE_KEY, None)
    if reserved is not None and not reserved.settled:
        R = BudgetReservation
        R.delete().where(R.request_id == ctx.request_id).execute()
    housekeeping(ctx.now())


def _lock(ordered: list[Guarded], moment: float) -> None:
    """Lock this plugin's row of every entity, in lock order (made on first use)."""
    rows = ", ".join(["(%s, %s, %s)"] * len(ordered))
    params: list[Any] = []
    for g in ordered:
        params += [g.kind, g.entity_id, moment]
    run(
        f"INSERT INTO budget_reservation_lock (entity_kind, entity_id, locked_at) VALUES {rows} "
        "ON CONFLICT (entity_kind, entity_id) DO UPDATE SET locked_at = EXCLUDED.locked_at",
        params,
    )


def _read(ordered: list[Guarded], moment: float) -> tuple[dict[str, float], dict[str, float]]:
    """Each entity's committed spend and what unexpired reservations hold against
    it, in one statement: a settling call's spend and its deleted reservation
    are seen together or not at all."""
    columns: list[str] = []
    params: list[Any] = []
    for g in ordered:
        spend_sql, spend_params = spend_expression(g.kind, g.entity_id)
        columns.append(spend_sql)
        params += spend_params
        columns.append(
            "(SELECT COALESCE(SUM(amount), 0) FROM budget_reservation "
            "WHERE entity_kind = %s AND entity_id = %s AND expires_at > %s)"
        )
        params += [g.kind, g.entity_id, moment]
    row = run(f"SELECT {', '.join(columns)}", params).fetchone()
    spend: dict[str, float] = {}
    held: dict[str, float] = {}
    for index, g in enumerate(ordered):
        current, holding = row[2 * index], row[2 * index + 1]
        spend[g.kind] = float(current) if current is not None else g.spend
        held[g.kind] = float(holding or 0.0)
    return spend, held


def reserve(ctx: CallContext, claims: list[Guarded]) -> Refusal | None:
    """Reserve the call's worst case against every claimed entity, or nothing."""
    moment = ctx.now()
    by_kind = {g.kind: g for g in claims}
    ordered = [by_kind[kind] for kind in LOCK_ORDER if kind in by_kind]
    with transaction() as txn:
        _lock(ordered, moment)
        spend, held = _read(ordered, moment)

        def fits(cost: float) -> bool:
            return all(
                held[g.kind] + spend[g.kind] + cost <= (g.max_budget or 0.0) for g in ordered
            )

        if not fits(ctx.estimated_cost):
            tokens = 0
            if ctx.config.general_settings.clamp_max_tokens:
                room = min((g.max_budget or 0.0) - spend[g.kind] - held[g.kind] for g in ordered)
                tokens = clamp.largest_output(ctx, room, fits)
            if tokens < 1:
                txn.rollback()
                return _refusal(ctx, by_kind, spend, held)
            clamp.apply_clamp(ctx, tokens)
        expires = moment + ttl(ctx)
        rows = ", ".join(["(%s, %s, %s, %s, %s, %s)"] * len(ordered))
        params: list[Any] = []
        for g in ordered:
            params += [ctx.request_id, g.kind, g.entity_id, ctx.estimated_cost, expires, moment]
        # Nobody reads its answer: it travels with the COMMIT.
        defer_write(
            "INSERT INTO budget_reservation (request_id, entity_kind, entity_id, amount, "
            f"expires_at, created_at) VALUES {rows}",
            params,
        )
    ctx.plugin_state[STATE_KEY] = _Reserved()
    return None


def _refusal(
    ctx: CallContext, by_kind: dict[str, Guarded], spend: dict[str, float], held: dict[str, float]
) -> Refusal:
    """The first level, in SPEC order, that cannot take the call's worst case."""
    cost = ctx.estimated_cost
    for kind in CHECK_ORDER:
        g = by_kind.get(kind)
        if g is not None and not held[kind] + spend[kind] + cost <= (g.max_budget or 0.0):
            detail = (
                f" (strict budget: this call may cost up to {fmt(cost)}"
                f" and calls in flight hold {fmt(held[kind])})"
            )
            return g.refusal(spend=spend[kind], detail=detail)
    raise AssertionError("a reservation failed but every budget has room")


def housekeeping(moment: float) -> None:
    """Once per :data:`GC_INTERVAL_SECONDS` per process: delete expired
    reservations (they already hold nothing); a time check per call, no thread."""
    global _next_gc
    if moment < _next_gc:
        return
    _next_gc = moment + GC_INTERVAL_SECONDS
    R = BudgetReservation
    # Never wait for a row a settling call has locked (nor make it wait for us).
    expired = lock_rows(R.select(R.id).where(R.expires_at <= moment), skip_locked=True)
    try:
        R.delete().where(R.id.in_(expired)).execute()
    except peewee.PeeweeException:
        log.warning("deleting expired budget reservations failed", exc_info=True)
