"""``python -m bench``: the overhead of a metered call with every plugin on.

For each of non-streaming and streaming chat calls, at concurrency 1 and
16, the same wrk load runs first against the mock upstream directly and
then through Comptroller (see :mod:`bench.stack` for the set-up). For each
phase it records requests/s, p50/p90/p99 latency, the proxy processes' CPU
per call (utime + stime of the gunicorn arbiter and workers from /proc),
PostgreSQL's CPU per call (the server processes of the benchmark's
database), statements sent to PostgreSQL per call (counted in the workers,
see ``bench/gunicorn_bench.py``; each is one round trip), webhook alerts
delivered, and worker RSS. ``--peer litellm`` then runs the same phases
through the LiteLLM proxy (:mod:`bench.peer`) and prints the ratios.
``--memory`` instead runs ``--memory-calls``
calls and samples worker RSS every ``--memory-every``.

Results are printed and written into ``bench/RESULTS.md`` between the
``bench:run`` markers (the rest of the file is left alone).
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench import procstats
from bench.load import LoadResult, run_wrk, wrk_available
from bench.peer import LiteLLMPeer
from bench.report import render, write_results
from bench.stack import END_USERS, Stack, chat_body

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


@dataclass
class Phase:
    target: str  # "direct", "proxy" or "peer" (bench.peer)
    stream: bool
    connections: int
    load: LoadResult
    proxy_cpu_ms: float = 0.0  # per call
    postgres_cpu_ms: float = 0.0  # per call
    request_statements: float = 0.0  # per call
    background_statements: float = 0.0  # per call
    webhooks: float = 0.0  # deliveries per call during the phase
    worker_rss_mib: list[float] = field(default_factory=list)
    # Each worker's share of the workers' CPU: how evenly the kernel spread connections.
    worker_cpu_share: list[float] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{'stream' if self.stream else 'chat'} c={self.connections}"


@dataclass
class Run:
    command: str
    started: str
    seconds: float
    workers: int
    threads: int
    disabled: list[str] = field(default_factory=list)
    synchronous_commit: bool = True
    phases: list[Phase] = field(default_factory=list)
    rss_samples: list[tuple[int, list[float]]] = field(default_factory=list)  # (calls, MiB)
    outbox_drain_seconds: float | None = None
    alerts_queued: int = 0
    alerts_delivered: int = 0
    spend_counter: float = 0.0
    spend_logged: float = 0.0
    spend_rows: int = 0
    profile: str | None = None
    peer: str | None = None  # the peer gateway's name (--peer)
    total_seconds: float = 0.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark Comptroller (all plugins on, PostgreSQL) against a mock upstream.",
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each phase")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--threads", type=int, default=16, help="gunicorn threads per worker")
    parser.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=[1, 16],
        help="connections of each phase (default: 1 16)",
    )
    parser.add_argument(
        "--only", choices=["chat", "stream"], help="run only non-streaming or streaming phases"
    )
    parser.add_argument(
        "--memory", action="store_true", help="memory mode: RSS over --memory-calls calls"
    )
    parser.add_argument("--memory-calls", type=int, default=100_000)
    parser.add_argument("--memory-every", type=int, default=10_000)
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="record py-spy profiles of every worker, one folder per phase, into DIR",
    )
    parser.add_argument(
        "--disable",
        nargs="+",
        default=[],
        metavar="PLUGIN",
        help="turn these plugins off (to see what each costs); the default is all on",
    )
    parser.add_argument(
        "--no-synchronous-commit",
        action="store_true",
        help="connect with synchronous_commit=off (faster commits; a crash may lose the "
        "last few committed calls' spend). Off by default: durability first",
    )
    parser.add_argument(
        "--peer",
        choices=["litellm"],
        help="also run the LiteLLM proxy (its own venv, no database) on the same upstream "
        "with the same load, and print the ratios",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the raw results as JSON")
    parser.add_argument(
        "--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone"
    )
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.workers < 1 or args.threads < 1:
        parser.error("--seconds, --workers and --threads must be positive")
    if args.memory_every < 1 or args.memory_calls < args.memory_every:
        parser.error("--memory-calls must be at least --memory-every (>= 1)")
    return args


def _bodies(stream: bool, model: str | None = None) -> list[str]:
    bodies = []
    for end_user in END_USERS:
        body = chat_body(end_user, stream) if model is None else chat_body(end_user, stream, model)
        bodies.append(json.dumps(body))
    return bodies


def _warm_up(stack: Stack, seconds: float) -> None:
    """First calls create the end users' rows, window rows and pooled connections."""
    for stream in (False, True):
        load = run_wrk(
            f"{stack.proxy_url}/v1/chat/completions",
            _bodies(stream),
            stack.proxy_headers(),
            16,
            seconds,
        )
        if load.errors:
            raise RuntimeError(f"warm-up: {load.errors} failed calls; see the gunicorn log")


def _direct_phase(stack: Stack, stream: bool, connections: int, seconds: float) -> Phase:
    load = run_wrk(
        f"{stack.upstream_url}/v1/chat/completions",
        _bodies(stream, model="gpt-4o-mini"),
        stack.upstream_headers(),
        connections,
        seconds,
    )
    return Phase("direct", stream, connections, load)


def _proxy_phase(
    stack: Stack, stream: bool, connections: int, seconds: float, profile_dir: str | None
) -> Phase:
    pids = stack.proxy_pids()
    workers = stack.worker_pids()
    pg_pids = stack.postgres_pids()
    cpu0 = procstats.total_cpu_seconds(pids)
    worker0 = [procstats.cpu_seconds(pid) for pid in workers]
    pg0 = {pid: procstats.cpu_seconds(pid) for pid in pg_pids}
    statements0 = stack.statements()
    hooks0 = stack.webhooks_received()
    spies = _start_profile(stack, profile_dir, seconds) if profile_dir else []
    load = run_wrk(
        f"{stack.proxy_url}/v1/chat/completions",
        _bodies(stream),
        stack.proxy_headers(),
        connections,
        seconds,
    )
    cpu1 = procstats.total_cpu_seconds(pids)
    worker_cpu = [procstats.cpu_seconds(pid) - w0 for pid, w0 in zip(workers, worker0, strict=True)]
    pg1 = {pid: procstats.cpu_seconds(pid) for pid in stack.postgres_pids()}
    statements1 = stack.statements()
    hooks1 = stack.webhooks_received()
    for spy in spies:
        spy.wait(timeout=seconds + 30)
    calls = max(load.requests, 1)
    pg_cpu = sum(after - pg0.get(pid, 0.0) for pid, after in pg1.items())
    return Phase(
        "proxy",
        stream,
        connections,
        load,
        proxy_cpu_ms=(cpu1 - cpu0) * 1000 / calls,
        postgres_cpu_ms=pg_cpu * 1000 / calls,
        request_statements=(statements1["request_statements"] - statements0["request_statements"])
        / calls,
        background_statements=(
            statements1["background_statements"] - statements0["background_statements"]
        )
        / calls,
        webhooks=(hooks1 - hooks0) / calls,
        worker_rss_mib=[procstats.rss_mib(pid) for pid in stack.worker_pids()],
        worker_cpu_share=[cpu / max(sum(worker_cpu), 1e-9) for cpu in worker_cpu],
    )


def _peer_phase(peer: LiteLLMPeer, stream: bool, connections: int, seconds: float) -> Phase:
    pids = peer.pids()
    cpu0 = procstats.total_cpu_seconds(pids)
    load = run_wrk(
        f"{peer.url}/v1/chat/completions", _bodies(stream), peer.headers(), connections, seconds
    )
    cpu1 = procstats.total_cpu_seconds(peer.pids())
    phase = Phase("peer", stream, connections, load)
    phase.proxy_cpu_ms = (cpu1 - cpu0) * 1000 / max(load.requests, 1)
    return phase


def _peer_phases(
    run: Run, stack: Stack, workdir: Path, streams: list[bool], args: argparse.Namespace
) -> None:
    """The peer after Comptroller's phases (Comptroller idle meanwhile: 2 cores), same loads."""
    with LiteLLMPeer(workdir, stack.upstream_url, args.workers) as peer:
        run.peer = peer.name
        print(f"peer up: {peer.name} at {peer.url}", flush=True)
        peer.warm_up()
        for stream in streams:
            warm = run_wrk(
                f"{peer.url}/v1/chat/completions", _bodies(stream), peer.headers(), 16, 2
            )
            if warm.errors:
                raise RuntimeError(f"peer warm-up: {warm.errors} failed calls")
            for connections in args.concurrency:
                phase = _peer_phase(peer, stream, connections, args.seconds)
                run.phases.append(phase)
                _print_phase(phase)


def _start_profile(stack: Stack, directory: str, seconds: float) -> list[subprocess.Popen[bytes]]:
    """py-spy on every worker (GIL holders only: where the Python CPU goes)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    beside = Path(sys.executable).with_name("py-spy")
    spy = str(beside) if beside.exists() else shutil.which("py-spy")
    if spy is None:
        raise RuntimeError("py-spy is not installed: pip install py-spy")
    spies = []
    for worker in stack.worker_pids():
        cmd = [
            spy, "record", "--pid", str(worker), "--duration", str(max(1, int(seconds) - 1)),
            "--rate", "1000", "--nonblocking", "--gil", "--format", "raw",
            "--output", str(out / f"worker-{worker}.collapsed"),
        ]  # fmt: skip
        spies.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return spies


def _wait_for_outbox(stack: Stack, timeout: float = 120.0) -> float | None:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        queued, delivered = stack.outbox()
        if queued == delivered:
            return time.monotonic() - start
        time.sleep(0.2)
    return None


def _memory_samples(stack: Stack, total: int, every: int, run: Run) -> None:
    """Worker RSS after about every ``every`` calls, until ``total`` calls.

    wrk runs for a duration, not a count (its main thread sleeps for the whole
    ``-d``), so each segment lasts ``every`` calls at the rate measured so far.
    """
    bodies = _bodies(False)
    url = f"{stack.proxy_url}/v1/chat/completions"
    done = 0
    rate = 0.0
    run.rss_samples.append((0, [procstats.rss_mib(pid) for pid in stack.worker_pids()]))
    while done < total:
        seconds = min(every, total - done) / rate if rate else 5.0
        load = run_wrk(url, bodies, stack.proxy_headers(), 16, max(seconds, 1.0))
        if load.errors:
            raise RuntimeError(f"memory run: {load.errors} failed calls")
        done += load.requests
        rate = load.rps
        sample = [procstats.rss_mib(pid) for pid in stack.worker_pids()]
        run.rss_samples.append((done, sample))
        mib = ", ".join(f"{m:.1f}" for m in sample)
        print(f"  {done:>7} calls ({load.rps:.0f}/s): worker RSS {mib} MiB", flush=True)


def run_benchmark(args: argparse.Namespace, command: str) -> Run:
    run = Run(
        command=command,
        started=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        seconds=args.seconds,
        workers=args.workers,
        threads=args.threads,
        disabled=args.disable,
        synchronous_commit=not args.no_synchronous_commit,
    )
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="comptroller-bench-") as tmp:
        stack = Stack(
            Path(tmp),
            workers=args.workers,
            threads=args.threads,
            disable=args.disable,
            synchronous_commit=not args.no_synchronous_commit,
        )
        with stack:
            print(f"stack up: proxy {stack.proxy_url}, upstream {stack.upstream_url}")
            _warm_up(stack, 2)
            if args.memory:
                _memory_samples(stack, args.memory_calls, args.memory_every, run)
            else:
                streams = {"chat": [False], "stream": [True]}.get(args.only or "", [False, True])
                for stream in streams:
                    for connections in args.concurrency:
                        for target in ("direct", "proxy"):
                            if target == "direct":
                                phase = _direct_phase(stack, stream, connections, args.seconds)
                            else:
                                kind = "stream" if stream else "chat"
                                profile = (
                                    str(Path(args.profile) / f"{kind}-c{connections}")
                                    if args.profile
                                    else None
                                )
                                phase = _proxy_phase(
                                    stack, stream, connections, args.seconds, profile
                                )
                            run.phases.append(phase)
                            _print_phase(phase)
                calls = sum(p.load.requests for p in run.phases if p.target == "proxy")
                run.rss_samples.append(
                    (calls, [procstats.rss_mib(pid) for pid in stack.worker_pids()])
                )
                if args.peer:
                    _peer_phases(run, stack, Path(tmp), streams, args)
            if "webhook_alerter" not in args.disable:  # its outbox exists only when it is on
                run.outbox_drain_seconds = _wait_for_outbox(stack)
                run.alerts_queued, run.alerts_delivered = stack.outbox()
            run.spend_counter, run.spend_logged, run.spend_rows = stack.spend_check()
            if args.profile:
                run.profile = str(Path(args.profile) / "<phase>" / "worker-*.collapsed")
    run.total_seconds = time.monotonic() - began
    return run


def _print_phase(phase: Phase) -> None:
    load = phase.load
    line = (
        f"  {phase.target:>6} {phase.name:<12} {load.rps:8.0f} req/s  "
        f"p50 {load.p50_ms:6.2f} ms  p99 {load.p99_ms:6.2f} ms  errors {load.errors}"
    )
    if phase.target == "peer":
        line += f"  cpu {phase.proxy_cpu_ms:.2f} ms/call"
    if phase.target == "proxy":
        line += (
            f"  cpu {phase.proxy_cpu_ms:.2f} ms/call  pg {phase.postgres_cpu_ms:.2f} ms/call"
            f"  statements {phase.request_statements:.2f}+{phase.background_statements:.2f}"
            f"  worker cpu split {'/'.join(f'{share:.0%}' for share in phase.worker_cpu_share)}"
        )
    print(line, flush=True)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through Stack.stop(): nothing left behind


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    if not wrk_available():
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2
    given = sys.argv[1:] if argv is None else argv
    command = "python -m bench" + (" " + shlex.join(given) if given else "")
    run = run_benchmark(args, command)
    text = render(run)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(asdict(run), indent=2, default=str))
    if not args.no_write:
        write_results(RESULTS, text)
        print(f"written to {RESULTS}")
    return 0
