"""Keep-alive HTTP/1.1 connections for the requests the proxy makes itself: the
upstream call (:mod:`proxy.upstream.client`) and the webhook POST
(``plugins.webhook_alerter.sender``, through :mod:`proxy.plugin_api`).

Why not ``pool.urlopen``: urllib3 wraps every request in its own layers (a
Timeout and a Retry object, header checks and copies, the ``HTTPResponse``
wrapper with its header dict, the pool's queue), about as much CPU as the
HTTP exchange itself. Here urllib3 still opens every connection (its socket
options, TLS context, certificate and host name checks, connect timeout and
errors: a :mod:`urllib3.connection` object's ``connect()``). The request is
written and its answer read by :mod:`proxy.http_head`, not http.client, which
writes a request's head and body in two writes and parses every header of an
answer through the ``email`` package (together, more CPU than the rest of a
webhook POST). The bytes on the wire are the ones urllib3 sends (request line,
``Host``, ``Accept-Encoding: identity``, ``Content-Length``, urllib3's
``User-Agent``, then the caller's headers; head and body in one write), a
content coding is undone by urllib3's own ``HTTPResponse``, and the errors are
the urllib3 exceptions ``pool.urlopen(..., retries=False, redirect=False)``
raises at each point, built the same way, so callers map them as before
(tests/upstream/test_keepalive_answers.py hands both the same answers).

A connection is reused while its answer was read to the end, that end was
framed (no body, chunked, or a Content-Length) and the server did not close
it (urllib3's check before reuse: a socket readable while idle is closed).
"""

from __future__ import annotations

import errno
import http.client
import io
from collections.abc import Iterator, Mapping
from ssl import CertificateError
from ssl import SSLError as BaseSSLError
from typing import Any

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import ProtocolError, ReadTimeoutError, SSLError
from urllib3.util import parse_url, wait_for_read

from proxy import http_head

# What urllib3 sends when the caller names no User-Agent.
DEFAULT_USER_AGENT = f"python-urllib3/{urllib3.__version__}"
# The errnos urllib3 reads as a read timeout (a non-blocking socket's EAGAIN).
_BLOCKING_ERRNOS = {errno.EAGAIN, errno.EWOULDBLOCK}
# URLs whose origin and request target a KeepAliveRoutes keeps (responses/<id> URLs are many).
MAX_KEPT_ROUTES = 1024
# Bodies up to this size are written with the request's head (a copy of each).
ONE_WRITE_MAX = 1 << 20
# A body an answer is read to the end for, to keep its connection, when only its status is wanted.
DISCARD_MAX = 1 << 20


class _Connection(http.client.HTTPConnection):
    """A socket a urllib3 connection opened, and the host and port it goes to
    (http.client's parsing of them, for the Host header)."""

    def __init__(self, origin: KeepAliveOrigin) -> None:
        # The Host header urllib3 sends: its connection's host (no trailing dot).
        super().__init__(origin.host.rstrip("."), origin.port)
        self.default_port = origin.default_port
        self.origin = origin

    def connect(self) -> None:
        opener = self.origin.connection_class(
            host=self.origin.host, port=self.origin.port, timeout=self.timeout
        )
        opener.connect()
        self.sock = opener.sock
        self.origin.connections += 1


class KeepAliveOrigin:
    """Up to ``maxsize`` idle keep-alive connections to one ``scheme://host:port``.

    ``pool`` is the urllib3 pool of the origin (``PoolManager.connection_from_url``):
    its host, port and connection class are the ones used, and it is the pool
    named in timeout errors, as when it sent the requests itself.
    """

    def __init__(self, pool: urllib3.HTTPConnectionPool, maxsize: int = 1) -> None:
        assert pool.host is not None and pool.port is not None
        self.pool = pool
        self.host: str = pool.host
        self.port: int = pool.port
        https = pool.scheme == "https"
        # The classes urllib3's HTTP(S)ConnectionPool opens connections with.
        self.connection_class = HTTPSConnection if https else HTTPConnection
        self.default_port = 443 if https else 80
        self.maxsize = maxsize
        self.requests = 0
        self.connections = 0
        self._idle: list[_Connection] = []

    def _checkout(self) -> _Connection:
        try:
            conn = self._idle.pop()  # atomic: threads may share an origin
        except IndexError:
            return _Connection(self)
        if conn.sock is not None and wait_for_read(conn.sock, timeout=0.0):
            conn.close()  # the server closed it (or sent what nobody asked for)
        return conn

    def _checkin(self, conn: _Connection) -> None:
        if len(self._idle) < self.maxsize:
            self._idle.append(conn)
        else:
            conn.close()

    def close(self) -> None:
        """Close the idle connections (one in use is closed when its answer ends)."""
        while self._idle:
            self._idle.pop().close()

    def send(
        self,
        method: str,
        target: str,
        body: bytes | None,
        headers: Mapping[str, str],
        connect_timeout: float | None,
        read_timeout: float | None,
    ) -> Answer:
        """Send one request and read the answer's head (interim 1xx answers
        skipped); its body is read from the :class:`Answer`."""
        self.requests += 1
        conn = self._checkout()
        try:
            self._open(conn, target, connect_timeout)
            sock = conn.sock
            assert sock is not None
            reader = http_head.Reader(sock)
            try:
                try:
                    head = http_head.request_head(
                        conn, method, target, body, headers, DEFAULT_USER_AGENT
                    )
                    _write(sock, head, body)
                except BrokenPipeError:
                    pass  # the server may have answered already: read it
                except OSError as err:
                    if err.errno != errno.EPROTOTYPE and err.errno != errno.ECONNRESET:
                        raise
                sock.settimeout(read_timeout)
                try:
                    answer_head = http_head.read_head(reader)
                except (BaseSSLError, OSError) as err:
                    self._raise_timeout(err, target, read_timeout)
                    raise
            except (BaseSSLError, CertificateError) as err:
                raise SSLError(err)  # noqa: B904 (as urllib3 raises it: in context)
            except (OSError, http.client.HTTPException) as err:
                raise ProtocolError("Connection aborted.", err)  # noqa: B904 (as urllib3 does)
        except BaseException:
            conn.close()  # as urllib3 discards a connection that failed
            raise
        return Answer(self, conn, reader, answer_head, method, target)

    def fetch(
        self,
        method: str,
        target: str,
        body: bytes | None,
        headers: Mapping[str, str],
        connect_timeout: float | None,
        read_timeout: float | None,
    ) -> tuple[int, bytes]:
        """Send one request and read its whole answer: the status and the body."""
        answer = self.send(method, target, body, headers, connect_timeout, read_timeout)
        return answer.status, answer.read()

    def post_for_status(
        self,
        target: str,
        body: bytes,
        headers: Mapping[str, str],
        connect_timeout: float | None,
        read_timeout: float | None,
    ) -> int:
        """POST ``body`` and read only the answer's status: for a caller that wants
        nothing else of it (the webhook sender, for which any 2xx is a delivery).
        A framed body of up to :data:`DISCARD_MAX` is read and dropped so that
        the connection carries the next POST; any other answer's connection is
        closed once its status is known."""
        answer = self.send("POST", target, body, headers, connect_timeout, read_timeout)
        answer.discard()
        return answer.status

    def _open(self, conn: _Connection, target: str, connect_timeout: float | None) -> None:
        """Connect ``conn`` if it is not (urllib3's errors), else set its send timeout."""
        conn.timeout = connect_timeout
        if conn.sock is None:
            try:
                try:
                    conn.connect()
                except (TimeoutError, BaseSSLError) as err:
                    self._raise_timeout(err, target, connect_timeout)
                    raise
            except (BaseSSLError, CertificateError) as err:
                raise SSLError(err)  # noqa: B904 (as urllib3 raises it: in context)
        else:
            conn.sock.settimeout(connect_timeout)

    def _raise_timeout(self, err: BaseException, target: str, timeout: float | None) -> None:
        if _timed_out(err):
            raise ReadTimeoutError(
                self.pool, target, f"Read timed out. (read timeout={timeout})"
            ) from err


class Answer:
    """One answer on its connection, its head read: read its body whole
    (:meth:`read`) or as it comes (:meth:`chunks`); the connection is kept for
    the next request once the body was read to its framed end."""

    def __init__(
        self,
        origin: KeepAliveOrigin,
        conn: _Connection,
        reader: http_head.Reader,
        head: http_head.Head,
        method: str,
        target: str,
    ) -> None:
        self.status = head.status
        self._origin = origin
        self._conn: _Connection | None = conn
        self._reader = reader
        self._head = head
        self._method = method
        self._target = target
        self._ended = False

    def _raw(self) -> Iterator[bytes]:
        """The body as it arrives, content coding not undone; urllib3's errors."""
        try:
            yield from http_head.body_parts(self._reader, self._head, self._method)
        except BaseException as err:
            self._fail(err)
            raise
        self._ended = True

    def chunks(self) -> Iterator[bytes]:
        """The body as it comes (each HTTP chunk of a chunked answer as it
        arrives, or the part of it that has), its content coding undone;
        :meth:`release` or :meth:`close` when done with it."""
        if self._head.content_coding() is None:
            return self._raw()
        return self._decoded_parts()

    def _decoded_parts(self) -> Iterator[bytes]:
        decoded = self._decoded()
        while part := decoded.read1(65536):  # what has arrived, decoded: no wait for 64 KiB
            yield part

    def read(self) -> bytes:
        """The whole body, as urllib3's preloaded ``HTTPResponse.data``."""
        try:
            if self._head.content_coding() is None:
                data = b"".join(self._raw())
            else:
                data = self._decoded().read()
        except BaseException:
            self.close()
            raise
        self.release()
        return data

    def discard(self) -> None:
        """Done with the answer but for its status: a framed body of up to
        :data:`DISCARD_MAX` is read (to keep the connection), else the
        connection is closed."""
        head = self._head
        small = head.length is not None and head.length <= DISCARD_MAX
        if head.reusable(self._method) and (small or not head.has_body(self._method)):
            for _ in self._raw():
                pass
        self.release()

    def _decoded(self) -> urllib3.HTTPResponse:
        """urllib3's ``HTTPResponse`` over the raw body, to undo its content coding."""
        return urllib3.HTTPResponse(
            body=_PartsFile(self._raw()),
            headers=urllib3.HTTPHeaderDict(self._head.headers),
            status=self.status,
            preload_content=False,
            decode_content=True,
            enforce_content_length=False,  # the framing is checked by http_head
            request_method=self._method,
            request_url=self._target,
        )

    def _fail(self, err: BaseException) -> None:
        """Close the answer after ``err`` while reading its body; raise what
        urllib3's ``HTTPResponse`` raises for it (the caller re-raises anything else)."""
        self.close()
        if _timed_out(err):
            raise ReadTimeoutError(self._origin.pool, None, "Read timed out.") from err
        if isinstance(err, BaseSSLError):
            raise SSLError(err) from err
        if isinstance(err, (http.client.HTTPException, OSError)):
            raise ProtocolError(f"Connection broken: {err!r}", err) from err

    def release(self) -> None:
        """Done with the answer: its connection is kept if the body was read to
        its framed end and the server keeps it open, else closed (its leftovers
        must not reach the next request)."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._ended and self._head.reusable(self._method) and not self._reader.buffer:
            self._origin._checkin(conn)
        else:
            conn.close()

    def close(self) -> None:
        """Abandon the answer: close its connection."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


class _PartsFile(io.RawIOBase):
    """A readable file over an iterator of byte strings (urllib3's decoder reads it)."""

    def __init__(self, parts: Iterator[bytes]) -> None:
        self._parts = parts
        self._pending = b""

    def readable(self) -> bool:
        return True

    def read1(self, size: int = -1) -> bytes:
        """One part's worth at most: what has arrived (urllib3's ``read1`` calls it)."""
        return self.read(size if size >= 0 else 65536) or b""

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            self._pending = next(self._parts, b"")
            if not self._pending:
                return 0
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


class KeepAliveRoutes:
    """URL -> (its origin's :class:`KeepAliveOrigin`, the request target), worked out once
    per URL (urllib3 parses the URL, builds the pool key and copies the headers
    again on every ``PoolManager.request``)."""

    def __init__(self, pools: urllib3.PoolManager, maxsize: int = 1) -> None:
        self.pools = pools
        self.maxsize = maxsize
        self._routes: dict[str, tuple[KeepAliveOrigin, str]] = {}
        self._origins: dict[tuple[str, str, int], KeepAliveOrigin] = {}

    def __call__(self, url: str) -> tuple[KeepAliveOrigin, str]:
        route = self._routes.get(url)
        if route is None:
            pool = self.pools.connection_from_url(url)
            assert pool.host is not None and pool.port is not None
            key = (pool.scheme, pool.host, pool.port)
            origin = self._origins.get(key)
            if origin is None:
                origin = self._origins.setdefault(key, KeepAliveOrigin(pool, self.maxsize))
            route = (origin, parse_url(url).request_uri)
            if len(self._routes) < MAX_KEPT_ROUTES:
                self._routes[url] = route
        return route

    def close(self) -> None:
        for origin in list(self._origins.values()):
            origin.close()


def _timed_out(err: BaseException) -> bool:
    """Whether a socket error is a timeout, as urllib3 reads them."""
    return isinstance(err, TimeoutError) or getattr(err, "errno", None) in _BLOCKING_ERRNOS


def _write(sock: Any, head: bytes, body: bytes | None) -> None:
    """A request's head and body: one write up to :data:`ONE_WRITE_MAX`, else two."""
    if body and len(body) <= ONE_WRITE_MAX:
        sock.sendall(head + body)
        return
    sock.sendall(head)
    if body:
        sock.sendall(body)
