"""The database's clock: the one time every worker and host decides by.

Rate-limit windows, leases, budget resets and creation times, reservation
and claim expiries are compared across hosts, so they are read from one
clock, the database server's, and hosts need not agree on the time.

Reading it costs no round trip of its own: the query that reads a call's
rows (:mod:`proxy.storage.lookup`) also reads the server's time, and
:class:`DatabaseClock` carries it forward with this process's monotonic
clock (which a wrong or stepped wall clock does not move). Only a process
that has sent no such query for :data:`RESYNC_SECONDS` asks the server
again. On SQLite the database lives on this host: its clock is this host's.
"""

from __future__ import annotations

import logging
import threading
import time

from proxy.storage.db import database, is_postgres

log = logging.getLogger("comptroller.clock")

# The server's time as epoch seconds, in SQL (a double, evaluated once per statement).
POSTGRES_NOW = "date_part('epoch', statement_timestamp())"
SELECT_NOW = f"SELECT {POSTGRES_NOW}"
# After this long without reading the server's time, read it again (its clock may be stepped).
RESYNC_SECONDS = 60.0
# After a failed read, the last reading serves this long before the next try.
RETRY_SECONDS = 5.0


class DatabaseClock:
    """The database server's time: observed from queries, advanced monotonically."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (server time, this process's monotonic time when it was read)
        self._reading: tuple[float, float] | None = None
        self._retry_at = 0.0  # after a failed read of the server's time

    def observe(self, server_time: float) -> None:
        """A query has just read the server's time."""
        self._reading = (float(server_time), time.monotonic())

    def now(self) -> float:
        """The server's time now, in epoch seconds (this host's on SQLite)."""
        if not is_postgres():
            return time.time()
        reading = self._reading
        if reading is None or time.monotonic() - reading[1] > RESYNC_SECONDS:
            reading = self._resync(reading)
        server_time, read_at = reading
        return server_time + (time.monotonic() - read_at)

    def _resync(self, stale: tuple[float, float] | None) -> tuple[float, float]:
        # One thread asks the server; the others go on with the reading they have
        # (a server that does not answer must not hold up every caller).
        if not self._lock.acquire(blocking=stale is None):
            return stale if stale is not None else (time.time(), time.monotonic())
        try:
            reading = self._reading
            if reading is not stale and reading is not None:
                return reading  # another thread has just read it
            if stale is not None and time.monotonic() < self._retry_at:
                return stale
            return self._ask_server(stale)
        finally:
            self._lock.release()

    def _ask_server(self, stale: tuple[float, float] | None) -> tuple[float, float]:
        opened = database.is_closed()
        try:
            if opened:
                database.connect()
            # In the caller's connection (and transaction) when it has one.
            self.observe(database.execute_sql(SELECT_NOW).fetchone()[0])
        except Exception:
            # Never fail a caller for want of the server's time (the database may
            # be down: a call being journaled still needs a time); ask again later.
            log.warning("reading the database's clock failed", exc_info=True)
            self._retry_at = time.monotonic() + RETRY_SECONDS
            return stale if stale is not None else (time.time(), time.monotonic())
        finally:
            if opened and not database.is_closed():
                database.close()
        assert self._reading is not None
        return self._reading


database_clock = DatabaseClock()


def now() -> float:
    """The database server's time now (epoch seconds): see :class:`DatabaseClock`."""
    return database_clock.now()


def fresh_now() -> float | None:
    """The database's time now if this process has a recent reading of it, else None
    (a caller then lets the server say, in the statement it is sending anyway)."""
    reading = database_clock._reading
    if reading is None or time.monotonic() - reading[1] > RESYNC_SECONDS:
        return None
    return database_clock.now()


def observe(server_time: float) -> None:
    """A query has just read the server's time (``POSTGRES_NOW``)."""
    database_clock.observe(server_time)
