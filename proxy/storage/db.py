"""One database handle for SQLite and PostgreSQL.

``database`` is a Peewee ``DatabaseProxy``; :func:`init_database` points it
at the configured URL. Every model of the core and of the plugins binds to
it, so the same code runs on both backends.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
import weakref
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import peewee
import psycopg2.extensions
from playhouse.pool import MaxConnectionsExceeded, PooledPostgresqlDatabase

database = peewee.DatabaseProxy()
_log = logging.getLogger("comptroller.db")


class BaseModel(peewee.Model):
    class Meta:
        database = database
        legacy_table_names = False


class JSONField(peewee.TextField):
    """JSON stored as text on both backends (keeps SQLite and Postgres one path)."""

    def db_value(self, value: Any) -> str | None:
        return None if value is None else json.dumps(value, separators=(",", ":"))

    def python_value(self, value: Any) -> Any:
        return None if value is None else json.loads(value)


# Connections a forked child inherited from its parent: kept referenced, never
# closed (see forget_inherited_connections).
_inherited: list[Any] = []


def _tracked_by(db: Any, connection_class: type) -> type:
    """A subclass of the driver's ``connection_class`` whose connections add
    themselves to ``db.opened`` (a set the database replaces after fork)."""

    class Tracked(connection_class):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            db.opened.add(self)

    return Tracked


class _TrackedSqlite(sqlite3.Connection):
    """sqlite3's connection, remembered by the database that opened it."""


class _SqliteDatabase(peewee.SqliteDatabase):
    """Remembers every connection it opens (through the driver's public
    ``factory``), so that a forked child can find, and leave alone, the ones
    other threads of its parent held."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.opened: weakref.WeakSet[Any] = weakref.WeakSet()
        super().__init__(*args, factory=_tracked_by(self, _TrackedSqlite), **kwargs)

    def forget_inherited_connections(self) -> None:
        """In a forked child: drop the parent's connections without closing them.

        SQLite must not even close a connection opened before ``fork()``: the
        close may clean up (checkpoint, delete the WAL) under the parent. They
        stay referenced for the child's life instead.
        """
        _inherited.extend(self.opened)
        self.opened = weakref.WeakSet()
        self.dispose()


def _sqlite(path: str) -> peewee.SqliteDatabase:
    if path not in ("", ":memory:"):
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
    db = _SqliteDatabase(
        path or ":memory:",
        pragmas={
            "journal_mode": "wal",
            "busy_timeout": 10000,
            "synchronous": "normal",
            "foreign_keys": 1,
        },
        check_same_thread=False,
        # Writers take the lock at BEGIN, so concurrent writers queue on
        # busy_timeout instead of failing with "database is locked" mid-way.
        lock_type="IMMEDIATE",
    )
    # SQLite >= 3.35 has RETURNING; the spend ledger reads new totals with it.
    db.returning_clause = True
    return db


# A pooled connection back in use within this many seconds is not pinged first.
PING_IF_IDLE_SECONDS = 5.0


class _TrackedPostgres(psycopg2.extensions.connection):
    """psycopg2's connection, stamped when it goes back to the pool."""

    checked_in: float | None = None


class _PostgresPool(PooledPostgresqlDatabase):
    """Peewee's pool pings (``SELECT 1``) every connection it hands out: a round
    trip per checkout, two per LLM call. This one pings only connections that
    sat idle for :data:`PING_IF_IDLE_SECONDS`; a fresher one that died anyway
    fails its first statement, which the app answers with a 503.

    Connections come from the driver's public ``connection_factory``, so the
    pool can stamp them and a forked child can find them.
    """

    batches_transactions = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.pool_size = int(kwargs.get("max_connections") or 0)
        self.opened: weakref.WeakSet[Any] = weakref.WeakSet()
        self._pinged_after = 0.0  # connections checked in before this are pinged
        self._batches = threading.local()
        factory = _tracked_by(self, _TrackedPostgres)
        super().__init__(*args, connection_factory=factory, **kwargs)

    # Transaction control of a batched spend transaction (proxy.storage.batching):
    # while this thread has a batch, these go through it.

    @property
    def batch(self) -> Any:
        return getattr(self._batches, "batch", None)

    @batch.setter
    def batch(self, batch: Any) -> None:
        self._batches.batch = batch

    def begin(self, *args: Any, **kwargs: Any) -> None:
        batch = self.batch
        if batch is None:
            super().begin(*args, **kwargs)
        else:
            batch.begin()

    def commit(self) -> None:
        batch = self.batch
        if batch is None:
            super().commit()
        else:
            batch.commit()

    def rollback(self) -> None:
        batch = self.batch
        if batch is None:
            super().rollback()
        else:
            batch.rollback()

    def savepoint(self) -> Any:
        batch = self.batch
        return super().savepoint() if batch is None else batch.savepoint()

    def execute_sql(self, sql: str, params: Any = None) -> Any:
        batch = self.batch
        if batch is not None and batch.held:
            sql = batch.take_held() + sql
        return super().execute_sql(sql, params)

    def send_sql(self, sql: str) -> Any:
        """Send ``sql`` as it is, ahead of anything a batch holds back."""
        return super().execute_sql(sql)

    def close(self) -> bool:
        if not self.is_closed():
            conn = self.connection()
            conn.checked_in = time.monotonic()
        return bool(super().close())

    def check_all_before_use(self) -> None:
        """A connection was found dead: ping every pooled one before handing it out."""
        self._pinged_after = time.monotonic()

    def _is_closed(self, conn: Any) -> bool:
        # The pool's hook for "may this idle connection be handed out?" (its
        # default pings each one).
        if conn.closed:
            return True
        since = getattr(conn, "checked_in", None)
        fresh = (
            since is not None
            and since > self._pinged_after
            and time.monotonic() - since < PING_IF_IDLE_SECONDS
        )
        if fresh and conn.get_transaction_status() == 0:  # idle, not in a transaction
            return False
        return bool(super()._is_closed(conn))

    def forget_inherited_connections(self) -> None:
        """In a forked child: empty the pool without closing its connections.

        Closing one would send PostgreSQL's Terminate message on a socket the
        parent still uses. ``/dev/null`` takes each inherited socket's place
        under the same descriptor number, so the child holds no copy of the
        parent's sockets and nothing it does, freeing the connections
        included, can reach them.
        """
        with open(os.devnull, "wb") as devnull:
            for conn in list(self.opened):
                if not conn.closed:
                    os.dup2(devnull.fileno(), conn.fileno())
        self.opened = weakref.WeakSet()
        self._batches = threading.local()
        self.dispose()


# Connections one process may hold: its threads (16 by default) plus the
# background ones (webhook senders, start-up retries). 4 workers x 20 stay
# under PostgreSQL's default max_connections of 100.
DEFAULT_POOL_SIZE = 20
# How long a call waits for a pooled connection before it is answered 503.
POOL_WAIT_SECONDS = 10


def _postgres(url: str, pool_size: int | None = None) -> PooledPostgresqlDatabase:
    parsed = urlparse(url)
    options = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
    size = options.pop("max_connections", None)
    return _PostgresPool(
        unquote(parsed.path.lstrip("/")),
        user=unquote(parsed.username) if parsed.username else None,
        password=unquote(parsed.password) if parsed.password else None,
        host=parsed.hostname or "127.0.0.1",
        port=parsed.port or 5432,
        max_connections=int(size) if size is not None else pool_size or DEFAULT_POOL_SIZE,
        stale_timeout=300,
        timeout=POOL_WAIT_SECONDS,
        **options,
    )


# Every database made in this process, for the fork hook below.
_made: weakref.WeakSet[Any] = weakref.WeakSet()


def make_database(url: str, pool_size: int | None = None) -> peewee.Database:
    """The database at ``url``; ``pool_size``: PostgreSQL connections per process
    (a ``?max_connections=`` in the URL wins)."""
    db: peewee.Database
    if url.startswith("sqlite:///"):
        db = _sqlite(url[len("sqlite:///") :])
    elif url.startswith("sqlite://"):
        db = _sqlite(url[len("sqlite://") :])
    elif url.startswith(("postgresql://", "postgres://")):
        db = _postgres(url, pool_size)
    else:
        raise ValueError(
            f"unsupported database_url {url!r}: use sqlite:///path or postgresql://..."
        )
    _made.add(db)
    return db


def _forget_inherited_connections() -> None:
    """After ``fork()``, in the child: open fresh connections, never the parent's.

    ``gunicorn --preload`` builds the app (migrations, start-up reads) in the
    arbiter and then forks the workers: without this they would all share
    the arbiter's pooled connection, one socket for several processes.
    """
    for db in list(_made):
        db.forget_inherited_connections()


os.register_at_fork(after_in_child=_forget_inherited_connections)


def init_database(url: str, pool_size: int | None = None) -> peewee.Database:
    db = make_database(url, pool_size)
    database.initialize(db)
    return db


def close_broken_connection() -> None:
    """Give up this thread's connection after a connection error (closing a dead
    one may fail too: that is logged, never raised)."""
    if database.is_closed():
        return
    try:
        database.close()
    except Exception:
        logging.getLogger("comptroller.db").debug(
            "closing a broken connection failed", exc_info=True
        )


def is_postgres() -> bool:
    return isinstance(database.obj, peewee.PostgresqlDatabase)


def pool_size() -> int | None:
    """PostgreSQL connections this process may hold (``None``: SQLite, no pool)."""
    size = getattr(database.obj, "pool_size", None)
    return int(size) if size else None


def is_unreachable(err: BaseException) -> bool:
    """The database could not be reached or used (down, refused, pool exhausted),
    as opposed to a statement it rejected."""
    return isinstance(err, (peewee.OperationalError, peewee.InterfaceError, MaxConnectionsExceeded))


def unavailable_reason(err: BaseException) -> str:
    """What a client is told about ``err``, without the server's address."""
    if isinstance(err, MaxConnectionsExceeded):
        return (
            f"all {pool_size()} database connections of this worker are in use (waited "
            f"{POOL_WAIT_SECONDS} s; general_settings.database_connection_pool_limit sets "
            "how many)"
        )
    text = str(err).lower()
    for marker, reason in _REASONS:
        if marker in text:
            return reason
    return "the database is unavailable"


# Why a connection failed, from the server's or the driver's message (which also
# names the server's address: never shown to clients).
_REASONS = (
    ("too many clients", "the database refused a connection: it has reached its max_connections"),
    ("remaining connection slots", "the database refused a connection: no slots left"),
    ("not currently accepting connections", "the database does not accept connections"),
    ("does not exist", "the database does not exist"),
    ("authentication failed", "the database refused the credentials"),
    ("connection refused", "the database server refuses connections"),
    ("timeout expired", "the database server did not answer in time"),
    ("terminating connection", "the database closed the connection"),
    ("server closed the connection", "the database closed the connection"),
    ("unable to open database file", "the database file cannot be opened"),
)


def connection_budget_warning(workers: int) -> str | None:
    """A warning when ``workers`` pools of this process's size can exceed what the
    PostgreSQL server accepts (``None`` when they fit, or on SQLite)."""
    size = pool_size()
    if size is None or not is_postgres():
        return None
    with database.connection_context():
        cursor = database.execute_sql(
            "SELECT current_setting('max_connections')::int, "
            "current_setting('superuser_reserved_connections')::int"
        )
        server_max, reserved = cursor.fetchone()
    usable = server_max - reserved
    wanted = size * workers
    if wanted <= usable:
        return None
    return (
        f"database connection pools may exceed the server's limit: {workers} worker(s) x "
        f"{size} connections = {wanted}, but PostgreSQL's max_connections is {server_max} "
        f"({reserved} reserved for superusers, so {usable} usable), shared by every host; "
        "lower general_settings.database_connection_pool_limit or the workers, or raise "
        "max_connections. Calls that find no connection are answered 503."
    )
