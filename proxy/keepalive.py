"""Keep-alive HTTP/1.1 connections for the requests the proxy makes itself: the
upstream call (:mod:`proxy.upstream.client`) and the webhook POST
(``plugins.webhook_alerter.sender``, through :mod:`proxy.plugin_api`).

Why not ``pool.urlopen``: urllib3 wraps every request in its own layers (a
Timeout and a Retry object, header checks and copies, the ``HTTPResponse``
wrapper with its header dict, the pool's queue), about as much CPU as the
HTTP exchange itself. Here urllib3 still opens every connection (its socket
options, TLS context, certificate and host name checks, connect timeout and
errors: a :mod:`urllib3.connection` object's ``connect()``), and the request
and its answer go through http.client directly, which is what urllib3 sends
and parses them with. The bytes on the wire are the same (request line,
``Host``, ``Accept-Encoding: identity``, ``Content-Length``, urllib3's
``User-Agent``, then the caller's headers; written with the body in one
``sendall`` where http.client makes two), and so are the errors: each is
the urllib3 exception ``pool.urlopen(..., retries=False, redirect=False)``
raises at that point, built the same way, so callers map them as before.

A connection is reused while its answer was read to the end and the server
did not close it (urllib3's check before reuse: a socket readable while
idle is closed). An answer urllib3 would decode or frame differently than
plain http.client (a ``Content-Encoding``, an odd ``Content-Length``), and
every stream that is not plainly chunked, are read through urllib3's own
``HTTPResponse``, built as urllib3 builds it.
"""

from __future__ import annotations

import errno
import http.client
import io
from collections.abc import Callable, Iterator, Mapping
from ssl import CertificateError
from ssl import SSLError as BaseSSLError
from typing import Any, TypeVar

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import ProtocolError, ReadTimeoutError, SSLError
from urllib3.util import parse_url, wait_for_read

from proxy import http_head

_T = TypeVar("_T")

# What urllib3 sends when the caller names no User-Agent.
DEFAULT_USER_AGENT = f"python-urllib3/{urllib3.__version__}"
# The errnos urllib3 reads as a read timeout (a non-blocking socket's EAGAIN).
_BLOCKING_ERRNOS = {errno.EAGAIN, errno.EWOULDBLOCK}
# URLs whose origin and request target a KeepAliveRoutes keeps (responses/<id> URLs are many).
MAX_KEPT_ROUTES = 1024
# Bodies up to this size are written with the request's head (a copy of each).
ONE_WRITE_MAX = 1 << 20


class _Connection(http.client.HTTPConnection):
    """http.client's request and answer on a socket a urllib3 connection opened."""

    def __init__(self, origin: KeepAliveOrigin) -> None:
        # The Host header urllib3 sends: its connection's host (no trailing dot).
        super().__init__(origin.host.rstrip("."), origin.port)
        self.default_port = origin.default_port
        self.origin = origin

    # A request's head held back to go out with its body (see :meth:`send`).
    _hold_head = False
    _head: bytes | None = None

    def send(self, data: Any) -> None:
        """http.client writes a request's head and its body with a ``sendall``
        each; in :meth:`request_in_one_write` the head waits and goes out with
        the body: one write, the peer woken once, not twice (measured on
        loopback: 10-23% less CPU per webhook POST)."""
        head = self._head
        if head is not None:
            self._head = None
            data = head + data
        elif self._hold_head:
            self._hold_head = False
            self._head = data
            return
        super().send(data)

    def request_in_one_write(
        self, method: str, target: str, body: bytes | None, headers: Mapping[str, str]
    ) -> None:
        """``request()``, its head and a body of up to :data:`ONE_WRITE_MAX` in one write."""
        self._hold_head = body is not None and 0 < len(body) <= ONE_WRITE_MAX
        try:
            self.request(method, target, body, headers)
        finally:
            self._hold_head = False
            self._head = None

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
        """Send one request and read the answer's status and headers."""
        self.requests += 1
        conn = self._checkout()
        try:
            return self._exchange(
                conn, method, target, body, headers, connect_timeout, read_timeout
            )
        except BaseException:
            conn.close()  # as urllib3 discards a connection that failed
            raise

    def _exchange(
        self,
        conn: _Connection,
        method: str,
        target: str,
        body: bytes | None,
        headers: Mapping[str, str],
        connect_timeout: float | None,
        read_timeout: float | None,
    ) -> Answer:
        self._open(conn, target, connect_timeout)
        if not any(name.lower() == "user-agent" for name in headers):
            headers = {"User-Agent": DEFAULT_USER_AGENT, **headers}
        response = self._write_then_read(
            conn,
            target,
            read_timeout,
            lambda: conn.request_in_one_write(method, target, body, headers),
            conn.getresponse,
        )
        return Answer(self, conn, response, method, target)

    def _write_then_read(
        self,
        conn: _Connection,
        target: str,
        read_timeout: float | None,
        write: Callable[[], None],
        read: Callable[[], _T],
    ) -> _T:
        """Write a request and read (the start of) its answer on the open ``conn``,
        raising what urllib3's ``urlopen`` raises at each point."""
        try:
            try:
                write()
            except BrokenPipeError:
                pass  # the server may have answered already: read it
            except OSError as err:
                if err.errno != errno.EPROTOTYPE and err.errno != errno.ECONNRESET:
                    raise
            if conn.sock is not None:
                conn.sock.settimeout(read_timeout)
            try:
                return read()
            except (BaseSSLError, OSError) as err:
                self._raise_timeout(err, target, read_timeout)
                raise
        except (BaseSSLError, CertificateError) as err:
            raise SSLError(err)  # noqa: B904 (as urllib3 raises it: in context)
        except http.client.IncompleteRead as err:
            raise ProtocolError(f"Connection broken: {err!r}", err)  # noqa: B904 (as urllib3)
        except (OSError, http.client.HTTPException) as err:
            raise ProtocolError("Connection aborted.", err)  # noqa: B904 (as urllib3 does)

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

    def post_for_status(
        self,
        target: str,
        body: bytes,
        headers: Mapping[str, str],
        connect_timeout: float | None,
        read_timeout: float | None,
    ) -> int:
        """POST ``body`` and read only the answer's status: for a caller that
        wants nothing else of it (the webhook sender, for which any 2xx is a
        delivery).

        Of the answer only the head is parsed (:mod:`proxy.http_head`; http.client
        parses every header through the ``email`` package, about a third of a
        webhook POST's CPU); the connection is kept when the answer is framed by
        a ``Content-Length`` (or has no body) and the server keeps it open, and
        its body is then read and dropped; any other answer's connection is
        closed once its status is known. Errors are urllib3's, as for :meth:`send`.
        """
        return self._exchange_bare(
            "POST", target, body, headers, connect_timeout, read_timeout, http_head.read_status
        )

    def fetch(
        self,
        method: str,
        target: str,
        body: bytes | None,
        headers: Mapping[str, str],
        connect_timeout: float | None,
        read_timeout: float | None,
    ) -> tuple[int, bytes]:
        """Send one request and read its whole answer: the status and the body,
        its content coding undone as urllib3 undoes it (``Answer.read()`` after
        :meth:`send`, for a caller that wants no header of the answer).

        The answer's head is read by :mod:`proxy.http_head` instead of
        http.client, which parses every header through the ``email`` package.
        Errors are urllib3's, as for :meth:`send` and :meth:`Answer.read`.
        """
        answer, data = self._exchange_bare(
            method,
            target,
            body,
            headers,
            connect_timeout,
            read_timeout,
            lambda sock: http_head.read_answer(sock, method),
        )
        coding = next((v for k, v in answer.headers if k == "content-encoding"), "identity")
        if coding.lower() != "identity":
            data = urllib3.HTTPResponse(
                body=io.BytesIO(data),
                headers=urllib3.HTTPHeaderDict(answer.headers),
                status=answer.status,
                preload_content=True,
                decode_content=True,
                request_method=method,
                request_url=target,
            ).data
        return answer.status, data

    def _exchange_bare(
        self,
        method: str,
        target: str,
        body: bytes | None,
        headers: Mapping[str, str],
        connect_timeout: float | None,
        read_timeout: float | None,
        read: Callable[[Any], tuple[_T, bool]],
    ) -> _T:
        """One request written as http.client writes it (:func:`http_head.request_head`),
        its answer read by ``read`` (what it returns, and whether the connection can
        be kept); urllib3's errors, as for :meth:`send`."""
        self.requests += 1
        conn = self._checkout()
        try:
            self._open(conn, target, connect_timeout)
            sock = conn.sock
            assert sock is not None

            def write() -> None:
                head = http_head.request_head(
                    conn, method, target, body, headers, DEFAULT_USER_AGENT
                )
                _write(sock, head, body)

            result, keep = self._write_then_read(
                conn, target, read_timeout, write, lambda: read(sock)
            )
        except BaseException:
            conn.close()
            raise
        if keep:
            self._checkin(conn)
        else:
            conn.close()
        return result

    def _raise_timeout(self, err: BaseException, target: str, timeout: float | None) -> None:
        if isinstance(err, TimeoutError) or getattr(err, "errno", None) in _BLOCKING_ERRNOS:
            raise ReadTimeoutError(
                self.pool, target, f"Read timed out. (read timeout={timeout})"
            ) from err


class Answer:
    """One answer on its connection: read it whole (:meth:`read`) or as it comes
    (:meth:`stream`); the connection is kept for the next request once the
    answer was read to its end."""

    def __init__(
        self,
        origin: KeepAliveOrigin,
        conn: _Connection,
        response: http.client.HTTPResponse,
        method: str,
        target: str,
    ) -> None:
        self.status = response.status
        self._origin = origin
        self._conn: _Connection | None = conn
        self._response = response
        self._method = method
        self._target = target

    def _plain(self) -> bool:
        """Whether http.client reads this answer as urllib3 would (no decoding,
        no framing urllib3 reads differently)."""
        response = self._response
        headers = response.msg
        if "content-encoding" in headers:
            return False
        if response.chunked:
            return "content-length" not in headers
        return response.length is not None or "content-length" not in headers

    def read(self) -> bytes:
        """The whole body, as urllib3's preloaded ``HTTPResponse.data``."""
        if not self._plain():
            try:
                data = self.stream().read()
            except BaseException:
                self.close()
                raise
            self.release()
            return data
        try:
            data = self._response.read()
        except BaseException as err:
            self._fail(err)
            raise
        self.release()
        return data

    def _fail(self, err: BaseException) -> None:
        """Close the answer after ``err`` while reading it; raise what urllib3's
        ``HTTPResponse`` raises for it (the caller re-raises anything else)."""
        self.close()
        if isinstance(err, TimeoutError):
            raise ReadTimeoutError(self._origin.pool, None, "Read timed out.") from err
        if isinstance(err, BaseSSLError):
            raise SSLError(err) from err
        if isinstance(err, (http.client.HTTPException, OSError)):
            raise ProtocolError(f"Connection broken: {err!r}", err) from err

    def chunks(self) -> Iterator[bytes]:
        """The body as it comes: each HTTP chunk of a chunked answer as it arrives
        (or the part of it that has), raising urllib3's errors as :meth:`stream`
        would; :meth:`release` or :meth:`close` when done with it.

        A plain chunked answer (a stream, as every provider sends one) is read
        with http.client's ``read1``, the reads urllib3's ``read_chunked`` makes
        without its per-chunk layers (its chunk bookkeeping, decoder and
        buffers): the relay reads one event per chunk. Anything else goes
        through :meth:`stream`.
        """
        response = self._response
        if not (response.chunked and self._plain()):
            yield from chunks_of(self.stream())
            return
        read1 = response.read1
        while True:
            try:
                part = read1(65536)
            except BaseException as err:
                self._fail(err)
                raise
            if not part:
                return
            yield part

    def stream(self) -> urllib3.HTTPResponse:
        """urllib3's ``HTTPResponse`` over the answer, as ``urlopen(...,
        preload_content=False)`` returns it (its chunked reads, decoding and
        errors); :meth:`release` or :meth:`close` when done with it."""
        response = self._response
        return urllib3.HTTPResponse(
            body=response,
            headers=urllib3.HTTPHeaderDict(response.msg.items()),
            status=response.status,
            version=response.version,
            reason=response.reason,
            preload_content=False,
            decode_content=True,
            original_response=response,
            enforce_content_length=True,
            request_method=self._method,
            request_url=self._target,
        )

    def release(self) -> None:
        """Done with the answer: its connection is kept if the answer was read
        to the end, else closed (its leftovers must not reach the next request)."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._response.isclosed():
            self._origin._checkin(conn)
        else:
            self._response.close()
            conn.close()

    def close(self) -> None:
        """Abandon the answer: close it and its connection."""
        conn, self._conn = self._conn, None
        self._response.close()
        if conn is not None:
            conn.close()


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


def _write(sock: Any, head: bytes, body: bytes | None) -> None:
    """A request's head and body: one write up to :data:`ONE_WRITE_MAX`, else two."""
    if body and len(body) <= ONE_WRITE_MAX:
        sock.sendall(head + body)
        return
    sock.sendall(head)
    if body:
        sock.sendall(body)


def chunks_of(response: urllib3.HTTPResponse) -> Iterator[bytes]:
    """The body of a streamed answer as it comes: each HTTP chunk when chunked."""
    if response.chunked and response.supports_chunked_reads():
        yield from response.read_chunked(decode_content=True)
        return
    while True:
        # read1 (urllib3 >= 2.3): what has arrived, not a full 64 KiB.
        part = response.read1(65536) if hasattr(response, "read1") else response.read(65536)
        if not part:
            return
        yield part
