"""A threaded HTTP server on a background thread, for the test doubles (the mock
upstream, the webhook receiver).

``BackgroundHTTPServer`` owns the listening socket and its serving thread and
keeps track of open connections, so that ``stop()`` really looks like a dead
server to the client (pooled keep-alive connections are shut down too), and
``start()`` again listens on the same port. Subclasses set ``handler_class`` (a
``TrackedHandler``), and may override ``_on_stop()`` to wake handler threads
that are waiting on something of their own.
"""

from __future__ import annotations

import http.server
import socket
import sys
import threading
from typing import Any, ClassVar, TypeVar

# typing.Self is Python 3.11+; the tests support 3.10.
_S = TypeVar("_S", bound="BackgroundHTTPServer")


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[TrackedHandler],
        owner: BackgroundHTTPServer,
        queue_size: int,
    ) -> None:
        self.owner = owner
        self.request_queue_size = queue_size
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client hanging up (a reset, a broken pipe: a proxy worker stopped, a
        pooled connection dropped) is normal for a test double: no traceback on
        stderr for it. Anything else is printed as socketserver does."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class TrackedHandler(http.server.BaseHTTPRequestHandler):
    """A quiet HTTP/1.1 handler whose connection its owner can close on ``stop()``."""

    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.owner._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.owner._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests and benchmarks do not want an access log on stderr."""


class BackgroundHTTPServer:
    """Serves ``handler_class`` on ``host:port`` from a daemon thread.

    ``port=0`` picks a free port on ``start()``; ``self.port`` holds the real one after.
    """

    handler_class: ClassVar[type[TrackedHandler]]
    request_queue_size: ClassVar[int] = 128
    thread_name: ClassVar[str] = "http-server"

    def __init__(self, port: int = 0, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self: _S) -> _S:
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server(
            (self.host, self.port), self.handler_class, self, self.request_queue_size
        )
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{self.thread_name}-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server = self._server
        if server is None:
            return
        self._stopping.set()
        self._on_stop()
        server.shutdown()
        server.server_close()
        with self._lock:
            connections = list(self._connections)
            self._connections.clear()
        for conn in connections:
            # Wakes handler threads blocked reading the next keep-alive request.
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def _on_stop(self) -> None:
        """Called once ``_stopping`` is set, before the server shuts down."""

    def __enter__(self: _S) -> _S:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)
