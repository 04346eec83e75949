"""The whole database as text, to search it for secrets as an attacker with a backup would."""

from __future__ import annotations

import io
import sqlite3

import psycopg2
from psycopg2 import sql


def dump_database(db_url: str) -> str:
    """Every table of the database (the core's and every plugin's), rows included."""
    if db_url.startswith("sqlite"):
        path = db_url.split("sqlite:///", 1)[1]
        conn = sqlite3.connect(path)
        try:
            return "\n".join(conn.iterdump())
        finally:
            conn.close()
    out = io.StringIO()
    conn = psycopg2.connect(db_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
            tables = [row[0] for row in cur.fetchall()]
            for table in tables:
                out.write(f"-- {table}\n")
                query = sql.SQL("COPY (SELECT * FROM {}) TO STDOUT").format(sql.Identifier(table))
                cur.copy_expert(query.as_string(conn), out)
    finally:
        conn.close()
    return out.getvalue()


def table_names(db_url: str) -> set[str]:
    if db_url.startswith("sqlite"):
        conn = sqlite3.connect(db_url.split("sqlite:///", 1)[1])
        try:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        finally:
            conn.close()
        return {row[0] for row in rows}
    conn = psycopg2.connect(db_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            return {row[0] for row in cur.fetchall()}
    finally:
        conn.close()
