"""A finished call's tokens and slots: which window they count in, and that a settle
never waits for a busy key's window row (PostgreSQL writes them as settled rows that
the scope's next check folds in; SQLite into the window row itself: same answers)."""

from __future__ import annotations

import threading
from typing import Any

import psycopg2
import pytest
from flask import Flask

from plugins.rate_limiter import store
from plugins.rate_limiter.limits import Scope
from proxy.call.auth import hash_key
from proxy.storage.db import database
from proxy.storage.models import SpendLog
from tests.conftest import base_config
from tests.support.proxy_server import wait_until
from tests.support.rate_limits import chat, make_key, make_user, window

T0 = 1_000_000.0
TPM = Scope("key", "tpm-key", "tpm", tpm_limit=1000)


@pytest.fixture
def app(make_app: Any, db_url: str) -> Flask:
    return make_app(base_config(db_url))


def check(scope: Scope, now: float, request_id: str = "check") -> store.WindowState:
    with database.connection_context():
        return store.admit([scope], request_id, now, now + 30).states[0]


def settle(scope: Scope, tokens: int, now: float, request_id: str) -> None:
    with database.connection_context():
        store.settle([scope], tokens, [], request_id, now)


def test_tokens_count_in_the_open_window_they_finish_in(app):
    check(TPM, T0)
    settle(TPM, 70, T0 + 10, "a")
    settle(TPM, 30, T0 + 59, "b")
    assert check(TPM, T0 + 59.5).tokens == 100
    assert check(TPM, T0 + 60).tokens == 0  # the next window starts empty


def test_tokens_finished_after_the_window_ended_count_in_the_next(app):
    check(TPM, T0)
    settle(TPM, 40, T0 + 65, "late")  # its call outlived the window it was let in by
    state = check(TPM, T0 + 70)
    assert state.tokens == 40
    assert state.requests == 1


def test_tokens_finished_over_a_minute_before_the_next_check_count_nowhere(app):
    check(TPM, T0)
    settle(TPM, 40, T0 + 65, "late")
    assert check(TPM, T0 + 200).tokens == 0


def test_tokens_of_an_ended_window_are_not_carried_into_the_next(app):
    check(TPM, T0)
    settle(TPM, 40, T0 + 30, "in-window")
    assert check(TPM, T0 + 61).tokens == 0


# The same through calls: the check that decides them is then the one in the call's read.


def _remaining_tokens_after_a_late_settle(app: Flask, clock: Any, at: float, then: float) -> int:
    """A call at the clock's start, a call of the same key finishing ``at`` seconds
    later with 40 tokens, and the remaining tokens the call made ``then`` is told."""
    plain = make_key(tpm_limit=1000)
    client = app.test_client()
    start = clock.now
    assert chat(client, plain).status_code == 200
    scope = Scope("key", hash_key(plain), "late", tpm_limit=1000)
    settle(scope, 40, start + at, "late-call")
    clock.now = start + then
    resp = chat(client, plain)
    assert resp.status_code == 200
    return int(resp.headers["x-ratelimit-remaining-tokens"])


def test_a_call_finishing_after_its_window_counts_in_the_next(app, clock):
    assert _remaining_tokens_after_a_late_settle(app, clock, at=65, then=70) == 960


def test_a_late_call_counts_nowhere_when_the_next_call_is_over_a_minute_later(app, clock):
    assert _remaining_tokens_after_a_late_settle(app, clock, at=65, then=200) == 1000


def test_tokens_of_a_window_that_ended_start_the_next_from_zero(app, clock):
    assert _remaining_tokens_after_a_late_settle(app, clock, at=30, then=61) == 1000


def test_the_same_window_counts_every_call_that_finished_in_it(app, clock):
    used = _remaining_tokens_after_a_late_settle(app, clock, at=30, then=59)
    with database.connection_context():
        first = SpendLog.select().order_by(SpendLog.start_time).first().total_tokens
    assert used == 1000 - first - 40


def test_a_call_refused_by_another_scope_keeps_the_tokens_it_saw(app):
    """The check that refuses folds the key's settled rows in too: none is lost."""
    make_user("shared@example.com", rpm_limit=2)
    plain = make_key(tpm_limit=1_000_000, user_id="shared@example.com")
    other = make_key(user_id="shared@example.com")
    client = app.test_client()
    assert chat(client, plain).status_code == 200
    assert chat(client, other).status_code == 200
    assert chat(client, plain).status_code == 429  # the user's rpm refuses it
    with database.connection_context():
        first = SpendLog.get(SpendLog.api_key == hash_key(plain)).total_tokens
    assert window("key", hash_key(plain)).tokens == first


def test_a_settle_does_not_wait_for_the_window_rows_lock(app, db_url):
    """A check of the same key holds the window row's lock (until its COMMIT):
    before settled rows, every settle of a busy key waited for it."""
    if db_url.startswith("sqlite"):
        pytest.skip("row locks are PostgreSQL's")
    scope = Scope("key", "busy-key", "busy", tpm_limit=1000, max_parallel_requests=1)
    assert check(scope, T0, "first").admitted
    holder = psycopg2.connect(db_url)
    done: list[bool] = []
    settler = threading.Thread(
        target=lambda: (
            settle_with_slot(scope, 50, T0 + 1, "first"),
            done.append(True),
        )
    )
    try:
        with holder.cursor() as cur:
            cur.execute(
                "SELECT 1 FROM rate_limit_window WHERE entity = %s FOR UPDATE", ["busy-key"]
            )
            assert cur.fetchone() == (1,)
        settler.start()
        wait_until(lambda: done, timeout=30)  # fails while the settle waits
    finally:
        holder.rollback()
        holder.close()
        settler.join(timeout=30)
    # The next check folds them in: the tokens count, the slot is free again.
    state = check(scope, T0 + 2, "second")
    assert (state.admitted, state.tokens, state.in_flight) == (True, 50, 1)


def settle_with_slot(scope: Scope, tokens: int, now: float, request_id: str) -> None:
    with database.connection_context():
        store.settle([scope], tokens, [scope], request_id, now)


def test_a_refused_call_opens_no_window_for_the_scopes_it_did_not_count_in(app, clock):
    """The refusing check folds the key's settled rows in, but the key's next
    window still opens with its next counted call, not with the refused one."""
    make_user("team-lead@example.com", rpm_limit=1)
    plain = make_key(tpm_limit=1000, user_id="team-lead@example.com")
    other = make_key(user_id="team-lead@example.com")
    client = app.test_client()
    start = clock.now
    assert chat(client, plain).status_code == 200  # the key's and the user's windows open
    clock.now = start + 61
    assert chat(client, other).status_code == 200  # the user's next window opens
    clock.now = start + 62
    assert chat(client, plain).status_code == 429  # the user's rpm: the key's window ended
    clock.now = start + 121.5
    resp = chat(client, plain)
    assert resp.status_code == 200
    # Counted now, in a window that opens now (not at the refusal, 0.5 s from its end).
    assert resp.headers["x-ratelimit-reset-tokens"] == "1m0s"
    assert resp.headers["x-ratelimit-remaining-tokens"] == "1000"
