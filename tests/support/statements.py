"""Watching the statements the app sends through its database driver."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from proxy.storage import prepared


def statement_sql(sql: Any) -> str:
    """The SQL a prepared statement stands for (``PREPARE``/``EXECUTE``, see
    proxy/storage/prepared.py), else the text as sent."""
    text = sql.decode() if isinstance(sql, bytes) else str(sql)
    if text.startswith("PREPARE "):
        text = text.split(" AS ", 1)[1].rsplit("; EXECUTE ", 1)[0]
    elif text.startswith("EXECUTE "):
        name = text.split()[1].split("(")[0]
        text = next(p.sql for p in prepared._by_sql.values() if p.name == name)
    return text


def spy_on_cursors(make_cursor: Any, seen: Callable[[Any], None]) -> Any:
    """A stand-in for the driver's ``cursor()`` whose cursors show ``seen`` every
    statement before they run it: ``monkeypatch.setattr(database.obj, "cursor",
    spy_on_cursors(database.obj.cursor, statements.append))``."""

    class Cursor:
        def __init__(self, real: Any) -> None:
            self._real = real

        def execute(self, sql: Any, *args: Any) -> Any:
            seen(sql)
            return self._real.execute(sql, *args)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._real, name)

    return lambda *a, **k: Cursor(make_cursor(*a, **k))
