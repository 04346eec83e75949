"""The spend ledger: one transaction per metered call.

The spend-log row, ``spend = spend + cost`` on the key, its user, its team,
the end user (upserted on first sight) and the proxy counter, whatever the
plugins add in ``post_call_spend``, and the alerts they raise all land
together or not at all. Increments are atomic SQL; the new totals come back
through ``RETURNING`` so plugins can tell exactly which call crossed a
threshold, even with many workers.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from peewee import EXCLUDED

from proxy.db import database
from proxy.plugins import call_each
from proxy.models import Customer, Key, ProxySpend, SpendLog, Team, User
from proxy.pricing import compute_cost

if TYPE_CHECKING:
    import pluggy

    from proxy.alerts import Alert
    from proxy.context import CallContext, Usage

log = logging.getLogger("comptroller.spend")


def _increment(model: type, pk_field: object, pk: str | int, cost: float) -> float | None:
    query = (
        model.update({model.spend: model.spend + cost})  # type: ignore[attr-defined]
        .where(pk_field == pk)
        .returning(model.spend)  # type: ignore[attr-defined]
    )
    rows = list(query.execute())
    return rows[0].spend if rows else None


def _upsert_customer(end_user_id: str, cost: float, now: float) -> float:
    query = (
        Customer.insert(user_id=end_user_id, spend=cost, created_at=now)
        .on_conflict(
            conflict_target=[Customer.user_id],
            update={Customer.spend: Customer.spend + EXCLUDED.spend},
        )
        .returning(Customer.spend)
    )
    return list(query.execute())[0].spend


def _upsert_team(team_id: str, cost: float) -> float:
    query = (
        Team.insert(team_id=team_id, spend=cost)
        .on_conflict(
            conflict_target=[Team.team_id],
            update={Team.spend: Team.spend + EXCLUDED.spend},
        )
        .returning(Team.spend)
    )
    return list(query.execute())[0].spend


def dispatch_alerts(pm: pluggy.PluginManager, alerts: list[Alert]) -> None:
    """Hand each alert to every ``on_alert`` implementation, each isolated.

    pluggy stops a hook chain at the first exception, so implementations are
    called one by one, each in its own savepoint: one failing plugin can
    neither stop the others nor abort the spend transaction around it.
    """
    for alert in alerts:
        call_each(pm.hook.on_alert, savepoint=True, alert=alert)


def record_spend(pm: pluggy.PluginManager, ctx: CallContext, usage: Usage, status: str) -> float:
    """Price ``usage`` and write the ledger for ``ctx`` in one transaction."""
    cost = compute_cost(
        ctx.deployment.price, usage.prompt_tokens, usage.completion_tokens, ctx.call_type
    )
    ctx.usage, ctx.cost = usage, cost
    end = time.time()
    opened = database.connect(reuse_if_open=True)
    try:
        with database.atomic():
            SpendLog.insert(
                request_id=ctx.request_id,
                call_type=ctx.call_type,
                api_key=ctx.key_hash,
                user_id=ctx.user_id,
                team_id=ctx.team_id,
                end_user=ctx.end_user_id,
                model=ctx.deployment.upstream_model,
                model_group=ctx.deployment.model_name,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                total_tokens=usage.total_tokens,
                spend=cost,
                start_time=ctx.start_time,
                end_time=end,
                status=status,
            ).execute()
            totals = ctx.spend_after
            if ctx.key is not None:
                totals["key"] = _increment(Key, Key.token, ctx.key.token, cost)
            if ctx.user is not None:
                totals["user"] = _increment(User, User.user_id, ctx.user.user_id, cost)
            if ctx.team_id:
                totals["team"] = _upsert_team(ctx.team_id, cost)
            if ctx.end_user_id:
                totals["customer"] = _upsert_customer(ctx.end_user_id, cost, end)
            totals["proxy"] = _increment(ProxySpend, ProxySpend.id, 1, cost)
            pm.hook.post_call_spend(ctx=ctx, usage=usage, cost=cost)
            dispatch_alerts(pm, ctx.alerts)
    finally:
        if opened:
            database.close()
    return cost
