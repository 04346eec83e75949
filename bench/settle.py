"""The settle benchmark: how many spend transactions one PostgreSQL takes per second.

``python -m bench.settle`` starts N processes (``bench/settle_worker.py``), each
settling calls back to back through ``record_spend`` on one fresh database,
for two workloads: (a) every process with its own key, (b) every process on
one hot key. Each settle writes a spend log and increments the key and the
proxy counter; with ``--owners`` the key's user, team and end user too (one
each per key); with ``--rate-limit`` the key has a tpm limit and the rate
limiter's settle counts the call's tokens for it, as on a call. It prints
settles/s for each N and checks, after every phase, that every counter (a
row's spend plus its stripes, where the code under test stripes; a window's
tokens plus its settled rows) equals the sum of its spend logs.

``--code DIR`` runs the workers on another checkout's code (e.g. a
``git worktree`` of main, to measure before a change) in the same run, so the
ratios between the two come from the same minutes of a shared machine::

    git worktree add /tmp/main-before main
    python -m bench.settle --code /tmp/main-before --code .
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg2

from tests.support.databases import create_pg_database, drop_pg_database

ROOT = Path(__file__).resolve().parents[1]
RATE_LIMIT_TPM = 10**15  # never reached: the settles are measured, not refused
WORKER = Path(__file__).with_name("settle_worker.py")


def _prepare(url: str, code: Path, keys: int, owners: bool) -> list[str]:
    """Migrate a fresh database with ``code``'s migrations; make ``keys`` keys (each
    with its user, when ``owners``: the settles make the teams and end users)."""
    script = (
        "import sys; from proxy.storage.db import init_database; "
        "from proxy.storage.migrate import migrate; init_database(sys.argv[1]); "
        "migrate(plugin_migrations=[('rate_limiter', 'plugins.rate_limiter.migrations')])"
    )
    subprocess.run([sys.executable, "-c", script, url], check=True, env=_env(code), cwd=str(code))
    tokens = [f"bench-settle-key-{i:03d}" for i in range(keys)]
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        for token in tokens:
            # The key's rate-limit window, opened now (--rate-limit settles count tokens in it).
            cur.execute(
                "INSERT INTO rate_limit_window (kind, entity, window_start, requests, tokens, "
                "in_flight, tpm_limit, admitted) "
                "VALUES ('key', %s, date_part('epoch', now()), 0, 0, 0, %s, 1)",
                [token, RATE_LIMIT_TPM],
            )
            cur.execute(
                'INSERT INTO "key" (token, key_name, models, spend, metadata, blocked, created_at) '
                "VALUES (%s, 'sk-...bench', '[]', 0, '{}', false, 0)",
                [token],
            )
            if owners:
                cur.execute(
                    'INSERT INTO "user" (user_id, models, spend, metadata, created_at, blocked) '
                    "VALUES (%s, '[]', 0, '{}', 0, false)",
                    [_owner(token)],
                )
    return tokens


def _env(code: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(code)
    env["COMPTROLLER_LOG_LEVEL"] = "WARNING"
    return env


def _worker_env(code: Path, commit_delay_us: int) -> dict[str, str]:
    env = _env(code)
    if commit_delay_us:
        # Every COMMIT of the workers waits this long before its WAL flush, as on a
        # disk slower than this machine's (commit_siblings=0: whatever else runs).
        env["PGOPTIONS"] = f"-c commit_delay={commit_delay_us} -c commit_siblings=0"
    return env


def _owner(token: str) -> str:
    return token.replace("key", "owner")


# kind: (table, primary key, its column in spend_log)
_COUNTERS = {
    "key": ('"key"', "token", "api_key"),
    "user": ('"user"', "user_id", "user_id"),
    "team": ("team", "team_id", "team_id"),
    "customer": ("customer", "user_id", "end_user"),
}


def _check(url: str, rate_limited: bool) -> str:
    """'equal' when every counter equals the sum of its spend logs."""
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT COALESCE(SUM(spend), 0), COUNT(*) FROM spend_log")
        total, count = cur.fetchone()
        cur.execute("SELECT SUM(spend) FROM proxy_spend")  # striped or not: the sum
        proxy = cur.fetchone()[0]
        striped = _has_table(cur, "spend_stripe")
        off = []
        for kind, (table, pk, column) in _COUNTERS.items():
            stripes = (
                f"(SELECT COALESCE(SUM(t.spend), 0) FROM spend_stripe t "
                f"WHERE t.kind = '{kind}' AND t.entity_id = e.{pk})"
                if striped
                else "0"
            )
            cur.execute(
                f"SELECT COUNT(*) FROM {table} e WHERE abs(e.spend + {stripes} - COALESCE("
                f"(SELECT SUM(s.spend) FROM spend_log s WHERE s.{column} = e.{pk}), 0)) > 1e-9"
            )
            wrong = cur.fetchone()[0]
            if wrong:
                off.append(f"{wrong} {kind}")
        if rate_limited:
            # Each key's window tokens, with the settled rows no check has folded in yet.
            settled = (
                "(SELECT COALESCE(SUM(t.tokens), 0) FROM rate_limit_settled t "
                "WHERE t.kind = w.kind AND t.entity = w.entity)"
                if _has_table(cur, "rate_limit_settled")
                else "0"
            )
            cur.execute(
                f"SELECT COUNT(*) FROM rate_limit_window w WHERE w.tokens + {settled} <> COALESCE("
                "(SELECT SUM(s.total_tokens) FROM spend_log s WHERE s.api_key = w.entity), 0)"
            )
            wrong = cur.fetchone()[0]
            if wrong:
                off.append(f"{wrong} rate-limit windows")
    equal = abs(proxy - total) <= 1e-9 and not off
    return "equal" if equal else f"NOT EQUAL (proxy {proxy!r}, logs {total!r}, {off})"


def _has_table(cur: Any, name: str) -> bool:
    cur.execute("SELECT to_regclass(%s) IS NOT NULL", [name])
    return bool(cur.fetchone()[0])


def run_phase(
    code: Path,
    processes: int,
    hot: bool,
    seconds: float,
    owners: bool = False,
    rate_limited: bool = False,
    commit_delay_us: int = 0,
) -> tuple[float, str]:
    url = create_pg_database("comptroller_bench_settle")
    try:
        tokens = _prepare(url, code, 1 if hot else processes, owners)
        workers = [
            subprocess.Popen(
                [
                    sys.executable,
                    str(WORKER),
                    "--url",
                    url,
                    "--seconds",
                    str(seconds),
                    "--token",
                    tokens[0 if hot else i],
                    *(["--owner", _owner(tokens[0 if hot else i])] if owners else []),
                    *(["--tpm-limit", str(RATE_LIMIT_TPM)] if rate_limited else []),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env=_worker_env(code, commit_delay_us),
                cwd=str(code),
            )  # fmt: skip
            for i in range(processes)
        ]
        try:
            for worker in workers:
                assert worker.stdout is not None
                if worker.stdout.readline().strip() != "ready":
                    raise RuntimeError("a settle worker did not start")
            started = time.monotonic()
            for worker in workers:
                assert worker.stdin is not None
                worker.stdin.write("go\n")
                worker.stdin.flush()
            settled = 0
            for worker in workers:
                assert worker.stdout is not None
                settled += int(worker.stdout.readline())
            elapsed = max(seconds, time.monotonic() - started)
        finally:
            for worker in workers:
                worker.wait(timeout=60)
        return settled / elapsed, _check(url, rate_limited)
    finally:
        drop_pg_database(url)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.settle")
    parser.add_argument("--code", action="append", type=Path, help="checkout(s) to measure")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument(
        "--owners", action="store_true", help="each key's calls also of a user, team, end user"
    )
    parser.add_argument(
        "--rate-limit",
        action="store_true",
        help="each key with a tpm limit: every settle also counts its tokens for the rate limiter",
    )
    parser.add_argument(
        "--commit-delay-us",
        type=int,
        default=0,
        help="delay every settle's COMMIT flush this long (PostgreSQL's commit_delay), "
        "to see what a row lock held until the COMMIT costs on a slower disk",
    )
    args = parser.parse_args(argv)
    codes = [path.resolve() for path in (args.code or [ROOT])]
    owned = " (each key with a user, team and end user)" if args.owners else ""
    if args.rate_limit:
        owned += " (each key with a tpm limit: the rate limiter's settle too)"
    if args.commit_delay_us:
        owned += f" (every COMMIT flush delayed {args.commit_delay_us} us)"
    print(
        f"settles/s, {args.seconds:g} s per phase{owned}; counters checked against the spend logs"
    )
    print("| code | workload | " + " | ".join(f"N={n}" for n in args.processes) + " |")
    print("|---|---|" + "---:|" * len(args.processes))
    for hot in (False, True):
        cells: dict[Path, list[str]] = {code: [] for code in codes}
        for n in args.processes:
            for code in codes:  # alternating, so each N compares the same minutes
                rate, check = run_phase(
                    code, n, hot, args.seconds, args.owners, args.rate_limit, args.commit_delay_us
                )
                cells[code].append(f"{rate:.0f}" if check.startswith("equal") else check)
        workload = "(b) one hot key" if hot else "(a) distinct keys"
        for code in codes:
            print(f"| {code} | {workload} | " + " | ".join(cells[code]) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
