"""Case-insensitive substring search on a text column, the same on both backends.

``LIKE`` patterns would need escaping (and SQLite's ``LIKE`` has no default
escape character), so the term is found by position instead: ``instr`` on
SQLite, ``strpos`` on PostgreSQL, both on the lower-cased column.
"""

from __future__ import annotations

from typing import Any

import peewee

from proxy.storage.db import is_postgres


def contains_text(column: peewee.Field, term: str) -> Any:
    """SQL that is true where ``column`` contains ``term``, ignoring case."""
    find = peewee.fn.STRPOS if is_postgres() else peewee.fn.INSTR
    return find(peewee.fn.LOWER(column), term.lower()) > 0
