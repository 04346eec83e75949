"""/key/generate with a key value of the caller's choosing (keys carried over unchanged)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from proxy.storage.models import Key, User
from tests.conftest import MASTER, base_config
from tests.support.assertions import assert_error

CHAT = {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hi"}]}


def generate(client: FlaskClient, body: dict[str, Any]) -> Any:
    return client.post("/key/generate", json=body, headers=MASTER)


def test_a_chosen_key_is_stored_hashed_and_works(client: FlaskClient) -> None:
    chosen = "sk-carried-over-from-litellm-0042"
    answer = generate(client, {"key": chosen, "max_budget": 5, "user_id": "team-a"})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    body = answer.get_json()
    assert body["key"] == chosen
    assert body["token"] == hashlib.sha256(chosen.encode()).hexdigest()
    assert body["key_name"] == "sk-...0042"
    assert body["max_budget"] == 5
    row = Key.get_by_id(body["token"])
    assert chosen not in (row.token, row.key_name)  # never stored in the clear
    call = client.post(
        "/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {chosen}"}
    )
    assert call.status_code == 200, call.get_data(as_text=True)
    info = client.get("/key/info", query_string={"key": chosen}, headers=MASTER).get_json()
    assert info["info"]["spend"] > 0


def test_the_same_key_twice_is_409_and_writes_nothing(client: FlaskClient) -> None:
    assert generate(client, {"key": "sk-only-once-ever"}).status_code == 200
    error = assert_error(
        generate(client, {"key": "sk-only-once-ever", "user_id": "newcomer"}), 409, "key"
    )
    assert error["message"] == "Key already exists: key=sk-...ever"
    assert Key.select().count() == 1
    assert User.get_or_none(User.user_id == "newcomer") is None  # rolled back with the key


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("my-own-key-from-elsewhere", "must start with 'sk-'"),
        ("sk-", "at least 16 characters"),
        ("sk-1", "at least 16 characters"),
        ("sk-fifteen-char", "at least 16 characters"),
        ("sk-with a space in it", "printable ASCII without spaces"),
        ("sk-nul-in-the-key\x00", "printable ASCII without spaces"),
        ("sk-ünïcode-in-the-key", "printable ASCII without spaces"),
        (12345, "valid string"),
        ("sk-" + "x" * 253, "at most 255 characters"),
    ],
)
def test_a_bad_key_value_is_400_naming_key(client: FlaskClient, value: Any, says: str) -> None:
    error = assert_error(generate(client, {"key": value}), 400, "key")
    assert says in error["message"]
    assert Key.select().count() == 0


def test_the_shortest_key_accepted_never_shows_whole_in_its_display_name(
    client: FlaskClient,
) -> None:
    chosen = "sk-sixteen-chars"
    body = generate(client, {"key": chosen}).get_json()
    assert body["key_name"] == "sk-...hars"
    listed = client.get("/key/list?return_full_object=true", headers=MASTER).get_json()
    assert chosen not in str(listed)


def test_the_master_key_cannot_become_a_virtual_key(
    make_app: Callable[..., Flask], db_url: str
) -> None:
    master = "sk-a-long-master-key-0001"
    client = make_app(base_config(db_url, general_settings={"master_key": master})).test_client()
    answer = client.post(
        "/key/generate", json={"key": master}, headers={"Authorization": f"Bearer {master}"}
    )
    error = assert_error(answer, 400, "key")
    assert error["message"] == "'key' must not be the master key"
    assert Key.select().count() == 0
