"""Serve Comptroller under gunicorn: the ``comptroller`` command and ``gunicorn.conf.py``.

One set of defaults for both ways of starting the proxy: gthread workers
(threads let one worker relay several streams at once), a generous timeout
for slow upstreams, keep-alive for SDK clients.
"""

from __future__ import annotations

import json
import os
from ssl import SSLError
from typing import TYPE_CHECKING, Any

from gunicorn import util
from gunicorn.app.base import BaseApplication
from gunicorn.http.errors import (
    ConfigurationProblem,
    ExpectationFailed,
    ForbiddenProxyRequest,
    InvalidResponseHeader,
    InvalidResponseHeaderName,
    LimitRequestHeaders,
    LimitRequestLine,
    ParseException,
    UnsupportedTransferCoding,
)
from gunicorn.workers.gthread import ThreadWorker

from proxy.workers import announce_workers

if TYPE_CHECKING:
    from flask import Flask

    from proxy.config import Config

WORKER_CLASS = "proxy.serving.GthreadWorker"
DEFAULT_WORKERS = 2
DEFAULT_THREADS = 16


def default_workers() -> int:
    return int(os.environ.get("WEB_CONCURRENCY", str(DEFAULT_WORKERS)))


def default_threads() -> int:
    return int(os.environ.get("COMPTROLLER_THREADS", str(DEFAULT_THREADS)))


def gunicorn_settings(bind: str, workers: int, threads: int) -> dict[str, Any]:
    """The settings Comptroller runs with, whichever way gunicorn is started."""
    return {
        "bind": [bind],
        "workers": workers,
        "worker_class": WORKER_CLASS,
        "threads": threads,
        "timeout": 120,
        "graceful_timeout": 15,
        "keepalive": 5,
    }


class GthreadWorker(ThreadWorker):
    """gunicorn's gthread worker, minus a deadlock on quick shutdown (Ctrl-C).

    gunicorn's ``handle_quit`` shuts the thread pool down from inside the
    signal handler. When the signal interrupts the worker's own ``submit()``,
    which holds the pool's lock, the shutdown waits for that lock forever and
    the arbiter kills the worker after the graceful timeout, dropping its
    calls. Exiting without that step is safe: the interrupted frame unwinds
    and releases the lock, and the pool's threads finish at interpreter exit.
    """

    def handle_quit(self, sig: int, frame: Any) -> None:
        super(ThreadWorker, self).handle_quit(sig, frame)

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        """Requests the app never saw (a request line over ``limit_request_line``,
        too many or too large headers, a malformed request) answered in the
        OpenAI error shape, as every answer of the app is, instead of gunicorn's
        HTML page."""
        status, reason = gunicorn_error_status(exc)
        ip = addr[0] if addr else ""
        if status < 500:
            self.log.warning("Invalid request from ip=%s: %s", ip, exc)
            message = f"{reason}: {exc}"
        else:
            self.log.exception("Error handling request")
            message = "Internal error in Comptroller; it has been logged."
        try:
            util.write_nonblock(client, error_response_bytes(status, reason, message))
        except Exception:
            self.log.debug("Failed to send error message.")


# gunicorn's errors (gunicorn.http.errors) by the status gunicorn itself gives
# them, most specific first; any other parse error is the client's: 400.
_GUNICORN_STATUSES: tuple[
    tuple[type[BaseException] | tuple[type[BaseException], ...], int, str], ...
] = (
    (
        (InvalidResponseHeader, InvalidResponseHeaderName, ConfigurationProblem),
        500,
        "Internal Server Error",
    ),
    (LimitRequestLine, 414, "URI Too Long"),
    (LimitRequestHeaders, 431, "Request Header Fields Too Large"),
    (ExpectationFailed, 417, "Expectation Failed"),
    (UnsupportedTransferCoding, 501, "Not Implemented"),
    ((ForbiddenProxyRequest, SSLError), 403, "Forbidden"),
    (ParseException, 400, "Bad Request"),
)


def gunicorn_error_status(exc: BaseException) -> tuple[int, str]:
    for kinds, status, reason in _GUNICORN_STATUSES:
        if isinstance(exc, kinds):
            return status, reason
    return 500, "Internal Server Error"


def error_response_bytes(status: int, reason: str, message: str) -> bytes:
    """A whole HTTP/1.1 response (connection closed after it) with an OpenAI-shaped error."""
    error_type = "invalid_request_error" if status < 500 else "api_error"
    body = json.dumps(
        {"error": {"message": message, "type": error_type, "param": "None", "code": str(status)}}
    ).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


def bind_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


class ComptrollerServer(BaseApplication):
    """gunicorn's arbiter with Comptroller's app, built once in every worker.

    The app is not preloaded: each worker opens its own database connections
    after the fork. The caller applies migrations before :meth:`run`, so the
    workers start on an up-to-date schema and never race to create it.
    """

    def __init__(self, config: Config, settings: dict[str, Any]) -> None:
        self.config = config
        self.settings = settings
        super().__init__(prog="comptroller")

    def load_config(self) -> None:
        for name, value in self.settings.items():
            self.cfg.set(name, value)
        announce_workers(self.cfg.workers)

    def load(self) -> Flask:
        from proxy.app import create_app

        return create_app(self.config)
