"""Builtin plugin ``default_end_user_budget``: ``litellm_settings.max_end_user_budget_id``.

An end user with no budget row of its own follows the default budget row
live: the core reads the row on every call, so editing it (``/budget/update``)
changes every such end user at once. End users with their own budget or a
tier are not affected. The row's RPM/TPM limits are the rate limiter's.
"""

from __future__ import annotations

from plugins.budgets import hooks as budget_hooks
from plugins.budgets.common import Guarded, end_user_guarded
from proxy.plugin_api import CallContext


def guarded(ctx: CallContext) -> Guarded | None:
    budget = ctx.end_user_budget
    if budget is None or not ctx.end_user_budget_is_default:
        return None
    return end_user_guarded(ctx, budget.max_budget, budget.soft_budget)


plugin = budget_hooks.BudgetPlugin(guarded)
