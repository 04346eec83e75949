"""Fixtures for the end-to-end modules that share one proxy per module (``server``).

Such a module defines a module-scoped ``server`` fixture on ``database_url``;
its tests take ``proxy``: the same server, on emptied tables.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.databases import create_pg_database, drop_pg_database, truncate_pg_tables
from tests.support.proxy_server import ProxyServer


@pytest.fixture(scope="module")
def database_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A PostgreSQL database of the module's own, dropped after it."""
    module = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    url = create_pg_database(f"comptroller_{module}")
    yield url
    drop_pg_database(url)


@pytest.fixture
def proxy(server: ProxyServer, database_url: str) -> ProxyServer:
    truncate_pg_tables(database_url)
    return server
