"""Strict budgets on /v1/messages under real concurrency (gunicorn on PostgreSQL).

60 concurrent Anthropic Messages calls (half streamed) on a key with room for
a few: the upstream bills every answer its full ``max_tokens`` and honest
input (its own count), so only the reservation stands between the key and an
overshoot. The key's spend never passes its max_budget, every admitted call
is billed once, and the refused ones get Anthropic's error shape with the
seeds' wording and the strict suffix.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from plugins.budgets.strict import BudgetReservation
from proxy.call.auth import hash_key
from proxy.storage.db import database, init_database
from proxy.storage.models import Key, SpendLog
from tests.conftest import MASTER, base_config
from tests.support.mock_anthropic import MockAnthropic
from tests.support.proxy_server import ProxyServer, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

IN, OUT = 2.0**-20, 2.0**-16
MAX_TOKENS = 64
CALLS = 60
BODY = {
    "model": "claude",
    "max_tokens": MAX_TOKENS,
    "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
    "messages": [{"role": "user", "content": "Summarise the plot of Hamlet, 三 words"}],
}


@pytest.fixture
def claude() -> Iterator[MockAnthropic]:
    with MockAnthropic(api_key="sk-ant-up") as server:
        server.output_at_limit = True
        yield server


def test_concurrent_messages_never_push_a_key_past_its_budget(
    pg_url: str, tmp_path: Path, claude: MockAnthropic
) -> None:
    entry = {
        "model_name": "claude",
        "litellm_params": {
            "model": "anthropic/claude-sonnet-4-5",
            "api_base": claude.base_url,
            "api_key": "sk-ant-up",
            "input_cost_per_token": IN,
            "output_cost_per_token": OUT,
            "cache_read_input_token_cost": IN,
            "cache_creation_input_token_cost": IN,
        },
    }
    config = base_config(
        pg_url, model_list=[entry], general_settings={"budget_enforcement": "strict"}
    )
    with ProxyServer(config, tmp_path, workers=2, threads=8) as proxy:
        init_database(pg_url)
        one_call = MAX_TOKENS * OUT
        budget = 6 * one_call  # the prompt side makes each worst case larger still
        made = requests.post(
            f"{proxy.url}/key/generate", json={"max_budget": budget}, headers=MASTER, timeout=10
        )
        key = made.json()["key"]
        local = threading.local()

        def call(i: int) -> tuple[int, dict]:
            session = getattr(local, "session", None)
            if session is None:
                session = local.session = requests.Session()
            resp = session.post(
                f"{proxy.url}/v1/messages",
                json={**BODY, "stream": i % 2 == 0},
                headers={"x-api-key": key, "anthropic-version": "2023-06-01"},
                timeout=30,
            )
            content = resp.content  # a stream is read to its end
            return resp.status_code, (
                resp.json() if resp.status_code != 200 else {"n": len(content)}
            )

        with ThreadPoolExecutor(max_workers=20) as pool:
            results = list(pool.map(call, range(CALLS)))
        statuses = Counter(status for status, _ in results)
        assert set(statuses) <= {200, 401}, statuses
        assert 1 <= statuses[200] < CALLS
        for status, body in results:
            if status == 401:
                assert body["type"] == "error"
                assert body["error"]["type"] == "authentication_error"
                assert "ExceededTokenBudget" in body["error"]["message"]
        claude.wait_idle()

        def settled() -> bool:
            with database.connection_context():
                return SpendLog.select().count() == statuses[200]

        wait_until(settled, timeout=15)
        with database.connection_context():
            spend = Key.get_by_id(hash_key(key)).spend
            rows = list(SpendLog.select())
            assert BudgetReservation.select().count() == 0
        assert spend <= budget
        assert spend == pytest.approx(sum(r.spend for r in rows), abs=1e-12)
        assert all(r.completion_tokens == MAX_TOKENS for r in rows)
    database.close()
