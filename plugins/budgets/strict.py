"""``general_settings.budget_enforcement: strict``: reserve before, settle after.

Each budget plugin's check *claims* the call's worst case
(``ctx.estimated_cost``) against the entity it guards. Once every check has
passed, :func:`reserve_claims` (a wrapper around ``pre_request_check``)
reserves all claims in one transaction: it locks the entities' rows in the
order the spend transaction updates them, reads their spend and what calls
in flight hold, and writes one ``budget_reservation`` row per entity only if
``reserved + spend + estimate <= max_budget`` holds for every one of them;
otherwise nothing is written and the call is refused (or, with
``clamp_max_tokens``, sent with a ``max_tokens`` that fits).

A reservation is settled inside the spend transaction (the core adds the
real cost to spend, :func:`settle` deletes the reservation: both land
together) and released when the call fails, is refused later or the client
goes away (:func:`release`). Every reservation also carries an expiry:
what a call holds is the sum of its unexpired rows, so a worker that dies
mid-call stops holding budget when its rows expire, without anyone having
to notice. Expired rows are deleted now and then, only as housekeeping
(:func:`housekeeping`, which also prunes the budget alerts' marks of
periods long over).

This module is not a plugin; every budget plugin registers its hooks.
"""

from __future__ import annotations

import functools
import logging
import operator
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import peewee

from plugins.budgets import clamp
from plugins.budgets.alerts import prune_past_periods
from plugins.budgets.common import CHECK_ORDER, LOCK_ORDER, Guarded, fmt
from proxy.call.context import Refusal
from proxy.storage.db import BaseModel, database, is_postgres
from proxy.storage.models import Customer, Key, ProxySpend, Team, User, now

if TYPE_CHECKING:
    from proxy.call.context import CallContext

log = logging.getLogger("comptroller.plugins.reservations")

STATE_KEY = "budget_reservations"
# A call waits at most its timeout to connect and again to read the answer;
# a reservation outlives that by a margin for recording the spend.
TTL_MARGIN_SECONDS = 5.0
GC_INTERVAL_SECONDS = 60.0

_SPEND_ROWS: dict[str, tuple[type[BaseModel], peewee.Field]] = {
    "key": (Key, Key.token),
    "user": (User, User.user_id),
    "team": (Team, Team.team_id),
    "customer": (Customer, Customer.user_id),
    "proxy": (ProxySpend, ProxySpend.id),
}
_next_gc = 0.0


class BudgetReservation(BaseModel):
    """Money a call in flight holds against one entity's budget."""

    id = peewee.AutoField()
    request_id = peewee.CharField(max_length=64, index=True)
    entity_kind = peewee.CharField(max_length=16)
    entity_id = peewee.CharField(max_length=255)
    amount = peewee.DoubleField()
    expires_at = peewee.DoubleField()
    created_at = peewee.DoubleField(default=now)

    class Meta:
        table_name = "budget_reservation"
        indexes = ((("entity_kind", "entity_id", "expires_at"), False),)


@dataclass
class _State:
    claims: list[Guarded] = field(default_factory=list)
    reserved: bool = False
    settled: bool = False
    released: bool = False


def _state(ctx: CallContext) -> _State:
    state = ctx.plugin_state.get(STATE_KEY)
    if state is None:
        state = ctx.plugin_state[STATE_KEY] = _State()
    return state


def claim(ctx: CallContext, guarded: Guarded) -> None:
    """Ask for ``guarded``'s share of the reservation made after all checks."""
    _state(ctx).claims.append(guarded)


def ttl(ctx: CallContext) -> float:
    """How long a reservation holds. A stream reads each chunk within the timeout, so
    a stream longer than this stops holding its worst case (it is still charged)."""
    return 2 * ctx.max_upstream_seconds + TTL_MARGIN_SECONDS


def reserve_claims(ctx: CallContext) -> Generator[None, Any, Refusal | None]:
    """Around all checks: once none refused, reserve what the budget plugins claimed.

    Every budget plugin wraps ``pre_request_check`` with this (see
    :class:`plugins.budgets.hooks.BudgetPlugin`), so it works whichever of
    them are enabled; the first to run takes the claims, the others find
    none left.
    """
    refusal = yield
    state = ctx.plugin_state.get(STATE_KEY)
    if refusal is not None or state is None or not state.claims:
        return refusal
    claims, state.claims = state.claims, []
    return reserve(ctx, claims)


def _lock_spend(guarded: Guarded) -> float:
    """Lock the entity's row until the transaction ends; its current spend."""
    model, pk = _SPEND_ROWS[guarded.kind]
    pk_value: Any = int(guarded.entity_id) if guarded.kind == "proxy" else guarded.entity_id
    if guarded.kind == "customer":
        # A new end user has no row to lock yet: make it (spend 0) so there is.
        new_row = Customer.insert(user_id=pk_value, spend=0.0, created_at=now())
        new_row.on_conflict_ignore().execute()
    query = model.select(model.spend).where(pk == pk_value)  # type: ignore[attr-defined]
    if is_postgres():
        query = query.for_update()
    row = query.first()
    return float(row.spend) if row is not None else guarded.spend


def _held(claims: list[Guarded], moment: float) -> dict[str, float]:
    """What unexpired reservations hold against each claimed entity."""
    R = BudgetReservation
    match = functools.reduce(
        operator.or_, [(R.entity_kind == g.kind) & (R.entity_id == g.entity_id) for g in claims]
    )
    rows: Any = (
        R.select(R.entity_kind, peewee.fn.SUM(R.amount).alias("held"))
        .where(match & (R.expires_at > moment))
        .group_by(R.entity_kind, R.entity_id)
        .tuples()
    )
    held = {g.kind: 0.0 for g in claims}
    for kind, amount in rows:
        held[kind] = float(amount or 0.0)
    return held


def housekeeping(moment: float) -> None:
    """Once per :data:`GC_INTERVAL_SECONDS` per process: delete the budget plugins'
    rows that can no longer matter (a time check per call, no thread)."""
    global _next_gc
    if moment < _next_gc:
        return
    _next_gc = moment + GC_INTERVAL_SECONDS
    _collect_expired(moment)
    try:
        prune_past_periods(moment)
    except peewee.PeeweeException:
        log.warning("deleting the alert marks of past budget periods failed", exc_info=True)


def _collect_expired(moment: float) -> None:
    """Delete expired reservations (they already hold nothing)."""
    R = BudgetReservation
    expired = R.select(R.id).where(R.expires_at <= moment)
    if is_postgres():
        # Never wait for a row a settling call has locked (nor make it wait for us).
        expired = expired.for_update(skip_locked=True)
    try:
        R.delete().where(R.id.in_(expired)).execute()
    except peewee.PeeweeException:
        log.warning("deleting expired budget reservations failed", exc_info=True)


def reserve(ctx: CallContext, claims: list[Guarded]) -> Refusal | None:
    """Reserve the call's worst case against every claimed entity, or nothing."""
    moment = ctx.now()
    by_kind = {g.kind: g for g in claims}
    ordered = [by_kind[kind] for kind in LOCK_ORDER if kind in by_kind]
    with database.atomic() as txn:
        spend = {g.kind: _lock_spend(g) for g in ordered}
        held = _held(ordered, moment)

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
                txn.rollback()  # also drops a new end user's row made for the lock
                return _refusal(ctx, by_kind, spend, held)
            clamp.apply_clamp(ctx, tokens)
        expires = moment + ttl(ctx)
        BudgetReservation.insert_many(
            [
                {
                    "request_id": ctx.request_id,
                    "entity_kind": g.kind,
                    "entity_id": g.entity_id,
                    "amount": ctx.estimated_cost,
                    "expires_at": expires,
                    "created_at": moment,
                }
                for g in ordered
            ]
        ).execute()
    _state(ctx).reserved = True
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


def settle(ctx: CallContext) -> None:
    """In the spend transaction: the real cost is now in spend, drop the reservation."""
    state = ctx.plugin_state.get(STATE_KEY)
    if state is None or not state.reserved or state.settled:
        return
    state.settled = True
    try:
        with database.atomic():  # a savepoint: a failure here cannot abort the spend
            BudgetReservation.delete().where(
                BudgetReservation.request_id == ctx.request_id
            ).execute()
    except peewee.DatabaseError:
        log.exception("settling the reservation of %s failed; it will expire", ctx.request_id)


def release(ctx: CallContext) -> None:
    """The call is over: whatever it still holds goes back (no-op after a settle).

    Every call ends here, in either enforcement mode and outside the spend
    transaction, so this is also where the housekeeping runs.
    """
    state = ctx.plugin_state.get(STATE_KEY)
    if state is not None and state.reserved and not state.released:
        state.released = True
        BudgetReservation.delete().where(BudgetReservation.request_id == ctx.request_id).execute()
    housekeeping(ctx.now())
