"""``general_settings.clamp_max_tokens``: send what the budget can pay for.

A chat call whose worst case (prompt estimate + ``max_tokens``, or the
model's output cap) does not fit in a budget, but whose prompt and at least
one output token do, goes upstream with ``max_tokens`` lowered to the most
that fits, and the answer carries ``x-comptroller-max-tokens-clamped: <n>``.
The gateway builds the upstream body from ``ctx.body`` after the checks, so
lowering it here is what the upstream receives. This module is not a plugin.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from proxy.call.pricing import estimate_prompt_tokens

if TYPE_CHECKING:
    from proxy.call.context import CallContext

CLAMP_HEADER = "x-comptroller-max-tokens-clamped"
TOKEN_LIMIT_FIELDS = ("max_completion_tokens", "max_tokens")


def _worst_case(ctx: CallContext, prompt_tokens: int, output_tokens: int) -> float:
    # The same expression as the gateway's estimate, so equal inputs give equal floats.
    price = ctx.deployment.price
    return prompt_tokens * price.input_cost_per_token + output_tokens * price.output_cost_per_token


def largest_output(ctx: CallContext, room: float, fits: Callable[[float], bool]) -> int:
    """The most output tokens whose worst case ``fits`` (0 when not even one does).

    ``room`` (money left) gives the first guess; ``fits`` is the exact test
    the caller applies, so float rounding can never let a clamped call
    overshoot.
    """
    out_price = ctx.deployment.price.output_cost_per_token
    if ctx.call_type != "chat" or out_price <= 0:
        return 0  # nothing to lower: the worst case is the prompt alone
    prompt = estimate_prompt_tokens(ctx.body, ctx.call_type)
    spare = room - prompt * ctx.deployment.price.input_cost_per_token
    if spare < out_price:
        return 0
    n = math.floor(spare / out_price)
    while n > 0 and not fits(_worst_case(ctx, prompt, n)):
        n -= 1
    return n


def apply_clamp(ctx: CallContext, tokens: int) -> None:
    """Lower the call's token limit to ``tokens`` and its estimate with it."""
    present = [name for name in TOKEN_LIMIT_FIELDS if isinstance(ctx.body.get(name), int)]
    for name in present or ["max_tokens"]:
        current = ctx.body.get(name)
        ctx.body[name] = min(current, tokens) if isinstance(current, int) else tokens
    prompt = estimate_prompt_tokens(ctx.body, ctx.call_type)
    ctx.estimated_cost = _worst_case(ctx, prompt, tokens)
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
