"""The database's clock (proxy.storage.clock): the host's wall clock does not move it."""

from __future__ import annotations

import time

import pytest

from proxy.storage import clock
from proxy.storage.clock import DatabaseClock
from proxy.storage.db import database, init_database
from proxy.storage.lookup import load_call_rows
from proxy.storage.migrate import migrate
from tests.faults.outage import database_cut_off
from tests.support.databases import create_pg_database, drop_pg_database


@pytest.fixture
def own_clock(monkeypatch: pytest.MonkeyPatch) -> DatabaseClock:
    fresh = DatabaseClock()
    monkeypatch.setattr(clock, "database_clock", fresh)
    return fresh


def _server_time() -> float:
    with database.connection_context():
        return float(database.execute_sql(clock.SELECT_NOW).fetchone()[0])


def test_a_host_clock_30s_off_reads_the_servers_time(
    pg: str, own_clock: DatabaseClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 30)
    before = _server_time()
    now = clock.now()
    after = _server_time()
    assert before <= now <= after + 0.05
    assert abs(now - time.time() + 30) < 1  # the host's clock is off; the answer is not


def test_the_call_lookup_sets_the_clock_without_a_query_of_its_own(
    pg: str, own_clock: DatabaseClock
) -> None:
    migrate()
    own_clock._reading = None
    with database.connection_context():
        load_call_rows(None, None, None)
    reading = own_clock._reading
    assert reading is not None
    assert abs(reading[0] - _server_time()) < 1


def test_without_a_recent_reading_the_clock_asks_the_server_again(
    pg: str, own_clock: DatabaseClock
) -> None:
    own_clock.observe(1000.0)  # long ago, and read a resync interval ago
    own_clock._reading = (1000.0, time.monotonic() - clock.RESYNC_SECONDS - 1)
    assert abs(clock.now() - _server_time()) < 1


@pytest.mark.postgres
def test_the_clock_never_fails_a_caller_while_the_database_is_away(
    own_clock: DatabaseClock,
) -> None:
    url = create_pg_database("comptroller_clock")
    init_database(url)
    try:
        own_clock._reading = (_server_time(), time.monotonic() - clock.RESYNC_SECONDS - 1)
        stale = own_clock._reading[0]
        with database_cut_off(url):
            database.close()
            moment = clock.now()  # the last reading, carried forward
        assert moment >= stale + clock.RESYNC_SECONDS
    finally:
        if not database.is_closed():
            database.close()
        close_all = getattr(database.obj, "close_all", None)
        if close_all is not None:
            close_all()
        drop_pg_database(url)


def test_on_sqlite_the_database_clock_is_the_hosts(tmp_path, own_clock: DatabaseClock) -> None:
    init_database(f"sqlite:///{tmp_path / 'c.db'}")
    assert abs(clock.now() - time.time()) < 0.01
