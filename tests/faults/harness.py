"""What the fault tests share: two instances of two workers, a load of tagged calls,
and the checks every fault must pass.

Every call carries a tag of its own in its prompt, so the mock upstream's
record says which calls it answered, independently of the proxy; the ledger
is read straight from PostgreSQL.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
import requests

from proxy.storage.journal import entries_in
from tests.conftest import MASTER, base_config, openai_model
from tests.support.mock_openai import MockOpenAI
from tests.support.proxy_server import ProxyServer, wait_until

MODEL = "gpt-4o-mini"
END_USER = "fault-customer"
# The proxy serves again this long after the database is back (issue 17).
RECOVERY_SECONDS = 30


@dataclass
class Outcome:
    tag: str
    stream: bool
    status: int | None = None  # None: the connection broke (a killed worker)
    call_id: str | None = None
    body: bytes = b""
    error: str | None = None

    @property
    def complete_stream(self) -> bool:
        return self.body.rstrip().endswith(b"data: [DONE]")


class Instances:
    """``count`` proxies on one database, each a "host" with its own spend journal."""

    def __init__(self, db_url: str, upstream: MockOpenAI, tmp_path: Path, count: int = 2):
        config = base_config(db_url, model_list=[openai_model(MODEL, upstream.base_url)])
        self.servers = [
            ProxyServer(
                config,
                tmp_path,
                workers=2,
                threads=8,
                name=f"host{index}",
                env={"COMPTROLLER_JOURNAL_DIR": str(tmp_path / f"journal-host{index}")},
            )
            for index in range(count)
        ]
        self.journals = [tmp_path / f"journal-host{index}" for index in range(count)]

    @contextmanager
    def running(self, wait_ready: bool = True) -> Iterator[Instances]:
        with ExitStack() as stack:
            for server in self.servers:
                if wait_ready:
                    stack.enter_context(server)
                else:
                    server.start_alive()
                    stack.callback(server.stop)
            yield self

    def arbiters(self) -> list[int]:
        return [server.process.pid for server in self.servers if server.process is not None]

    def all_up(self) -> bool:
        return all(s.process is not None and s.process.poll() is None for s in self.servers)

    def pending_journal_entries(self) -> int:
        # Settling (in a slot) or kept, in each database's subdirectory of each journal.
        return sum(
            len(entries_in(sub))
            for journal in self.journals
            if journal.exists()
            for sub in journal.iterdir()
            if sub.is_dir()
        )


class Load:
    """Client threads calling both instances in turn, stream and not, until stopped."""

    def __init__(self, instances: Instances, key: str, threads: int = 6) -> None:
        self.instances = instances
        self.headers = {"Authorization": f"Bearer {key}"}
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._tags = itertools.count()
        self._threads = [
            threading.Thread(target=self._run, args=(index,), daemon=True)
            for index in range(threads)
        ]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _run(self, index: int) -> None:
        servers = self.instances.servers
        for turn in itertools.count():
            if self._stop.is_set():
                return
            server = servers[(index + turn) % len(servers)]
            outcome = call(server, self.headers, stream=(index + turn) % 2 == 0, tags=self._tags)
            with self._lock:
                self.outcomes.append(outcome)
            if outcome.status != 200:
                time.sleep(0.05)  # an outage answers at once: do not spin


def call(
    server: ProxyServer, headers: dict[str, str], stream: bool, tags: Any = None, timeout=60
) -> Outcome:
    tag = f"fault-call-{next(tags) if tags is not None else time.monotonic_ns()}"
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": tag}],
        "user": END_USER,
        "stream": stream,
    }
    outcome = Outcome(tag=tag, stream=stream)
    try:
        with requests.post(
            f"{server.url}/chat/completions",
            json=body,
            headers=headers,
            stream=stream,
            timeout=timeout,
        ) as resp:
            outcome.status = resp.status_code
            outcome.call_id = resp.headers.get("x-comptroller-call-id")
            outcome.body = b"".join(resp.iter_content(chunk_size=None))
    except requests.RequestException as err:
        outcome.error = type(err).__name__
    return outcome


def answered_tags(upstream: MockOpenAI) -> list[str]:
    """The tags of the calls the mock upstream received (it answers every one)."""
    tags = []
    for recorded in upstream.requests:
        messages = (recorded.json or {}).get("messages") or []
        for message in messages:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, str) and content.startswith("fault-call-"):
                tags.append(content)
    return tags


def _stripes(kind: str, pk: str) -> str:
    return (
        "(SELECT COALESCE(SUM(s.spend), 0) FROM spend_stripe s "
        f"WHERE s.kind = '{kind}' AND s.entity_id = {pk})"
    )


def ledger(db_url: str) -> dict[str, Any]:
    """The spend logs and every counter, read from the database itself."""
    conn = psycopg2.connect(db_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT request_id, api_key, end_user, spend FROM spend_log")
            logs = cur.fetchall()
            # Each counter: its row's base plus its stripes (proxy.storage.stripes).
            cur.execute(f'SELECT token, spend + {_stripes("key", "token")} FROM "key"')
            keys = dict(cur.fetchall())
            cur.execute(f'SELECT user_id, spend + {_stripes("user", "user_id")} FROM "user"')
            users = dict(cur.fetchall())
            cur.execute(f"SELECT user_id, spend + {_stripes('customer', 'user_id')} FROM customer")
            customers = dict(cur.fetchall())
            cur.execute("SELECT SUM(spend) FROM proxy_spend")  # every stripe
            proxy_spend = cur.fetchone()[0]
    finally:
        conn.close()
    return {
        "logs": logs,
        "keys": keys,
        "users": users,
        "customers": customers,
        "proxy": proxy_spend,
    }


def assert_ledger_exact(db_url: str, upstream: MockOpenAI, outcomes: list[Outcome]) -> None:
    """The promises after a fault: one spend-log row per answered call, counters equal
    to the sum of logs, no 503 for a call the upstream answered."""
    answered = answered_tags(upstream)
    assert len(answered) == len(set(answered)), "a call reached the upstream twice"
    state = ledger(db_url)
    logs = state["logs"]
    assert len(logs) == len(answered), (
        f"{len(answered)} calls answered upstream, {len(logs)} spend-log rows"
    )
    ids = [row[0] for row in logs]
    served = [o.call_id for o in outcomes if o.status == 200]
    assert set(served) <= set(ids), "a served call has no spend-log row"
    by_key: dict[str, float] = {}
    for _, key, _, spend in logs:
        by_key[key] = by_key.get(key, 0.0) + spend
    for token, spend in state["keys"].items():
        assert abs(spend - by_key.get(token, 0.0)) < 1e-9, (token, spend, by_key)
    customer_sum = sum(row[3] for row in logs if row[2] == END_USER)
    assert abs(state["customers"].get(END_USER, 0.0) - customer_sum) < 1e-9
    assert abs(state["proxy"] - sum(row[3] for row in logs)) < 1e-9
    upstream_answered = set(answered)
    refused_after_answer = [
        o.tag for o in outcomes if o.status == 503 and o.tag in upstream_answered
    ]
    assert not refused_after_answer, f"503 for calls the upstream answered: {refused_after_answer}"
    for outcome in outcomes:
        assert outcome.status in (200, 503, None), (outcome.status, outcome.body[:300])
        if outcome.status == 200 and outcome.stream and outcome.error is None:
            assert outcome.complete_stream, outcome.body[-300:]


def wait_served_again(instances: Instances, key: str, since: float) -> float:
    """Seconds from ``since`` (the database's return) until every instance serves a call."""
    headers = {"Authorization": f"Bearer {key}"}
    for server in instances.servers:
        wait_until(
            lambda server=server: call(server, headers, stream=False, timeout=10).status == 200,
            timeout=RECOVERY_SECONDS,
            interval=0.2,
        )
    return time.monotonic() - since


def wait_journals_replayed(instances: Instances, timeout: float = RECOVERY_SECONDS) -> None:
    wait_until(lambda: instances.pending_journal_entries() == 0, timeout=timeout, interval=0.2)


def new_key(server: ProxyServer) -> str:
    def generate() -> requests.Response | None:
        made = requests.post(f"{server.url}/key/generate", json={}, headers=MASTER, timeout=30)
        return made if made.status_code == 200 else None

    return str(wait_until(generate, timeout=RECOVERY_SECONDS).json()["key"])


@dataclass
class Timeline:
    """When things happened, for the assertion messages."""

    marks: dict[str, float] = field(default_factory=dict)

    def mark(self, name: str) -> float:
        self.marks[name] = time.monotonic()
        return self.marks[name]
