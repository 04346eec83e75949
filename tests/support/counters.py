"""Spend counters read from PostgreSQL itself, for the concurrency tests' oracle.

A key's, user's, team's or customer's counter is its row's ``spend`` plus its
rows of ``spend_stripe``; the proxy's, the sum of ``proxy_spend``. Written
here as plain SQL, not through the code under test.
"""

from __future__ import annotations

import psycopg2

_ENTITIES = {
    "key": ('"key"', "token"),
    "user": ('"user"', "user_id"),
    "team": ("team", "team_id"),
    "customer": ("customer", "user_id"),
}


def counter(url: str, kind: str, entity_id: str) -> float | None:
    """The entity's whole counter (None: no row)."""
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            if kind == "proxy":
                cur.execute("SELECT SUM(spend) FROM proxy_spend")
            else:
                table, pk = _ENTITIES[kind]
                cur.execute(
                    f"SELECT e.spend + (SELECT COALESCE(SUM(s.spend), 0) FROM spend_stripe s "
                    f"WHERE s.kind = %s AND s.entity_id = e.{pk}) FROM {table} e "
                    f"WHERE e.{pk} = %s",
                    [kind, entity_id],
                )
            row = cur.fetchone()
    finally:
        conn.close()
    return None if row is None or row[0] is None else float(row[0])


def stripes_used(url: str, kind: str, entity_id: str) -> int:
    """How many of the entity's stripes hold some spend."""
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT COUNT(*) FROM spend_stripe WHERE kind = %s AND entity_id = %s "
                "AND spend > 0",
                [kind, entity_id],
            )
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def logged(url: str, column: str | None = None, value: str | None = None) -> float:
    """The sum of the spend logs whose ``column`` is ``value`` (all of them: None)."""
    where, params = (f" WHERE {column} = %s", [value]) if column else ("", [])
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT COALESCE(SUM(spend), 0) FROM spend_log{where}", params)
            return float(cur.fetchone()[0])
    finally:
        conn.close()
