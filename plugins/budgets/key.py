"""Builtin plugin ``key_budget``: a virtual key's ``max_budget`` and ``soft_budget``.

Refuses a key whose spend has reached its ``max_budget`` with LiteLLM's
``ExceededTokenBudget`` message; ``soft_budget`` never blocks, it raises
``soft_budget_crossed``. Calls made with the master key have no key budget.
"""

from __future__ import annotations

from plugins.budgets import hooks as budget_hooks
from plugins.budgets.common import Guarded, fmt
from proxy.plugin_api import CallContext


def _message(spend: float, max_budget: float) -> str:
    return (
        "Authentication Error, ExceededTokenBudget: "
        f"Current spend for token: {fmt(spend)}; Max Budget for Token: {fmt(max_budget)}"
    )


def guarded(ctx: CallContext) -> Guarded | None:
    key = ctx.key
    if key is None:
        return None
    return Guarded(
        kind="key",
        entity_id=key.token,
        name=f"Key={key.key_alias or key.key_name}",
        spend=key.spend or 0.0,
        max_budget=key.max_budget,
        soft_budget=key.soft_budget,
        period=key.budget_reset_at or 0.0,
        message=_message,
    )


plugin = budget_hooks.BudgetPlugin(guarded)
