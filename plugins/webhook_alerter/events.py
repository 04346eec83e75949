"""The alerts the webhook alerter raises itself: spend_tracked and projections.

Both are built from the call's context after the core's increments, so
``spend`` is the entity's new total as the database returned it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from plugins.webhook_alerter.outbox import first_time
from plugins.webhook_alerter.projection import Projection, period_start, project
from proxy.plugin_api import Alert, CallContext, atomic

log = logging.getLogger("comptroller.webhooks")


def identity(ctx: CallContext) -> dict[str, Any]:
    """Who made the call: the payload's identity fields."""
    return {
        "token": ctx.key_hash,
        "customer_id": ctx.end_user_id,
        "user_id": ctx.user_id,
        "team_id": ctx.team_id,
        "user_email": ctx.user.user_email if ctx.user is not None else None,
        "key_alias": ctx.key.key_alias if ctx.key is not None else None,
    }


def customer_max_budget(ctx: CallContext) -> float | None:
    """The end user's budget: its budget row (own or default tier), else max_user_budget."""
    if ctx.end_user_budget is not None:
        return ctx.end_user_budget.max_budget
    return ctx.config.litellm_settings.max_user_budget


def spend_tracked(ctx: CallContext) -> Alert | None:
    """The seed's ``spend_tracked`` event, for a call that named an end user."""
    spend = ctx.spend_after.get("customer")
    if not ctx.end_user_id or spend is None:
        return None
    return Alert(
        spend=spend,
        max_budget=customer_max_budget(ctx),
        **identity(ctx),
        event="spend_tracked",
        event_group="customer",
        event_message=f"Customer spend tracked. Customer={ctx.end_user_id}, spend={spend}",
    )


@dataclass
class _Entity:
    """One budgeted thing the call was charged to."""

    group: str  # event_group
    label: str  # for the message: "Key", "User", ...
    entity_id: str
    spend: float | None
    max_budget: float | None
    duration: str | None
    reset_at: float | None
    created_at: float | None


def _self_budgeted(
    group: str, label: str, entity_id: str, spend: float | None, row: Any
) -> _Entity:
    """A key or an internal user: its budget and its period are both on its own row."""
    return _Entity(
        group,
        label,
        entity_id,
        spend,
        row.max_budget,
        row.budget_duration,
        row.budget_reset_at,
        row.created_at,
    )


def _entities(ctx: CallContext) -> Iterator[_Entity]:
    after = ctx.spend_after
    if ctx.key is not None:
        yield _self_budgeted("key", "Key", ctx.key.token, after.get("key"), ctx.key)
    if ctx.user is not None:
        yield _self_budgeted("internal_user", "User", ctx.user.user_id, after.get("user"), ctx.user)
    if ctx.end_user_id and ctx.customer is not None and ctx.end_user_budget is not None:
        budget = ctx.end_user_budget
        yield _Entity(
            "customer",
            "Customer",
            ctx.end_user_id,
            after.get("customer"),
            budget.max_budget,
            budget.budget_duration,
            ctx.customer.budget_reset_at,
            ctx.customer.created_at,
        )
    settings = ctx.config.litellm_settings
    if ctx.proxy_spend is not None:
        row = ctx.proxy_spend
        yield _Entity(
            "proxy",
            "Proxy",
            "proxy",
            after.get("proxy"),
            settings.max_budget,
            settings.budget_duration,
            row.budget_reset_at,
            row.created_at,
        )


def _projection(entity: _Entity, now: float) -> Projection | None:
    if entity.spend is None or entity.max_budget is None:
        return None
    if not entity.duration or entity.reset_at is None:
        return None
    start = period_start(entity.reset_at, entity.duration, entity.created_at)
    return project(entity.spend, entity.max_budget, start, entity.reset_at, now)


def _projected_alert(ctx: CallContext, entity: _Entity, projection: Projection) -> Alert:
    who = "" if entity.group == "proxy" else f" {entity.label}={entity.entity_id},"
    return Alert(
        spend=entity.spend,
        max_budget=entity.max_budget,
        **identity(ctx),
        projected_exceeded_date=projection.exceeded_date,
        projected_spend=projection.projected_spend,
        event="projected_limit_exceeded",
        event_group=entity.group,
        event_message=(
            f"{entity.label} projected to exceed its budget this period.{who} "
            f"spend={entity.spend}, max_budget={entity.max_budget}, "
            f"projected_spend={projection.projected_spend}, "
            f"projected_exceeded_date={projection.exceeded_date}"
        ),
    )


def projected_limit_alerts(ctx: CallContext, now: float) -> list[Alert]:
    """``projected_limit_exceeded`` for each entity, once per entity per period.

    The once-only mark is written in its own savepoint inside the spend
    transaction: it lands with the alert, and if it fails the spend does not.
    """
    alerts = []
    for entity in _entities(ctx):
        projection = _projection(entity, now)
        if projection is None:
            continue
        # The period is named by its end, which every worker reads the same.
        once_key = f"projected:{entity.group}:{entity.entity_id}:{entity.reset_at!r}"
        try:
            with atomic():
                fresh = first_time(once_key, now)
        except Exception:
            log.exception("marking projected_limit_exceeded for %s failed", entity.group)
            continue
        if fresh:
            alerts.append(_projected_alert(ctx, entity, projection))
    return alerts
