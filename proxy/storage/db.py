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


class _ForkGuarded:
    """A database whose connect, close and dispose never overlap ``os.fork()``.

    Peewee runs them under a lock of its own; a fork while another thread
    holds it leaves the child's copy locked for good, and the child hangs at
    its first connect or close. Each database runs them under its
    ``fork_guard`` too, and the fork takes every guard first
    (:func:`_before_fork`), so no other thread is inside them when the
    process is copied.
    """

    fork_guard: threading.RLock

    def connect(self, reuse_if_open: bool = False) -> bool:
        with self.fork_guard:
            return bool(super().connect(reuse_if_open))  # type: ignore[misc]

    def close(self) -> bool:
        with self.fork_guard:
            return bool(super().close())  # type: ignore[misc]

    def dispose(self) -> None:
        with self.fork_guard:
            super().dispose()  # type: ignore[misc]


class _TrackedSqlite(sqlite3.Connection):
    """sqlite3's connection, remembered by the database that opened it."""


class _SqliteDatabase(_ForkGuarded, peewee.SqliteDatabase):
    """Remembers every connection it opens (through the driver's public
    ``factory``), so that a forked child can find, and leave alone, the ones
    other threads of its parent held."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.opened: weakref.WeakSet[Any] = weakref.WeakSet()
        self.fork_guard = threading.RLock()
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


class PoolExhausted(Exception):
    """Every connection this process may hold stayed in use for as long as a call waits."""


class _TrackedPostgres(psycopg2.extensions.connection):
    """psycopg2's connection, stamped when it is opened and when it goes back to the pool."""

    opened_at: float = 0.0
    checked_in: float | None = None


class _PostgresPool(_ForkGuarded, peewee.PostgresqlDatabase):
    """PostgreSQL with a pool of connections, one per thread at a time, up to
    ``max_connections`` per process.

    Built on peewee's public surface: ``_connect`` is the hook peewee's docs
    name for a database class ("Adding a Custom Database Driver"), and
    :meth:`close` hands the connection back instead of closing it. Peewee's own
    pool (``playhouse.pool``) pings (``SELECT 1``) every connection it hands
    out: a round trip per checkout, two per LLM call. This one pings only a
    connection that sat idle for :data:`PING_IF_IDLE_SECONDS` (or every one,
    after :meth:`check_all_before_use`); a fresher one that died anyway fails
    its first statement, which the app answers with a 503. What it knows of a
    connection it asks psycopg2's public ``closed`` and
    ``get_transaction_status()``.

    Connections come from the driver's public ``connection_factory``, so the
    pool can stamp them and a forked child can find them.
    """

    batches_transactions = True

    def __init__(
        self,
        database: str,
        *,
        max_connections: int,
        stale_timeout: float,
        timeout: float,
        **kwargs: Any,
    ) -> None:
        self.pool_size = int(max_connections)
        self.stale_timeout = stale_timeout  # a connection older than this is replaced
        self.wait_timeout = timeout  # how long connect() waits for a free connection
        self.opened: weakref.WeakSet[Any] = weakref.WeakSet()
        self._pinged_after = 0.0  # connections checked in before this are pinged
        self._batches = threading.local()
        self.fork_guard = threading.RLock()
        self._reset_pool()
        factory = _tracked_by(self, _TrackedPostgres)
        super().__init__(database, connection_factory=factory, **kwargs)

    def _reset_pool(self) -> None:
        self._pool_changed = threading.Condition()
        self._idle: list[Any] = []  # last in, first out: the freshest is reused first
        self._in_use: set[Any] = set()
        self._opening = 0  # connections being opened, counted against pool_size

    @property
    def idle_count(self) -> int:
        return len(self._idle)

    @property
    def in_use_count(self) -> int:
        return len(self._in_use)

    # Checkout and check-in.

    def connect(self, reuse_if_open: bool = False) -> bool:
        """Take a connection from the pool; wait up to ``timeout`` seconds for one."""
        deadline = time.monotonic() + self.wait_timeout
        while True:
            try:
                return bool(super().connect(reuse_if_open))
            except PoolExhausted:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise
                with self._pool_changed:
                    if not self._has_room():
                        self._pool_changed.wait(min(remaining, 1.0))

    def _has_room(self) -> bool:
        busy = len(self._in_use) + self._opening
        return bool(self._idle) or not self.pool_size or busy < self.pool_size

    def _connect(self) -> Any:
        # Called by peewee's connect() (which holds the database's lock): an idle
        # connection fit for use, else a new one while the pool has room.
        while True:
            with self._pool_changed:
                if self._idle:
                    conn = self._idle.pop()
                    self._in_use.add(conn)
                elif self._has_room():
                    conn = None
                    self._opening += 1
                else:
                    raise PoolExhausted(f"all {self.pool_size} connections are in use")
            if conn is None:
                return self._open()
            if self._fit_for_use(conn):
                return conn
            self._discard(conn)

    def _open(self) -> Any:
        try:
            conn = psycopg2.connect(dbname=self.database, **self.connect_params)
            conn.autocommit = True  # peewee sends BEGIN/COMMIT itself
            conn.opened_at = time.monotonic()
        except BaseException:
            with self._pool_changed:
                self._opening -= 1
                self._pool_changed.notify()
            raise
        with self._pool_changed:
            self._opening -= 1
            self._in_use.add(conn)
        return conn

    def _is_stale(self, conn: Any) -> bool:
        return time.monotonic() - conn.opened_at > self.stale_timeout

    def _fit_for_use(self, conn: Any) -> bool:
        """Whether an idle connection may be handed out: open, idle, not stale, and
        back recently (else it answers ``SELECT 1`` first)."""
        if conn.closed or self._is_stale(conn):
            return False
        if conn.get_transaction_status() != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
            return False
        since = conn.checked_in
        now = time.monotonic()
        if since is not None and since > self._pinged_after and now - since < PING_IF_IDLE_SECONDS:
            return True
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT 1")
        except psycopg2.Error:
            return False
        return True

    def close(self) -> bool:
        """Give this thread's connection back to the pool (closed if it is broken,
        stale or cannot leave a transaction)."""
        if self.is_closed():
            return False
        if self.in_transaction():
            raise peewee.OperationalError("Attempting to close database while transaction is open.")
        conn = self.connection()
        self.dispose()  # this thread lets go of it; the connection itself stays open
        self._check_in(conn)
        return True

    def _check_in(self, conn: Any) -> None:
        if self._reusable(conn):
            conn.checked_in = time.monotonic()
            with self._pool_changed:
                if conn in self._in_use:  # not closed by close_all meanwhile
                    self._in_use.discard(conn)
                    self._idle.append(conn)
                self._pool_changed.notify()
        else:
            self._discard(conn)

    def _reusable(self, conn: Any) -> bool:
        if conn.closed or self._is_stale(conn):
            return False
        status = conn.get_transaction_status()
        if status == psycopg2.extensions.TRANSACTION_STATUS_IDLE:
            return True
        if status == psycopg2.extensions.TRANSACTION_STATUS_UNKNOWN:  # the server is gone
            return False
        try:  # a transaction left open (or failed): end it; autocommit ignores rollback()
            with conn.cursor() as cursor:
                cursor.execute("ROLLBACK")
        except psycopg2.Error:
            return False
        return True

    def _discard(self, conn: Any) -> None:
        with self._pool_changed:
            self._in_use.discard(conn)
            self._pool_changed.notify()
        _close_quietly(conn)

    def check_all_before_use(self) -> None:
        """A connection was found dead: ping every pooled one before handing it out."""
        self._pinged_after = time.monotonic()

    def close_idle(self) -> None:
        """Close the connections no thread holds."""
        with self._pool_changed:
            idle, self._idle = self._idle, []
        for conn in idle:
            _close_quietly(conn)

    def close_all(self) -> None:
        """Close every connection, those other threads hold included (tests, shutdown)."""
        self.close()
        with self._pool_changed:
            conns = self._idle + list(self._in_use)
            self._idle, self._in_use = [], set()
            self._pool_changed.notify_all()
        for conn in conns:
            _close_quietly(conn)

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
        self._reset_pool()  # a new lock too: another thread of the parent may have held the old
        self.dispose()


def _close_quietly(conn: Any) -> None:
    try:
        conn.close()
    except Exception:
        _log.debug("closing a pooled connection failed", exc_info=True)


# Connections one process may hold: its threads (16 by default) plus the
# background ones (webhook senders, start-up retries). 4 workers x 20 stay
# under PostgreSQL's default max_connections of 100.
DEFAULT_POOL_SIZE = 20
# How long a call waits for a pooled connection before it is answered 503.
POOL_WAIT_SECONDS = 10


def _postgres(url: str, pool_size: int | None = None) -> _PostgresPool:
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


# The databases whose guards the thread calling fork() holds (see _ForkGuarded).
_guarded_at_fork: list[Any] = []


def _before_fork() -> None:
    """Wait until no other thread is connecting or closing, and keep it so."""
    for db in list(_made):
        db.fork_guard.acquire()
        _guarded_at_fork.append(db)


def _after_fork_in_parent() -> None:
    while _guarded_at_fork:
        _guarded_at_fork.pop().fork_guard.release()


def _forget_inherited_connections() -> None:
    """After ``fork()``, in the child: open fresh connections, never the parent's.

    ``gunicorn --preload`` builds the app (migrations, start-up reads) in the
    arbiter and then forks the workers: without this they would all share
    the arbiter's pooled connection, one socket for several processes.
    """
    _guarded_at_fork.clear()
    for db in list(_made):
        db.fork_guard = threading.RLock()  # the child's own, held by no one
        db.forget_inherited_connections()


os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_forget_inherited_connections,
)


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
    return isinstance(err, (peewee.OperationalError, peewee.InterfaceError, PoolExhausted))


def unavailable_reason(err: BaseException) -> str:
    """What a client is told about ``err``, without the server's address."""
    if isinstance(err, PoolExhausted):
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
