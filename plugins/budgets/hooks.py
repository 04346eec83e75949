"""The hooks every budget plugin shares, given the entity it guards.

This module is not a plugin: each budget plugin module builds one
:class:`BudgetPlugin` from its ``guarded(ctx)`` function and exposes it as
``plugin``, which the plugin manager registers under the module's name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from plugins.budgets import clamp
from plugins.budgets.alerts import housekeeping, raise_crossing_alerts
from plugins.budgets.common import Guarded, claim, exceeded, is_strict
from proxy.plugin_api import Refusal, Usage, hookimpl

if TYPE_CHECKING:
    from proxy.plugin_api import CallContext


# The budget plugins share their tables (budget_alert_sent): the same migrations.
BUDGET_MIGRATIONS = ("budgets", "plugins.budgets.migrations")
# ctx.plugin_state key: a budget plugin has done this call's housekeeping check.
HOUSEKEEPING_DONE = "budget_housekeeping"


def check_budget(ctx: CallContext, guarded: Guarded | None) -> Refusal | None:
    """``pre_request_check``: refuse while spend >= max_budget.

    In ``strict`` mode a call that passes claims its worst case, which the
    ``strict_budgets`` plugin reserves with every other level's claim once
    all checks pass. In ``check`` mode
    with ``clamp_max_tokens``, a call whose worst case does not fit in what
    is left gets a lower ``max_tokens`` instead, and is refused only when
    not even its prompt and one output token fit.
    """
    if guarded is None or guarded.max_budget is None:
        return None
    if exceeded(guarded.spend, guarded.max_budget):
        return guarded.refusal()
    if is_strict(ctx):
        claim(ctx, guarded)
    elif ctx.config.general_settings.clamp_max_tokens:
        room = guarded.max_budget - guarded.spend
        if ctx.estimated_cost > room and not clamp.clamp_to_room(ctx, room):
            return guarded.refusal(detail=clamp.nothing_fits_detail(ctx))
    return None


class BudgetPlugin:
    """The hook implementations of one budget plugin.

    ``guarded`` says which entity (and which numbers) the plugin guards on a
    call, or ``None`` when it guards nothing on that call.
    """

    def __init__(self, guarded: Callable[[CallContext], Guarded | None]) -> None:
        self.guarded = guarded

    @hookimpl
    def plugin_migrations(self) -> tuple[str, str]:
        return BUDGET_MIGRATIONS

    @hookimpl
    def pre_request_check(self, ctx: CallContext) -> Refusal | None:
        return check_budget(ctx, self.guarded(ctx))

    @hookimpl
    def post_call_spend(self, ctx: CallContext, usage: Usage, cost: float) -> None:
        raise_crossing_alerts(ctx, self.guarded(ctx), cost)

    @hookimpl
    def call_finished(self, ctx: CallContext) -> None:
        # Once per call, whichever budget plugin comes first: the others would
        # only read the clock again to find the same answer.
        if HOUSEKEEPING_DONE not in ctx.plugin_state:
            ctx.plugin_state[HOUSEKEEPING_DONE] = True
            housekeeping(ctx.now())
