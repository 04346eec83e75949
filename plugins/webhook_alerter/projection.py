"""Projected spend: where an entity's spend lands by the end of its budget period.

The rate is the spend so far divided by the time elapsed in the period. Early
in a period that quotient is wild (one call a second after a reset would
project thousands of dollars), so the elapsed time counts as at least
:data:`MIN_ELAPSED_FRACTION` of the period: a day of a 30-day month, two
minutes of an hour. LiteLLM does the same in whole days for monthly budgets.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import datetime, timezone

from proxy.plugin_api import parse_duration

MIN_ELAPSED_FRACTION = 1 / 30
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass(frozen=True)
class Projection:
    projected_spend: float
    # When spend reaches max_budget at the current rate (epoch seconds).
    exceeded_at: float

    @property
    def exceeded_date(self) -> str:
        """``exceeded_at`` as ISO 8601 in UTC, e.g. ``2025-05-01T12:00:00+00:00``."""
        return datetime.fromtimestamp(self.exceeded_at, tz=timezone.utc).isoformat(
            timespec="seconds"
        )


def _months_before(ts: float, months: int) -> float:
    moment = datetime.fromtimestamp(ts, tz=timezone.utc)
    index = moment.year * 12 + moment.month - 1 - months
    year, month = divmod(index, 12)
    day = min(moment.day, calendar.monthrange(year, month + 1)[1])
    return moment.replace(year=year, month=month + 1, day=day).timestamp()


def period_start(reset_at: float, duration: str, created_at: float | None) -> float:
    """The start of the period that ends at ``reset_at`` (never before creation)."""
    n, unit = parse_duration(duration)
    if unit == "mo":
        start = _months_before(reset_at, n)
    else:
        start = reset_at - n * _SECONDS[unit]
    if created_at is not None and created_at > start:
        return created_at
    return start


def project(
    spend: float, max_budget: float, start: float, end: float, now: float
) -> Projection | None:
    """The projection if spend, still under ``max_budget``, will pass it by ``end``."""
    length = end - start
    if spend <= 0 or max_budget <= 0 or spend >= max_budget or length <= 0 or now >= end:
        return None
    elapsed = max(now - start, length * MIN_ELAPSED_FRACTION)
    rate = spend / elapsed
    projected = rate * length
    if projected <= max_budget:
        return None
    return Projection(projected_spend=projected, exceeded_at=start + max_budget / rate)
