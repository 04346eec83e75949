"""What the budget plugins share: the guarded entity and its refusal.

Each budget plugin (``proxy_budget``, ``key_budget``, ``user_budget``,
``team_budget``, ``end_user_budget``, ``default_end_user_budget``) only says which entity it
guards on a call, as a :class:`Guarded`; :mod:`plugins.budgets.hooks` does
the rest the same way for all of them. This module is not a plugin.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from proxy.plugin_api import Refusal

if TYPE_CHECKING:
    from proxy.plugin_api import CallContext

# SPEC section 6: the first level that fails answers.
CHECK_ORDER = ("proxy", "key", "user", "team", "customer")
# The order the core's spend transaction updates these rows in (key, user,
# team, customer, proxy). Strict reservations lock them in the same order,
# so a reservation and a settling call never wait for each other in a cycle.
LOCK_ORDER = ("key", "user", "team", "customer", "proxy")
# ctx.plugin_state key of the strict-mode claims (plugins.budgets.strict reserves them).
CLAIMS = "strict_budget_claims"
EVENT_GROUPS = {
    "proxy": "proxy",
    "key": "key",
    "user": "internal_user",
    "team": "team",
    "customer": "customer",
}


class Guarded(NamedTuple):
    """One entity whose spend a budget plugin guards on this call.

    ``kind`` is also the key of ``ctx.spend_after`` that holds its new total.
    ``period`` identifies the budget period (the entity's ``budget_reset_at``,
    0 without a ``budget_duration``) so that an alert fires once per period.
    A named tuple: every budget plugin builds one per call, and a frozen
    dataclass costs a ``setattr`` per field to build.
    """

    kind: str  # "proxy" | "key" | "user" | "team" | "customer"
    entity_id: str
    name: str  # how alerts name it: "Key=<alias>", "Customer=<id>", "" for the proxy
    spend: float
    max_budget: float | None
    soft_budget: float | None
    period: float
    message: Callable[[float, float], str]  # (spend, max_budget) -> refusal text

    def refusal(self, spend: float | None = None, detail: str = "") -> Refusal:
        """HTTP 401 ``auth_error`` with this level's message (SPEC section 6)."""
        assert self.max_budget is not None
        text = self.message(self.spend if spend is None else spend, self.max_budget)
        return Refusal(status=401, message=text + detail, type="auth_error")


def exceeded(spend: float, max_budget: float | None) -> bool:
    """A call is allowed while ``spend < max_budget``; ``None`` is unlimited, 0 blocks all."""
    return max_budget is not None and spend >= max_budget


def is_strict(ctx: CallContext) -> bool:
    return ctx.config.general_settings.budget_enforcement == "strict"


def claim(ctx: CallContext, guarded: Guarded) -> None:
    """Strict mode: ask for ``guarded``'s share of the reservation the
    ``strict_budgets`` plugin makes once every check has passed."""
    ctx.plugin_state.setdefault(CLAIMS, []).append(guarded)


def fmt(amount: float) -> str:
    """Money in messages as Python prints a float (the seed's ``0.0008869999999999999``)."""
    return repr(float(amount))


def exceeded_budget_message(who: str) -> Callable[[float, float], str]:
    """The ``ExceededBudget`` text of the proxy, user and end-user levels."""

    def message(spend: float, max_budget: float) -> str:
        return (
            f"Authentication Error, ExceededBudget: {who} has exceeded "
            f"{'its' if who == 'Proxy' else 'their'} budget. "
            f"Current spend: {fmt(spend)}; Max Budget: {fmt(max_budget)}"
        )

    return message


def end_user_guarded(
    ctx: CallContext, max_budget: float | None, soft_budget: float | None
) -> Guarded | None:
    """The end user of the call under ``max_budget``; a new one has spent 0."""
    if not ctx.end_user_id:
        return None
    customer = ctx.customer
    return Guarded(
        kind="customer",
        entity_id=ctx.end_user_id,
        name=f"Customer={ctx.end_user_id}",
        spend=(customer.spend or 0.0) if customer is not None else 0.0,
        max_budget=max_budget,
        soft_budget=soft_budget,
        period=(customer.budget_reset_at or 0.0) if customer is not None else 0.0,
        message=exceeded_budget_message(f"User {ctx.end_user_id}"),
    )
