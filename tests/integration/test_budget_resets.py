"""A ``2s`` budget_duration under real gunicorn workers on PostgreSQL.

The key is blocked until its period ends, allowed right after, and reset
exactly once although several workers race to the reset.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import requests

from proxy.call.auth import hash_key
from proxy.storage.db import database, init_database
from proxy.storage.models import Key, SpendLog
from tests.support.budgets import CALL_COST, budget_config, make_key
from tests.support.proxy_server import ProxyServer

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

PERIOD = 2.0
POLLERS = 6
POLL_INTERVAL = 0.02


def test_two_second_budget_blocks_then_allows_right_after_the_reset(
    pg_url: str, tmp_path: Path
) -> None:
    with ProxyServer(budget_config(pg_url), tmp_path, workers=3, threads=4) as server:
        init_database(pg_url)
        created = time.time()
        reset_at = created + PERIOD
        plain = make_key(
            max_budget=1.5 * CALL_COST,
            budget_duration="2s",
            created_at=created,
            budget_reset_at=reset_at,
        )
        url = f"{server.url}/chat/completions"
        body = {"model": "priced", "messages": [{"role": "user", "content": "hi"}]}
        headers = {"Authorization": f"Bearer {plain}"}
        assert [requests.post(url, json=body, headers=headers).status_code for _ in range(3)] == [
            200,
            200,
            401,
        ]
        assert time.time() < reset_at, "the machine is too slow for a 2 s period"

        # Several clients poll until shortly after the reset: (sent, answered, status).
        seen: list[tuple[float, float, int]] = []
        lock = threading.Lock()
        stop_at = reset_at + 0.5

        def poll() -> None:
            with requests.Session() as session:
                while time.time() < stop_at:
                    sent = time.time()
                    status = session.post(url, json=body, headers=headers).status_code
                    with lock:
                        seen.append((sent, time.time(), status))
                    time.sleep(POLL_INTERVAL)

        threads = [threading.Thread(target=poll) for _ in range(POLLERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)

    allowed = [(sent, answered) for sent, answered, status in seen if status == 200]
    assert {status for _, _, status in seen} <= {200, 401}
    assert allowed, "never allowed after the reset"
    print(
        f"\n{len(seen)} polls, {len(allowed)} allowed; first allowed call sent "
        f"{min(s for s, _ in allowed) - reset_at:+.3f}s from the reset"
    )
    # Blocked until the period ended ...
    assert all(answered >= reset_at for _, answered in allowed)
    assert any(sent < reset_at for sent, _, status in seen if status == 401), (
        "no poll before the reset: the machine is too slow for a 2 s period"
    )
    # ... and allowed right after it: the first calls checked after the reset pass, so
    # a call sent after the reset is refused only once allowed calls spent the new
    # period's budget, one of them sent before that refusal came back. (An order, not
    # a bound in seconds: on a loaded machine one poll round may take longer.)
    first_allowed = min(sent for sent, _ in allowed)
    refused_after = [(s, a) for s, a, status in seen if status == 401 and s >= reset_at]
    assert all(first_allowed < answered for _, answered in refused_after), (
        f"refused after the reset before any call was allowed: {sorted(refused_after)[:3]}, "
        f"first allowed call sent {first_allowed - reset_at:+.3f}s from the reset"
    )
    with database.connection_context():
        key = Key.get_by_id(hash_key(plain))
        logs = SpendLog.select().where(SpendLog.api_key == hash_key(plain)).count()
    # Reset exactly once: the key holds every call made after the reset, no fewer.
    assert logs == 2 + len(allowed)
    assert key.spend == pytest.approx(len(allowed) * CALL_COST, abs=1e-12)
    assert key.budget_reset_at == created + 2 * PERIOD  # whole periods from creation
