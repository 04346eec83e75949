"""``gunicorn --preload``: workers forked from an arbiter that already used the database.

With ``--preload`` the arbiter builds the app (migrations on a fresh
database, start-up reads) before it forks, so its connection pool holds a
connection when the workers are born. Each worker must open its own: two
processes talking on one PostgreSQL socket fail each other's calls or
corrupt each other's transactions.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from peewee import fn

from proxy.call.auth import hash_key
from proxy.storage.counters import proxy_total
from proxy.storage.db import database, init_database
from proxy.storage.models import Key, SpendLog
from tests.conftest import MASTER, base_config, openai_model
from tests.support.databases import create_pg_database, drop_pg_database
from tests.support.mock_openai import MockOpenAI
from tests.support.proxy_server import ProxyServer

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

CALLS = 40
MAX_CALLS = 10 * CALLS
# The access log names the worker (its pid) that served each request.
ACCESS_LOG = ["--access-logfile", "-", "--access-logformat", "served-by %(p)s %(U)s %(s)s"]


@pytest.fixture
def fresh_pg_url() -> Iterator[str]:
    """A database with no tables yet: the arbiter's start-up runs the migrations."""
    url = create_pg_database("comptroller_preload")
    yield url
    if database.obj is not None and not database.is_closed():
        database.close()
    close_all = getattr(database.obj, "close_all", None)
    if close_all is not None:
        close_all()
    drop_pg_database(url)


def _served(log: str) -> list[str]:
    """The pids of the workers that served each /chat/completions, from the access log."""
    return re.findall(r"served-by <(\d+)> /chat/completions 200", log)


def _chat(url: str, key: str, i: int) -> int:
    resp = requests.post(
        f"{url}/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={
            "model": "gpt-4o-mini",
            "user": f"preload-customer-{i % 4}",
            "messages": [{"role": "user", "content": f"call number {i}"}],
        },
        timeout=15,
    )
    return resp.status_code


def test_preloaded_workers_each_use_their_own_connections(
    fresh_pg_url: str, upstream: MockOpenAI, tmp_path: Path
) -> None:
    upstream.delay = 0.05  # calls overlap, so both workers are busy at once
    config = base_config(
        fresh_pg_url,
        model_list=[
            openai_model(
                "gpt-4o-mini",
                upstream.base_url,
                input_cost_per_token=0.0000013,
                output_cost_per_token=0.0000071,
            )
        ],
    )
    server = ProxyServer(
        config, tmp_path, workers=2, threads=8, gunicorn_args=["--preload", *ACCESS_LOG]
    )
    with server:
        made = requests.post(
            f"{server.url}/key/generate", headers=MASTER, json={"max_budget": 100}, timeout=30
        )
        assert made.status_code == 200, made.text
        plain = made.json()["key"]
        # Either worker may accept every connection of a batch (the kernel wakes
        # whichever it likes): batches of calls until both have served some.
        statuses: list[int] = []
        with ThreadPoolExecutor(max_workers=16) as pool:
            while len(statuses) < MAX_CALLS:
                batch = range(len(statuses), len(statuses) + CALLS)
                statuses += pool.map(lambda i: _chat(server.url, plain, i), batch)
                if set(statuses) != {200} or len(set(_served(server.log_path.read_text()))) == 2:
                    break
    log = server.log_path.read_text()
    assert statuses == [200] * len(statuses), log[-4000:]
    served = _served(log)
    assert len(served) == len(statuses)
    assert len(set(served)) == 2, "both workers served calls"

    init_database(fresh_pg_url)
    with database.connection_context():
        logged = SpendLog.select(fn.COUNT(SpendLog.request_id), fn.SUM(SpendLog.spend)).scalar(
            as_tuple=True
        )
        key_spend = Key.get_by_id(hash_key(plain)).spend
        proxy_spend = proxy_total()
    count, total = logged
    assert count == len(statuses)
    assert total > 0
    assert key_spend == pytest.approx(total, abs=1e-9)
    assert proxy_spend == pytest.approx(total, abs=1e-9)
