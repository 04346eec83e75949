"""Search, sort and paging of /customer/list, /key/list, /user/list and /team/list."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.storage.db import database
from proxy.storage.models import Customer
from tests.conftest import MASTER
from tests.support.admin_api import post_ok
from tests.support.assertions import assert_error


def get(client: Any, path: str) -> Any:
    resp = client.get(path, headers=MASTER)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp


@pytest.fixture
def customers(client):
    rows = [
        {
            "user_id": f"cust-{n:03d}",
            "customer_alias": f"Shop {n}",
            "spend": n / 100,
            "created_at": n,
        }
        for n in range(120)
    ]
    rows.append(
        {"user_id": "odd_one%", "customer_alias": "ACME GmbH", "spend": 0.0, "created_at": 500}
    )
    with database.connection_context():
        Customer.insert_many(rows).execute()
    return client


def test_customer_list_without_paging_is_every_customer(customers):
    resp = get(customers, "/customer/list")
    assert len(resp.get_json()) == 121 and "x-total-count" not in resp.headers


def test_customer_list_pages_with_a_total(customers):
    resp = get(customers, "/customer/list?page=3&page_size=50")
    assert resp.headers["x-total-count"] == "121"
    assert [c["user_id"] for c in resp.get_json()][:2] == ["cust-100", "cust-101"]
    assert len(resp.get_json()) == 21


def test_customer_list_search_is_a_case_insensitive_substring(customers):
    found = get(customers, "/customer/list?search=acme&page_size=10")
    assert [c["user_id"] for c in found.get_json()] == ["odd_one%"]
    # LIKE wildcards in the term match only themselves.
    literal = get(customers, "/customer/list?search=_one%25&page_size=10").get_json()
    assert [c["user_id"] for c in literal] == ["odd_one%"]
    assert get(customers, "/customer/list?search=%25&page_size=10").headers["x-total-count"] == "1"
    assert (
        get(customers, "/customer/list?search=shop 11&page_size=50").headers["x-total-count"]
        == "11"
    )


def test_customer_list_sorts_by_spend_most_first(customers):
    rows = get(customers, "/customer/list?sort=spend&order=desc&page_size=3").get_json()
    assert [c["user_id"] for c in rows] == ["cust-119", "cust-118", "cust-117"]


@pytest.mark.parametrize("path", ["/customer/list", "/key/list", "/user/list", "/team/list"])
def test_unknown_sort_column_is_400_naming_sort(client, path):
    assert_error(client.get(f"{path}?sort=password", headers=MASTER), 400, param="sort")


def test_key_user_and_team_lists_search_and_sort(client):
    for name in ("alpha", "beta", "alphabet"):
        post_ok(client, "/key/generate", {"key_alias": name, "user_id": f"{name}@x.io"})
        post_ok(client, "/team/new", {"team_id": f"team-{name}", "team_alias": name.upper()})
    keys = get(client, "/key/list?search=ALPHA&sort=key_alias&order=desc&return_full_object=true")
    assert [k["key_alias"] for k in keys.get_json()["keys"]] == ["alphabet", "alpha"]
    assert keys.get_json()["total_count"] == 2
    users = get(client, "/user/list?search=bet&sort=user_id").get_json()
    assert [u["user_id"] for u in users["users"]] == ["alphabet@x.io", "beta@x.io"]
    assert users["total"] == 2
    teams = get(client, "/team/list?search=alpha&sort=team_id&order=desc")
    assert [t["team_id"] for t in teams.get_json()] == ["team-alphabet", "team-alpha"]
    assert teams.headers["x-total-count"] == "2"
