"""The UTC day of a stored time, in SQL, exact on both backends."""

from __future__ import annotations

from typing import Any

from peewee import Cast, fn

from proxy.storage.db import is_postgres

DAY = 86400


def utc_day_number(seconds: Any) -> Any:
    """SQL for the UTC day (days since the epoch) of a column of epoch seconds."""
    if is_postgres():
        return fn.FLOOR(seconds / DAY)
    # SQLite's CAST truncates toward zero: the floor, as stored times are positive.
    return Cast(seconds / DAY, "INTEGER")
