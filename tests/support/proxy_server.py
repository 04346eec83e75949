"""Run Comptroller under real gunicorn for end-to-end and concurrency tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests
import yaml

ROOT = Path(__file__).resolve().parents[2]


# Ports handed out by free_port() in this process.
_issued: set[int] = set()


def free_port() -> int:
    """A port nothing listens on now, never one handed out before in this process.

    The port is free only until someone binds it: a receiver configured before it
    starts, or a "dead" upstream, holds its number unbound, and the kernel may
    offer the same number again to the next caller."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _issued:
            _issued.add(port)
            return port


def wait_until(predicate: Any, timeout: float = 20.0, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except Exception as err:  # the condition may raise until it holds
            last_error = err
        time.sleep(interval)
    raise TimeoutError(f"condition not met within {timeout}s (last error: {last_error})")


class ProxyServer:
    """``gunicorn wsgi:app`` with a config file written from a dict."""

    def __init__(
        self,
        config: dict[str, Any],
        tmp_path: Path,
        workers: int = 2,
        threads: int = 8,
        env: dict[str, str] | None = None,
        name: str = "proxy",
        gunicorn_args: list[str] | None = None,
    ) -> None:
        self.config = config
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        self.threads = threads
        self.env = env or {}
        # More command-line options for gunicorn, e.g. ["--preload"].
        self.gunicorn_args = list(gunicorn_args or [])
        self.config_path = tmp_path / f"{name}-config.yaml"
        self.log_path = tmp_path / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ProxyServer:
        """Start, and wait until the proxy is ready (its database reached)."""
        return self._start(self._ready)

    def start_alive(self) -> ProxyServer:
        """Start, and wait only until it answers its liveness probe (no database needed)."""
        return self._start(self._alive)

    def _start(self, started: Any) -> ProxyServer:
        self.config_path.write_text(yaml.safe_dump(self.config))
        env = {**os.environ, "COMPTROLLER_CONFIG": str(self.config_path)}
        # The config file names the database; an inherited DATABASE_URL would win.
        env.pop("DATABASE_URL", None)
        env.update(self.env)
        cmd = [
            sys.executable,
            "-m",
            "gunicorn",
            "wsgi:app",
            "--bind",
            f"127.0.0.1:{self.port}",
            "--workers",
            str(self.workers),
            "--worker-class",
            "proxy.serving.GthreadWorker",
            "--threads",
            str(self.threads),
            "--graceful-timeout",
            "5",
            "--timeout",
            "60",
            *self.gunicorn_args,
        ]
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )
        try:
            wait_until(started, timeout=30)
        except TimeoutError:
            self.stop()
            raise RuntimeError(
                f"proxy did not start:\n{self.log_path.read_text()[-4000:]}"
            ) from None
        return self

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"gunicorn exited:\n{self.log_path.read_text()[-4000:]}")
        return requests.get(f"{self.url}/health/readiness", timeout=2).status_code == 200

    def _alive(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"gunicorn exited:\n{self.log_path.read_text()[-4000:]}")
        return requests.get(f"{self.url}/health/liveliness", timeout=2).status_code == 200

    def worker_pids(self) -> list[int]:
        assert self.process is not None
        out = subprocess.run(
            ["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True, check=False
        )
        return [int(pid) for pid in out.stdout.split()]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if hasattr(self, "_log"):
            self._log.close()

    def __enter__(self) -> ProxyServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
