"""Builtin plugin ``proxy_budget``: ``litellm_settings.max_budget`` across all calls.

The proxy-wide counter is the core's ``proxy_spend`` row, reset every
``litellm_settings.budget_duration`` by the core. ``max_budget: 0`` refuses
every call, the master key's included.
"""

from __future__ import annotations

from plugins.budgets import hooks as budget_hooks
from plugins.budgets.common import Guarded, exceeded_budget_message
from proxy.plugin_api import CallContext

PROXY_ENTITY_ID = "1"  # the single proxy_spend row
_MESSAGE = exceeded_budget_message("Proxy")


def guarded(ctx: CallContext) -> Guarded:
    row = ctx.proxy_spend
    return Guarded(
        kind="proxy",
        entity_id=PROXY_ENTITY_ID,
        name="",
        spend=row.spend if row is not None else 0.0,
        max_budget=ctx.config.litellm_settings.max_budget,
        soft_budget=None,
        period=(row.budget_reset_at or 0.0) if row is not None else 0.0,
        message=_MESSAGE,
    )


plugin = budget_hooks.BudgetPlugin(guarded)
