"""Does a dead or slow webhook show in LLM call latency? (issue 7)

Runs the same paced load (default 500 chat calls with an end user, spread
over the outage) against real gunicorn on a fresh PostgreSQL database, in
four set-ups, and prints p50/p99 latency for each:

* ``off``: alerting off (the baseline);
* ``down``: alerting on, receiver down for ``--down`` seconds while the calls
  run, then up; also reports how long the backlog took to arrive, and
  checks that every alert arrived exactly once by ``webhook-id``;
* ``up``: alerting on, receiver answering at once;
* ``slow``: alerting on, receiver answering after ``--slow`` seconds.

    python -m bench.webhook_outage [--calls 500] [--down 30] [--slow 10]

The built-in ``mock/`` provider answers the calls, so the numbers show the
gateway's own latency, where a coupling to the webhook would be plainest.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg2
import requests

from tests.support.databases import create_pg_database, drop_pg_database, truncate_pg_tables
from tests.support.proxy_server import ProxyServer, wait_until
from tests.support.webhook_receiver import WebhookReceiver

MASTER = {"Authorization": "Bearer sk-1234"}


def config(db_url: str, alerting: bool) -> dict[str, Any]:
    general: dict[str, Any] = {"master_key": "sk-1234", "database_url": db_url}
    if alerting:
        general["alerting"] = ["webhook"]
    # Defaults for everything else: this measures what an operator gets.
    return {"general_settings": general}


def paced_calls(url: str, calls: int, seconds: float) -> list[float]:
    """``calls`` calls at a steady rate over ``seconds`` (open loop); latencies in s."""
    local = threading.local()
    start = time.monotonic() + 0.2
    interval = seconds / calls

    def one(n: int) -> float:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        delay = start + n * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        body = {
            "model": "mistral",
            "messages": [{"role": "user", "content": f"question {n}"}],
            "user": f"customer-{n % 50}",
        }
        t0 = time.perf_counter()
        resp = session.post(f"{url}/chat/completions", json=body, headers=MASTER, timeout=60)
        took = time.perf_counter() - t0
        if resp.status_code != 200:
            raise RuntimeError(f"call {n} failed: {resp.status_code} {resp.text[:200]}")
        return took

    with ThreadPoolExecutor(max_workers=32) as pool:
        return list(pool.map(one, range(calls)))


def outbox_counts(db_url: str) -> tuple[int, int]:
    with psycopg2.connect(db_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*), count(sent_at) FROM webhook_outbox")
        total, sent = cur.fetchone()
    conn.close()
    return int(total), int(sent)


def describe(name: str, latencies: list[float], extra: str = "") -> str:
    q = statistics.quantiles(latencies, n=100)
    return (
        f"{name:>5}: p50 {statistics.median(latencies) * 1000:7.1f} ms   "
        f"p99 {q[98] * 1000:7.1f} ms   max {max(latencies) * 1000:7.1f} ms{extra}"
    )


def run(
    name: str,
    db_url: str,
    tmp: Path,
    alerting: bool,
    receiver: WebhookReceiver | None,
    body: Callable[[ProxyServer], str],
) -> str:
    truncate_pg_tables(db_url)
    env = {"WEBHOOK_URL": receiver.url} if receiver is not None else {}
    with ProxyServer(config(db_url, alerting), tmp, workers=2, threads=8, env=env, name=name) as p:
        requests.post(
            f"{p.url}/chat/completions",
            json={"model": "mistral", "messages": [{"role": "user", "content": "warm"}]},
            headers=MASTER,
            timeout=30,
        )
        return body(p)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--down", type=float, default=30.0, help="seconds the receiver is down")
    parser.add_argument("--slow", type=float, default=10.0, help="slow receiver's answer time")
    parser.add_argument("--only", nargs="*", default=["off", "down", "up", "slow"])
    args = parser.parse_args()
    spread = args.down * 0.8  # the calls all run while the receiver is down
    db_url = create_pg_database("comptroller_bench")
    tmp = Path(tempfile.mkdtemp(prefix="webhook-bench-"))
    lines = [f"{args.calls} calls over {spread:.0f} s, 2 gunicorn workers x 8 threads, PostgreSQL"]
    try:
        if "off" in args.only:

            def off(p: ProxyServer) -> str:
                return describe("off", paced_calls(p.url, args.calls, spread))

            lines.append(run("off", db_url, tmp, False, None, off))
            print(lines[-1], flush=True)

        if "down" in args.only:
            receiver = WebhookReceiver()

            def down(p: ProxyServer) -> str:
                went_down = time.monotonic()
                latencies = paced_calls(p.url, args.calls, spread)
                wait_until(lambda: outbox_counts(db_url)[0] >= args.calls, timeout=30)
                time.sleep(max(0.0, args.down - (time.monotonic() - went_down)))
                receiver.start()
                back = time.monotonic()
                receiver.wait_for(args.calls, timeout=300)
                drained = time.monotonic() - back
                wait_until(lambda: outbox_counts(db_url)[1] >= args.calls, timeout=60)
                counts = receiver.id_counts()
                twice = sum(1 for c in counts.values() if c > 1)
                return describe(
                    "down",
                    latencies,
                    f"   | {len(counts)}/{args.calls} alerts arrived {drained:.1f} s after "
                    f"the receiver came back, {twice} twice",
                )

            try:
                lines.append(run("down", db_url, tmp, True, receiver, down))
            finally:
                receiver.stop()
            print(lines[-1], flush=True)

        for name, delay in (("up", 0.0), ("slow", args.slow)):
            if name not in args.only:
                continue
            receiver = WebhookReceiver().start()
            receiver.delay = delay

            def measure(
                p: ProxyServer, name: str = name, receiver: WebhookReceiver = receiver
            ) -> str:
                latencies = paced_calls(p.url, args.calls, spread)
                arrived = len(receiver.deliveries)
                return describe(name, latencies, f"   | {arrived} alerts arrived during the calls")

            try:
                lines.append(run(name, db_url, tmp, True, receiver, measure))
            finally:
                receiver.stop()
            print(lines[-1], flush=True)
    finally:
        drop_pg_database(db_url)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
