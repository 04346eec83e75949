"""Fixtures of the storage tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from proxy.storage.db import database, init_database


@pytest.fixture
def pg(pg_database: str) -> Iterator[str]:
    """The session's PostgreSQL database as the storage layer's database, closed after."""
    init_database(pg_database)
    yield pg_database
    if not database.is_closed():
        database.close()
