"""Faults on a live proxy: the database goes away, the upstream hangs, the client hangs up.

* The database goes away (PostgreSQL: its backends are terminated, then the
  database is renamed; SQLite: its files are moved and a directory stands in
  their place): every route that needs it answers 503 in the error shape,
  never 500; liveness stays 200; when the database is back the proxy serves
  again by itself, and nothing was charged for the refused calls.
* An upstream that hangs is cut at the model's timeout (504), long before
  gunicorn's worker timeout, charges nothing and frees its parallel slot.
* A client that hangs up mid-stream frees its parallel slot and is charged
  for what it received. (What exactly it is charged is proven by
  tests/calls/test_streaming.py::test_a_client_that_hangs_up_mid_stream_is_charged_for_what_it_got.)
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import requests
from psycopg2 import errors, sql

import proxy.storage.db
from tests.conftest import MASTER, base_config, openai_model
from tests.support.databases import (
    PG_ADMIN_URL,
    create_pg_database,
    drop_pg_database,
    terminate_pg_backends,
)
from tests.support.mock_openai import MockOpenAI
from tests.support.proxy_server import ProxyServer, wait_until

CHAT = {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hi"}]}


class PostgresOutage:
    """Takes a database away from its clients and gives it back."""

    def __init__(self, url: str) -> None:
        self.name = url.rsplit("/", 1)[1]
        self.away = f"{self.name}_away"

    def _admin(self) -> Any:
        conn = psycopg2.connect(PG_ADMIN_URL)
        conn.autocommit = True
        return conn

    def terminate_backends(self, name: str | None = None) -> int:
        return terminate_pg_backends(name or self.name)

    def _rename(self, old: str, new: str) -> None:
        rename = sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
            sql.Identifier(old), sql.Identifier(new)
        )
        # The proxy may reconnect between the terminate and the rename: try again.
        for _ in range(50):
            self.terminate_backends(old)
            conn = self._admin()
            try:
                with conn.cursor() as cur:
                    cur.execute(rename)
                return
            except errors.ObjectInUse:
                time.sleep(0.05)
            finally:
                conn.close()
        raise RuntimeError(f"could not rename database {old}")

    def take_away(self) -> None:
        self._rename(self.name, self.away)

    def bring_back(self) -> None:
        self._rename(self.away, self.name)


class SqliteOutage:
    """Moves the database files away and puts a directory where the file was."""

    def __init__(self, url: str) -> None:
        self.path = Path(url.split("sqlite:///", 1)[1])
        self.files = [Path(f"{self.path}{suffix}") for suffix in ("", "-wal", "-shm")]

    def take_away(self) -> None:
        for file in self.files:
            if file.exists():
                os.rename(file, f"{file}.away")
        self.path.mkdir()

    def bring_back(self) -> None:
        self.path.rmdir()
        for file in self.files:
            if Path(f"{file}.away").exists():
                os.rename(f"{file}.away", file)


@pytest.fixture(params=["sqlite", "postgres"])
def own_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of this test's own: it is renamed, so not the session's."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'outage.db'}"
        return
    url = create_pg_database("comptroller_outage")
    yield url
    drop_pg_database(url)


def assert_unavailable(resp: requests.Response, label: str) -> None:
    assert resp.status_code == 503, f"{label}: {resp.status_code} {resp.text[:300]}"
    error = resp.json()["error"]
    assert error["type"] == "service_unavailable", label
    assert error["code"] == "503", label
    assert set(error) == {"message", "type", "param", "code"}, label


@pytest.mark.slow
@pytest.mark.postgres
def test_the_database_going_away_gives_503_and_the_proxy_recovers_by_itself(
    own_database: str, tmp_path: Path
) -> None:
    outage: PostgresOutage | SqliteOutage
    if own_database.startswith("sqlite"):
        outage = SqliteOutage(own_database)
    else:
        outage = PostgresOutage(own_database)
    with ProxyServer(base_config(own_database), tmp_path, workers=2, threads=4) as server:
        # No keep-alive session: each call may land on either worker.
        session: Any = requests
        plain = session.post(f"{server.url}/key/generate", json={}, headers=MASTER).json()["key"]
        virtual = {"Authorization": f"Bearer {plain}"}

        def chat(headers: dict[str, str]) -> requests.Response:
            return session.post(f"{server.url}/chat/completions", json=CHAT, headers=headers)

        served = 0
        assert chat(virtual).status_code == 200
        served += 1
        if isinstance(outage, PostgresOutage):
            # Connections killed under the pool: the first call a worker makes on a
            # killed one may fail (503), and that worker's pool then drops its other
            # idle connections. Either worker may take its first call at any point of
            # the run, so: at most one 503 per worker, everything else served.
            assert outage.terminate_backends() > 0
            statuses = [chat(virtual).status_code for _ in range(20)]
            assert set(statuses) <= {200, 503}, statuses
            assert statuses.count(503) <= 2, statuses
            served += statuses.count(200)

        outage.take_away()
        try:
            calls = {
                "chat with a virtual key": lambda: chat(virtual),
                "chat with the master key": lambda: chat(MASTER),
                "stream": lambda: session.post(
                    f"{server.url}/chat/completions", json={**CHAT, "stream": True}, headers=MASTER
                ),
                "admin list": lambda: session.get(f"{server.url}/key/list", headers=MASTER),
                "admin write": lambda: session.post(
                    f"{server.url}/user/new", json={"user_id": "during-outage"}, headers=MASTER
                ),
                "readiness": lambda: session.get(f"{server.url}/health/readiness"),
            }
            for _ in range(3):  # on both workers, most likely
                for label, call in calls.items():
                    assert_unavailable(call(), label)
            assert session.get(f"{server.url}/health/liveliness").status_code == 200
        finally:
            outage.bring_back()

        # Back by itself: a pooled connection killed by the outage may still fail one
        # call (503, never 500), then six calls in a row are served.
        after: list[int] = []
        deadline = time.monotonic() + 15
        while after[-6:] != [200] * 6 and time.monotonic() < deadline:
            after.append(chat(virtual).status_code)
        assert after[-6:] == [200] * 6, after
        assert set(after) <= {200, 503}, after
        served += after.count(200)
        info = session.get(f"{server.url}/key/info", params={"key": plain}, headers=MASTER)
        logs = session.get(
            f"{server.url}/spend/logs", params={"api_key": plain}, headers=MASTER
        ).json()
        assert info.status_code == 200
        # The refused calls charged nothing: one spend-log row per call served.
        assert len(logs) == served
        assert info.json()["info"]["spend"] == pytest.approx(sum(log["spend"] for log in logs))
        users = session.get(f"{server.url}/user/list", headers=MASTER).json()["users"]
        assert "during-outage" not in [user["user_id"] for user in users]


def _call_while_backends_die(
    server: ProxyServer, upstream: MockOpenAI, outage: PostgresOutage, upstream_seconds: float
) -> tuple[requests.Response, list[str]]:
    """A call whose upstream takes ``upstream_seconds``; the proxy's database
    backends are killed while it waits. Its answer, and the request ids charged."""
    body = {**CHAT, "model": "gpt-4o-mini"}
    # The mock's handler of an earlier call may still be finishing: counted in
    # in_flight, it would let the backends die before this call is upstream.
    upstream.wait_in_flight(0)
    upstream.hang = True
    try:
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(
                requests.post, f"{server.url}/chat/completions", json=body, headers=MASTER
            )
            wait_until(lambda: upstream.in_flight == 1)
            assert outage.terminate_backends() > 0
            time.sleep(upstream_seconds)  # the upstream "thinks": time is the condition
            upstream.hang = False
            resp = pending.result(timeout=30)
    finally:
        upstream.hang = False
    logs = requests.get(f"{server.url}/spend/logs", headers=MASTER, timeout=10).json()
    return resp, [log["request_id"] for log in logs]


@pytest.mark.slow
@pytest.mark.postgres
def test_a_backend_killed_while_the_call_is_upstream_still_answers_and_bills_once(
    tmp_path: Path, upstream: MockOpenAI
) -> None:
    """The proxy holds no connection while the upstream answers. After a long upstream
    call the spend goes on a connection the pool checked; after a short one the pool
    may hand back the killed connection without a check
    (proxy.storage.db.PING_IF_IDLE_SECONDS), and the spend is journaled and replayed.
    Either way the client gets the upstream's answer and the call is billed once."""
    url = create_pg_database("comptroller_outage")
    outage = PostgresOutage(url)
    config = base_config(url, model_list=[openai_model("gpt-4o-mini", upstream.base_url)])
    long_call = getattr(proxy.storage.db, "PING_IF_IDLE_SECONDS", 0.0) + 0.5

    def charged_ids() -> list[str]:
        logs = requests.get(f"{server.url}/spend/logs", headers=MASTER, timeout=10).json()
        return [log["request_id"] for log in logs]

    try:
        with ProxyServer(config, tmp_path, workers=1, threads=4) as server:
            served = []
            for upstream_seconds in (0.0, long_call):
                resp, _ = _call_while_backends_die(server, upstream, outage, upstream_seconds)
                assert resp.status_code == 200, resp.text
                served.append(resp.headers["x-comptroller-call-id"])
                wait_until(lambda: charged_ids() == served, timeout=15)
    finally:
        drop_pg_database(url)


def _limited_key(server: ProxyServer) -> dict[str, str]:
    made = requests.post(
        f"{server.url}/key/generate",
        json={"max_parallel_requests": 1, "key_alias": "one-at-a-time"},
        headers=MASTER,
        timeout=10,
    )
    return {"Authorization": f"Bearer {made.json()['key']}"}


@pytest.mark.slow
def test_a_hanging_upstream_is_cut_at_the_models_timeout_and_frees_the_slot(
    tmp_path: Path, upstream: MockOpenAI
) -> None:
    config = base_config(
        f"sqlite:///{tmp_path / 'hang.db'}",
        model_list=[openai_model("gpt-4o-mini", upstream.base_url, timeout=2)],
        # One attempt: a timeout is otherwise retried (num_retries, 2 by default).
        router_settings={"num_retries": 0},
    )
    body = {**CHAT, "model": "gpt-4o-mini"}
    with ProxyServer(config, tmp_path, workers=1, threads=4) as server:
        key = _limited_key(server)
        upstream.hang = True
        try:
            started = time.monotonic()
            resp = requests.post(
                f"{server.url}/chat/completions", json=body, headers=key, timeout=30
            )
            elapsed = time.monotonic() - started
        finally:
            upstream.hang = False
        assert resp.status_code == 504, resp.text
        assert resp.json()["error"]["type"] == "timeout"
        assert 2 <= elapsed < 5  # the model's 2 s, not gunicorn's 60 s worker timeout
        # The slot is free again and the failed call charged nothing.
        assert requests.post(f"{server.url}/chat/completions", json=body, headers=key).ok
        logs = requests.get(f"{server.url}/spend/logs", headers=MASTER, timeout=10).json()
        assert [log["status"] for log in logs] == ["success"]


@pytest.mark.slow
def test_a_client_that_hangs_up_mid_stream_frees_its_slot_and_is_charged(
    tmp_path: Path, upstream: MockOpenAI
) -> None:
    upstream.stream_chunk_delay = 0.3
    config = base_config(
        f"sqlite:///{tmp_path / 'quit.db'}",
        model_list=[openai_model("gpt-4o-mini", upstream.base_url)],
    )
    body = {**CHAT, "model": "gpt-4o-mini", "stream": True, "user": "quitter"}
    with ProxyServer(config, tmp_path, workers=1, threads=4) as server:
        key = _limited_key(server)
        resp = requests.post(
            f"{server.url}/chat/completions", json=body, headers=key, stream=True, timeout=30
        )
        assert resp.status_code == 200
        received = b""
        for chunk in resp.iter_content(chunk_size=None):
            received += chunk
            if received.count(b'"content"') >= 2:
                break
        # While the stream runs, the key's one slot is taken.
        busy = requests.post(
            f"{server.url}/chat/completions", json={**body, "stream": False}, headers=key
        )
        assert busy.status_code == 429, busy.text
        resp.close()  # hang up mid-stream
        # The rest still comes spaced, as a model generates it. (Had it come in one
        # burst, the proxy would relay it in one write, which the client's kernel
        # takes after the hang-up: the stream then ends as a success, billed as the
        # upstream answered it, and there is no hang-up for the proxy to see.)
        upstream.stream_chunk_delay = 0.05
        freed = wait_until(
            lambda: (
                requests.post(
                    f"{server.url}/chat/completions", json={**body, "stream": False}, headers=key
                ).ok
            ),
            timeout=10,
            interval=0.1,
        )
        assert freed
        logs = requests.get(
            f"{server.url}/spend/logs", params={"end_user": "quitter"}, headers=MASTER, timeout=10
        ).json()
        statuses = sorted(log["status"] for log in logs)
        assert statuses == ["disconnected", "success"], logs
        quit_row = next(log for log in logs if log["status"] == "disconnected")
        assert quit_row["spend"] > 0 and quit_row["completion_tokens"] >= 1
