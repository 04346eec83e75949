"""/spend/logs and /global/spend."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

import pytest

from proxy.call.auth import hash_key
from proxy.storage.counters import proxy_total
from proxy.storage.models import ProxySpend, SpendLog
from tests.conftest import MASTER
from tests.support.assertions import assert_error

LOG_FIELDS = [
    "request_id", "call_type", "api_key", "user", "team_id", "end_user", "model", "model_group",
    "prompt_tokens", "completion_tokens", "total_tokens", "spend", "startTime", "endTime",
    "status",
]  # fmt: skip


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


def add_log(request_id: str, start: str, **fields: Any) -> None:
    row = {
        "request_id": request_id,
        "call_type": "chat",
        "model": "gpt-3.5-turbo",
        "model_group": "gpt-3.5-turbo",
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "total_tokens": 15,
        "spend": 0.000025,
        "start_time": ts(start),
        "end_time": ts(start) + 0.5,
        **fields,
    }
    SpendLog.insert(**row).execute()


def logs(client: Any, query: str = "") -> list[dict[str, Any]]:
    resp = client.get(f"/spend/logs{query}", headers=MASTER)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.get_json()


def ids(rows: list[dict[str, Any]]) -> list[str]:
    return [row["request_id"] for row in rows]


@pytest.fixture
def three_logs(client):
    add_log("r1", "2024-01-01T10:00:00", api_key=hash_key("sk-a"), user_id="u1", end_user="e1")
    add_log("r2", "2024-01-02T23:59:00", api_key=hash_key("sk-b"), user_id="u2", team_id="t")
    add_log("r3", "2024-01-03T00:00:00", api_key=hash_key("sk-a"), user_id="u1", end_user="e2")
    return client


def test_spend_log_row_shape(three_logs):
    row = logs(three_logs, "?request_id=r1")[0]
    assert list(row) == LOG_FIELDS
    assert row["api_key"] == hash_key("sk-a")
    assert (row["user"], row["end_user"], row["team_id"]) == ("u1", "e1", None)
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (10, 5, 15)
    assert row["spend"] == 0.000025 and isinstance(row["spend"], float)
    assert row["startTime"] == "2024-01-01T10:00:00.000000Z"
    assert row["endTime"] == "2024-01-01T10:00:00.500000Z"
    assert row["status"] == "success"


def test_all_logs_oldest_first(three_logs):
    assert ids(logs(three_logs)) == ["r1", "r2", "r3"]


@pytest.mark.parametrize("value", ["sk-a", hash_key("sk-a")])
def test_filter_by_plain_key_or_token(three_logs, value):
    assert ids(logs(three_logs, f"?api_key={value}")) == ["r1", "r3"]


def test_filter_by_user_and_end_user(three_logs):
    assert ids(logs(three_logs, "?user_id=u2")) == ["r2"]
    assert ids(logs(three_logs, "?end_user=e2")) == ["r3"]
    assert ids(logs(three_logs, "?user_id=u1&end_user=e1")) == ["r1"]
    assert logs(three_logs, "?user_id=nobody") == []


def test_date_only_end_date_covers_the_whole_day(three_logs):
    assert ids(logs(three_logs, "?start_date=2024-01-02&end_date=2024-01-02")) == ["r2"]
    assert ids(logs(three_logs, "?start_date=2024-01-01&end_date=2024-01-02")) == ["r1", "r2"]


def test_iso_times_bound_the_window(three_logs):
    query = "?start_date=2024-01-01T10:00:01Z&end_date=2024-01-03T00:00:00Z"
    assert ids(logs(three_logs, query)) == ["r2", "r3"]  # an end instant is included
    offset = "?end_date=2024-01-01T12:00:00%2B02:00"  # 10:00 UTC
    assert ids(logs(three_logs, offset)) == ["r1"]


def test_unencoded_plus_of_a_utc_offset_is_understood(three_logs):
    # curl sends "+" raw, which a query string decodes as a space.
    assert ids(logs(three_logs, "?end_date=2024-01-01T11:59:59+02:00")) == []
    assert ids(logs(three_logs, "?end_date=2024-01-01T12:00:00+02:00")) == ["r1"]


@pytest.mark.parametrize(
    ("query", "param"),
    [("start_date=yesterday", "start_date"), ("end_date=2024-13-01", "end_date"),
     ("start_date=2024-01-03&end_date=2024-01-01", "start_date")],
)  # fmt: skip
def test_bad_dates_are_400(client, query, param):
    assert_error(client.get(f"/spend/logs?{query}", headers=MASTER), 400, param=param)


def test_a_real_call_is_found_by_its_key(client):
    answer = client.post("/key/generate", json={"user_id": "u1"}, headers=MASTER).get_json()
    body = {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hi"}], "user": "e1"}
    resp = client.post(
        "/chat/completions", json=body, headers={"Authorization": f"Bearer {answer['key']}"}
    )
    assert resp.status_code == 200
    rows = logs(client, f"?api_key={answer['key']}")
    assert len(rows) == 1
    row = rows[0]
    assert (row["api_key"], row["user"], row["end_user"]) == (answer["token"], "u1", "e1")
    assert row["model_group"] == "gpt-3.5-turbo" and row["spend"] > 0
    assert row["total_tokens"] == resp.get_json()["usage"]["total_tokens"]


def test_global_spend(client):
    body = client.get("/global/spend", headers=MASTER).get_json()
    assert body == {"spend": 0.0, "max_budget": None}


def test_proxy_spend_reads_apply_a_due_reset(make_app):
    """/global/spend and /metrics show the counter as of now: a proxy budget period
    that ended reads 0 before any call resets it, and the reset is stored."""
    app = make_app(
        {"litellm_settings": {"max_budget": 10, "budget_duration": "30d"}},
    )
    client = app.test_client()
    body = {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hi"}]}
    assert client.post("/chat/completions", json=body, headers=MASTER).status_code == 200
    assert client.get("/global/spend", headers=MASTER).get_json()["spend"] > 0
    ProxySpend.update(budget_reset_at=time.time() - 1).where(ProxySpend.id == 1).execute()
    assert client.get("/global/spend", headers=MASTER).get_json() == {
        "spend": 0.0,
        "max_budget": 10,
    }
    metrics = client.get("/metrics", headers=MASTER).get_data(as_text=True)
    assert "comptroller_proxy_spend_usd 0.0\n" in metrics
    row = ProxySpend.get_by_id(1)
    assert proxy_total() == 0.0 and row.budget_reset_at > time.time()
