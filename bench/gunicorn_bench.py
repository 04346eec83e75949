"""gunicorn config for the benchmark: the project's defaults plus a statement counter.

Every statement a worker sends to PostgreSQL is one round trip (psycopg2's
``cursor.execute`` waits for the answer; peewee sends ``BEGIN``,
``COMMIT``, ``SAVEPOINT`` the same way). ``post_worker_init`` gives every
pooled connection a cursor class that counts them in shared memory, split
by thread: request threads (the call path, including a stream's settle)
and the webhook sender threads (background delivery). ``GET
/_bench/stats`` on any worker answers the totals of all workers.

Counting costs one uncontended thread lock per statement (well under a
microsecond), small next to a round trip. A worker's counts live in its own
slot of a shared array; ``/_bench/stats`` sums the slots.
"""

from __future__ import annotations

import json
import multiprocessing
import threading
from typing import Any

worker_class = "proxy.serving.GthreadWorker"  # as Comptroller runs
timeout = 120
graceful_timeout = 15
keepalive = 5

REQUEST, BACKGROUND = 0, 1
SLOTS = 64  # workers ever started (restarts included) before slots are reused
# Created in the arbiter when gunicorn reads this file; forked workers share it.
# Each worker writes only its own two slots, under a lock of its own (cheap).
_counts = multiprocessing.RawArray("q", 2 * SLOTS)
_slot = 0
_lock = threading.Lock()


def _count_statement() -> None:
    slot = BACKGROUND if threading.current_thread().name.startswith("webhook-sender") else REQUEST
    with _lock:
        _counts[_slot + slot] += 1


def _totals() -> dict[str, int]:
    return {
        "request_statements": sum(_counts[i] for i in range(REQUEST, 2 * SLOTS, 2)),
        "background_statements": sum(_counts[i] for i in range(BACKGROUND, 2 * SLOTS, 2)),
    }


def _stats_app(app: Any) -> Any:
    def middleware(environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO") != "/_bench/stats":
            return app(environ, start_response)
        body = json.dumps(_totals()).encode()
        start_response(
            "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        )
        return [body]

    return middleware


def post_worker_init(worker: Any) -> None:
    global _slot
    _slot = 2 * (worker.age % SLOTS)
    import peewee
    import psycopg2.extensions

    from proxy.storage.db import database

    class CountingCursor(psycopg2.extensions.cursor):
        def execute(self, query: Any, vars: Any = None) -> Any:  # noqa: A002
            _count_statement()
            return super().execute(query, vars)

    db = database.obj
    if isinstance(db, peewee.PostgresqlDatabase):
        db.connect_params["cursor_factory"] = CountingCursor
        # Connections pooled while the app was built have plain cursors.
        db.close_all()
    worker.wsgi = _stats_app(worker.wsgi)
