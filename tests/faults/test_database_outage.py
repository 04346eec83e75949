"""The database goes away under load, at start-up, mid-settle: nothing lost, never down.

PostgreSQL, 2 instances x 2 gunicorn workers, each instance with its own
spend journal (two "hosts"). The outage is this test's own database cut off
(``ALLOW_CONNECTIONS false`` and its backends terminated), restored in a
``finally``; nothing else on the server is touched. After each fault: every
instance serves again within 30 s of the database's return with no restart,
every call the upstream answered has exactly one spend-log row, counters
equal the sum of logs, and no client got a 503 for a call the upstream
answered.
"""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
import requests

from tests.conftest import MASTER
from tests.faults.harness import (
    RECOVERY_SECONDS,
    Instances,
    Load,
    assert_ledger_exact,
    call,
    new_key,
    wait_journals_replayed,
    wait_served_again,
)
from tests.faults.outage import DatabaseCutOff, database_cut_off
from tests.support.databases import create_pg_database, drop_pg_database
from tests.support.mock_openai import MockOpenAI
from tests.support.proxy_server import ProxyServer, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

OUTAGE_SECONDS = 10


@pytest.fixture
def fault_db() -> Iterator[str]:
    url = create_pg_database("comptroller_faults")
    try:
        yield url
    finally:
        DatabaseCutOff(url).restore()  # whatever the test did
        drop_pg_database(url)


def _kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


def test_an_outage_under_load_with_a_worker_killed_loses_nothing(
    fault_db: str, upstream: MockOpenAI, tmp_path: Path
) -> None:
    # Streams long enough that some are mid-relay when the database goes.
    upstream.stream_chunk_delay = 0.05
    instances = Instances(fault_db, upstream, tmp_path)
    with instances.running():
        arbiters = instances.arbiters()
        key = new_key(instances.servers[0])
        with Load(instances, key) as load:
            wait_until(lambda: len(load.outcomes) >= 20, timeout=30)
            with database_cut_off(fault_db):
                started = time.monotonic()
                # Once the calls that were upstream when it went are over, kill a worker:
                # its replacement boots without the database.
                wait_until(lambda: upstream.in_flight == 0, timeout=OUTAGE_SECONDS)
                victim = instances.servers[0].worker_pids()[0]
                _kill(victim)
                wait_until(
                    lambda: (
                        len(instances.servers[0].worker_pids()) == 2
                        and victim not in instances.servers[0].worker_pids()
                    ),
                    timeout=OUTAGE_SECONDS,
                )
                time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - started)))
                during = len(load.outcomes)
            back = time.monotonic()
            recovered_in = wait_served_again(instances, key, back)
            wait_until(lambda: len(load.outcomes) >= during + 20, timeout=RECOVERY_SECONDS)
        wait_journals_replayed(instances)
        assert recovered_in < RECOVERY_SECONDS
        assert instances.all_up() and instances.arbiters() == arbiters  # no restart
        outcomes = load.outcomes
        assert any(o.status == 503 for o in outcomes), "the outage refused nothing"
        assert any(o.status == 200 and o.stream for o in outcomes)
        assert_ledger_exact(fault_db, upstream, outcomes)


def workers_reached(server: ProxyServer) -> bool:
    """Every worker of ``server`` has logged that it reached the database."""
    said = server.log_path.read_text(errors="replace").count(
        "database reached: migrations applied, serving"
    )
    return said >= server.workers


def test_start_up_while_the_database_is_down_waits_then_serves(
    fault_db: str, upstream: MockOpenAI, tmp_path: Path
) -> None:
    instances = Instances(fault_db, upstream, tmp_path)
    outage = DatabaseCutOff(fault_db)
    try:
        outage.cut()
        with instances.running(wait_ready=False):
            for server in instances.servers:
                ready = requests.get(f"{server.url}/health/readiness", timeout=10)
                assert ready.status_code == 503
                message = ready.json()["error"]["message"]
                assert "waiting for the database to apply migrations" in message, message
                refused = requests.post(
                    f"{server.url}/key/generate", json={}, headers=MASTER, timeout=10
                )
                assert refused.status_code == 503, refused.text
            time.sleep(3)  # a while down: the workers keep waiting, the arbiters live
            assert instances.all_up()
            arbiters = instances.arbiters()
            outage.restore()
            back = time.monotonic()
            for server in instances.servers:
                wait_until(
                    lambda server=server: (
                        requests.get(f"{server.url}/health/readiness", timeout=5).status_code == 200
                    ),
                    timeout=RECOVERY_SECONDS,
                )
            # A readiness probe reaches one worker; the calls below may reach any, and a
            # worker whose last try failed just before the return waits REQUEST_RETRY_SECONDS
            # before its next. Every worker of every instance says when it is through.
            wait_until(lambda: all(workers_reached(s) for s in instances.servers), RECOVERY_SECONDS)
            key = new_key(instances.servers[0])
            recovered_in = wait_served_again(instances, key, back)
            assert recovered_in < RECOVERY_SECONDS
            outcomes = [
                call(server, {"Authorization": f"Bearer {key}"}, stream=stream)
                for server in instances.servers
                for stream in (False, True)
            ]
            assert [o.status for o in outcomes] == [200] * 4
            assert instances.arbiters() == arbiters
            assert_ledger_exact(fault_db, upstream, outcomes)
    finally:
        outage.restore()


def _lock_the_key_row(db_url: str, key: str) -> psycopg2.extensions.connection:
    """A transaction that holds the key's row: a spend transaction of that key waits."""
    conn = psycopg2.connect(db_url)
    with conn.cursor() as cur:
        cur.execute(
            'SELECT 1 FROM "key" WHERE token = %s FOR UPDATE',
            (hashlib.sha256(key.encode()).hexdigest(),),
        )
    return conn  # in a transaction until closed


def _waiting_on_the_lock(db_url: str) -> int:
    conn = psycopg2.connect(db_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'"
            )
            return int(cur.fetchone()[0])
    finally:
        conn.close()


@pytest.mark.parametrize("stream", [False, True])
def test_a_worker_killed_mid_settle_is_billed_once_by_the_journal(
    fault_db: str, upstream: MockOpenAI, tmp_path: Path, stream: bool
) -> None:
    instances = Instances(fault_db, upstream, tmp_path)
    with instances.running():
        server = instances.servers[0]
        arbiters = instances.arbiters()
        key = new_key(server)
        headers = {"Authorization": f"Bearer {key}"}
        first = call(server, headers, stream=stream)
        assert first.status == 200
        holder = _lock_the_key_row(fault_db, key)
        outcomes = [first]
        try:
            result: list = []
            caller = threading.Thread(
                target=lambda: result.append(call(server, headers, stream=stream))
            )
            caller.start()
            # The call was answered upstream and its spend transaction waits on the row.
            wait_until(lambda: _waiting_on_the_lock(fault_db) == 1, timeout=30)
            assert instances.pending_journal_entries() == 1  # written ahead of the commit
            for pid in server.worker_pids():  # whichever worker settles it
                os.kill(pid, signal.SIGKILL)
            caller.join(timeout=30)
            outcomes += result
        finally:
            holder.close()
        # The replacement workers replay the entry the killed one left.
        wait_journals_replayed(instances)
        wait_served_again(instances, key, time.monotonic())
        assert instances.arbiters() == arbiters
        assert_ledger_exact(fault_db, upstream, outcomes)
