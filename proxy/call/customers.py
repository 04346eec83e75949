"""The end user of a call: its customer row and the budget that governs it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from peewee import JOIN

from proxy.storage.models import Budget, Customer

if TYPE_CHECKING:
    from proxy.call.context import CallContext
    from proxy.config import Config
    from proxy.storage.lookup import CallRows


def load_customer(config: Config, ctx: CallContext, rows: CallRows | None) -> None:
    """The end user's row and the budget that governs it, on ``ctx`` (from ``rows``
    when the key's query read them already)."""
    if not ctx.end_user_id:
        return
    default_id = config.litellm_settings.max_end_user_budget_id
    if rows is not None and rows.end_user_id == ctx.end_user_id:
        # Read with the key, in the same query (proxy.storage.lookup).
        ctx.customer = rows.customer
        if rows.customer_budget is not None:
            ctx.end_user_budget = rows.customer_budget
        elif default_id and (rows.customer is None or not rows.customer.budget_id):
            ctx.end_user_budget = rows.default_budget
            ctx.end_user_budget_is_default = rows.default_budget is not None
        return
    customer = (
        Customer.select(Customer, Budget)
        .join(
            Budget, JOIN.LEFT_OUTER, on=(Customer.budget_id == Budget.budget_id), attr="budget_row"
        )
        .where(Customer.user_id == ctx.end_user_id)
        .first()
    )
    ctx.customer = customer
    budget = getattr(customer, "budget_row", None) if customer is not None else None
    if budget is not None and budget.budget_id:
        ctx.end_user_budget = budget
        return
    if default_id and (customer is None or not customer.budget_id):
        ctx.end_user_budget = Budget.get_or_none(Budget.budget_id == default_id)
        ctx.end_user_budget_is_default = ctx.end_user_budget is not None
