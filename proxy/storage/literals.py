"""Parameters interpolated into SQL text in Python, byte for byte as psycopg2 does.

psycopg2 sends every statement as text: it interpolates the parameters on
the client (``cursor.mogrify``, and ``cursor.execute`` before sending). Its
adaptation costs about 3 microseconds per int or float and 2 per str, and
the call path's statements carry many (the spend ledger ~35, the rate
limiter's settle ~50): a tenth of a millisecond of CPU per call each.
:func:`interpolate` renders the common types itself, exactly as psycopg2
would (tests/storage/test_literals.py compares them), and leaves anything
else to psycopg2.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

# psycopg2's spelling of the floats SQL has no numeral for.
_SPECIAL_FLOATS = {
    math.inf: "'Infinity'::float",
    -math.inf: "'-Infinity'::float",
}


def _number(text: str) -> str:
    # psycopg2 puts a space before a negative number ("x- -1" must not read "x--1").
    return " " + text if text[0] == "-" else text


def _literal(value: Any) -> str | None:
    """``value`` as psycopg2 renders it on a UTF8 connection with standard
    conforming strings, or None for a type left to psycopg2."""
    kind = type(value)
    if kind is str:
        if "\x00" in value:
            return None  # psycopg2 refuses it, with its own error
        return "'" + value.replace("'", "''") + "'"
    if kind is int:
        return _number(str(value))
    if kind is float:
        if value != value:
            return "'NaN'::float"
        special = _SPECIAL_FLOATS.get(value)
        return special if special is not None else _number(repr(value))
    if value is None:
        return "NULL"
    if kind is bool:
        return "true" if value else "false"
    return None


def fits(conn: Any) -> bool:
    """Whether ``conn`` quotes strings as :func:`_literal` does."""
    return bool(
        conn.encoding == "UTF8" and conn.get_parameter_status("standard_conforming_strings") == "on"
    )


def interpolate(sql: str, params: Sequence[Any]) -> str | None:
    """``sql`` (``%s`` placeholders only) with ``params`` in it, as psycopg2's
    ``mogrify`` would make it on a connection that :func:`fits`; None when a
    parameter or the SQL is not one this module renders (psycopg2 then does)."""
    if sql.count("%") != len(params):
        return None  # another ``%`` than the placeholders', or a count psycopg2 refuses
    parts = sql.split("%s")
    if len(parts) != len(params) + 1:
        return None
    out = [parts[0]]
    for value, part in zip(params, parts[1:]):  # noqa: B905  (lengths checked above)
        literal = _literal(value)
        if literal is None:
            return None
        out.append(literal)
        out.append(part)
    return "".join(out)


def for_execute(conn: Any, sql: str, params: Sequence[Any]) -> tuple[str, Sequence[Any]]:
    """What to hand ``cursor.execute`` on ``conn`` to send ``sql`` with ``params``:
    the text already interpolated (its ``%`` doubled, as psycopg2 still reads it as
    a format with no parameters), else the two as they are."""
    if params and fits(conn):
        text = interpolate(sql, params)
        if text is not None:
            return text.replace("%", "%%"), ()
    return sql, params
