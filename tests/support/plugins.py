"""Throw-away plugins the tests register to observe the hooks."""

from __future__ import annotations

from proxy.call.context import CallContext
from proxy.hookspecs import hookimpl


class OutcomeRecorder:
    """Records the outcome of every call as ``call_finished`` reports it."""

    def __init__(self) -> None:
        self.outcomes: list[str] = []

    @hookimpl
    def call_finished(self, ctx: CallContext, outcome: str) -> None:
        self.outcomes.append(outcome)
