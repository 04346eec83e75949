"""/spend/logs filters and order, /spend/logs/csv, /global/spend/report.

Spend-log rows are written with the Peewee model, so each expected number is
computed here from the rows this test wrote, not by the code under test.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime, timezone
from typing import Any

import pytest

from proxy.api.admin import spend as spend_routes
from proxy.call.auth import hash_key
from proxy.storage.db import database
from proxy.storage.models import SpendLog
from tests.admin_api.test_admin_spend import add_log, ids, logs
from tests.conftest import MASTER, MASTER_KEY
from tests.support.assertions import assert_error


@pytest.fixture
def varied(client):
    add_log("a1", "2024-03-01T10:00:00", api_key=hash_key("sk-a"), user_id="u1", team_id="t1",
            end_user="c1", model_group="gpt-4o", spend=0.5, total_tokens=100)  # fmt: skip
    add_log("a2", "2024-03-01T11:00:00", api_key=hash_key("sk-a"), user_id="u1", team_id="t1",
            end_user="c2", model_group="mini", spend=0.25, total_tokens=10)  # fmt: skip
    add_log("b1", "2024-03-02T09:00:00", api_key=hash_key("sk-b"), user_id="u2", team_id="t2",
            end_user="c1", model_group="gpt-4o", spend=1.0, total_tokens=7,
            status="failure")  # fmt: skip
    add_log("m1", "2024-03-02T12:00:00", api_key=hash_key(MASTER_KEY), model_group="mini",
            spend=0.125, total_tokens=3)  # fmt: skip
    return client


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("?team_id=t1", ["a1", "a2"]),
        ("?model=gpt-4o", ["a1", "b1"]),
        ("?status=failure", ["b1"]),
        ("?end_user=c1&model=gpt-4o", ["a1", "b1"]),
        ("?order=desc", ["m1", "b1", "a2", "a1"]),
        ("?order=desc&page_size=2&page=2", ["a2", "a1"]),
        ("?start_date=2024-03-02&order=desc", ["m1", "b1"]),
    ],
)
def test_spend_logs_filters_and_newest_first(varied, query, expected):
    assert ids(logs(varied, query)) == expected


def test_spend_logs_rejects_an_unknown_order(varied):
    assert_error(varied.get("/spend/logs?order=sideways", headers=MASTER), 400, param="order")


def _csv(client: Any, query: str = "") -> list[dict[str, str]]:
    resp = client.get(f"/spend/logs/csv{query}", headers=MASTER)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.mimetype == "text/csv"
    assert "attachment" in resp.headers["Content-Disposition"]
    return list(csv.DictReader(io.StringIO(resp.get_data(as_text=True))))


def test_csv_has_every_filtered_row_with_tokens_cost_and_duration(varied):
    rows = _csv(varied, "?team_id=t1&order=desc")
    assert [r["request_id"] for r in rows] == ["a2", "a1"]
    assert rows[1]["spend"] == "0.5" and rows[1]["total_tokens"] == "100"
    assert rows[1]["duration_seconds"] == "0.5" and rows[1]["api_key"] == hash_key("sk-a")


def test_csv_streams_every_row_in_chunks_without_loss_or_repeat(varied, monkeypatch):
    monkeypatch.setattr(spend_routes, "CSV_CHUNK_ROWS", 2)
    for n in range(7):  # rows sharing a start time: the keyset must still not skip any
        add_log(f"same{n}", "2024-03-03T00:00:00", spend=0.001)
    asc = [r["request_id"] for r in _csv(varied)]
    desc = [r["request_id"] for r in _csv(varied, "?order=desc")]
    with database.connection_context():
        every = sorted(row.request_id for row in SpendLog.select())
    assert sorted(asc) == every and len(asc) == len(set(asc)) == 11
    assert desc == asc[::-1]


def test_csv_with_a_bad_window_is_400_before_any_row(varied):
    resp = varied.get("/spend/logs/csv?start_date=2024-03-02&end_date=2024-03-01", headers=MASTER)
    assert_error(resp, 400, param="start_date")


def _report(client: Any, query: str) -> list[dict[str, Any]]:
    resp = client.get(f"/global/spend/report{query}", headers=MASTER)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.get_json()


def test_report_by_team_per_day_with_the_model_breakdown(varied):
    report = _report(varied, "?start_date=2024-03-01&end_date=2024-03-02&group_by=team")
    assert [day["group_by_day"] for day in report] == [
        "2024-03-01T00:00:00+00:00",
        "2024-03-02T00:00:00+00:00",
    ]
    (t1,) = report[0]["teams"]
    assert (t1["team_name"], t1["total_spend"], t1["requests"]) == ("t1", 0.75, 2)
    assert t1["metadata"] == [
        {"model": "gpt-4o", "spend": 0.5, "total_tokens": 100, "requests": 1},
        {"model": "mini", "spend": 0.25, "total_tokens": 10, "requests": 1},
    ]
    second = report[1]["teams"]
    assert [(g["team_name"], g["total_spend"]) for g in second] == [("t2", 1.0), (None, 0.125)]


@pytest.mark.parametrize(
    ("group_by", "groups", "id_name", "first_day"),
    [
        ("customer", "customers", "customer", {"c1": 0.5, "c2": 0.25}),
        ("api_key", "api_keys", "api_key", {hash_key("sk-a"): 0.75}),
        ("user", "users", "user", {"u1": 0.75}),
        ("model", "models", "model", {"gpt-4o": 0.5, "mini": 0.25}),
    ],
)
def test_report_groups(varied, group_by, groups, id_name, first_day):
    report = _report(varied, f"?start_date=2024-03-01&end_date=2024-03-01&group_by={group_by}")
    assert len(report) == 1
    assert {g[id_name]: g["total_spend"] for g in report[0][groups]} == first_day


def test_report_window_is_whole_days_inclusive(varied):
    assert _report(varied, "?start_date=2024-03-02&end_date=2024-03-02&group_by=model")[0][
        "group_by_day"
    ].startswith("2024-03-02")
    assert _report(varied, "?start_date=2024-02-01&end_date=2024-02-28") == []


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("?group_by=region", "group_by"),
        ("?start_date=2024-13-01", "start_date"),
        ("?start_date=2024-03-02&end_date=2024-03-01", "start_date"),
        ("?start_date=2020-01-01&end_date=2024-01-01", "start_date"),
    ],
)
def test_report_rejects_bad_input_naming_the_field(varied, query, param):
    assert_error(varied.get(f"/global/spend/report{query}", headers=MASTER), 400, param=param)


def test_top_keys_marks_the_master_key(client):
    today = datetime.now(timezone.utc).strftime("%Y-%m-%dT00:00:01")
    add_log("now-master", today, api_key=hash_key(MASTER_KEY), spend=0.2)
    add_log("now-key", today, api_key=hash_key("sk-a"), spend=0.1)
    rows = client.get("/global/spend/top_keys?days=1", headers=MASTER).get_json()
    assert [(r["token"], r["is_master_key"]) for r in rows] == [
        (hash_key(MASTER_KEY), True),
        (hash_key("sk-a"), False),
    ]
