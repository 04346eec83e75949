"""Start without the database, a true 503 while it is away, connection limits checked."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

import proxy.storage.db
from proxy.app import create_app
from proxy.config import build_config
from proxy.storage.db import connection_budget_warning, database, init_database
from tests.conftest import MASTER, MASTER_KEY
from tests.faults.outage import DatabaseCutOff
from tests.support.assertions import assert_error
from tests.support.databases import create_pg_database, drop_pg_database
from tests.support.proxy_server import wait_until

pytestmark = pytest.mark.postgres


@pytest.fixture
def own_pg() -> Iterator[str]:
    """A database of this test's own (it is cut off)."""
    url = create_pg_database("comptroller_avail")
    yield url
    obj = database.obj
    close_all = getattr(obj, "close_all", None)
    if close_all is not None:
        close_all()
    drop_pg_database(url)


def _app(url: str, **general: Any) -> Flask:
    raw = {"general_settings": {"master_key": MASTER_KEY, "database_url": url, **general}}
    app = create_app(build_config(raw))
    app.testing = True
    return app


def test_an_app_built_while_the_database_is_away_waits_for_it_then_serves(
    own_pg: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    outage = DatabaseCutOff(own_pg)
    try:
        outage.cut()
        app = _app(own_pg)  # does not raise: the worker boots
        client = app.test_client()
        assert client.get("/health/liveliness").status_code == 200
        ready = assert_error(client.get("/health/readiness"), 503, err_type="service_unavailable")
        assert "waiting for the database to apply migrations" in ready["message"]
        assert "does not accept connections" in ready["message"]
        assert "127.0.0.1" not in ready["message"]  # the server's address is not shown
        call = client.post("/key/generate", json={}, headers=MASTER)
        error = assert_error(call, 503, err_type="service_unavailable")
        assert error["message"].startswith("Comptroller is not ready")
    finally:
        outage.restore()
    wait_until(lambda: client.get("/health/readiness").status_code == 200, timeout=30)
    assert client.post("/key/generate", json={}, headers=MASTER).status_code == 200


def test_a_broken_migration_still_stops_start_up(
    own_pg: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only an unreachable database is waited for: a migration that fails is a bug."""
    import proxy.storage.schema_gate as gate

    def broken(*args: Any) -> None:
        raise ZeroDivisionError("broken migration")

    monkeypatch.setattr(gate, "migrate", broken)
    with pytest.raises(ZeroDivisionError):
        _app(own_pg)


def test_a_call_while_the_database_is_away_answers_a_true_503(own_pg: str) -> None:
    client = _app(own_pg).test_client()
    assert client.post("/key/generate", json={}, headers=MASTER).status_code == 200
    outage = DatabaseCutOff(own_pg)
    try:
        outage.cut()
        body = {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hi"}]}
        chat = assert_error(client.post("/chat/completions", json=body, headers=MASTER), 503)
        assert "not sent to the model and nothing was charged" in chat["message"]
        admin = assert_error(client.get("/key/list", headers=MASTER), 503)
        assert admin["message"].endswith("; retry shortly.")
        assert "127.0.0.1" not in chat["message"] + admin["message"]
    finally:
        outage.restore()
    wait_until(lambda: client.get("/key/list", headers=MASTER).status_code == 200, timeout=30)


def test_an_exhausted_pool_answers_503_naming_the_pool(
    own_pg: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(proxy.storage.db, "POOL_WAIT_SECONDS", 0.5)
    client = _app(own_pg, database_connection_pool_limit=1).test_client()
    holding, release = threading.Event(), threading.Event()

    def hold_the_only_connection() -> None:
        with database.connection_context():
            holding.set()
            release.wait(30)

    holder = threading.Thread(target=hold_the_only_connection)
    holder.start()
    try:
        assert holding.wait(10)
        error = assert_error(client.get("/key/list", headers=MASTER), 503)
        assert "All 1 database connections of this worker are in use" in error["message"]
        assert "database_connection_pool_limit" in error["message"]
    finally:
        release.set()
        holder.join()
    assert client.get("/key/list", headers=MASTER).status_code == 200


def _server_max_connections(url: str) -> int:
    init_database(url)
    with database.connection_context():
        return int(database.execute_sql("SHOW max_connections").fetchone()[0])


def test_pools_larger_than_the_servers_max_connections_are_warned_about(own_pg: str) -> None:
    server_max = _server_max_connections(own_pg)
    init_database(own_pg, pool_size=server_max // 2 + 1)
    warning = connection_budget_warning(workers=2)
    assert warning is not None
    size = server_max // 2 + 1
    assert f"2 worker(s) x {size} connections = {2 * size}" in warning
    assert f"max_connections is {server_max}" in warning
    init_database(own_pg, pool_size=2)
    assert connection_budget_warning(workers=2) is None
