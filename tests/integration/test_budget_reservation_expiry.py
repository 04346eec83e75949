"""A strict reservation whose worker dies mid-call is released when it expires.

The upstream hangs, the gunicorn workers are killed (SIGKILL: no clean-up
runs), and the key is refused while the dead call's reservation holds its
budget, then allowed once the reservation expires (2 x timeout + 5 s).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import requests

from plugins.budgets.strict import TTL_MARGIN_SECONDS, BudgetReservation
from proxy.call.auth import hash_key
from proxy.storage.db import database, init_database
from proxy.storage.models import Key
from tests.conftest import base_config, openai_model
from tests.support.billing import AdversarialBilling
from tests.support.budgets import make_key
from tests.support.mock_openai import MockOpenAI
from tests.support.proxy_server import ProxyServer, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

IN, OUT = 0.001, 0.01
WORST = 22 * IN + 5 * OUT  # the bound of "hi": 8 framing + 4 "user" + 2 "hi" + 8 priming
TIMEOUT = 2.0


def held() -> list[BudgetReservation]:
    with database.connection_context():
        return list(BudgetReservation.select())


def test_a_dead_workers_reservation_expires_and_frees_the_budget(
    pg_url: str, upstream: MockOpenAI, tmp_path: Path
) -> None:
    model = openai_model(
        "gpt-4o",
        upstream.base_url,
        input_cost_per_token=IN,
        output_cost_per_token=OUT,
        timeout=TIMEOUT,
    )
    config = base_config(
        pg_url,
        model_list=[model],
        general_settings={"budget_enforcement": "strict"},
        # One attempt: with retries the reservation holds for each (see test_router.py).
        router_settings={"num_retries": 0},
    )
    with ProxyServer(config, tmp_path, workers=2, threads=4) as server:
        init_database(pg_url)
        plain = make_key(max_budget=1.5 * WORST)  # room for one call in flight
        url = f"{server.url}/chat/completions"
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
        headers = {"Authorization": f"Bearer {plain}"}

        upstream.billing = AdversarialBilling()  # bills a call exactly its worst case
        upstream.hang = True

        def doomed_call() -> None:
            try:
                requests.post(url, json=body, headers=headers, timeout=30)
            except requests.RequestException:
                pass  # its worker is killed under it

        doomed = threading.Thread(target=doomed_call)
        doomed.start()
        (reservation,) = wait_until(held, timeout=10, interval=0.01)
        for pid in server.worker_pids():
            os.kill(pid, signal.SIGKILL)
        upstream.hang = False
        doomed.join(timeout=30)
        assert reservation.expires_at == pytest.approx(
            reservation.created_at + 2 * TIMEOUT + TTL_MARGIN_SECONDS
        )

        refused = requests.post(url, json=body, headers=headers, timeout=30)
        assert time.time() < reservation.expires_at, "the machine is too slow for this test"
        assert refused.status_code == 401
        assert f"calls in flight hold {WORST!r}" in refused.json()["error"]["message"]

        def allowed() -> float | None:
            resp = requests.post(url, json=body, headers=headers, timeout=30)
            return time.time() if resp.status_code == 200 else None

        allowed_at = wait_until(
            allowed, timeout=2 * TIMEOUT + TTL_MARGIN_SECONDS + 10, interval=0.2
        )
    assert reservation.expires_at <= allowed_at < reservation.expires_at + 2.0
    with database.connection_context():
        spend = Key.get_by_id(hash_key(plain)).spend
    assert spend == pytest.approx(WORST)  # the dead call charged nothing, the new one its cost
