"""What a client is told: OpenAI's rate-limit headers, and the 429 when refused."""

from __future__ import annotations

import math

from plugins.rate_limiter.limits import KIND_ORDER, WINDOW_SECONDS
from plugins.rate_limiter.store import Admission, WindowState
from proxy.plugin_api import Refusal

# A parallel slot frees when some call ends, which nobody can foresee: retry soon.
PARALLEL_RETRY_SECONDS = 1.0


def duration_text(seconds: float) -> str:
    """A wait in OpenAI's header format (``350ms``, ``1s``, ``6m0s``), rounded up."""
    millis = max(math.ceil(seconds * 1000 - 1e-6), 0)
    if millis < 1000:
        return f"{millis}ms"
    minutes, rest = divmod(millis, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def window_reset(state: WindowState, now: float) -> float:
    """Seconds until ``state``'s window ends and its counts start from zero.

    Never more than a window: each worker carries the database's clock forward
    from its own last reading (:mod:`proxy.storage.clock`), so a window another
    worker opened may start a few milliseconds after this worker's ``now``.
    """
    return min(max(state.window_start + WINDOW_SECONDS - now, 0.0), WINDOW_SECONDS)


Tightest = tuple[int, float, int]  # (remaining, -seconds to the window's reset, limit)
_NAMES = {
    kind: (
        f"x-ratelimit-limit-{kind}",
        f"x-ratelimit-remaining-{kind}",
        f"x-ratelimit-reset-{kind}",
    )
    for kind in ("requests", "tokens")
}


def _headers(headers: dict[str, str], kind: str, best: Tightest | None) -> None:
    if best is not None:
        remaining, negative_reset, cap = best
        limit_name, remaining_name, reset_name = _NAMES[kind]
        headers[limit_name] = str(cap)
        headers[remaining_name] = str(remaining)
        headers[reset_name] = duration_text(-negative_reset)


def rate_limit_headers(admission: Admission, now: float) -> dict[str, str]:
    """OpenAI's ``x-ratelimit-*`` headers for the tightest request and token limits.

    The tightest is the scope with the fewest left (on a tie, the one whose
    window ends last). A kind of limit no scope has gets no headers.
    """
    requests: Tightest | None = None
    tokens: Tightest | None = None
    for state in admission.states:
        rpm, tpm = state.scope.rpm_limit, state.scope.tpm_limit
        if rpm is None and tpm is None:
            continue
        negative_reset = -window_reset(state, now)
        if rpm is not None:
            candidate = (max(rpm - state.requests, 0), negative_reset, rpm)
            if requests is None or candidate < requests:
                requests = candidate
        if tpm is not None:
            candidate = (max(tpm - state.tokens, 0), negative_reset, tpm)
            if tokens is None or candidate < tokens:
                tokens = candidate
    headers: dict[str, str] = {}
    _headers(headers, "requests", requests)
    _headers(headers, "tokens", tokens)
    return headers


def exceeded_limit(state: WindowState) -> tuple[str, int, int, bool] | None:
    """(limit name, limit, current, is parallel) of the limit ``state`` is at, if any."""
    scope = state.scope
    if scope.rpm_limit is not None and state.requests >= scope.rpm_limit:
        return ("rpm_limit", scope.rpm_limit, state.requests, False)
    if scope.tpm_limit is not None and state.tokens >= scope.tpm_limit:
        return ("tpm_limit", scope.tpm_limit, state.tokens, False)
    parallel = scope.max_parallel_requests
    if parallel is not None and state.in_flight >= parallel:
        return ("max_parallel_requests", parallel, state.in_flight, True)
    return None


def refused_by_parallel_only(admission: Admission) -> bool:
    """Whether every refusing scope is out of parallel slots (and nothing else)."""
    found = False
    for state in admission.states:
        if state.admitted:
            continue
        exceeded = exceeded_limit(state)
        if exceeded is None or not exceeded[3]:
            return False
        found = True
    return found


def refusal(admission: Admission, now: float) -> Refusal:
    """The 429 for a refused call: names the first refusing scope, waits for all of them."""
    refusing = sorted(
        (s for s in admission.states if not s.admitted),
        key=lambda s: KIND_ORDER.index(s.scope.kind),
    )
    named = refusing[0]
    wait = 0.0
    for state in refusing:
        exceeded = exceeded_limit(state)
        is_parallel = exceeded is not None and exceeded[3]
        wait = max(wait, PARALLEL_RETRY_SECONDS if is_parallel else window_reset(state, now))
    exceeded = exceeded_limit(named)
    if exceeded is None:  # refused on a value that changed since: name what it was checked on
        detail = "limit reached"
    else:
        name, cap, current, _ = exceeded
        detail = f"{name}={cap}, current={current}"
    label = named.scope.label
    wait = max(wait, 0.001)
    headers = {
        **rate_limit_headers(admission, now),
        "Retry-After": str(max(math.ceil(wait), 1)),
        "retry-after-ms": str(math.ceil(wait * 1000)),
    }
    return Refusal(
        status=429,
        message=f"Rate limit exceeded for {named.scope.kind} {label}: {detail}",
        type="rate_limit_error",
        code="429",
        headers=headers,
    )
