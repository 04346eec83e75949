"""Builtin plugin ``user_budget``: an internal user's ``max_budget`` covers all its keys.

The user row comes with the key (one query); calls with the master key or
with a key that has no user have no user budget.
"""

from __future__ import annotations

from plugins.budgets import hooks as budget_hooks
from plugins.budgets.common import Guarded, exceeded_budget_message
from proxy.plugin_api import CallContext


def guarded(ctx: CallContext) -> Guarded | None:
    user = ctx.user
    if user is None:
        return None
    return Guarded(
        kind="user",
        entity_id=user.user_id,
        name=f"User={user.user_id}",
        spend=user.spend or 0.0,
        max_budget=user.max_budget,
        soft_budget=None,
        period=user.budget_reset_at or 0.0,
        message=exceeded_budget_message(f"User {user.user_id}"),
    )


plugin = budget_hooks.BudgetPlugin(guarded)
