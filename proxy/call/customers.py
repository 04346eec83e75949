"""The end user of a call: its customer row and the budget that governs it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from proxy.storage.lookup import CallRows, load_call_rows

if TYPE_CHECKING:
    from proxy.call.context import CallContext
    from proxy.config import Config


def call_rows(config: Config, ctx: CallContext, rows: CallRows | None) -> CallRows:
    """The rows the checks read: those read with the key (one query,
    proxy.storage.lookup), or the same query again when they do not cover the
    end user (named in a large body, parsed only after authentication)."""
    if rows is not None and rows.end_user_id == ctx.end_user_id:
        return rows
    token = ctx.key.token if ctx.key is not None else None
    return load_call_rows(token, ctx.end_user_id, config.litellm_settings.max_end_user_budget_id)


def load_customer(config: Config, ctx: CallContext, rows: CallRows) -> None:
    """The end user's row and the budget that governs it, on ``ctx``, from the
    rows of :func:`call_rows`."""
    if not ctx.end_user_id:
        return
    default_id = config.litellm_settings.max_end_user_budget_id
    ctx.customer = rows.customer
    if rows.customer_budget is not None:
        ctx.end_user_budget = rows.customer_budget
    elif default_id and (rows.customer is None or not rows.customer.budget_id):
        ctx.end_user_budget = rows.default_budget
        ctx.end_user_budget_is_default = rows.default_budget is not None
