"""Rate limits are exact across processes and hosts: real gunicorn on PostgreSQL.

Two ``ProxyServer`` instances on one database stand for two hosts.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from peewee import fn

from plugins.rate_limiter.tables import RateLimitLease, RateLimitWindow
from proxy.call.auth import display_name, generate_key, hash_key
from proxy.storage.db import database, init_database
from proxy.storage.migrate import migrate
from proxy.storage.models import Key, SpendLog, User
from tests.conftest import openai_model
from tests.support.databases import create_pg_database, drop_pg_database
from tests.support.proxy_server import ProxyServer, wait_until
from tests.support.rate_limits import window

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

MASTER_KEY = "sk-master-ratelimit"
MOCK_MODEL = {
    "model_name": "gpt-3.5-turbo",
    "litellm_params": {"model": "mock/gpt-3.5-turbo"},
}


@pytest.fixture
def pg_url() -> Iterator[str]:
    url = create_pg_database("comptroller_ratelimit")
    init_database(url)
    migrate()
    try:
        yield url
    finally:
        database.close_all()  # type: ignore[attr-defined]
        drop_pg_database(url)


def config(url: str, models: list[dict[str, Any]] | None = None, **sections: Any) -> dict:
    return {
        "model_list": models or [MOCK_MODEL],
        "general_settings": {"master_key": MASTER_KEY, "database_url": url},
        **sections,
    }


def make_key(**limits: Any) -> str:
    plain = generate_key()
    with database.connection_context():
        Key.create(token=hash_key(plain), key_name=display_name(plain), **limits)
    return plain


def post_chat(
    session: requests.Session, url: str, key: str, model: str = "gpt-3.5-turbo", **body: Any
) -> requests.Response:
    return session.post(
        f"{url}/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": model, "messages": [{"role": "user", "content": "hi"}], **body},
        timeout=30,
    )


def fire(servers: list[ProxyServer], calls: list[dict[str, Any]], threads: int = 20) -> list:
    """Send ``calls`` at once, alternating between the servers; return the responses."""
    local = threading.local()

    def send(i: int) -> requests.Response:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        return post_chat(local.session, servers[i % len(servers)].url, **calls[i])

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(send, range(len(calls))))


def started(*servers: ProxyServer) -> list[ProxyServer]:
    for server in servers:
        server.start()
    return list(servers)


def stop_all(servers: list[ProxyServer]) -> None:
    for server in servers:
        server.stop()


def two_hosts(cfg: dict, tmp_path: Path) -> list[ProxyServer]:
    return started(
        *(ProxyServer(cfg, tmp_path, workers=4, threads=4, name=f"host{i}") for i in (1, 2))
    )


def test_rpm_limit_lets_exactly_four_of_a_hundred_through_across_two_hosts(pg_url, tmp_path):
    plain = make_key(key_alias="burst", rpm_limit=4)
    servers = two_hosts(config(pg_url), tmp_path)
    try:
        began = time.monotonic()
        responses = fire(servers, [{"key": plain}] * 100)
        elapsed = time.monotonic() - began
    finally:
        stop_all(servers)
    assert elapsed < 60  # all in one window
    statuses = Counter(resp.status_code for resp in responses)
    assert statuses == {200: 4, 429: 96}
    refused = next(resp for resp in responses if resp.status_code == 429)
    assert refused.json()["error"] == {
        "message": "Rate limit exceeded for key burst: rpm_limit=4, current=4",
        "type": "rate_limit_error",
        "param": "None",
        "code": "429",
    }
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    with database.connection_context():
        assert SpendLog.select().count() == 4
    assert window("key", hash_key(plain)).requests == 4


def test_two_scopes_admit_all_or_nothing_across_two_hosts(pg_url, tmp_path):
    """Key A (3 a minute) and key B (100) share user U (5 a minute). With every window
    row already there, every call is decided inside its read (the rate limiter's read
    fragment): exactly 5 through, and each key counted only the calls it let through."""
    with database.connection_context():
        User.create(user_id="shared-user", rpm_limit=5)
    key_a = make_key(key_alias="a", user_id="shared-user", rpm_limit=3)
    key_b = make_key(key_alias="b", user_id="shared-user", rpm_limit=100)
    servers = two_hosts(config(pg_url), tmp_path)  # their start-up makes the plugin's tables
    calls = [{"key": key_a if i % 2 else key_b} for i in range(60)]
    try:
        with database.connection_context():
            for kind, entity in (
                ("key", hash_key(key_a)),
                ("key", hash_key(key_b)),
                ("user", "shared-user"),
            ):
                RateLimitWindow.create(kind=kind, entity=entity, window_start=0.0)  # long over
        responses = fire(servers, calls)
    finally:
        stop_all(servers)
    admitted = Counter(
        "a" if calls[i]["key"] == key_a else "b"
        for i, resp in enumerate(responses)
        if resp.status_code == 200
    )
    assert Counter(resp.status_code for resp in responses) == {200: 5, 429: 55}
    assert admitted["a"] <= 3
    with database.connection_context():
        counts = {(w.kind, w.entity): w.requests for w in RateLimitWindow.select()}
        assert SpendLog.select().count() == 5
    assert counts == {
        ("key", hash_key(key_a)): admitted["a"],
        ("key", hash_key(key_b)): admitted["b"],
        ("user", "shared-user"): 5,
    }


def test_seed_default_budget_lets_exactly_two_through_per_customer(pg_url, tmp_path):
    cfg = config(pg_url, litellm_settings={"max_end_user_budget_id": "my-default-tier"})
    servers = two_hosts(cfg, tmp_path)
    try:
        resp = requests.post(
            f"{servers[0].url}/budget/new",
            headers={"Authorization": f"Bearer {MASTER_KEY}"},
            json={
                "budget_id": "my-default-tier",
                "max_budget": 10,
                "rpm_limit": 2,
                "tpm_limit": 1000,
            },
            timeout=10,
        )
        assert resp.status_code == 200, resp.text
        customers = ["my-customer-id", "customer-b", "customer-c"]
        calls = [{"key": MASTER_KEY, "user": customers[i % 3]} for i in range(60)]
        responses = fire(servers, calls)
    finally:
        stop_all(servers)
    admitted = Counter(
        calls[i]["user"] for i, resp in enumerate(responses) if resp.status_code == 200
    )
    assert admitted == {customer: 2 for customer in customers}
    assert Counter(resp.status_code for resp in responses) == {200: 6, 429: 54}
    messages = {resp.json()["error"]["message"] for resp in responses if resp.status_code == 429}
    assert messages == {
        f"Rate limit exceeded for end_user {customer}: rpm_limit=2, current=2"
        for customer in customers
    }


def test_parallel_limit_never_has_more_than_three_in_flight(pg_url, tmp_path, upstream):
    plain = make_key(key_alias="par", max_parallel_requests=3)
    upstream.delay = 0.4
    models = [openai_model("gpt-4o-mini", upstream.base_url)]
    servers = two_hosts(config(pg_url, models), tmp_path)
    try:
        responses = fire(servers, [{"key": plain, "model": "gpt-4o-mini"}] * 60, threads=12)
    finally:
        stop_all(servers)
    statuses = Counter(resp.status_code for resp in responses)
    assert set(statuses) == {200, 429}
    assert upstream.max_in_flight == 3
    assert len(upstream.requests) == statuses[200]
    refusals = {resp.json()["error"]["message"] for resp in responses if resp.status_code == 429}
    assert refusals == {"Rate limit exceeded for key par: max_parallel_requests=3, current=3"}
    with database.connection_context():
        assert RateLimitLease.select().count() == 0
    assert window("key", hash_key(plain)).in_flight == 0


def test_slot_of_a_killed_worker_comes_back_when_its_lease_expires(pg_url, tmp_path, upstream):
    lease = 8.0
    plain = make_key(key_alias="victim", max_parallel_requests=1)
    models = [openai_model("gpt-4o-mini", upstream.base_url)]
    cfg = config(pg_url, models, plugins={"settings": {"rate_limiter": {"lease_seconds": lease}}})
    server = ProxyServer(cfg, tmp_path, workers=1, threads=4).start()
    session = requests.Session()
    doomed_outcome: list[str] = []

    def doomed_call() -> None:
        try:
            post_chat(requests.Session(), server.url, plain, "gpt-4o-mini")
            doomed_outcome.append("answered")
        except requests.RequestException:
            doomed_outcome.append("connection lost")

    try:
        upstream.hang = True
        taken_at = time.time()
        doomed = threading.Thread(target=doomed_call, daemon=True)
        doomed.start()
        wait_until(lambda: upstream.in_flight == 1)
        [worker] = server.worker_pids()
        os.kill(worker, signal.SIGKILL)
        doomed.join(10)
        upstream.hang = False
        wait_until(lambda: server.worker_pids() not in ([], [worker]))
        wait_until(lambda: session.get(f"{server.url}/health/liveliness", timeout=2).ok)
        # The dead worker's slot is still held...
        assert time.time() < taken_at + lease, "the new worker took longer than the lease"
        held = post_chat(session, server.url, plain, "gpt-4o-mini")
        assert held.status_code == 429
        assert held.json()["error"]["message"] == (
            "Rate limit exceeded for key victim: max_parallel_requests=1, current=1"
        )
        # ...until its lease expires, and not much longer.
        back = wait_until(
            lambda: (
                post_chat(session, server.url, plain, "gpt-4o-mini").status_code == 200
                and time.time()
            ),
            timeout=lease + 10,
            interval=0.2,
        )
    finally:
        upstream.hang = False
        server.stop()
    assert doomed_outcome == ["connection lost"]
    assert taken_at + lease - 0.5 <= back <= taken_at + lease + 3
    with database.connection_context():
        assert RateLimitLease.select().count() == 0
    assert window("key", hash_key(plain)).in_flight == 0


def test_tokens_and_slots_of_every_call_count_once_across_two_hosts(pg_url, tmp_path):
    """Settles write rows of their own and the next check folds them in: under
    load on two hosts, each call's tokens count once and each slot comes back."""
    plain = make_key(key_alias="folded", tpm_limit=10_000_000, max_parallel_requests=6)
    servers = two_hosts(config(pg_url), tmp_path)
    try:
        responses = fire(servers, [{"key": plain}] * 80, threads=12)
        assert {resp.status_code for resp in responses} <= {200, 429}
        answered = sum(resp.status_code == 200 for resp in responses)
        assert answered >= 6
        with database.connection_context():
            logged = SpendLog.select(fn.SUM(SpendLog.total_tokens)).scalar()
            assert SpendLog.select().count() == answered
        with requests.Session() as session:
            last = post_chat(session, servers[0].url, plain)
    finally:
        stop_all(servers)
    # The last check folded in every settle committed before it: exactly the logs' tokens.
    assert last.status_code == 200, last.text
    assert int(last.headers["x-ratelimit-remaining-tokens"]) == 10_000_000 - logged
    state = window("key", hash_key(plain))
    assert (state.requests, state.in_flight) == (answered + 1, 0)
    with database.connection_context():
        assert state.tokens == SpendLog.select(fn.SUM(SpendLog.total_tokens)).scalar()
        assert RateLimitLease.select().count() == 0
