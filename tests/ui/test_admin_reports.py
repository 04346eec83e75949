"""The Spend tab's report routes, on SQLite and PostgreSQL: sums of spend logs per UTC day."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import pytest
from flask.testing import FlaskClient

from proxy.api.admin import reports as admin_reports
from proxy.call.auth import generate_key, hash_key
from proxy.storage.db import database
from proxy.storage.models import Key, SpendLog
from tests.conftest import MASTER

DAY = 86400.0
# Frozen "now": 2024-05-30 15:00 UTC, so the 30-day window is 2024-05-01 .. 2024-05-30.
NOW = datetime(2024, 5, 30, 15, 0, tzinfo=timezone.utc).timestamp()
TODAY = datetime(2024, 5, 30, tzinfo=timezone.utc).timestamp()


@pytest.fixture(autouse=True)
def frozen_now(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(admin_reports, "now", lambda: NOW)


def _log(at: float, spend: float, end_user: str | None = None, api_key: str | None = None) -> None:
    with database.connection_context():
        SpendLog.create(
            request_id=uuid.uuid4().hex,
            call_type="chat",
            api_key=api_key,
            end_user=end_user,
            model="m",
            model_group="m",
            spend=spend,
            start_time=at,
            end_time=at + 0.5,
        )


def test_spend_per_day_sums_each_utc_day_of_the_window(client: FlaskClient) -> None:
    _log(TODAY + 0.25, 1.5)  # just after midnight: today
    _log(TODAY - 0.1, 0.25)  # just before midnight: yesterday
    _log(TODAY - 0.1, 0.25)
    _log(TODAY - 3 * DAY + 100, 2.0)
    _log(TODAY - 29 * DAY + 1, 0.125)  # first day of the window
    _log(TODAY - 29 * DAY - 1, 9.0)  # the day before the window: left out

    resp = client.get("/global/spend/daily", headers=MASTER)
    assert resp.status_code == 200
    body = resp.get_json()
    days = {d["date"]: d for d in body["days"]}
    assert len(body["days"]) == 30
    assert body["days"][0]["date"] == "2024-05-01" and body["days"][-1]["date"] == "2024-05-30"
    assert days["2024-05-30"] == {"date": "2024-05-30", "spend": 1.5, "requests": 1}
    assert days["2024-05-29"] == {"date": "2024-05-29", "spend": 0.5, "requests": 2}
    assert days["2024-05-27"]["spend"] == 2.0
    assert days["2024-05-01"]["spend"] == 0.125
    assert days["2024-05-15"] == {"date": "2024-05-15", "spend": 0.0, "requests": 0}
    assert body["total_spend"] == pytest.approx(4.125)
    assert body["total_requests"] == 5


def test_spend_per_day_window_length_follows_days(client: FlaskClient) -> None:
    _log(TODAY - 3 * DAY + 100, 2.0)
    body = client.get("/global/spend/daily?days=3", headers=MASTER).get_json()
    assert [d["date"] for d in body["days"]] == ["2024-05-28", "2024-05-29", "2024-05-30"]
    assert body["total_spend"] == 0.0


def test_top_customers_rank_spend_in_the_window(client: FlaskClient) -> None:
    _log(TODAY + 10, 0.5, end_user="small")
    _log(TODAY + 20, 3.0, end_user="big")
    _log(TODAY - DAY, 1.0, end_user="big")
    _log(TODAY - 2 * DAY, 1.0, end_user="middle")
    _log(TODAY - 40 * DAY, 100.0, end_user="long-ago")
    _log(TODAY + 30, 7.0)  # no end user

    top = client.get("/global/spend/top_customers", headers=MASTER).get_json()
    assert top == [
        {"end_user": "big", "spend": 4.0, "requests": 2},
        {"end_user": "middle", "spend": 1.0, "requests": 1},
        {"end_user": "small", "spend": 0.5, "requests": 1},
    ]
    first = client.get("/global/spend/top_customers?limit=1", headers=MASTER).get_json()
    assert [row["end_user"] for row in first] == ["big"]


def test_top_keys_name_live_keys_and_keep_deleted_ones(client: FlaskClient) -> None:
    live = hash_key(generate_key())
    gone = hash_key(generate_key())
    with database.connection_context():
        Key.create(token=live, key_name="sk-...live", key_alias="billing", user_id="alice")
    _log(TODAY + 1, 0.75, api_key=live)
    _log(TODAY + 2, 0.25, api_key=live)
    _log(TODAY + 3, 2.0, api_key=gone)
    _log(TODAY + 4, 5.0)  # the master key: no api_key

    top = client.get("/global/spend/top_keys", headers=MASTER).get_json()
    assert top == [
        {
            "token": gone,
            "is_master_key": False,
            "key_name": None,
            "key_alias": None,
            "user_id": None,
            "spend": 2.0,
            "requests": 1,
        },
        {
            "token": live,
            "is_master_key": False,
            "key_name": "sk-...live",
            "key_alias": "billing",
            "user_id": "alice",
            "spend": 1.0,
            "requests": 2,
        },
    ]


def test_reports_need_the_master_key(client: FlaskClient) -> None:
    plain = generate_key()
    with database.connection_context():
        Key.create(token=hash_key(plain), key_name="sk-...test")
    for path in ("/global/spend/daily", "/global/spend/top_customers", "/global/spend/top_keys"):
        assert client.get(path).status_code == 401, path
        virtual = client.get(path, headers={"Authorization": f"Bearer {plain}"})
        assert virtual.status_code == 403, path
        assert virtual.get_json()["error"]["type"] == "auth_error"


@pytest.mark.parametrize(
    ("query", "param"),
    [("days=0", "days"), ("days=abc", "days"), ("days=367", "days"), ("limit=0", "limit")],
)
def test_bad_report_query_is_400_naming_the_field(
    client: FlaskClient, query: str, param: str
) -> None:
    resp = client.get(f"/global/spend/top_customers?{query}", headers=MASTER)
    assert resp.status_code == 400
    assert resp.get_json()["error"]["param"] == param
