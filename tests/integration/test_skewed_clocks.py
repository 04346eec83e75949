"""Two hosts on one database, one clock 30 s ahead and one 30 s behind: nothing changes.

Every time that several hosts compare (rate-limit windows, budget reset
times and creation times, parallel-slot leases, strict reservations) comes
from the database's clock, so hosts whose clocks are wrong still agree:
``rpm_limit: 4`` admits exactly 4 per window across both, a 30 s
``budget_duration`` resets on time and once, and a slot or a reservation
held on one host is not expired on the other. The skew is a gunicorn config
(tests/support/skewed_clock.py) that offsets each worker's ``time.time()``.
"""

from __future__ import annotations

import email.utils
import re
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from plugins.budgets.strict import BudgetReservation
from plugins.rate_limiter.tables import RateLimitLease
from proxy.storage.db import database, init_database
from tests.conftest import MASTER, base_config, openai_model
from tests.support.databases import create_pg_database, drop_pg_database
from tests.support.mock_openai import MockOpenAI
from tests.support.proxy_server import ProxyServer, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

SKEW = 30.0
IN, OUT = 0.001, 0.01
TIMEOUT = 10.0  # a reservation holds 2 x 10 + 5 = 25 s: less than the skew
LEASE_SECONDS = 20.0
BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


@pytest.fixture(scope="module")
def hosts(
    mock_openai: MockOpenAI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ProxyServer, ProxyServer]]:
    """Host ``ahead`` (+30 s) and host ``behind`` (-30 s) on one PostgreSQL database."""
    url = create_pg_database("comptroller_skew")
    tmp: Path = tmp_path_factory.mktemp("skew")
    model = openai_model(
        "gpt-4o", mock_openai.base_url, input_cost_per_token=IN, output_cost_per_token=OUT,
        timeout=TIMEOUT,
    )  # fmt: skip
    config = base_config(
        url,
        model_list=[model],
        general_settings={"budget_enforcement": "strict"},
        plugins={"settings": {"rate_limiter": {"lease_seconds": LEASE_SECONDS}}},
    )
    servers = []
    try:
        for name, offset in (("ahead", SKEW), ("behind", -SKEW)):
            server = ProxyServer(
                config,
                tmp,
                workers=1,
                threads=4,
                name=name,
                env={"COMPTROLLER_TEST_CLOCK_OFFSET": str(offset)},
                gunicorn_args=["-c", "tests/support/skewed_clock.py"],
            )
            servers.append(server.start())
        init_database(url)
        yield servers[0], servers[1]
    finally:
        for server in servers:
            server.stop()
        if not database.is_closed():
            database.close()
        drop_pg_database(url)


@pytest.fixture
def ahead_behind(
    hosts: tuple[ProxyServer, ProxyServer], upstream: MockOpenAI
) -> Iterator[tuple[ProxyServer, ProxyServer]]:
    yield hosts
    upstream.reset()


def chat(server: ProxyServer, plain: str) -> requests.Response:
    headers = {"Authorization": f"Bearer {plain}"}
    return requests.post(f"{server.url}/chat/completions", json=BODY, headers=headers, timeout=60)


def new_key(server: ProxyServer, **fields: Any) -> dict[str, Any]:
    resp = requests.post(f"{server.url}/key/generate", json=fields, headers=MASTER, timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()


@pytest.fixture(scope="module")
def worst(hosts: tuple[ProxyServer, ProxyServer]) -> float:
    """What strict mode reserves for BODY, as the proxy's refusal of a call it cannot pay says."""
    plain = new_key(hosts[0], max_budget=1e-12)["key"]
    message = chat(hosts[0], plain).json()["error"]["message"]
    return float(re.search(r"this call may cost up to ([0-9.e-]+)", message).group(1))  # type: ignore[union-attr]


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_the_hosts_clocks_really_are_off(ahead_behind: tuple[ProxyServer, ProxyServer]) -> None:
    for server, offset in zip(ahead_behind, (SKEW, -SKEW), strict=True):
        resp = requests.get(f"{server.url}/health/liveliness", timeout=10)
        told = email.utils.parsedate_to_datetime(resp.headers["Date"]).timestamp()
        assert told - time.time() == pytest.approx(offset, abs=3)


def test_rpm_limit_4_admits_exactly_4_per_window_across_both_hosts(
    ahead_behind: tuple[ProxyServer, ProxyServer],
) -> None:
    ahead, behind = ahead_behind
    plain = new_key(ahead, rpm_limit=4)["key"]
    # The host behind opens the window; the one ahead must not think it over.
    answers = [chat(behind, plain) for _ in range(3)] + [chat(ahead, plain) for _ in range(6)]
    answers += [chat(behind, plain) for _ in range(3)]
    assert [r.status_code for r in answers].count(200) == 4
    refused = [r for r in answers if r.status_code == 429]
    assert len(refused) == 8
    # Both hosts tell the same wait: what is left of one minute, never more.
    waits = {int(r.headers["Retry-After"]) for r in refused}
    assert max(waits) <= 60 and max(waits) - min(waits) <= 2


def test_a_30s_budget_resets_on_time_and_once_on_both_hosts(
    ahead_behind: tuple[ProxyServer, ProxyServer], worst: float
) -> None:
    ahead, behind = ahead_behind
    key = new_key(behind, max_budget=1.01 * worst, budget_duration="30s")  # room for one call
    created, reset_at = epoch(key["created_at"]), epoch(key["budget_reset_at"])
    assert created == pytest.approx(time.time(), abs=3)  # the database's time, not the host's
    assert reset_at - created == pytest.approx(30, abs=1e-3)
    plain = key["key"]
    first = chat(ahead, plain)
    assert first.status_code == 200, first.text
    assert chat(ahead, plain).status_code == 401
    assert chat(behind, plain).status_code == 401
    # Just before the period ends, the host whose clock is ahead does not reset it early.
    time.sleep(max(0.0, reset_at - 4 - time.time()))
    assert chat(ahead, plain).status_code == 401
    # Just after, the host whose clock is behind resets it: not a whole skew late.
    time.sleep(max(0.0, reset_at + 0.5 - time.time()))
    assert chat(behind, plain).status_code == 200
    # Once: the new period has its call, on either host.
    assert chat(ahead, plain).status_code == 401
    info = requests.get(
        f"{ahead.url}/key/info", params={"key": plain}, headers=MASTER, timeout=30
    ).json()["info"]
    assert epoch(info["budget_reset_at"]) == pytest.approx(reset_at + 30, abs=1e-3)
    assert info["spend"] > 0


def _hold_a_call(server: ProxyServer, plain: str, upstream: MockOpenAI, rows: Any) -> Any:
    """Start a call on ``server`` that hangs upstream; return its thread once ``rows()``
    shows what it holds."""
    upstream.hang = True
    thread = threading.Thread(target=chat, args=(server, plain), daemon=True)
    thread.start()
    wait_until(rows, timeout=15, interval=0.05)
    return thread


def test_a_parallel_slot_leased_on_one_host_is_not_expired_on_the_other(
    ahead_behind: tuple[ProxyServer, ProxyServer], upstream: MockOpenAI
) -> None:
    ahead, behind = ahead_behind
    plain = new_key(ahead, max_parallel_requests=1)["key"]

    def leases() -> list[RateLimitLease]:
        with database.connection_context():
            return list(RateLimitLease.select())

    holder = _hold_a_call(behind, plain, upstream, leases)
    try:
        # The lease runs 20 s of database time; the host ahead must not see it expired.
        refused = chat(ahead, plain)
        assert refused.status_code == 429, refused.text
        assert "max_parallel_requests=1" in refused.json()["error"]["message"]
    finally:
        upstream.hang = False
        holder.join(timeout=30)


def test_a_strict_reservation_held_on_one_host_is_not_expired_on_the_other(
    ahead_behind: tuple[ProxyServer, ProxyServer], upstream: MockOpenAI, worst: float
) -> None:
    ahead, behind = ahead_behind
    plain = new_key(ahead, max_budget=1.5 * worst)["key"]  # room for one call in flight

    def reservations() -> list[BudgetReservation]:
        with database.connection_context():
            return list(BudgetReservation.select())

    holder = _hold_a_call(behind, plain, upstream, reservations)
    try:
        refused = chat(ahead, plain)
        assert refused.status_code == 401, refused.text
        assert "calls in flight hold" in refused.json()["error"]["message"]
    finally:
        upstream.hang = False
        holder.join(timeout=30)
    with database.connection_context():
        assert BudgetReservation.select().count() == 0  # settled by the call that held it
