"""Calls an upstream billed beyond their worst case, read for ``/metrics``."""

from __future__ import annotations

from dataclasses import dataclass

from peewee import fn

from proxy.storage.models import SpendLog


@dataclass(frozen=True)
class Overruns:
    calls: int
    usd: float


def cost_overruns() -> Overruns:
    """How many calls were billed more than their worst case, and by how much in all
    (an index scan of the few spend-log rows with ``overrun > 0``)."""
    row = (
        SpendLog.select(fn.COUNT(SpendLog.request_id), fn.COALESCE(fn.SUM(SpendLog.overrun), 0))
        .where(SpendLog.overrun > 0)
        .tuples()
        .first()
    )
    calls, usd = row if row is not None else (0, 0.0)
    return Overruns(int(calls), float(usd))
