"""Each worker checks workers x pool size against the server's max_connections at start-up."""

from __future__ import annotations

from pathlib import Path

import psycopg2
import pytest

from tests.conftest import base_config
from tests.support.proxy_server import ProxyServer, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def _server_max_connections(url: str) -> int:
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW max_connections")
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def test_pools_that_can_exceed_max_connections_are_warned_about_at_start_up(
    pg_database: str, tmp_path: Path
) -> None:
    server_max = _server_max_connections(pg_database)
    pool = server_max // 2 + 1  # two workers of this size exceed the server's limit
    config = base_config(pg_database, general_settings={"database_connection_pool_limit": pool})
    with ProxyServer(config, tmp_path, workers=2, threads=2) as server:
        expected = f"2 worker(s) x {pool} connections = {2 * pool}"
        wait_until(lambda: expected in server.log_path.read_text(), timeout=30)
        log = server.log_path.read_text()
        assert f"PostgreSQL's max_connections is {server_max}" in log
    fitting = base_config(pg_database, general_settings={"database_connection_pool_limit": 2})
    with ProxyServer(fitting, tmp_path, workers=2, threads=2, name="fitting") as server:
        assert "may exceed the server's limit" not in server.log_path.read_text()
