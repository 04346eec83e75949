"""Budget periods: ``30s``, ``30m``, ``30h``, ``30d``, ``2w``, ``1mo``.

Resets advance by whole periods from an anchor (the entity's creation), so
a reset applied late never shifts the schedule.
"""

from __future__ import annotations

import calendar
import re
from datetime import datetime, timezone

_PATTERN = re.compile(r"^\s*(\d+)\s*(mo|s|m|h|d|w)\s*$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_MONTHS, MAX_SECONDS = 1200, 36500 * 86400  # 100 years


class DurationError(ValueError):
    pass


def parse_duration(text: str) -> tuple[int, str]:
    match = _PATTERN.match(str(text))
    if not match or int(match.group(1)) <= 0:
        raise DurationError(
            f"invalid duration {text!r}: use a positive number and one of s, m, h, d, w, mo"
        )
    n, unit = int(match.group(1)), match.group(2)
    # Longer periods overflow the dates that resets and expiries are computed in.
    if (n > MAX_MONTHS) if unit == "mo" else (n * _SECONDS[unit] > MAX_SECONDS):
        raise DurationError(f"invalid duration {text!r}: at most 100 years (1200mo, 36500d)")
    return n, unit


def _add_months(ts: float, months: int) -> float:
    start = datetime.fromtimestamp(ts, tz=timezone.utc)
    month_index = start.month - 1 + months
    year, month = start.year + month_index // 12, month_index % 12 + 1
    day = min(start.day, calendar.monthrange(year, month)[1])
    return start.replace(year=year, month=month, day=day).timestamp()


def first_reset(anchor: float, duration: str) -> float:
    """The first reset moment after ``anchor``."""
    n, unit = parse_duration(duration)
    if unit == "mo":
        return _add_months(anchor, n)
    return anchor + n * _SECONDS[unit]


def next_reset_after(reset_at: float, duration: str, now: float) -> float:
    """Advance ``reset_at`` by whole periods until it lies after ``now``."""
    n, unit = parse_duration(duration)
    if unit == "mo":
        steps = 0
        nxt = reset_at
        while nxt <= now:
            steps += n
            nxt = _add_months(reset_at, steps)
        return nxt
    period = n * _SECONDS[unit]
    if reset_at > now:
        return reset_at
    skipped = int((now - reset_at) // period) + 1
    return reset_at + skipped * period
