"""``general_settings.clamp_max_tokens``: send what the budget can pay for.

A chat call whose worst case (:mod:`proxy.call.bound`: the prompt bound and
``n`` answers of ``max_tokens``, or of the model's output cap) does not fit in a
budget, but whose prompt and at least one output token per answer do, goes
upstream with ``max_tokens`` lowered to the most that fits, and the answer
carries ``x-comptroller-max-tokens-clamped: <n>``.
The gateway builds the upstream body from ``ctx.body`` after the checks, so
lowering it here is what the upstream receives. This module is not a plugin.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from proxy.plugin_api import LIMIT_FIELDS, WorstCase, call_worst_case

if TYPE_CHECKING:
    from proxy.plugin_api import CallContext

CLAMP_HEADER = "x-comptroller-max-tokens-clamped"


def _bound(ctx: CallContext) -> WorstCase:
    if ctx.worst_case is None:
        ctx.worst_case = call_worst_case(ctx)
    return ctx.worst_case


def largest_output(ctx: CallContext, room: float, fits: Callable[[float], bool]) -> int:
    """The most output tokens per answer whose worst case ``fits`` (0 when not even one does).

    ``room`` (money left) gives the first guess; ``fits`` is the exact test
    the caller applies to the very worst case the clamped call then reserves,
    so float rounding can never let a clamped call overshoot.
    """
    bound = _bound(ctx)
    per_token = bound.choices * bound.output_rate
    if ctx.call_type != "chat" or per_token <= 0:
        return 0  # nothing to lower: the worst case is the prompt alone
    spare = room - bound.with_output(0).cost
    if spare < per_token:
        return 0
    n = min(math.floor(spare / per_token), bound.output_tokens)
    while n > 0 and not fits(bound.with_output(n).cost):
        n -= 1
    return n


def apply_clamp(ctx: CallContext, tokens: int) -> None:
    """Lower the call's token limit to ``tokens`` and its worst case with it."""
    present = [name for name in LIMIT_FIELDS if isinstance(ctx.body.get(name), int)]
    for name in present or ["max_tokens"]:
        current = ctx.body.get(name)
        ctx.body[name] = min(current, tokens) if isinstance(current, int) else tokens
    ctx.worst_case = _bound(ctx).with_output(tokens)
    ctx.estimated_cost = ctx.worst_case.cost
    ctx.response_headers[CLAMP_HEADER] = str(tokens)


def clamp_to_room(ctx: CallContext, room: float) -> bool:
    """``check`` mode: clamp so that the worst case fits in ``room``; False if impossible."""
    tokens = largest_output(ctx, room, lambda cost: cost <= room)
    if tokens < 1:
        return False
    apply_clamp(ctx, tokens)
    return True


def nothing_fits_detail(ctx: CallContext) -> str:
    """Said after the budget message when a call is refused although spend < max_budget."""
    from plugins.budgets.common import fmt

    return f" (this call may cost up to {fmt(ctx.estimated_cost)}, more than the budget left)"
