"""A deleted key is refused on its very next call, by every worker.

Comptroller keeps no cache of keys: each call reads its key row from the
database (one query, :func:`proxy.storage.lookup.load_call_rows`), so the documented
staleness is zero. This test proves it where a cache would show: real
gunicorn workers on PostgreSQL. gunicorn's access log names the worker
(``%(p)s``) that answered each call; every worker first serves the key, then
after ``/key/delete`` every worker refuses it, and no call after the delete
is served.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.conftest import MASTER, base_config
from tests.support.proxy_server import ProxyServer, wait_until

WORKERS = 3
CHAT = {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hi"}]}
# The access log: worker pid, status, path.
ACCESS_LOG = "--access-logfile - --access-logformat 'ACCESS %(p)s %(s)s %(U)s'"
ACCESS_LINE = re.compile(r"ACCESS <(\d+)> (\d{3}) /chat/completions")


def _served_by(server: ProxyServer, offset: int) -> dict[int, set[int]]:
    """Per status, the worker pids that answered /chat/completions after ``offset``."""
    seen: dict[int, set[int]] = {}
    for pid, status in ACCESS_LINE.findall(server.log_path.read_text()[offset:]):
        seen.setdefault(int(status), set()).add(int(pid))
    return seen


def _calls_until(
    server: ProxyServer, plain: str, done: Callable[[], bool], limit: int = 400
) -> list[int]:
    """Calls on fresh connections, 8 at a time, until ``done()`` (at most ``limit``)."""
    headers = {"Authorization": f"Bearer {plain}"}
    statuses: list[int] = []

    def one(_: int) -> int:
        return requests.post(
            f"{server.url}/chat/completions", json=CHAT, headers=headers, timeout=10
        ).status_code

    with ThreadPoolExecutor(8) as pool:
        while len(statuses) < limit:
            statuses += list(pool.map(one, range(16)))
            if done():
                break
    return statuses


@pytest.mark.slow
def test_a_deleted_key_is_refused_by_every_worker_at_once(pg_database: str, tmp_path: Path) -> None:
    from tests.support.databases import truncate_pg_tables

    truncate_pg_tables(pg_database)
    server = ProxyServer(
        base_config(pg_database),
        tmp_path,
        workers=WORKERS,
        threads=4,
        env={"GUNICORN_CMD_ARGS": ACCESS_LOG},
    )
    with server:
        pids = set(server.worker_pids())
        assert len(pids) == WORKERS
        made = requests.post(f"{server.url}/key/generate", json={}, headers=MASTER, timeout=10)
        plain = made.json()["key"]

        before = _calls_until(server, plain, lambda: _served_by(server, 0).get(200) == pids)
        assert set(before) == {200}
        # A worker writes a call's access line after its answer: wait for every line
        # of these calls, so that none of them lands after the cut below.
        wait_until(lambda: len(ACCESS_LINE.findall(server.log_path.read_text())) == len(before))
        assert _served_by(server, 0)[200] == pids, "every worker served the key"

        deleted = requests.post(
            f"{server.url}/key/delete", json={"keys": [plain]}, headers=MASTER, timeout=10
        )
        assert deleted.status_code == 200
        # The delete's own log line is written after its answer: wait for it, then cut.
        wait_until(lambda: "/key/delete" in server.log_path.read_text())
        offset = len(server.log_path.read_text())
        after = _calls_until(server, plain, lambda: _served_by(server, offset).get(401) == pids)
    assert set(after) == {401}, f"served after the delete: {after.count(200)} calls"
    assert _served_by(server, offset) == {401: pids}
