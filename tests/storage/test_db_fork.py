"""A forked child (a gunicorn worker under ``--preload``) opens its own connections.

It must neither use nor close what its parent had open: closing a PostgreSQL
connection sends a Terminate message on the socket the parent still uses.
"""

from __future__ import annotations

import gc
import json
import os
import stat
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from proxy.storage.db import make_database

# Every test forks.
pytestmark = pytest.mark.slow


def in_forked_child(work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``work`` in a child made by ``os.fork()``; return what it reports."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report through the pipe, never return into pytest
        code = 1
        try:
            os.close(read)
            try:
                answer = work()
            except BaseException as err:
                answer = {"error": repr(err)}
            with os.fdopen(write, "w") as pipe:
                json.dump(answer, pipe)
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as pipe:
        text = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, text
    return dict(json.loads(text))


def _is_socket(fd: int) -> bool:
    try:
        return stat.S_ISSOCK(os.fstat(fd).st_mode)
    except OSError:  # not open
        return False


def _backend_pid(conn: Any) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        return int(cur.fetchone()[0])


def test_a_forked_child_starts_with_an_empty_pool_and_spares_the_parents_sockets(pg_database):
    db = make_database(pg_database)
    held, release = threading.Event(), threading.Event()
    # Weak references only: in the child, the parent's connection objects must
    # be freed (the driver then says goodbye on their sockets) once dropped.
    conns: dict[str, weakref.ref[Any]] = {}

    def hold_a_connection() -> None:  # another thread of the parent, mid-call at the fork
        conns["held"] = weakref.ref(db.connection())
        held.set()
        release.wait(30)
        db.close()

    def open_and_put_back() -> None:
        conns["idle"] = weakref.ref(db.connection())
        db.close()

    try:
        db.connect()
        conns["busy"] = weakref.ref(db.connection())  # this thread's, mid-call at the fork
        thread = threading.Thread(target=hold_a_connection)
        thread.start()
        assert held.wait(10)
        putter = threading.Thread(target=open_and_put_back)
        putter.start()
        putter.join()
        parents = {name: _backend_pid(ref()) for name, ref in conns.items()}
        assert len(set(parents.values())) == 3
        sockets = [ref().fileno() for ref in conns.values()]

        def child() -> dict[str, Any]:
            report = {
                "idle": db.idle_count,
                "in_use": db.in_use_count,
                "closed": db.is_closed(),
                # The child keeps no copy of the parent's sockets.
                "sockets_released": not any(map(_is_socket, sockets)),
            }
            report["backend"] = db.execute_sql("SELECT pg_backend_pid()").fetchone()[0]
            db.close()
            db.close_all()
            gc.collect()
            report["parents_freed"] = all(ref() is None for ref in conns.values())
            return report

        report = in_forked_child(child)
        assert "error" not in report, report.get("error")
        assert report["backend"] not in parents.values()
        del report["backend"]
        assert report == {
            "idle": 0,
            "in_use": 0,
            "closed": True,
            "sockets_released": True,
            "parents_freed": True,
        }
        # Nothing the child did reached the parent's sessions: each still answers.
        assert {name: _backend_pid(ref()) for name, ref in conns.items()} == parents
    finally:
        release.set()
        db.close()
        db.close_all()


def test_a_forked_child_opens_its_own_sqlite_connection(tmp_path: Path):
    db = make_database(f"sqlite:///{tmp_path / 'fork.db'}")
    try:
        db.connect()
        parent_conn = db.connection()
        db.execute_sql("CREATE TABLE note (text TEXT)")

        def child() -> dict[str, Any]:
            report = {"closed": db.is_closed()}
            report["same_connection"] = db.connection() is parent_conn
            db.execute_sql("INSERT INTO note VALUES ('from the child')")
            db.close()
            gc.collect()
            return report

        assert in_forked_child(child) == {"closed": True, "same_connection": False}
        assert db.execute_sql("SELECT text FROM note").fetchall() == [("from the child",)]
    finally:
        db.close()
