"""Fresh databases for tests: a SQLite file, or a PostgreSQL database of our own.

Each test session creates one PostgreSQL database with a random name and
drops it at the end; tests empty its tables before they start.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg2
from psycopg2 import sql

PG_ADMIN_URL = os.environ.get(
    "COMPTROLLER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def _admin_connection() -> psycopg2.extensions.connection:
    conn = psycopg2.connect(PG_ADMIN_URL)
    conn.autocommit = True
    return conn


@contextmanager
def _admin_cursor() -> Iterator[Any]:
    # Not "with conn": psycopg2 would wrap it in a transaction block.
    conn = _admin_connection()
    try:
        with conn.cursor() as cur:
            yield cur
    finally:
        conn.close()


def postgres_available() -> bool:
    try:
        _admin_connection().close()
        return True
    except psycopg2.OperationalError:
        return False


def create_pg_database(prefix: str = "comptroller_test") -> str:
    """Create a database with a random name; return its URL."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    with _admin_cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    return f"{base}/{name}"


def terminate_pg_backends(name: str, wait_ms: int = 0) -> int:
    """Close every connection to the database ``name``, as a database restart would;
    the number closed. ``wait_ms``: wait up to that long for each to be gone."""
    with _admin_cursor() as cur:
        cur.execute(
            "SELECT pg_terminate_backend(pid, %s) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (wait_ms, name),
        )
        return len(cur.fetchall())


def drop_pg_database(url: str) -> None:
    """Drop the database, closing the connections still open to it: FORCE closes
    them in the same statement, so a thread that reconnects between a separate
    terminate and the DROP (a webhook sender's retry) cannot make it fail."""
    name = url.rsplit("/", 1)[1]
    with _admin_cursor() as cur:
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def truncate_pg_tables(url: str) -> None:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                "AND tablename <> 'comptroller_migration'"
            )
            tables = [row[0] for row in cur.fetchall()]
            if tables:
                cur.execute(
                    sql.SQL("TRUNCATE {} CASCADE").format(
                        sql.SQL(", ").join(sql.Identifier(t) for t in tables)
                    )
                )
                cur.execute(
                    "INSERT INTO proxy_spend (id, spend, created_at) VALUES (1, 0, 0) "
                    "ON CONFLICT DO NOTHING"
                )
    finally:
        conn.close()
