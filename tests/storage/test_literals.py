"""SQL interpolated in Python is byte for byte what psycopg2 would send.

The call path's statements go out with their parameters rendered by
:mod:`proxy.storage.literals` instead of psycopg2's adapters (a CPU saving):
the text the server receives must not change, nor what a value that module
does not render becomes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest

from proxy.storage import literals
from tests.support.databases import PG_ADMIN_URL

VALUES: list[Any] = [
    0, 1, -1, 7, 2**63, -(2**70), 10**30,
    0.0, -0.0, 1.5, -1.5, 0.1 + 0.2, 1e300, -1e-300, 5e-324, 1700000000.123456,
    math.nan, math.inf, -math.inf,
    True, False, None,
    "", "plain", "it's", "''", "back\\slash", "\\'", "é ünïcødé ✓ 🙂", "100%", "%s", "%%",
    "line\nbreak\ttab", "$1", "E'x'", "--comment", '{"json": "a\'b", "n": 1}',
]  # fmt: skip


@pytest.fixture(scope="module")
def cursor() -> Iterator[Any]:
    conn = psycopg2.connect(PG_ADMIN_URL)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            yield cur
    finally:
        conn.close()


@pytest.mark.postgres
def test_every_value_is_rendered_as_psycopg2_renders_it(cursor: Any) -> None:
    assert literals.fits(cursor.connection)
    for value in VALUES:
        ours = literals.interpolate("SELECT %s", [value])
        assert ours is not None, value
        assert ours.encode() == cursor.mogrify("SELECT %s", [value]), value


@pytest.mark.postgres
def test_a_statement_is_sent_as_psycopg2_would_send_it(cursor: Any) -> None:
    sql = "INSERT INTO t (a, b, c) VALUES (%s, %s, %s) RETURNING " + ", ".join(["%s"] * 3)
    params = [VALUES[i % len(VALUES)] for i in range(6)]
    text, values = literals.for_execute(cursor.connection, sql, params)
    assert values == ()
    assert text.replace("%%", "%").encode() == cursor.mogrify(sql, params)
    # And what the server answers: what it answers psycopg2's own interpolation.
    every = [v for v in VALUES if not (isinstance(v, float) and math.isnan(v))]
    sql = "SELECT " + ", ".join(["%s"] * len(every))
    cursor.execute(sql, every)
    theirs = cursor.fetchone()
    cursor.execute(*literals.for_execute(cursor.connection, sql, every))
    assert cursor.fetchone() == theirs


@pytest.mark.postgres
def test_what_it_does_not_render_is_left_to_psycopg2(cursor: Any) -> None:
    conn = cursor.connection
    for odd in ([b"bytes"], [[1, 2]], ["nul\x00"], [1.5, object()]):
        assert literals.interpolate("SELECT %s" + ", %s" * (len(odd) - 1), odd) is None
    # A statement with another % than its placeholders, or a count that does not match.
    assert literals.interpolate("SELECT %s, '100%%'", [1]) is None
    assert literals.interpolate("SELECT %s, %s", [1]) is None
    assert literals.interpolate("SELECT %(a)s", [1]) is None
    assert literals.for_execute(conn, "SELECT %s, %s", [1]) == ("SELECT %s, %s", [1])
    assert literals.for_execute(conn, "SELECT 1", []) == ("SELECT 1", [])


@pytest.mark.postgres
def test_a_connection_that_quotes_otherwise_is_left_to_psycopg2(cursor: Any) -> None:
    conn = cursor.connection
    cursor.execute("SET standard_conforming_strings = off")
    try:
        assert not literals.fits(conn)
        assert literals.for_execute(conn, "SELECT %s", ["a\\b"]) == ("SELECT %s", ["a\\b"])
    finally:
        cursor.execute("SET standard_conforming_strings = on")
    conn.set_client_encoding("LATIN1")
    try:
        assert not literals.fits(conn)
    finally:
        conn.set_client_encoding("UTF8")
    assert literals.fits(conn)
