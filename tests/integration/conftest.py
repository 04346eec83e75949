"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from proxy.storage.db import database
from tests.support.databases import truncate_pg_tables


@pytest.fixture
def pg_url(pg_database: str) -> Iterator[str]:
    """The session's PostgreSQL database, emptied, for a proxy under real gunicorn."""
    truncate_pg_tables(pg_database)
    yield pg_database
    if database.obj is not None and not database.is_closed():
        database.close()
