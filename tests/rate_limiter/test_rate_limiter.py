"""The rate limiter as a client sees it, on SQLite and on PostgreSQL.

Time passing is simulated with the rate limiter's clock (the ``clock``
fixture), never by sleeping; a test that counts on its calls landing in one
window freezes that clock, so a slow run cannot carry it into the next.
"""

from __future__ import annotations

import re
import threading
from typing import Any

import pytest
from flask import Flask

from plugins.rate_limiter import store
from plugins.rate_limiter.limits import Scope
from plugins.rate_limiter.report import refusal
from plugins.rate_limiter.tables import RateLimitLease, RateLimitWindow
from proxy.call.auth import hash_key
from proxy.call.context import Refusal
from proxy.config import ConfigError
from proxy.hookspecs import hookimpl
from proxy.storage.db import database
from proxy.storage.models import Budget, Customer, Key, SpendLog
from tests.conftest import MASTER, base_config, openai_model
from tests.support.proxy_server import wait_until
from tests.support.rate_limits import (
    chat,
    end_windows_in,
    make_budget,
    make_key,
    make_user,
    window,
)

HEADER_NAMES = [
    f"x-ratelimit-{what}-{unit}"
    for what in ("limit", "remaining", "reset")
    for unit in ("requests", "tokens")
]


def assert_rate_limited(resp: Any, message: str) -> None:
    assert resp.status_code == 429, resp.get_data(as_text=True)
    assert resp.get_json() == {
        "error": {
            "message": message,
            "type": "rate_limit_error",
            "param": "None",
            "code": "429",
        }
    }
    assert int(resp.headers["Retry-After"]) >= 1


def seconds(duration: str) -> float:
    """Parse OpenAI's reset format (``350ms``, ``59.2s``, ``1m0s``)."""
    match = re.fullmatch(r"(?:(\d+)m)?(?:([\d.]+)s)?|(\d+)ms", duration)
    assert match, duration
    if match.group(3):
        return int(match.group(3)) / 1000
    return int(match.group(1) or 0) * 60 + float(match.group(2) or 0)


@pytest.fixture
def app(make_app: Any, db_url: str) -> Flask:
    return make_app(base_config(db_url))


@pytest.fixture
def client(app: Flask) -> Any:
    return app.test_client()


# --- requests per minute --------------------------------------------------------------


def test_key_over_its_rpm_limit_gets_429_naming_the_key_alias(client, clock):
    plain = make_key(alias="ci-bot", rpm_limit=2)
    assert chat(client, plain).status_code == 200
    assert chat(client, plain).status_code == 200
    resp = chat(client, plain)
    assert_rate_limited(resp, "Rate limit exceeded for key ci-bot: rpm_limit=2, current=2")
    assert 55 <= int(resp.headers["Retry-After"]) <= 60
    assert resp.headers["x-ratelimit-remaining-requests"] == "0"


def test_key_without_alias_is_named_by_its_display_name_never_the_secret(client):
    plain = make_key(rpm_limit=1)
    chat(client, plain)
    resp = chat(client, plain)
    message = resp.get_json()["error"]["message"]
    assert message == f"Rate limit exceeded for key sk-...{plain[-4:]}: rpm_limit=1, current=1"
    assert plain not in resp.get_data(as_text=True)
    assert hash_key(plain) not in message


def test_every_answer_carries_openai_rate_limit_headers(client, clock):
    plain = make_key(rpm_limit=4, tpm_limit=1000)
    remaining = []
    for _ in range(3):
        resp = chat(client, plain)
        assert resp.status_code == 200
        assert set(HEADER_NAMES) <= set(resp.headers.keys(lower=True))
        assert resp.headers["x-ratelimit-limit-requests"] == "4"
        assert resp.headers["x-ratelimit-limit-tokens"] == "1000"
        assert 0 < seconds(resp.headers["x-ratelimit-reset-requests"]) <= 60
        remaining.append(int(resp.headers["x-ratelimit-remaining-requests"]))
    assert remaining == [3, 2, 1]


def test_reset_header_tells_when_the_window_really_ends(client, clock):
    plain = make_key(rpm_limit=1)
    chat(client, plain)
    clock.advance(45)
    resp = chat(client, plain)
    assert resp.status_code == 429
    assert 14 < seconds(resp.headers["x-ratelimit-reset-requests"]) <= 15
    assert int(resp.headers["Retry-After"]) == 15
    assert 14000 < int(resp.headers["retry-after-ms"]) <= 15000


def test_window_opened_by_a_worker_whose_clock_runs_ahead_still_waits_at_most_a_minute():
    # Each worker carries the database's clock forward from its own last reading:
    # a window another worker opened can start a little after this worker's now.
    now = 1_000_000.0
    full = store.WindowState(
        Scope("key", "h", "burst", rpm_limit=4), now + 0.4, 4, 0, 0, admitted=False
    )
    refused = refusal(store.Admission([full]), now)
    assert refused.headers["Retry-After"] == "60"
    assert refused.headers["retry-after-ms"] == "60000"
    assert seconds(refused.headers["x-ratelimit-reset-requests"]) == 60


def test_a_new_window_opens_a_minute_after_the_first_call(client, clock):
    plain = make_key(rpm_limit=1)
    assert chat(client, plain).status_code == 200
    assert chat(client, plain).status_code == 429
    clock.advance(59)
    assert chat(client, plain).status_code == 429
    clock.advance(1)
    resp = chat(client, plain)
    assert resp.status_code == 200
    assert resp.headers["x-ratelimit-remaining-requests"] == "0"
    assert seconds(resp.headers["x-ratelimit-reset-requests"]) > 59


def test_refused_calls_do_not_use_up_the_next_window(client, clock):
    plain = make_key(rpm_limit=2)
    for _ in range(2):
        chat(client, plain)
    for _ in range(5):
        assert chat(client, plain).status_code == 429
    clock.advance(60)
    assert [chat(client, plain).status_code for _ in range(3)] == [200, 200, 429]


def test_user_limit_covers_all_of_its_keys(client):
    make_user("krrish@berri.ai", rpm_limit=2)
    first = make_key(user_id="krrish@berri.ai")
    second = make_key(user_id="krrish@berri.ai")
    assert chat(client, first).status_code == 200
    assert chat(client, second).status_code == 200
    assert_rate_limited(
        chat(client, first),
        "Rate limit exceeded for user krrish@berri.ai: rpm_limit=2, current=2",
    )


def test_the_tightest_limit_answers_in_headers_and_refusal(client):
    make_user("u-tight", rpm_limit=2)
    plain = make_key(user_id="u-tight", rpm_limit=10)
    resp = chat(client, plain)
    assert resp.headers["x-ratelimit-limit-requests"] == "2"
    assert resp.headers["x-ratelimit-remaining-requests"] == "1"
    chat(client, plain)
    assert_rate_limited(
        chat(client, plain), "Rate limit exceeded for user u-tight: rpm_limit=2, current=2"
    )


def test_refusal_in_one_scope_counts_the_call_in_none(client):
    make_budget("one-a-minute", rpm_limit=1)
    plain = make_key(alias="shared", rpm_limit=5)
    with database.connection_context():
        Customer.create(user_id="cust-a", budget_id="one-a-minute")
    assert chat(client, plain, user="cust-a").status_code == 200
    for _ in range(3):
        assert_rate_limited(
            chat(client, plain, user="cust-a"),
            "Rate limit exceeded for end_user cust-a: rpm_limit=1, current=1",
        )
    # Only the admitted call counts against the key.
    assert window("key", hash_key(plain)).requests == 1
    resp = chat(client, plain, user="cust-b")
    assert resp.status_code == 200
    assert resp.headers["x-ratelimit-remaining-requests"] == "3"


# --- end users through their budget row --------------------------------------------------


def test_default_end_user_budget_limits_each_customer_separately(make_app, db_url):
    app = make_app(base_config(db_url, litellm_settings={"max_end_user_budget_id": "default-tier"}))
    client = app.test_client()
    resp = client.post(
        "/budget/new",
        json={"budget_id": "default-tier", "max_budget": 10, "rpm_limit": 2, "tpm_limit": 1000},
        headers=MASTER,
    )
    assert resp.status_code == 200, resp.get_data(as_text=True)
    for customer in ("my-customer-id", "other-customer"):
        assert chat(client, None, user=customer).status_code == 200
        assert chat(client, None, user=customer).status_code == 200
        assert_rate_limited(
            chat(client, None, user=customer),
            f"Rate limit exceeded for end_user {customer}: rpm_limit=2, current=2",
        )


def test_editing_the_default_budget_changes_the_limit_live(make_app, db_url):
    client = make_app(
        base_config(db_url, litellm_settings={"max_end_user_budget_id": "tier"})
    ).test_client()
    make_budget("tier", rpm_limit=1)
    assert chat(client, None, user="c1").status_code == 200
    assert chat(client, None, user="c1").status_code == 429
    with database.connection_context():
        Budget.update(rpm_limit=3).where(Budget.budget_id == "tier").execute()
    assert chat(client, None, user="c1").status_code == 200
    assert chat(client, None, user="c1").headers["x-ratelimit-limit-requests"] == "3"


def test_calls_without_an_end_user_are_not_limited_by_the_default_budget(make_app, db_url):
    client = make_app(
        base_config(db_url, litellm_settings={"max_end_user_budget_id": "tier"})
    ).test_client()
    make_budget("tier", rpm_limit=1)
    statuses = [chat(client, None).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    assert chat(client, None, user="someone").status_code == 200
    assert chat(client, None, user="someone").status_code == 429


# --- tokens per minute --------------------------------------------------------------


def test_tpm_counts_the_real_tokens_of_finished_calls(client):
    probe = chat(client, make_key())
    used = probe.get_json()["usage"]["total_tokens"]
    assert used > 1
    # Room for two calls' tokens minus one: the second call is let in (the
    # window's tokens are still under the limit), the third is refused.
    limit = 2 * used - 1
    plain = make_key(alias="tok", tpm_limit=limit)
    first = chat(client, plain)
    assert first.status_code == 200
    assert first.headers["x-ratelimit-remaining-tokens"] == str(limit)
    assert window("key", hash_key(plain)).tokens == used
    second = chat(client, plain)
    assert second.status_code == 200
    assert second.headers["x-ratelimit-remaining-tokens"] == str(limit - used)
    assert window("key", hash_key(plain)).tokens == 2 * used
    third = chat(client, plain)
    assert_rate_limited(
        third, f"Rate limit exceeded for key tok: tpm_limit={limit}, current={2 * used}"
    )
    assert third.headers["x-ratelimit-remaining-tokens"] == "0"


def test_tpm_window_starts_over_a_minute_later(client, clock):
    plain = make_key(tpm_limit=5)
    assert chat(client, plain).status_code == 200
    assert chat(client, plain).status_code == 429
    clock.advance(60)
    resp = chat(client, plain)
    assert resp.status_code == 200
    assert resp.headers["x-ratelimit-remaining-tokens"] == "5"


def test_tpm_counts_streamed_calls(make_app, db_url, upstream):
    config = base_config(db_url, model_list=[openai_model("gpt-4o-mini", upstream.base_url)])
    client = make_app(config).test_client()
    plain = make_key(tpm_limit=10_000)
    resp = chat(client, plain, model="gpt-4o-mini", stream=True)
    assert resp.status_code == 200
    body = resp.get_data(as_text=True)
    assert "[DONE]" in body
    with database.connection_context():
        logged = SpendLog.get().total_tokens
    assert logged > 0
    assert window("key", hash_key(plain)).tokens == logged


# --- parallel requests ------------------------------------------------------------------


@pytest.fixture
def slow_app(make_app: Any, db_url: str, upstream: Any) -> Flask:
    config = base_config(db_url, model_list=[openai_model("gpt-4o-mini", upstream.base_url)])
    return make_app(config)


def _in_thread(app: Flask, plain: str, results: list[int], **body: Any) -> threading.Thread:
    def run() -> None:
        results.append(chat(app.test_client(), plain, model="gpt-4o-mini", **body).status_code)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_parallel_limit_refuses_while_slots_are_taken_and_frees_them_after(slow_app, upstream):
    plain = make_key(alias="par", max_parallel_requests=1)
    upstream.hang = True
    results: list[int] = []
    thread = _in_thread(slow_app, plain, results)
    try:
        wait_until(lambda: upstream.in_flight == 1)
        resp = chat(slow_app.test_client(), plain, model="gpt-4o-mini")
        assert_rate_limited(
            resp, "Rate limit exceeded for key par: max_parallel_requests=1, current=1"
        )
        assert resp.headers["Retry-After"] == "1"
    finally:
        upstream.hang = False
        thread.join(10)
    assert results == [200]
    assert chat(slow_app.test_client(), plain, model="gpt-4o-mini").status_code == 200
    assert window("key", hash_key(plain)).in_flight == 0
    with database.connection_context():
        assert RateLimitLease.select().count() == 0


def test_failed_upstream_call_gives_its_slot_back(slow_app, upstream):
    plain = make_key(max_parallel_requests=1, tpm_limit=1000)
    upstream.fail_next(3, status=500)  # the call and its two retries
    assert chat(slow_app.test_client(), plain, model="gpt-4o-mini").status_code == 500
    assert window("key", hash_key(plain)).in_flight == 0
    assert window("key", hash_key(plain)).tokens == 0
    assert chat(slow_app.test_client(), plain, model="gpt-4o-mini").status_code == 200


class BrokenLedger:
    """A plugin whose spend entry fails after the rate limiter's, rolling all back."""

    @hookimpl(trylast=True)
    def post_call_spend(self, ctx: Any, usage: Any, cost: float) -> None:
        raise RuntimeError("ledger plugin failed")


def test_slot_comes_back_when_the_plugins_part_of_the_spend_rolls_back(make_app, db_url):
    client = make_app(base_config(db_url), plugins=[("broken", BrokenLedger())]).test_client()
    plain = make_key(max_parallel_requests=1, tpm_limit=1000)
    # The upstream answered: the call is billed, without the plugins' writes.
    assert chat(client, plain).status_code == 200
    row = window("key", hash_key(plain))
    assert (row.in_flight, row.tokens) == (0, 0)
    with database.connection_context():
        assert RateLimitLease.select().count() == 0
        assert SpendLog.select().count() == 1


def test_client_leaving_mid_stream_gives_its_slot_back(slow_app, upstream):
    plain = make_key(max_parallel_requests=1)
    upstream.stream_chunk_delay = 0.05
    resp = chat(slow_app.test_client(), plain, model="gpt-4o-mini", stream=True)
    chunks = iter(resp.response)
    assert next(chunks)
    assert window("key", hash_key(plain)).in_flight == 1
    resp.close()
    assert window("key", hash_key(plain)).in_flight == 0
    upstream.stream_chunk_delay = 0
    assert chat(slow_app.test_client(), plain, model="gpt-4o-mini").status_code == 200


def test_expired_lease_of_a_dead_worker_is_reclaimed(client):
    plain = make_key(alias="dead", max_parallel_requests=1)
    token = hash_key(plain)
    assert chat(client, plain).status_code == 200
    # A worker killed mid-call leaves its lease and its slot behind.
    with database.connection_context():
        RateLimitWindow.update(in_flight=RateLimitWindow.in_flight + 1).where(
            RateLimitWindow.entity == token
        ).execute()
        RateLimitLease.create(request_id="killed-call", kind="key", entity=token, expires_at=9e12)
    assert_rate_limited(
        chat(client, plain), "Rate limit exceeded for key dead: max_parallel_requests=1, current=1"
    )
    with database.connection_context():
        RateLimitLease.update(expires_at=1.0).execute()
    assert chat(client, plain).status_code == 200
    with database.connection_context():
        assert RateLimitLease.select().count() == 0
    assert window("key", token).in_flight == 0


class LeaseWatch:
    """Notes, once the rate limiter has let a call in, how long after the call's
    start each lease runs out."""

    def __init__(self) -> None:
        self.seen: list[float] = []

    @hookimpl(trylast=True)
    def pre_request_check(self, ctx: Any) -> None:
        with database.connection_context():
            self.seen.extend(lease.expires_at - ctx.start_time for lease in RateLimitLease.select())


def test_lease_lasts_the_configured_time(make_app, db_url):
    config = base_config(db_url, plugins={"settings": {"rate_limiter": {"lease_seconds": 7}}})
    watch = LeaseWatch()
    client = make_app(config, plugins=[("watch", watch)]).test_client()
    plain = make_key(max_parallel_requests=2)
    assert chat(client, plain).status_code == 200
    seen = watch.seen
    assert len(seen) == 1 and 6.5 < seen[0] <= 7.5


def test_default_lease_is_every_attempts_timeout_plus_a_margin(make_app, db_url):
    watch = LeaseWatch()
    model = {
        "model_name": "gpt-3.5-turbo",
        "litellm_params": {"model": "mock/gpt-3.5-turbo", "timeout": 30},
    }
    client = make_app(
        base_config(db_url, model_list=[model]), plugins=[("watch", watch)]
    ).test_client()
    plain = make_key(max_parallel_requests=2)
    assert chat(client, plain).status_code == 200
    seen = watch.seen
    # The call and its num_retries=2 retries may each time out: 3 x 30 s, + 60 s.
    assert len(seen) == 1 and 149 < seen[0] <= 151


def test_bad_lease_setting_stops_start_up_naming_it(make_app, db_url):
    config = base_config(db_url, plugins={"settings": {"rate_limiter": {"lease_seconds": "x"}}})
    with pytest.raises(ConfigError, match="plugins.settings.rate_limiter.lease_seconds"):
        make_app(config)


# --- giving back --------------------------------------------------------------------------


class RefuseAfterRateLimiter:
    """A third-party check that runs after the builtins and refuses everything."""

    @hookimpl(trylast=True)
    def pre_request_check(self, ctx: Any) -> Refusal:
        return Refusal(status=403, message="refused by a later check", type="auth_error")


def test_call_refused_by_a_later_check_counts_nothing_and_holds_no_slot(make_app, db_url):
    client = make_app(
        base_config(db_url), plugins=[("later", RefuseAfterRateLimiter())]
    ).test_client()
    plain = make_key(rpm_limit=2, max_parallel_requests=1)
    for _ in range(4):
        assert chat(client, plain).status_code == 403
    row = window("key", hash_key(plain))
    assert (row.requests, row.in_flight) == (0, 0)


def _taken(plain: str) -> tuple[int, int, int]:
    """(requests, in_flight, leases) the key's window and lease rows hold."""
    row = window("key", hash_key(plain))
    with database.connection_context():
        leases = RateLimitLease.select().count()
    return (row.requests, row.in_flight, leases)


def test_call_refused_by_a_budget_counts_nothing_and_holds_no_slot(client):
    # On PostgreSQL the call's read decides the admission before the budgets are
    # checked: a call a budget refuses gives back its request and its slot.
    plain = make_key(rpm_limit=3, max_parallel_requests=1, max_budget=1.0)
    assert chat(client, plain).status_code == 200  # makes the window row
    with database.connection_context():
        Key.update(spend=5.0).where(Key.token == hash_key(plain)).execute()
    for _ in range(4):
        resp = chat(client, plain)
        assert resp.status_code == 401, resp.get_data(as_text=True)
        assert "ExceededTokenBudget" in resp.get_json()["error"]["message"]
    assert _taken(plain) == (1, 0, 0)
    with database.connection_context():
        Key.update(spend=0.0, max_budget=None).where(Key.token == hash_key(plain)).execute()
    assert chat(client, plain).status_code == 200
    assert chat(client, plain).status_code == 200
    assert_rate_limited(
        chat(client, plain),
        "Rate limit exceeded for key " + _label(plain) + ": rpm_limit=3, current=3",
    )


def _label(plain: str) -> str:
    with database.connection_context():
        return Key.get_by_id(hash_key(plain)).key_name


@pytest.mark.parametrize("refusal", ["expired", "blocked", "model", "body"])
def test_call_refused_by_authentication_counts_nothing_and_holds_no_slot(client, refusal):
    plain = make_key(rpm_limit=2, max_parallel_requests=1, models=["gpt-3.5-turbo"])
    assert chat(client, plain).status_code == 200  # makes the window row
    if refusal in ("expired", "blocked"):
        change = {"expires": 1.0} if refusal == "expired" else {"blocked": True}
        with database.connection_context():
            Key.update(**change).where(Key.token == hash_key(plain)).execute()
    for _ in range(3):
        if refusal == "model":
            resp = chat(client, plain, model="gpt-4o")
        elif refusal == "body":
            resp = chat(client, plain, messages="not a list")
        else:
            resp = chat(client, plain)
        assert resp.status_code in (400, 401), resp.get_data(as_text=True)
    assert _taken(plain) == (1, 0, 0)


def test_unknown_key_counts_nothing_for_the_end_user_it_names(client):
    make_budget("one-a-minute", rpm_limit=1, max_parallel_requests=1)
    with database.connection_context():
        Customer.create(user_id="cust-x", budget_id="one-a-minute")
    plain = make_key()
    assert chat(client, plain, user="cust-x").status_code == 200  # makes the window row
    end_windows_in(60)  # a fresh count for what follows
    for _ in range(3):
        assert chat(client, "sk-not-a-key", user="cust-x").status_code == 401
    assert window("end_user", "cust-x").requests == 1
    with database.connection_context():
        assert RateLimitLease.select().count() == 0


# --- switching it off ---------------------------------------------------------------------


def test_disabling_the_plugin_removes_every_limit(make_app, db_url, upstream):
    config = base_config(
        db_url,
        model_list=[openai_model("gpt-4o-mini", upstream.base_url)],
        litellm_settings={"max_end_user_budget_id": "tier"},
        plugins={"disable": ["rate_limiter"]},
    )
    app = make_app(config)
    make_user("limited-user", rpm_limit=1, tpm_limit=1, max_parallel_requests=1)
    make_budget("tier", rpm_limit=1, tpm_limit=1, max_parallel_requests=1)
    plain = make_key(user_id="limited-user", rpm_limit=1, tpm_limit=1, max_parallel_requests=1)
    client = app.test_client()
    for _ in range(3):
        resp = chat(client, plain, user="end-1", model="gpt-4o-mini")
        assert resp.status_code == 200
        assert not any(name.startswith("x-ratelimit") for name in resp.headers.keys(lower=True))
    upstream.hang = True
    results: list[int] = []
    threads = [_in_thread(app, plain, results, user="end-1") for _ in range(2)]
    try:
        wait_until(lambda: upstream.in_flight == 2)
    finally:
        upstream.hang = False
        for thread in threads:
            thread.join(10)
    assert results == [200, 200]


def test_call_outliving_its_lease_does_not_free_the_slot_twice(app):
    scope = Scope("key", "long-call", "long", max_parallel_requests=1)
    with database.connection_context():
        assert store.admit([scope], "first", now=1000.0, lease_until=1010.0).admitted
        assert not store.admit([scope], "second", now=1011.0, lease_until=1021.0).admitted
        # The first call's lease has expired: a sweep gives its slot to the second.
        assert store.reclaim_expired(1011.0) == 1
        assert store.admit([scope], "second", now=1011.0, lease_until=1021.0).admitted
        # The first call ends late: its slot was already given back.
        assert store.release("first", 1012.0) == 0
        assert window("key", "long-call").in_flight == 1
        assert store.release("second", 1012.0) == 1
        assert window("key", "long-call").in_flight == 0
