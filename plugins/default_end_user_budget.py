"""Builtin plugin ``default_end_user_budget``: ``litellm_settings.max_end_user_budget_id``.

An end user with no budget row of its own follows the default budget row
live: the core reads the row on every call, so editing it (``/budget/update``)
changes every such end user at once. End users with their own budget or a
tier are not affected. The row's RPM/TPM limits are the rate limiter's.
"""

from __future__ import annotations

from typing import Any

from plugins import budget_hooks
from plugins.budget_common import Guarded, end_user_guarded
from plugins.reservations import reserve_claims as reserve_claims  # strict mode's wrapper
from proxy.context import CallContext, Refusal, Usage
from proxy.hookspecs import hookimpl


def guarded(ctx: CallContext) -> Guarded | None:
    budget = ctx.end_user_budget
    if budget is None or not ctx.end_user_budget_is_default:
        return None
    return end_user_guarded(ctx, budget.max_budget, budget.soft_budget)


@hookimpl
def plugin_tables() -> list[Any]:
    return budget_hooks.budget_tables()


@hookimpl
def pre_request_check(ctx: CallContext) -> Refusal | None:
    return budget_hooks.check_budget(ctx, guarded(ctx))


@hookimpl
def post_call_spend(ctx: CallContext, usage: Usage, cost: float) -> None:
    budget_hooks.after_spend(ctx, guarded(ctx), cost)


@hookimpl
def call_finished(ctx: CallContext) -> None:
    budget_hooks.call_over(ctx)
