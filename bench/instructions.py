"""Instructions per metered call, counted by callgrind: the proxy's CPU in a unit
that the machine's load and speed do not move.

    python -m bench.instructions                          # this checkout, chat calls
    python -m bench.instructions --stream                 # streamed calls
    python -m bench.instructions --code /tmp/old --code .  # checkouts side by side

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
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

FEW, MANY = 50, 250
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--code", type=Path, action="append", help="a checkout to measure (repeatable)"
    )
    parser.add_argument("--stream", action="store_true", help="streamed calls instead of chat")
    args = parser.parse_args(argv)
    kind = "streamed" if args.stream else "chat"
    print(f"millions of instructions per {kind} call ({MANY - FEW} calls, callgrind)")
    print(f"{'checkout':40s} {'request thread':>15s} {'other threads':>14s} {'total':>8s}")
    for code in args.code or [Path.cwd()]:
        request, others = measure(code.resolve(), args.stream)
        print(f"{str(code):40s} {request:15.3f} {others:14.3f} {request + others:8.3f}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
