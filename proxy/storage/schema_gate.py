"""Start without the database: migrations are retried until they are applied.

A worker that cannot reach the database at start-up still boots (gunicorn
would otherwise log "Worker failed to boot" and the arbiter would exit): it
answers ``/health/liveliness``, says on ``/health/readiness`` why it is not
ready, and refuses every call that needs the database with a 503 until a
background thread (and any request, when an attempt is due) has applied
the migrations. Then it serves, with no restart.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from proxy.storage.db import BaseModel, is_unreachable, unavailable_reason
from proxy.storage.migrate import migrate

log = logging.getLogger("comptroller.startup")

FIRST_RETRY_SECONDS = 0.25
MAX_RETRY_SECONDS = 2.0
# A request tries again when the last try is this old, whatever the backoff: a worker
# serves as soon as the database is back, not at its next background retry.
REQUEST_RETRY_SECONDS = 0.25


class SchemaGate:
    """Whether this process has applied the migrations, and why not yet."""

    def __init__(
        self,
        plugin_tables: Iterable[type[BaseModel]],
        on_ready: Callable[[], Any] | None = None,
        plugin_migrations: Iterable[Any] = (),
    ) -> None:
        self._tables = list(plugin_tables)
        self._migrations = list(plugin_migrations)
        self._on_ready = on_ready
        self._attempt_lock = threading.Lock()
        self._wake = threading.Event()
        self._thread_pid: int | None = None
        self._retry_in = FIRST_RETRY_SECONDS
        self._next_attempt = 0.0
        self._last_attempt = 0.0
        self.ready = False
        self.reason = "the migrations have not been applied yet"

    def attempt(self, *, raise_unexpected: bool = False) -> bool:
        """One try at the migrations (one thread at a time; others answer at once)."""
        if self.ready:
            return True
        if not self._attempt_lock.acquire(blocking=False):
            return self.ready
        try:
            if self.ready:
                return True
            self._last_attempt = time.monotonic()
            try:
                migrate(self._tables, self._migrations)
            except Exception as err:
                if raise_unexpected and not is_unreachable(err):
                    raise
                self._failed(err)
                return False
            self.ready = True
            self.reason = ""
            log.info("database reached: migrations applied, serving")
        finally:
            self._attempt_lock.release()
        if self._on_ready is not None:
            try:
                self._on_ready()
            except Exception:
                log.exception("start-up work after the migrations failed")
        return True

    def _failed(self, err: BaseException) -> None:
        first = self.reason.startswith("the migrations have not")
        self.reason = f"waiting for the database to apply migrations ({unavailable_reason(err)})"
        self._next_attempt = time.monotonic() + self._retry_in
        self._retry_in = min(self._retry_in * 2, MAX_RETRY_SECONDS)
        log.log(
            logging.WARNING if first else logging.DEBUG,
            "%s; retrying in the background: %s",
            self.reason,
            str(err).strip(),
        )

    def ensure(self) -> bool:
        """Ready, or an attempt now if one is due (the retry thread keeps going too)."""
        if self.ready:
            return True
        self._start_thread()
        if time.monotonic() >= self._last_attempt + REQUEST_RETRY_SECONDS:
            return self.attempt()
        return False

    def start(self) -> None:
        """Retry in the background until ready (no-op once ready)."""
        if not self.ready:
            self._start_thread()

    def _start_thread(self) -> None:
        # After a fork (gunicorn --preload) the parent's thread is gone: start one here.
        if self._thread_pid == os.getpid():
            return
        self._thread_pid = os.getpid()
        threading.Thread(target=self._retry_until_ready, name="schema-gate", daemon=True).start()

    def _retry_until_ready(self) -> None:
        while not self.ready:
            delay = max(0.0, self._next_attempt - time.monotonic())
            self._wake.wait(delay or FIRST_RETRY_SECONDS / 5)
            if time.monotonic() >= self._next_attempt:
                self.attempt()
