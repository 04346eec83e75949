"""Builtin plugin ``end_user_budget``: the budget of the ``user`` a call names.

An end user (customer) is held to its own budget row: the one
``/customer/new`` made from its ``max_budget``, or the pricing tier it
names with ``budget_id``. An end user without one is left to
``default_end_user_budget`` when ``litellm_settings.max_end_user_budget_id``
names an existing row, and otherwise held to
``litellm_settings.max_user_budget``. A new end user has spent 0.
"""

from __future__ import annotations

from plugins.budgets import hooks as budget_hooks
from plugins.budgets.common import Guarded, end_user_guarded
from proxy.plugin_api import CallContext


def guarded(ctx: CallContext) -> Guarded | None:
    budget = ctx.end_user_budget
    if budget is None:
        return end_user_guarded(ctx, ctx.config.litellm_settings.max_user_budget, None)
    if ctx.end_user_budget_is_default:
        return None  # default_end_user_budget's job
    return end_user_guarded(ctx, budget.max_budget, budget.soft_budget)


plugin = budget_hooks.BudgetPlugin(guarded)
