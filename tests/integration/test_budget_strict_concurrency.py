"""Strict budgets under real concurrency: 2 gunicorn instances (2 workers each) on one
PostgreSQL database, 200 concurrent calls against a key with room for exactly 50.

Prices are powers of two, so every sum of call costs is exact in floating point,
and the upstream bills the most the documented worst case allows
(tests/support/billing.py, its own count), so a call's real cost equals what
strict mode reserves: "as many successes as fit" is exactly 50. The same run in
``check`` mode documents the overshoot that strict mode prevents.
"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from plugins.budgets.strict import BudgetReservation
from proxy.call.auth import hash_key
from proxy.storage.counters import proxy_total
from proxy.storage.db import database, init_database
from proxy.storage.models import Customer, Key, SpendLog, Team, User
from tests.conftest import base_config, openai_model
from tests.support.billing import AdversarialBilling
from tests.support.budgets import make_key, make_user
from tests.support.counters import counter, stripes_used
from tests.support.mock_openai import MockOpenAI
from tests.support.proxy_server import ProxyServer

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

IN, OUT = 2.0**-20, 2.0**-18
BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
BILL = AdversarialBilling().chat_usage(BODY, answer_words=5)  # 22 prompt, 5 completion tokens
CALL_COST = BILL["prompt_tokens"] * IN + BILL["completion_tokens"] * OUT
ROOM = 50
CALLS = 200


def run_concurrently(
    urls: list[str], keys: list[str], customers: list[str] | None = None
) -> Counter[int]:
    """CALLS calls spread over ``urls`` (and keys, end users), 40 at a time; statuses."""
    local = threading.local()

    def one(i: int) -> int:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        body: dict[str, Any] = dict(BODY)
        if customers:
            body["user"] = customers[i % len(customers)]
        resp = session.post(
            f"{urls[i % len(urls)]}/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {keys[i % len(keys)]}"},
            timeout=30,
        )
        return resp.status_code

    with ThreadPoolExecutor(max_workers=40) as pool:
        return Counter(pool.map(one, range(CALLS)))


def two_hosts_config(pg_url: str, upstream: MockOpenAI, mode: str, **litellm: Any) -> dict:
    model = openai_model(
        "gpt-4o", upstream.base_url, input_cost_per_token=IN, output_cost_per_token=OUT
    )
    return base_config(
        pg_url,
        model_list=[model],
        general_settings={"budget_enforcement": mode},
        litellm_settings=litellm,
    )


def run_mode(mode: str, pg_url: str, upstream: MockOpenAI, tmp_path: Path) -> dict[str, Any]:
    config = two_hosts_config(pg_url, upstream, mode)
    upstream.billing = AdversarialBilling()
    upstream.delay = 0.1  # calls overlap: spend lands well after the checks
    a = ProxyServer(config, tmp_path, workers=2, threads=8, name="host-a")
    b = ProxyServer(config, tmp_path, workers=2, threads=8, name="host-b")
    with a, b:
        init_database(pg_url)
        # One hot key (of a user and a team, for one end user): every call's settle
        # adds to the same four counters, each striped (proxy.storage.stripes).
        make_user("hot-user", team_id="hot-team")
        plain = make_key(max_budget=ROOM * CALL_COST, user_id="hot-user", team_id="hot-team")
        statuses = run_concurrently([a.url, b.url], [plain], ["hot-customer"])
    with database.connection_context():
        logs = SpendLog.select().count()
        held = BudgetReservation.select().count()
    hot = {"key": hash_key(plain), "user": "hot-user", "team": "hot-team"}
    hot["customer"] = "hot-customer"
    return {
        "statuses": statuses,
        "spend": counter(pg_url, "key", hot["key"]),  # read by plain SQL: base + stripes
        "others": [counter(pg_url, kind, hot[kind]) for kind in ("user", "team", "customer")],
        "stripes": min(stripes_used(pg_url, kind, entity_id) for kind, entity_id in hot.items()),
        "logs": logs,
        "held": held,
    }


def test_strict_mode_lets_exactly_the_calls_that_fit_and_never_overshoots(
    pg_url: str, upstream: MockOpenAI, tmp_path: Path
) -> None:
    result = run_mode("strict", pg_url, upstream, tmp_path)
    assert result["statuses"] == {200: ROOM, 401: CALLS - ROOM}
    assert result["spend"] == ROOM * CALL_COST  # exact: powers of two
    assert result["others"] == [ROOM * CALL_COST] * 3  # its user, team and end user
    assert result["stripes"] > 1  # the settles went to several stripes of each
    assert result["logs"] == ROOM
    assert result["held"] == 0  # every reservation settled or released
    assert upstream.stats()["requests"] == ROOM


def test_check_mode_overshoots_under_the_same_load(
    pg_url: str, upstream: MockOpenAI, tmp_path: Path
) -> None:
    result = run_mode("check", pg_url, upstream, tmp_path)
    successes = result["statuses"][200]
    assert result["statuses"][200] + result["statuses"][401] == CALLS
    overshoot = result["spend"] - ROOM * CALL_COST
    print(
        f"\ncheck mode: {successes} of {CALLS} calls passed a key with room for {ROOM}; "
        f"spend {result['spend']!r} vs max_budget {ROOM * CALL_COST!r} "
        f"(+{overshoot / (ROOM * CALL_COST):.0%})"
    )
    # LiteLLM's check-then-spend lets calls in flight through: the overshoot strict fixes.
    assert successes > ROOM
    assert result["spend"] == successes * CALL_COST > ROOM * CALL_COST
    assert result["others"] == [successes * CALL_COST] * 3


def test_strict_mode_holds_every_level_at_once_without_deadlocks(
    pg_url: str, upstream: MockOpenAI, tmp_path: Path
) -> None:
    """Key, user, end user and proxy budgets reserved together by concurrent calls."""
    config = two_hosts_config(
        pg_url, upstream, "strict", max_budget=50 * CALL_COST, max_user_budget=15 * CALL_COST
    )
    upstream.billing = AdversarialBilling()
    upstream.delay = 0.05
    customers = [f"customer-{n}" for n in range(5)]
    a = ProxyServer(config, tmp_path, workers=2, threads=8, name="host-a")
    b = ProxyServer(config, tmp_path, workers=2, threads=8, name="host-b")
    with a, b:
        init_database(pg_url)
        make_user("team-user", max_budget=45 * CALL_COST)
        keys = [make_key(user_id="team-user", max_budget=30 * CALL_COST) for _ in range(2)]
        keys.append(make_key(max_budget=40 * CALL_COST))
        statuses = run_concurrently([a.url, b.url], keys, customers)
    # 40 calls fit the user (all its keys) and the third key together, 50 the proxy,
    # 75 the five end users: the proxy binds, so exactly 50 pass.
    assert statuses == {200: 50, 401: CALLS - 50}
    with database.connection_context():
        key_spend = [Key.get_by_id(hash_key(k)).spend for k in keys]
        user_spend = User.get_by_id("team-user").spend
        customer_spend = [Customer.get_by_id(c).spend for c in customers]
        proxy_spend = proxy_total()
        assert BudgetReservation.select().count() == 0
    assert proxy_spend == 50 * CALL_COST
    assert all(spend <= 30 * CALL_COST for spend in key_spend[:2])
    assert key_spend[2] <= 40 * CALL_COST
    assert user_spend == key_spend[0] + key_spend[1] <= 45 * CALL_COST
    assert all(spend <= 15 * CALL_COST for spend in customer_spend)
    assert sum(customer_spend) == 50 * CALL_COST


def test_strict_mode_holds_a_team_budget_shared_by_its_keys(
    pg_url: str, upstream: MockOpenAI, tmp_path: Path
) -> None:
    """Four keys of one team, 200 concurrent calls on two hosts: exactly the calls the
    team's budget can pay for pass, and the team's spend lands exactly on it."""
    config = two_hosts_config(pg_url, upstream, "strict")
    upstream.billing = AdversarialBilling()
    upstream.delay = 0.1
    a = ProxyServer(config, tmp_path, workers=2, threads=8, name="host-a")
    b = ProxyServer(config, tmp_path, workers=2, threads=8, name="host-b")
    with a, b:
        init_database(pg_url)
        with database.connection_context():
            Team.create(team_id="shared-team", max_budget=ROOM * CALL_COST, updated_at=1.0)
        keys = [make_key(team_id="shared-team") for _ in range(4)]
        statuses = run_concurrently([a.url, b.url], keys)
    assert statuses == {200: ROOM, 401: CALLS - ROOM}
    with database.connection_context():
        team_spend = Team.get_by_id("shared-team").spend
        logs = SpendLog.select().where(SpendLog.team_id == "shared-team").count()
        assert BudgetReservation.select().count() == 0
    assert team_spend == ROOM * CALL_COST  # exact: powers of two
    assert logs == ROOM
