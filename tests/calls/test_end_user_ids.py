"""End-user ids as clients send them: blank ones, padded ones, non-ASCII ones in headers.

A WSGI server hands a header's bytes to the app as latin-1 text; these tests
send headers the same way (``as_wsgi_header``), and tests/e2e/test_http_edges.py
sends real UTF-8 bytes through gunicorn.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient

from proxy.storage.models import Customer, SpendLog
from tests.conftest import MASTER, base_config
from tests.support.assertions import assert_error

CHAT = {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def client(make_app: Callable[..., Flask], db_url: str) -> FlaskClient:
    return make_app(base_config(db_url)).test_client()


def as_wsgi_header(text: str) -> str:
    """``text`` sent as UTF-8 bytes, as the app receives it from a WSGI server."""
    return text.encode("utf-8").decode("latin-1")


def call(client: FlaskClient, headers: dict | None = None, **body: object) -> object:
    return client.post(
        "/chat/completions", json={**CHAT, **body}, headers={**MASTER, **(headers or {})}
    )


@pytest.mark.parametrize("blank", ["", " ", "   ", "\t\n"])
def test_a_blank_user_names_no_end_user(client: FlaskClient, blank: str) -> None:
    resp = call(client, user=blank)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert SpendLog.get().end_user is None
    assert Customer.select().count() == 0


def test_a_blank_header_falls_back_to_the_body(client: FlaskClient) -> None:
    resp = call(client, {"x-litellm-customer-id": "  "}, user=" ", metadata={"user_id": "meta"})
    assert resp.status_code == 200
    assert SpendLog.get().end_user == "meta"


def test_a_padded_user_is_the_same_customer_and_can_be_managed(client: FlaskClient) -> None:
    assert call(client, user="  alice ").status_code == 200
    assert call(client, user="alice").status_code == 200
    assert [c.user_id for c in Customer.select()] == ["alice"]
    info = client.get("/customer/info?end_user_id=alice", headers=MASTER)
    assert info.status_code == 200 and info.get_json()["spend"] > 0


@pytest.mark.parametrize("header", ["x-litellm-customer-id", "x-litellm-end-user-id"])
@pytest.mark.parametrize("name", ["José", "Zoë Åström", "客户-42", "🦜"])
def test_a_non_ascii_header_id_is_the_same_customer_as_in_the_body(
    client: FlaskClient, header: str, name: str
) -> None:
    assert call(client, {header: as_wsgi_header(name)}).status_code == 200
    assert call(client, user=name).status_code == 200
    assert [row.end_user for row in SpendLog.select()] == [name, name]
    assert [c.user_id for c in Customer.select()] == [name]
    blocked = client.post("/customer/block", json={"user_ids": [name]}, headers=MASTER)
    assert blocked.status_code == 200
    error = assert_error(call(client, {header: as_wsgi_header(name)}), 403)
    assert error["message"] == f"User blocked from making LLM API Calls. User={name}"


def test_a_header_that_is_not_utf8_is_400_naming_it(client: FlaskClient) -> None:
    latin1_bytes = "José".encode("latin-1").decode("latin-1")  # b"Jos\xe9": not UTF-8
    resp = call(client, {"x-litellm-customer-id": latin1_bytes})
    error = assert_error(resp, 400, param="x-litellm-customer-id")
    assert error["message"] == "'x-litellm-customer-id' must be UTF-8 text"
    assert SpendLog.select().count() == 0
