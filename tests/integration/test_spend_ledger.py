"""The spend ledger is exact under concurrency: real gunicorn processes on Postgres.

Every call is made with one hot key (of one user and one team, for one end
user), so its settles all add to the same counters: striped
(proxy.storage.stripes), each must still equal the sum of its spend logs,
read from the database by plain SQL (tests/support/counters.py)."""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from peewee import fn

from proxy.call.auth import generate_key, hash_key
from proxy.storage.counters import proxy_total
from proxy.storage.db import database, init_database
from proxy.storage.migrate import migrate
from proxy.storage.models import Customer, Key, SpendLog, SpendStripe, Team, User
from tests.support.counters import counter, logged, stripes_used
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
            Team.create(team_id="ledger-team")
            Key.create(
                token=hash_key(plain),
                key_name="sk-...test",
                user_id="ledger-user",
                team_id="ledger-team",
            )
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
        assert statuses.count(200) == CALLS, Counter(statuses)

        with database.connection_context():
            logs = SpendLog.select()
            assert logs.count() == CALLS
            per_call = {round(log.spend, 15) for log in logs}
            assert len(per_call) == 1, "every call has the same tokens, so the same cost"
            cost = per_call.pop()
            assert cost > 0
            total = SpendLog.select(fn.SUM(SpendLog.spend)).scalar()
            expected = CALLS * cost
            assert SpendLog.select().where(SpendLog.end_user == "ledger-customer").count() == CALLS
            # What the API shows (the models sum the stripes) agrees.
            shown = (
                Key.get(Key.token == hash_key(plain)).spend,
                User.get_by_id("ledger-user").spend,
                Team.get_by_id("ledger-team").spend,
                Customer.get_by_id("ledger-customer").spend,
                proxy_total(),
            )
        database.close_all()  # type: ignore[attr-defined]
        hot = {
            "key": hash_key(plain),
            "user": "ledger-user",
            "team": "ledger-team",
            "customer": "ledger-customer",
        }
        for kind, entity_id in [*hot.items(), ("proxy", "")]:
            value = counter(url, kind, entity_id)
            assert value == pytest.approx(total, abs=1e-9), kind
            assert value == pytest.approx(expected, abs=1e-9), kind
        for kind, entity_id in hot.items():
            # The hot entity's settles went to several stripes, not to its one row.
            assert stripes_used(url, kind, entity_id) > 1, kind
        assert shown == pytest.approx((total,) * 5, abs=1e-9)
    finally:
        drop_pg_database(url)


def test_a_hot_key_regenerated_under_load_keeps_every_counter_exact(tmp_path: Path) -> None:
    """16 clients call with one key while it is regenerated three times: the calls in
    flight at each regeneration settle on the key under its new hash (their stripes
    follow it), so the key's counter equals the sum of its logs and no stripe is
    left under an old hash; its user's, team's, end user's and the proxy's too."""
    url = create_pg_database("comptroller_ledger")
    master = "sk-master-ledger"
    try:
        init_database(url)
        migrate()
        database.close_all()  # type: ignore[attr-defined]
        config = {
            "model_list": [MODEL],
            "general_settings": {"master_key": master, "database_url": url},
        }
        server = ProxyServer(config, tmp_path, workers=4, threads=4, name="hot")
        server.start()
        try:
            admin = requests.Session()
            admin.headers["Authorization"] = f"Bearer {master}"
            made = admin.post(
                f"{server.url}/user/new",
                json={"user_id": "hot-user", "team_id": "hot-team"},
                timeout=30,
            )
            assert made.status_code == 200, made.text
            current = {"key": made.json()["key"]}
            sessions: dict[int, requests.Session] = {}

            def call(i: int) -> int:
                session = sessions.setdefault(i % 16, requests.Session())
                return _send(session, server.url, current["key"])

            statuses: list[int] = []
            with ThreadPoolExecutor(max_workers=16) as pool:
                for _ in range(4):
                    batch = [pool.submit(call, i) for i in range(300)]
                    # Regenerate while the batch's calls are in flight.
                    while sum(f.done() for f in batch) < 150:
                        time.sleep(0.005)
                    answer = admin.post(
                        f"{server.url}/key/regenerate", json={"key": current["key"]}, timeout=30
                    )
                    assert answer.status_code == 200, answer.text
                    current["key"] = answer.json()["key"]
                    statuses += [f.result() for f in batch]
        finally:
            server.stop()
        assert statuses.count(200) > 600 and set(statuses) <= {200, 401}
        token = hash_key(current["key"])
        with database.connection_context():
            calls = SpendLog.select().count()
            key_logs = SpendLog.select().where(SpendLog.api_key == token).count()
            orphans = (
                SpendStripe.select()
                .where((SpendStripe.kind == "key") & (SpendStripe.entity_id != token))
                .count()
            )
        database.close_all()  # type: ignore[attr-defined]
        assert calls == key_logs == statuses.count(200)  # every log followed the key
        assert orphans == 0
        for kind, column, entity_id in (
            ("key", "api_key", token),
            ("user", "user_id", "hot-user"),
            ("team", "team_id", "hot-team"),
            ("customer", "end_user", "ledger-customer"),
        ):
            assert counter(url, kind, entity_id) == pytest.approx(
                logged(url, column, entity_id), abs=1e-9
            ), kind
        assert counter(url, "proxy", "") == pytest.approx(logged(url), abs=1e-9)
    finally:
        drop_pg_database(url)
