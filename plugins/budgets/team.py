"""Builtin plugin ``team_budget``: a team's ``max_budget`` covers every key in it.

A call's team is its key's ``team_id``, else its user's; the team row comes
with the key in the call's one query. A team at its budget refuses the call
with LiteLLM's team message (``ExceededTokenBudget: Current Team Spend: X;
Max Budget for Team: Y``); ``budget_duration`` resets its spend like the
other levels, and strict mode reserves against it with them. A blocked
team (``/team/block``) refuses its keys' calls. Its rpm, tpm and
parallel limits are the rate limiter's (a ``team`` scope). Calls with the
master key, or with a key in no team, have no team budget.
"""

from __future__ import annotations

from plugins.budgets import hooks as budget_hooks
from plugins.budgets.common import Guarded, fmt
from proxy.plugin_api import CallContext, Refusal, hookimpl


def _message(spend: float, max_budget: float) -> str:
    return (
        "Authentication Error, ExceededTokenBudget: "
        f"Current Team Spend: {fmt(spend)}; Max Budget for Team: {fmt(max_budget)}"
    )


def guarded(ctx: CallContext) -> Guarded | None:
    team = ctx.team
    if team is None:
        return None
    return Guarded(
        kind="team",
        entity_id=team.team_id,
        name=f"Team={team.team_alias or team.team_id}",
        spend=team.spend or 0.0,
        max_budget=team.max_budget,
        soft_budget=None,
        period=team.budget_reset_at or 0.0,
        message=_message,
    )


class TeamBudgetPlugin(budget_hooks.BudgetPlugin):
    """The budget hooks, and LiteLLM's refusal for a blocked team (``/team/block``)."""

    @hookimpl
    def pre_request_check(self, ctx: CallContext) -> Refusal | None:
        team = ctx.team
        if team is not None and team.blocked:
            return Refusal(
                status=401,
                message=f"Authentication Error, Team={team.team_id} is blocked. "
                "Update via `/team/unblock` if you're an admin.",
                type="auth_error",
            )
        return super().pre_request_check(ctx)


plugin = TeamBudgetPlugin(guarded)
