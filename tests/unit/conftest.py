"""Fixtures shared by the unit tests."""

from __future__ import annotations

import time

import pytest

import plugins.rate_limiter.hooks as rate_limiter
from tests.support.plugins import OutcomeRecorder
from tests.support.rate_limits import FrozenClock


@pytest.fixture
def recorder() -> OutcomeRecorder:
    """Records call outcomes: ``make_app(config, plugins=[("recorder", recorder)])``."""
    return OutcomeRecorder()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FrozenClock:
    """The rate limiter's clock, frozen at the current time: ``clock.advance(59)``."""
    frozen = FrozenClock(time.time())
    monkeypatch.setattr(rate_limiter, "time", frozen)
    return frozen
