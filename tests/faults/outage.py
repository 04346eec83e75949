"""Cut a test's own PostgreSQL database off from its clients, and give it back.

The database stays on the shared server: ``ALLOW_CONNECTIONS false`` refuses
new connections and the existing ones are terminated, as an outage would.
Nothing else on the server is touched.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2
from psycopg2 import sql

from tests.support.databases import PG_ADMIN_URL, terminate_pg_backends


def _allow_connections(name: str, allowed: bool) -> None:
    conn = psycopg2.connect(PG_ADMIN_URL)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(
                sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(
                    sql.Identifier(name), sql.SQL("true" if allowed else "false")
                )
            )
    finally:
        conn.close()


class DatabaseCutOff:
    """``cut()`` the database ``url`` names off; ``restore()`` it (both idempotent)."""

    def __init__(self, url: str) -> None:
        self.name = url.rsplit("/", 1)[1].split("?", 1)[0]
        self.cut_off = False

    def cut(self) -> None:
        _allow_connections(self.name, False)
        self.cut_off = True
        # Wait for each backend to be gone, so the outage has begun when this returns.
        terminate_pg_backends(self.name, wait_ms=5000)

    def restore(self) -> None:
        _allow_connections(self.name, True)
        self.cut_off = False


@contextmanager
def database_cut_off(url: str) -> Iterator[DatabaseCutOff]:
    """The database is unreachable inside the block and reachable again after it,
    whatever happens in between."""
    outage = DatabaseCutOff(url)
    try:
        outage.cut()
        yield outage
    finally:
        outage.restore()
