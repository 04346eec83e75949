"""The spend ledger is exact under concurrency: real gunicorn processes on Postgres."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from peewee import fn

from proxy.call.auth import generate_key, hash_key
from proxy.storage.counters import proxy_total
from proxy.storage.db import database, init_database
from proxy.storage.migrate import migrate
from proxy.storage.models import Customer, Key, SpendLog, User
from tests.support.databases import create_pg_database, drop_pg_database
from tests.support.proxy_server import ProxyServer

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

CALLS = 2000
MODEL = {
    "model_name": "metered",
    "litellm_params": {
        "model": "mock/metered",
        "input_cost_per_token": 0.0000013,
        "output_cost_per_token": 0.0000071,
    },
}


def _send(session: requests.Session, url: str, key: str) -> int:
    resp = session.post(
        f"{url}/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={
            "model": "metered",
            "user": "ledger-customer",
            "messages": [{"role": "user", "content": "count me exactly once"}],
        },
        timeout=30,
    )
    return resp.status_code


def test_two_instances_four_workers_spend_equals_the_sum_of_spend_logs(tmp_path: Path) -> None:
    url = create_pg_database("comptroller_ledger")
    try:
        init_database(url)
        migrate()
        plain = generate_key()
        with database.connection_context():
            User.create(user_id="ledger-user")
            Key.create(token=hash_key(plain), key_name="sk-...test", user_id="ledger-user")
        database.close_all()  # type: ignore[attr-defined]

        config = {
            "model_list": [MODEL],
            "general_settings": {"master_key": "sk-master-ledger", "database_url": url},
        }
        servers = [
            ProxyServer(config, tmp_path, workers=4, threads=4, name=f"host{i}") for i in (1, 2)
        ]
        for server in servers:
            server.start()
        try:
            sessions: dict[int, requests.Session] = {}

            def call(i: int) -> int:
                session = sessions.setdefault(i % 16, requests.Session())
                return _send(session, servers[i % 2].url, plain)

            with ThreadPoolExecutor(max_workers=16) as pool:
                statuses = list(pool.map(call, range(CALLS)))
        finally:
            for server in servers:
                server.stop()
        assert statuses.count(200) == CALLS

        with database.connection_context():
            logs = SpendLog.select()
            assert logs.count() == CALLS
            per_call = {round(log.spend, 15) for log in logs}
            assert len(per_call) == 1, "every call has the same tokens, so the same cost"
            cost = per_call.pop()
            assert cost > 0
            total = SpendLog.select(fn.SUM(SpendLog.spend)).scalar()
            expected = CALLS * cost
            key = Key.get(Key.token == hash_key(plain))
            user = User.get_by_id("ledger-user")
            customer = Customer.get_by_id("ledger-customer")
            for counter in (key.spend, user.spend, customer.spend, proxy_total()):
                assert counter == pytest.approx(total, abs=1e-9)
                assert counter == pytest.approx(expected, abs=1e-9)
            assert SpendLog.select().where(SpendLog.end_user == "ledger-customer").count() == CALLS
        database.close_all()  # type: ignore[attr-defined]
    finally:
        drop_pg_database(url)
