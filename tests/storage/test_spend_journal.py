"""The spend journal: a call answered while the database is away is answered, journaled
and replayed once; fail-closed by default, fail-open on request.

In-process, on a PostgreSQL database of the test's own, cut off while the
mock upstream answers (the outage starts after the checks and before the
settle, the case the journal is for).
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from proxy.app import create_app
from proxy.config import build_config
from proxy.hookspecs import hookimpl
from proxy.storage.db import database
from proxy.storage.journal import entries_in
from tests.conftest import MASTER, MASTER_KEY, openai_model
from tests.faults.outage import DatabaseCutOff
from tests.support.databases import create_pg_database, drop_pg_database
from tests.support.mock_openai import MockOpenAI
from tests.support.proxy_server import wait_until

pytestmark = pytest.mark.postgres

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "user": "eu"}


class AlertRecorder:
    def __init__(self) -> None:
        self.alerts: list[Any] = []

    @hookimpl
    def on_alert(self, alert: Any) -> None:
        self.alerts.append(alert)


@pytest.fixture
def own_pg() -> Iterator[str]:
    url = create_pg_database("comptroller_journal")
    try:
        yield url
    finally:
        DatabaseCutOff(url).restore()
        close_all = getattr(database.obj, "close_all", None)
        if close_all is not None:
            close_all()
        drop_pg_database(url)


class Proxy:
    def __init__(self, url: str, upstream: MockOpenAI, journal: Path, **general: Any) -> None:
        self.url = url
        self.upstream = upstream
        self.alerts = AlertRecorder()
        raw = {
            "model_list": [openai_model("gpt-4o-mini", upstream.base_url)],
            "general_settings": {
                "master_key": MASTER_KEY,
                "database_url": url,
                "spend_journal_dir": str(journal),
                **general,
            },
        }
        self.app = create_app(build_config(raw), extra_plugins=[("alerts", self.alerts)])
        self.app.testing = True
        self.client = self.app.test_client()
        self.services = self.app.extensions["comptroller"]

    def key(self, **fields: Any) -> dict[str, str]:
        made = self.client.post("/key/generate", json=fields, headers=MASTER).get_json()
        return {"Authorization": f"Bearer {made['key']}"}

    def chat(self, headers: dict[str, str], **body: Any) -> Any:
        resp = self.client.post("/chat/completions", json={**CHAT, **body}, headers=headers)
        resp.get_data()  # a stream is settled once read
        return resp

    def chat_while_the_database_goes(self, headers: dict[str, str], **body: Any) -> Any:
        """A call whose checks pass; the database is cut off while the upstream answers."""
        outage = DatabaseCutOff(self.url)
        self.upstream.hang = True
        result: list[Any] = []
        caller = threading.Thread(target=lambda: result.append(self.chat(headers, **body)))
        caller.start()
        try:
            wait_until(lambda: self.upstream.in_flight == 1, timeout=10)
            outage.cut()
            self.upstream.hang = False
            caller.join(timeout=30)
        finally:
            self.upstream.hang = False
        return result[0], outage

    def pending(self) -> list[Path]:
        return list(self.services.journal.directory.glob("*.json"))

    def ledger(self) -> dict[str, Any]:
        conn = psycopg2.connect(self.url)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT count(*), coalesce(sum(spend), 0) FROM spend_log")
                rows, total = cur.fetchone()
                # Each counter: its rows' base plus its stripes (proxy.storage.stripes).
                cur.execute(
                    'SELECT (SELECT coalesce(sum(spend), 0) FROM "key") + (SELECT '
                    "coalesce(sum(spend), 0) FROM spend_stripe WHERE kind = 'key')"
                )
                keys = cur.fetchone()[0]
                cur.execute(
                    "SELECT coalesce(sum(spend), 0) FROM spend_log WHERE api_key IN "
                    '(SELECT token FROM "key")'
                )
                key_logs = cur.fetchone()[0]
                cur.execute("SELECT SUM(spend) FROM proxy_spend")  # every stripe
                proxy_spend = cur.fetchone()[0]
                cur.execute(
                    "SELECT (SELECT coalesce(sum(spend), 0) FROM customer) + (SELECT "
                    "coalesce(sum(spend), 0) FROM spend_stripe WHERE kind = 'customer')"
                )
                customers = cur.fetchone()[0]
        finally:
            conn.close()
        return {
            "rows": rows,
            "total": total,
            "keys": keys,
            "key_logs": key_logs,
            "proxy": proxy_spend,
            "customers": customers,
        }


def _event_types(alerts: list[Any]) -> list[str]:
    return [str(alert.payload().get("event")) for alert in alerts]


def _assert_counters_equal_logs(state: dict[str, Any]) -> None:
    assert state["keys"] == pytest.approx(state["key_logs"]), state
    for counter in ("proxy", "customers"):
        assert state[counter] == pytest.approx(state["total"]), (counter, state)


@pytest.mark.parametrize("stream", [False, True])
def test_a_call_answered_while_the_database_goes_is_served_journaled_and_replayed_once(
    own_pg: str, upstream: MockOpenAI, tmp_path: Path, stream: bool
) -> None:
    proxy = Proxy(own_pg, upstream, tmp_path / "journal")
    key = proxy.key()
    assert proxy.chat(key).status_code == 200
    resp, outage = proxy.chat_while_the_database_goes(key, stream=stream)
    try:
        # The upstream answered: the client gets the answer, not a 503.
        assert resp.status_code == 200, resp.get_data(as_text=True)
        if stream:
            assert resp.get_data().rstrip().endswith(b"data: [DONE]")
        [entry] = proxy.pending()
        assert entry.stem == resp.headers["x-comptroller-call-id"]
        assert proxy.services.replayer.replay() == 0  # still away: kept
        assert proxy.pending() == [entry]
    finally:
        outage.restore()
    wait_until(lambda: not proxy.pending(), timeout=30)  # the replay thread writes it
    state = proxy.ledger()
    assert state["rows"] == 2 == len(upstream.requests)
    _assert_counters_equal_logs(state)


def test_a_replay_of_a_call_that_did_commit_only_drops_the_entry(
    own_pg: str, upstream: MockOpenAI, tmp_path: Path
) -> None:
    proxy = Proxy(own_pg, upstream, tmp_path / "journal")
    key = proxy.key()
    resp, outage = proxy.chat_while_the_database_goes(key)
    [entry] = proxy.pending()
    copy = tmp_path / "entry-copy.json"
    shutil.copy(entry, copy)
    outage.restore()
    wait_until(lambda: not proxy.pending(), timeout=30)
    before = proxy.ledger()
    # The same entry again (as after a crash between the COMMIT and the unlink).
    shutil.copy(copy, entry)
    assert proxy.services.replayer.replay() == 1
    assert not proxy.pending()
    assert proxy.ledger() == before
    assert before["rows"] == 1
    _assert_counters_equal_logs(before)


def test_an_entry_whose_call_is_still_settling_is_not_replayed(
    own_pg: str, upstream: MockOpenAI, tmp_path: Path
) -> None:
    proxy = Proxy(own_pg, upstream, tmp_path / "journal")
    journal = proxy.services.journal
    held = journal.write("chatcmpl-settling", {"request_id": "chatcmpl-settling"})
    try:
        assert entries_in(journal.directory) == ["chatcmpl-settling"]  # written ahead
        assert proxy.services.replayer.replay() == 0
        assert not journal.has_pending()
        assert entries_in(journal.directory) == ["chatcmpl-settling"]
    finally:
        held.done()
    assert entries_in(journal.directory) == []
    assert proxy.pending() == []


def test_alerts_caused_by_replayed_spend_are_raised_at_the_replay(
    own_pg: str, upstream: MockOpenAI, tmp_path: Path
) -> None:
    proxy = Proxy(own_pg, upstream, tmp_path / "journal")
    key = proxy.key(max_budget=1e-9)  # the first call's spend crosses it
    resp, outage = proxy.chat_while_the_database_goes(key)
    assert resp.status_code == 200
    assert "budget_crossed" not in _event_types(proxy.alerts.alerts)
    outage.restore()
    wait_until(lambda: not proxy.pending(), timeout=30)
    assert "budget_crossed" in _event_types(proxy.alerts.alerts)


def test_fail_closed_refuses_before_the_upstream_is_called(
    own_pg: str, upstream: MockOpenAI, tmp_path: Path
) -> None:
    proxy = Proxy(own_pg, upstream, tmp_path / "journal")
    key = proxy.key()
    outage = DatabaseCutOff(own_pg)
    try:
        outage.cut()
        resp = proxy.chat(key)
        assert resp.status_code == 503
        assert (
            "not sent to the model and nothing was charged" in resp.get_json()["error"]["message"]
        )
    finally:
        outage.restore()
    assert upstream.requests == []
    assert proxy.pending() == []


def test_fail_open_serves_known_keys_on_their_last_known_state_and_bills_them_later(
    own_pg: str, upstream: MockOpenAI, tmp_path: Path
) -> None:
    proxy = Proxy(own_pg, upstream, tmp_path / "journal", allow_requests_on_db_unavailable=True)
    known = proxy.key()
    spent = proxy.key(max_budget=1e-9)
    unseen = proxy.key()
    assert proxy.chat(known).status_code == 200
    assert proxy.chat(spent).status_code == 200  # now over its budget
    outage = DatabaseCutOff(own_pg)
    try:
        outage.cut()
        answered = [proxy.chat(known), proxy.chat(known, stream=True), proxy.chat(MASTER)]
        assert [r.status_code for r in answered] == [200, 200, 200]
        over = proxy.chat(spent)
        assert over.status_code == 401, over.get_data(as_text=True)  # the last known spend
        refused = proxy.chat(unseen)
        assert refused.status_code == 503
        assert "not been seen by this worker" in refused.get_json()["error"]["message"]
        assert len(proxy.pending()) == 3
    finally:
        outage.restore()
    wait_until(lambda: not proxy.pending(), timeout=30)
    state = proxy.ledger()
    assert state["rows"] == 5 == len(upstream.requests)
    _assert_counters_equal_logs(state)
