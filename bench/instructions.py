"""Instructions per metered call, counted by callgrind: the proxy's CPU in a unit
that the machine's load and speed do not move.

    python -m bench.instructions                          # this checkout, chat calls
    python -m bench.instructions --stream                 # streamed calls
    python -m bench.instructions --code /tmp/old --code .  # checkouts side by side
    python -m bench.instructions --gunicorn [--stream]    # the whole worker, gunicorn included

Why: this machine is shared, and its speed changes by 2x from one session to
the next and by 30% within one, so a change worth 2-3% of a call's CPU is
lost in the noise of ``python -m bench`` or ``python -m bench.phases``.
``valgrind --tool=callgrind`` counts the instructions a process executes,
the same count for the same code and inputs whatever else the machine does.

How: :mod:`bench.phases` (the app in this process, every plugin on, calls
straight into its WSGI callable, the stack's PostgreSQL, mock upstream and
webhook receiver in processes of their own, which valgrind does not follow)
runs under callgrind twice, with ``--calls`` few and many; the difference
divided by the difference in calls is one call's count, start-up (imports,
migrations, the warm-up calls) cancelled out. Callgrind counts each thread
on its own (``--separate-threads``): the request thread, which makes the
calls, and the others (the webhook sender threads delivering each call's
alert). Instructions are not time (a cache miss or a system call costs more
than its count says), but the same code path executed less is less CPU.
Each run takes a few minutes (valgrind runs Python ~40x slower); checkouts
run one after the other.

``--gunicorn`` counts the whole gunicorn worker instead (every thread: the
request threads, gunicorn's main loop, the webhook sender), serving the
benchmark's stack (:class:`bench.stack.Stack`, one worker, 16 threads) under
callgrind, with ``wrk`` sending the calls one at a time: the counters are
zeroed, a number of calls made, the counters dumped, for few and for many
calls in the same wall time (so what the idle threads execute cancels out).
The same is measured for :mod:`bench.bare_wsgi` (an app that only reads the
body and answers) on the same gunicorn settings: what gunicorn itself costs
a call. The app's share is the difference.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import requests

from bench import procstats
from bench.load import run_wrk
from bench.run import _bodies
from bench.stack import ROOT, Stack, free_port, gunicorn_command, wait_for

FEW, MANY = 50, 250
# Wall time of one call at concurrency 1 under callgrind, generously (~0.1 s here).
SECONDS_PER_CALL = 0.4
# Calls before counting: pools, prepared statements, rate-limit windows.
WARM_CALLS = 20
_SUMMARY = re.compile(rb"^summary: (\d+)$", re.MULTILINE)


def _counts(out_dir: Path, prefix: str) -> tuple[int, int]:
    """(request thread, other threads) instructions of one run's callgrind files."""
    main = others = 0
    for path in out_dir.glob(f"{prefix}.*"):
        found = _SUMMARY.search(path.read_bytes())
        if found is None:
            continue
        if path.name.endswith("-01"):  # thread 1: the main thread, which makes the calls
            main += int(found.group(1))
        else:
            others += int(found.group(1))
    return main, others


def _run(code: Path, calls: int, stream: bool, out_dir: Path, prefix: str) -> None:
    cmd = [
        "valgrind",
        "--tool=callgrind",
        "--separate-threads=yes",
        f"--callgrind-out-file={out_dir / prefix}.%p",
        sys.executable,
        str(code / "bench" / "phases.py"),
        "--calls",
        str(calls),
        "--reps",
        "1",
    ]
    cmd += ["--stream"] if stream else []
    env = {**os.environ, "PYTHONPATH": str(code)}
    done = subprocess.run(cmd, cwd=code, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{code}: bench.phases under callgrind failed:\n{done.stderr[-3000:]}")


def measure(code: Path, stream: bool) -> tuple[float, float]:
    """Millions of instructions per call: (request thread, other threads)."""
    with tempfile.TemporaryDirectory(prefix="comptroller-callgrind-") as tmp:
        out_dir = Path(tmp)
        _run(code, FEW, stream, out_dir, "few")
        _run(code, MANY, stream, out_dir, "many")
        few, many = _counts(out_dir, "few"), _counts(out_dir, "many")
    calls = MANY - FEW
    return (many[0] - few[0]) / calls / 1e6, (many[1] - few[1]) / calls / 1e6


def _callgrind_prefix(out_dir: Path) -> list[str]:
    return [
        "valgrind",
        "--tool=callgrind",
        "--trace-children=yes",  # without it callgrind_control does not find the worker
        f"--callgrind-out-file={out_dir}/cg.%p",
    ]


class _CountedWorker:
    """A gunicorn worker running under callgrind: its instructions between
    :meth:`zero` and :meth:`dump` (all threads)."""

    def __init__(self, pid: int, out_dir: Path) -> None:
        self.pid = pid
        self.out_dir = out_dir

    def _control(self, option: str) -> None:
        command = ["callgrind_control", option, str(self.pid)]
        subprocess.run(command, check=True, capture_output=True)

    def _dumps(self) -> list[Path]:
        return list(self.out_dir.glob(f"cg.{self.pid}.*"))

    def zero(self) -> None:
        for path in self._dumps():
            path.unlink()
        self._control("--zero")

    def dump(self) -> int:
        self._control("--dump")
        found: list[int] = []

        def written() -> bool:
            for path in self._dumps():
                text = path.read_bytes()
                summary = _SUMMARY.search(text)
                if summary is not None and b"\ntotals: " in text:
                    found.append(int(summary.group(1)))
                    return True
            return False

        wait_for(written, 60, "callgrind's dump")
        return found[0]


def _sender(url: str, bodies: list[str], headers: dict[str, str]) -> Callable[[int, float], int]:
    """Sends that many calls one at a time over that many seconds; returns how many
    were answered."""

    def send(calls: int, seconds: float) -> int:
        return run_wrk(url, bodies, headers, 1, seconds, stop_after=calls).requests

    return send


def _warm(send: Callable[[int, float], int]) -> None:
    send(WARM_CALLS, WARM_CALLS * SECONDS_PER_CALL + 30)


def _per_call(worker: _CountedWorker, send: Callable[[int, float], int]) -> float:
    """Millions of instructions per call: few and many calls sent in the same wall
    time, so what the worker does while idle cancels out."""
    seconds = MANY * SECONDS_PER_CALL + 10
    counts = []
    for calls in (FEW, MANY):
        worker.zero()
        sent = send(calls, seconds)
        if sent != calls:
            raise SystemExit(f"{sent} of {calls} calls answered in {seconds:.0f} s under callgrind")
        counts.append(worker.dump())
    return (counts[1] - counts[0]) / (MANY - FEW) / 1e6


def measure_gunicorn(code: Path, stream: bool) -> float:
    """Millions of instructions per call of the checkout's gunicorn worker (all threads)."""
    with tempfile.TemporaryDirectory(prefix="comptroller-callgrind-") as tmp:
        out_dir = Path(tmp)
        stack = Stack(
            out_dir,
            workers=1,
            threads=16,
            app_root=code,
            gunicorn_prefix=_callgrind_prefix(out_dir),
            start_timeout=900,
        )
        with stack:
            url = f"{stack.proxy_url}/v1/chat/completions"
            send = _sender(url, _bodies(stream), stack.proxy_headers())
            _warm(send)
            return _per_call(_CountedWorker(stack.worker_pids()[0], out_dir), send)


def measure_bare_gunicorn() -> float:
    """Millions of instructions per call of a worker serving :mod:`bench.bare_wsgi`."""
    with tempfile.TemporaryDirectory(prefix="comptroller-callgrind-") as tmp:
        out_dir = Path(tmp)
        port = free_port()
        cmd = gunicorn_command("bench.bare_wsgi:app", port, 1, 16, _callgrind_prefix(out_dir))
        with open(out_dir / "gunicorn.log", "wb") as log:
            server = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            wait_for(
                lambda: requests.get(url, timeout=5).ok and procstats.children(server.pid),
                900,
                "bare gunicorn",
            )
            headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-bare"}
            send = _sender(url, _bodies(False), headers)
            _warm(send)
            worker = _CountedWorker(procstats.children(server.pid)[0], out_dir)
            return _per_call(worker, send)
        finally:
            server.terminate()
            server.wait(timeout=120)


def _main_gunicorn(codes: list[Path], stream: bool) -> None:
    kind = "streamed" if stream else "chat"
    print(f"millions of instructions per {kind} call, gunicorn worker (1 worker x 16 threads, c=1)")
    bare = measure_bare_gunicorn()
    print(f"{'gunicorn alone (bench.bare_wsgi)':40s} {bare:10.3f}")
    print(f"{'checkout':40s} {'worker':>10s} {'the app (worker - gunicorn alone)':>34s}")
    for code in codes:
        worker = measure_gunicorn(code.resolve(), stream)
        print(f"{str(code):40s} {worker:10.3f} {worker - bare:34.3f}")
        sys.stdout.flush()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--code", type=Path, action="append", help="a checkout to measure (repeatable)"
    )
    parser.add_argument("--stream", action="store_true", help="streamed calls instead of chat")
    parser.add_argument(
        "--gunicorn",
        action="store_true",
        help="count the whole gunicorn worker (and gunicorn alone, to compare)",
    )
    args = parser.parse_args(argv)
    if args.gunicorn:
        _main_gunicorn(args.code or [Path.cwd()], args.stream)
        return
    kind = "streamed" if args.stream else "chat"
    print(f"millions of instructions per {kind} call ({MANY - FEW} calls, callgrind)")
    print(f"{'checkout':40s} {'request thread':>15s} {'other threads':>14s} {'total':>8s}")
    for code in args.code or [Path.cwd()]:
        request, others = measure(code.resolve(), args.stream)
        print(f"{str(code):40s} {request:15.3f} {others:14.3f} {request + others:8.3f}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
