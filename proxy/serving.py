"""Serve Comptroller under gunicorn: the ``comptroller`` command and ``gunicorn.conf.py``.

One set of defaults for both ways of starting the proxy: gthread workers
(threads let one worker relay several streams at once), a generous timeout
for slow upstreams, keep-alive for SDK clients.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from gunicorn.app.base import BaseApplication
from gunicorn.workers.gthread import ThreadWorker

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

    def load(self) -> Flask:
        from proxy.app import create_app

        return create_app(self.config)
