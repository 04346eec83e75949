"""CPU per phase of a metered chat call, in-process (issue 20's per-phase profile).

    python -m bench.phases                         # this checkout
    python -m bench.phases --stream                # streamed calls (SSE relayed to the end)
    python -m bench.phases --code /tmp/1d85003     # another checkout, same stack

Starts the benchmark's PostgreSQL database, mock upstream and webhook receiver
(``bench.stack``, every plugin on), builds the app in this process and sends
chat calls straight into its WSGI callable (the environ gunicorn would build,
no test client), one at a time. Each phase is timed
with ``time.thread_time`` around the function that runs it (exclusive: a
phase inside another counts once); "webhook sender" is the CPU of every other
thread of the process (the sender threads deliver each call's alert), read
from their thread clocks. "framework" is the rest of the request thread:
Flask, Werkzeug and the gateway's own glue (gunicorn's HTTP parsing and socket
writes come on top of it in ``python -m bench``).

With ``--stream`` the calls ask for ``stream: true`` and read the answer to
its end; "upstream" is then opening the upstream stream (its first bytes),
and relaying the chunks counts in "framework" (the relay runs as Werkzeug
iterates the response), the settle at the stream's end in "settle".

``--code`` runs the same measurement on a checkout of another version
(release 1d85003's layout is known too), so versions compare in one run.
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# (module, attribute, phase) for the layout of today and of release 1d85003.
LAYOUTS = {
    "proxy/call/gateway.py": [
        ("proxy.api.llm", "authenticate", "auth + read"),
        ("proxy.call.gateway", "build_context", "build context"),
        ("proxy.call.gateway", "settle_spend", "settle"),
        ("proxy.call.gateway", "_finish", "call_finished hooks"),
    ],
    "proxy/gateway.py": [
        ("proxy.views.llm", "authenticate", "auth + read"),
        ("proxy.gateway", "build_context", "build context"),
        ("proxy.gateway", "record_spend", "settle"),
        ("proxy.gateway", "_finish", "call_finished hooks"),
    ],
}
ORDER = [
    "auth + read",
    "build context",
    "pre_request_check",
    "upstream",
    "settle",
    "call_finished hooks",
    "framework",
    "request thread",
    "webhook sender",
    "total",
]


class Phases:
    """Exclusive thread CPU per phase: a phase nested in another counts once."""

    def __init__(self) -> None:
        self.ns: dict[str, int] = {}
        self._stack: list[int] = []

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.thread_time_ns()
            self._stack.append(0)
            try:
                return fn(*args, **kwargs)
            finally:
                spent = time.thread_time_ns() - start
                inner = self._stack.pop()
                self.ns[name] = self.ns.get(name, 0) + spent - inner
                if self._stack:
                    self._stack[-1] += spent

        return timed


def _other_threads_ns() -> int:
    total = 0
    for thread in threading.enumerate():
        if thread is threading.main_thread() or thread.ident is None:
            continue
        try:
            total += time.clock_gettime_ns(time.pthread_getcpuclockid(thread.ident))
        except (OSError, ProcessLookupError):
            pass  # ended meanwhile
    return total


def _environ(body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    """The WSGI environ gunicorn would build for the call (no test client in between)."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/v1/chat/completions",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "4000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    for name, value in headers.items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    return environ


def measure(calls: int, reps: int, stream: bool = False) -> list[dict[str, float]]:
    """Per-phase ms per call, one dict per repetition (of this checkout: cwd)."""
    import yaml

    from bench.stack import END_USERS, Stack, chat_body

    root = Path.cwd()
    layout = next(v for k, v in LAYOUTS.items() if (root / k).exists())
    phases = Phases()
    results = []
    with tempfile.TemporaryDirectory() as tmp, Stack(Path(tmp), workers=1, threads=1) as stack:
        config = Path(tmp) / "inproc.yaml"
        config.write_text(yaml.safe_dump(stack.config()))
        os.environ["COMPTROLLER_CONFIG"] = str(config)
        os.environ["WEBHOOK_URL"] = f"{stack.receiver_url}/hook"
        os.environ.pop("DATABASE_URL", None)
        from proxy.app import create_app

        app = create_app()
        services = app.extensions["comptroller"]
        for module_name, attr, phase in layout:
            module = importlib.import_module(module_name)
            setattr(module, attr, phases.wrap(phase, getattr(module, attr)))
        gateway = importlib.import_module("proxy.call.gateway")
        if hasattr(gateway, "run_checks"):  # the checks' own function (hooks called directly)
            gateway.run_checks = phases.wrap("pre_request_check", gateway.run_checks)
        else:
            hook = services.pm.hook
            hook.pre_request_check = phases.wrap("pre_request_check", hook.pre_request_check)
        services.upstream.call_raw = phases.wrap("upstream", services.upstream.call_raw)
        if hasattr(services.upstream, "stream"):
            services.upstream.stream = phases.wrap("upstream", services.upstream.stream)
        headers = stack.proxy_headers()
        bodies = [json.dumps(chat_body(END_USERS[i % 100], stream)).encode() for i in range(100)]

        def call(i: int) -> None:
            status: list[str] = []
            answer = app(_environ(bodies[i % 100], headers), lambda s, h, e=None: status.append(s))
            try:
                data = b"".join(answer)  # a stream is relayed (and settled) as it is read
            finally:
                close = getattr(answer, "close", None)
                if close is not None:
                    close()
            assert status[0].startswith("200"), data
            assert not stream or data.rstrip().endswith(b"data: [DONE]"), data[-200:]

        for i in range(200):  # warm: pools, prepared statements, windows
            call(i)
        for _ in range(reps):
            time.sleep(0.3)
            phases.ns.clear()
            others = _other_threads_ns()
            start = time.thread_time_ns()
            for i in range(calls):
                call(i)
            request_thread = time.thread_time_ns() - start
            time.sleep(0.3)  # the sender delivers the last alerts
            row = {name: ns / calls / 1e6 for name, ns in phases.ns.items()}
            row["request thread"] = request_thread / calls / 1e6
            row["framework"] = row["request thread"] - sum(phases.ns.values()) / calls / 1e6
            row["webhook sender"] = (_other_threads_ns() - others) / calls / 1e6
            row["total"] = row["request thread"] + row["webhook sender"]
            results.append(row)
        sender = app.extensions.get("webhook_alerter")
        if sender is not None:
            sender.stop()  # before the stack drops the database it polls
        from proxy.storage.db import database

        close_all = getattr(database.obj, "close_all", None)
        if close_all is not None:
            close_all()
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=300, help="calls per repetition")
    parser.add_argument("--reps", type=int, default=3, help="repetitions (the median is shown)")
    parser.add_argument("--code", type=Path, help="measure this checkout instead")
    parser.add_argument("--stream", action="store_true", help="streamed calls instead of chat")
    args = parser.parse_args(argv)
    if args.code is not None:
        # This script, with the other checkout's code (and its bench.stack) first on the path.
        env = {**os.environ, "PYTHONPATH": str(args.code.resolve())}
        cmd = [sys.executable, __file__, "--calls", str(args.calls), "--reps", str(args.reps)]
        cmd += ["--stream"] if args.stream else []
        subprocess.run(cmd, cwd=args.code, env=env, check=True)
        return
    rows = measure(args.calls, args.reps, args.stream)
    kind = "streamed" if args.stream else "chat"
    print(f"{Path.cwd()}: ms of CPU per {kind} call, median of {args.reps} x {args.calls} calls")
    for name in ORDER:
        values = [row.get(name, 0.0) for row in rows]
        print(f"  {name:22s} {statistics.median(values):6.3f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
