"""Admin API errors: who may call, the OpenAI error shape, never a 500."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.call.auth import hash_key
from proxy.storage.models import Key
from tests.conftest import MASTER
from tests.support.assertions import assert_error

# Every admin route with a body that is valid in shape (ids may not exist).
ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/key/generate", {}),
    ("GET", "/key/list", None),
    ("POST", "/key/update", {"key": "sk-nope"}),
    ("POST", "/key/delete", {"keys": ["sk-nope"]}),
    ("POST", "/user/new", {}),
    ("GET", "/user/info?user_id=u", None),
    ("POST", "/user/update", {"user_id": "u"}),
    ("POST", "/user/delete", {"user_ids": ["u"]}),
    ("GET", "/user/list", None),
    ("POST", "/customer/new", {"user_id": "c"}),
    ("GET", "/customer/info?end_user_id=c", None),
    ("POST", "/customer/update", {"user_id": "c"}),
    ("POST", "/customer/delete", {"user_ids": ["c"]}),
    ("POST", "/customer/block", {"user_ids": ["c"]}),
    ("POST", "/customer/unblock", {"user_ids": ["c"]}),
    ("GET", "/customer/list", None),
    ("POST", "/budget/new", {}),
    ("POST", "/budget/info", {"budgets": ["b"]}),
    ("POST", "/budget/update", {"budget_id": "b"}),
    ("POST", "/budget/delete", {"id": "b"}),
    ("GET", "/budget/list", None),
    ("GET", "/spend/logs", None),
    ("GET", "/global/spend", None),
]
ROUTE_IDS = [f"{method} {path.split('?')[0]}" for method, path, _ in ROUTES]
POST_ROUTES = [path for method, path, _ in ROUTES if method == "POST"]


def call(client: Any, method: str, path: str, body: Any, headers: dict[str, str]) -> Any:
    if method == "GET":
        return client.get(path, headers=headers)
    return client.post(path, json=body, headers=headers)


def virtual_key(client: Any) -> str:
    return client.post("/key/generate", json={}, headers=MASTER).get_json()["key"]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES, ids=ROUTE_IDS)
def test_admin_route_without_a_key_is_401(client, method, path, body):
    error = assert_error(call(client, method, path, body, {}), 401)
    assert error["type"] == "auth_error"
    assert error["param"] == "None"
    assert error["message"].startswith("Authentication Error")


@pytest.mark.parametrize(("method", "path", "body"), ROUTES, ids=ROUTE_IDS)
def test_admin_route_with_a_wrong_key_is_401(client, method, path, body):
    headers = {"Authorization": "Bearer sk-wrong"}
    error = assert_error(call(client, method, path, body, headers), 401)
    assert error["type"] == "auth_error"


@pytest.mark.parametrize(("method", "path", "body"), ROUTES, ids=ROUTE_IDS)
def test_admin_route_with_a_virtual_key_is_403(client, method, path, body):
    headers = {"Authorization": f"Bearer {virtual_key(client)}"}
    error = assert_error(call(client, method, path, body, headers), 403)
    assert error["type"] == "auth_error"


def test_virtual_key_is_refused_before_anything_is_written(client):
    headers = {"Authorization": f"Bearer {virtual_key(client)}"}
    assert_error(client.post("/key/generate", json={}, headers=headers), 403)
    assert Key.select().count() == 1


def test_virtual_key_reads_its_own_key_info(client):
    plain = virtual_key(client)
    headers = {"Authorization": f"Bearer {plain}"}
    for path in ("/key/info", f"/key/info?key={plain}", f"/key/info?key={hash_key(plain)}"):
        resp = client.get(path, headers=headers)
        assert resp.status_code == 200
        assert resp.get_json()["key"] == hash_key(plain)


def test_virtual_key_cannot_read_another_keys_info(client):
    mine, other = virtual_key(client), virtual_key(client)
    resp = client.get(f"/key/info?key={other}", headers={"Authorization": f"Bearer {mine}"})
    assert_error(resp, 403)


def test_virtual_key_cannot_probe_unknown_keys(client):
    headers = {"Authorization": f"Bearer {virtual_key(client)}"}
    assert_error(client.get("/key/info?key=sk-unknown", headers=headers), 403)


def test_api_key_header_is_accepted_for_admin_routes(client):
    resp = client.get("/key/list", headers={"api-key": "sk-1234"})
    assert resp.status_code == 200


@pytest.mark.parametrize("path", POST_ROUTES)
def test_malformed_json_is_400_naming_the_body(client, path):
    resp = client.post(path, data="{not json", headers=MASTER, content_type="application/json")
    assert_error(resp, 400, param="body")


@pytest.mark.parametrize("path", POST_ROUTES)
def test_json_that_is_not_an_object_is_400(client, path):
    assert_error(client.post(path, json=[1, 2], headers=MASTER), 400, param="body")


@pytest.mark.parametrize(
    "path",
    ["/key/update", "/key/delete", "/user/update", "/user/delete", "/customer/new",
     "/customer/update", "/customer/delete", "/customer/block", "/customer/unblock",
     "/budget/info", "/budget/update", "/budget/delete"],
)  # fmt: skip
def test_missing_required_id_is_400_naming_it(client, path):
    error = assert_error(client.post(path, json={}, headers=MASTER), 400)
    assert error["param"] != "None"
    assert error["param"] in error["message"]
    assert "required" in error["message"]


@pytest.mark.parametrize("path", ["/key/generate", "/user/new", "/budget/new"])
def test_empty_body_is_fine_where_every_field_is_optional(client, path):
    assert client.post(path, headers=MASTER).status_code == 200


@pytest.mark.parametrize("path", ["/key/update", "/customer/new", "/budget/delete"])
def test_empty_body_is_400_where_a_field_is_required(client, path):
    assert_error(client.post(path, headers=MASTER), 400, param="body")


def test_wrong_method_is_405_in_the_error_shape(client):
    assert_error(client.get("/key/generate", headers=MASTER), 405)


def test_seed_body_with_comments_and_trailing_comma_is_accepted(client):
    raw = '{\n  "team_id": "core-infra", # [OPTIONAL]\n  "max_budget": 10,\n}'
    resp = client.post("/key/generate", data=raw, headers=MASTER, content_type="application/json")
    assert resp.status_code == 200
    assert resp.get_json()["team_id"] == "core-infra"


def test_unknown_fields_are_ignored_and_never_stored(client):
    body = {"spend": 99, "token": "mine", "key_name": "x", "blocked": True, "colour": "red"}
    resp = client.post("/key/generate", json=body, headers=MASTER)
    assert resp.status_code == 200
    answer = resp.get_json()
    row = Key.get_by_id(answer["token"])
    assert answer["token"] == hash_key(answer["key"])
    assert row.spend == 0.0 and row.blocked is False
    assert row.key_name == answer["key_name"] != "x"
    assert "colour" not in answer and "colour" not in row.metadata


def test_nul_character_in_an_id_is_400_not_500(client):
    resp = client.post("/customer/new", json={"user_id": "a\u0000b"}, headers=MASTER)
    assert_error(resp, 400, param="user_id")


def test_nul_character_in_a_query_id_is_400_not_500(client):
    assert_error(client.get("/user/info?user_id=a%00b", headers=MASTER), 400, param="user_id")


def test_too_long_id_is_400_not_500(client):
    resp = client.post("/budget/new", json={"budget_id": "b" * 256}, headers=MASTER)
    assert_error(resp, 400, param="budget_id")


def test_int32_overflow_of_max_parallel_requests_is_400_not_500(client):
    resp = client.post("/key/generate", json={"max_parallel_requests": 2**31}, headers=MASTER)
    assert_error(resp, 400, param="max_parallel_requests")


def test_validation_error_names_the_nested_field(client):
    resp = client.post("/key/generate", json={"models": ["ok", 3]}, headers=MASTER)
    error = assert_error(resp, 400, param="models")
    assert "models[1]" in error["message"]
