"""Rows, calls and time for the rate limiter tests.

Time is the database's clock (``proxy.storage.clock``), which the rate limiter
reads through ``ctx.now()``: the ``clock`` fixture of a test stands in for it, so a test moves time
on exactly as far as it says (``clock.advance(59)``) however long the test
itself takes. A test that needs real time to pass (a client that waits for a
window to open) moves the window instead (:func:`end_windows_in`).
"""

from __future__ import annotations

import time
from typing import Any

from plugins.rate_limiter.limits import WINDOW_SECONDS
from plugins.rate_limiter.tables import RateLimitSettled, RateLimitWindow
from proxy.call.auth import display_name, generate_key, hash_key
from proxy.storage.db import database
from proxy.storage.models import Budget, Key, User
from tests.conftest import MASTER


def make_key(alias: str | None = None, user_id: str | None = None, **limits: Any) -> str:
    plain = generate_key()
    with database.connection_context():
        Key.create(
            token=hash_key(plain),
            key_name=display_name(plain),
            key_alias=alias,
            user_id=user_id,
            **limits,
        )
    return plain


def make_user(user_id: str, **limits: Any) -> None:
    with database.connection_context():
        User.create(user_id=user_id, **limits)


def make_budget(budget_id: str, **limits: Any) -> None:
    with database.connection_context():
        Budget.create(budget_id=budget_id, **limits)


def chat(client: Any, plain: str | None, user: str | None = None, **body: Any) -> Any:
    headers = {"Authorization": f"Bearer {plain}"} if plain else dict(MASTER)
    payload: dict[str, Any] = {
        "model": "gpt-3.5-turbo",
        "messages": [{"role": "user", "content": "hello"}],
        **body,
    }
    if user is not None:
        payload["user"] = user
    return client.post("/chat/completions", json=payload, headers=headers)


def end_windows_in(seconds: float) -> None:
    """Make every rate window end ``seconds`` from now (real time)."""
    with database.connection_context():
        start = time.time() + seconds - WINDOW_SECONDS
        RateLimitWindow.update(window_start=start).execute()


def window(kind: str, entity: str) -> RateLimitWindow:
    """The scope's window row as its next check in the same window would see it: with
    the settled rows no check has folded in yet (PostgreSQL's settles write those)."""
    with database.connection_context():
        row = RateLimitWindow.get(
            (RateLimitWindow.kind == kind) & (RateLimitWindow.entity == entity)
        )
        for settled in RateLimitSettled.select().where(
            (RateLimitSettled.kind == kind) & (RateLimitSettled.entity == entity)
        ):
            row.tokens += settled.tokens
            row.in_flight -= settled.released
        return row


class FrozenClock:
    """Stands in for the database's clock (``database_clock.now``): its ``time()``
    moves only when the test says so."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
