"""SQL-injection strings in every id field are stored and answered literally.

Each hostile string goes into user_id, key_alias, team_id, budget_id, a
customer's user_id and an LLM call's end user ``user``; the row read back
from the database and every answer that shows the id must hold exactly the
string sent, every table must still be there, and a filter by the hostile
string must match its own row only (not ``OR 1=1`` all of them). A string of
256 characters is one too long for the columns: 400 naming the field.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from proxy.storage.db import database
from proxy.storage.models import Budget, Customer, Key, SpendLog, Team, User
from tests.conftest import MASTER
from tests.security.dump import table_names

HOSTILE = [
    "'; DROP TABLE key; --",
    '" OR 1=1 --',
    "1' OR '1'='1",
    "x'); DELETE FROM customer; --",
    "%_\\' ESCAPE '\\",
    "${jndi:ldap://127.0.0.1/a} {{7*7}} <script>alert(1)</script>",
    "Ωmega 用户 🙂 \u202egnp.exe",
    "l" * 254 + "🙂",  # 255 characters: the longest id the columns hold
]
IDS = [f"case{i}" for i in range(len(HOSTILE))]


def ok(resp: Any) -> dict[str, Any]:
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.get_json()


def _chat(client: FlaskClient, user: str) -> None:
    body = {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hi"}]}
    ok(client.post("/chat/completions", json={**body, "user": user}, headers=MASTER))


@pytest.mark.parametrize("text", HOSTILE, ids=IDS)
def test_hostile_ids_are_stored_and_answered_literally(
    client: FlaskClient, db_url: str, text: str
) -> None:
    tables = table_names(db_url)
    # user_id: stored, read back by itself, and a filter finds it alone.
    ok(client.post("/user/new", json={"user_id": "bystander"}, headers=MASTER))
    made = ok(client.post("/user/new", json={"user_id": text}, headers=MASTER))
    assert made["user_id"] == text
    info = ok(client.get("/user/info", query_string={"user_id": text}, headers=MASTER))
    assert info["user_id"] == info["user_info"]["user_id"] == text

    # key_alias and team_id on a key.
    key = ok(
        client.post(
            "/key/generate", json={"key_alias": text, "team_id": text, "user_id": text},
            headers=MASTER,
        )
    )  # fmt: skip
    assert (key["key_alias"], key["team_id"], key["user_id"]) == (text, text, text)
    read = ok(client.get("/key/info", query_string={"key": key["key"]}, headers=MASTER))["info"]
    assert (read["key_alias"], read["team_id"]) == (text, text)
    ok(client.post("/key/generate", json={"team_id": "other-team"}, headers=MASTER))
    listed = ok(client.get("/key/list", query_string={"team_id": text}, headers=MASTER))
    assert listed["keys"] == [key["token"]]

    # budget_id, and a customer on it.
    budget = ok(
        client.post("/budget/new", json={"budget_id": text, "max_budget": 5}, headers=MASTER)
    )
    assert budget["budget_id"] == text
    (row,) = ok(client.post("/budget/info", json={"budgets": [text]}, headers=MASTER))
    assert row["budget_id"] == text
    customer = ok(
        client.post("/customer/new", json={"user_id": text, "budget_id": text}, headers=MASTER)
    )
    assert customer["user_id"] == text
    assert customer["litellm_budget_table"]["budget_id"] == text

    # The end user of an LLM call, as the body's `user`.
    _chat(client, "bystander-end-user")
    _chat(client, text)
    shown = ok(client.get("/customer/info", query_string={"end_user_id": text}, headers=MASTER))
    assert shown["user_id"] == text and shown["spend"] > 0
    logs = ok(client.get("/spend/logs", query_string={"end_user": text}, headers=MASTER))
    assert [log["end_user"] for log in logs] == [text]

    with database.connection_context():
        assert User.get_by_id(text).user_id == text
        stored = Key.get_by_id(key["token"])
        assert (stored.key_alias, stored.team_id, stored.user_id) == (text, text, text)
        assert Team.get_by_id(text).team_id == text
        assert Budget.get_by_id(text).budget_id == text
        assert Customer.get_by_id(text).budget_id == text
        assert SpendLog.get(SpendLog.end_user == text).end_user == text
        assert Customer.select().count() == 2  # the bystander's row is still there
    assert table_names(db_url) == tables


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/user/new", {"user_id": "u" * 256}, "user_id"),
        ("/key/generate", {"key_alias": "a" * 256}, "key_alias"),
        ("/key/generate", {"team_id": "t" * 256}, "team_id"),
        ("/budget/new", {"budget_id": "b" * 256}, "budget_id"),
        ("/customer/new", {"user_id": "c" * 256}, "user_id"),
        (
            "/chat/completions",
            {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hi"}],
             "user": "e" * 256},
            "user",
        ),
    ],
)  # fmt: skip
def test_an_id_one_character_too_long_is_400_naming_it(
    client: FlaskClient, path: str, body: dict[str, Any], param: str
) -> None:
    resp = client.post(path, json=body, headers=MASTER)
    assert resp.status_code == 400, resp.get_data(as_text=True)
    assert resp.get_json()["error"]["param"] == param
    with database.connection_context():
        assert SpendLog.select().count() == 0


@pytest.mark.parametrize("header", ["x-litellm-customer-id", "x-litellm-end-user-id"])
def test_hostile_end_user_headers_are_stored_literally_or_refused(
    client: FlaskClient, header: str
) -> None:
    body = {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hi"}]}
    hostile = "'; DROP TABLE customer; --"
    ok(client.post("/chat/completions", json=body, headers={**MASTER, header: hostile}))
    too_long = client.post("/chat/completions", json=body, headers={**MASTER, header: "h" * 256})
    assert too_long.status_code == 400
    assert too_long.get_json()["error"]["param"] == header
    with database.connection_context():
        assert [c.user_id for c in Customer.select()] == [hostile]
        assert SpendLog.select().count() == 1
