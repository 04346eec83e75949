"""/budget/new, /budget/info, /budget/update, /budget/delete, /budget/list."""

from __future__ import annotations

import time
from typing import Any

import pytest

from proxy.storage.models import Budget
from tests.conftest import MASTER, base_config
from tests.support.admin_api import post, post_ok
from tests.support.assertions import assert_error


def new_budget(client: Any, **body: Any) -> dict[str, Any]:
    return post_ok(client, "/budget/new", body)


def test_new_budget_without_id_gets_a_generated_one(client):
    answer = new_budget(client, max_budget=10, rpm_limit=2, tpm_limit=1000)
    assert answer["budget_id"]
    assert (answer["max_budget"], answer["rpm_limit"], answer["tpm_limit"]) == (10.0, 2, 1000)
    assert answer["created_at"].endswith("Z") and answer["updated_at"].endswith("Z")
    row = Budget.get_by_id(answer["budget_id"])
    assert (row.max_budget, row.rpm_limit, row.tpm_limit) == (10.0, 2, 1000)


def test_new_budget_with_its_id(client):
    answer = new_budget(client, budget_id="my-free-tier", max_budget=4)
    assert answer == {
        "budget_id": "my-free-tier",
        "max_budget": 4.0,
        "soft_budget": None,
        "max_parallel_requests": None,
        "tpm_limit": None,
        "rpm_limit": None,
        "budget_duration": None,
        "created_at": answer["created_at"],
        "updated_at": answer["updated_at"],
    }


def test_duplicate_budget_is_409_naming_it(client):
    new_budget(client, budget_id="tier", max_budget=4)
    error = assert_error(post(client, "/budget/new", {"budget_id": "tier"}), 409, "budget_id")
    assert "tier" in error["message"]
    assert Budget.get_by_id("tier").max_budget == 4.0


def test_reserved_prefix_is_refused(client):
    resp = post(client, "/budget/new", {"budget_id": "customer-budget-x"})
    assert_error(resp, 400, param="budget_id")


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_budget", "four"), ("max_budget", -4), ("soft_budget", [1]), ("rpm_limit", -1),
     ("tpm_limit", "1000.5"), ("max_parallel_requests", 1.5), ("budget_duration", "1y"),
     ("budget_id", 12)],
)  # fmt: skip
def test_new_budget_rejects_wrong_values(client, field, value):
    assert_error(post(client, "/budget/new", {field: value}), 400, param=field)
    assert Budget.select().count() == 0


def test_budget_info_lists_rows_in_the_order_asked(client):
    new_budget(client, budget_id="a", max_budget=1)
    new_budget(client, budget_id="b", max_budget=2)
    body = post(client, "/budget/info", {"budgets": ["b", "a"]}).get_json()
    assert [(row["budget_id"], row["max_budget"]) for row in body] == [("b", 2.0), ("a", 1.0)]


def test_budget_info_unknown_is_404_naming_it(client):
    new_budget(client, budget_id="a")
    error = assert_error(post(client, "/budget/info", {"budgets": ["a", "zz"]}), 404, "budgets")
    assert "zz" in error["message"]


@pytest.mark.parametrize("budgets", [[], "a", None, [1]])
def test_budget_info_needs_a_list(client, budgets):
    assert_error(post(client, "/budget/info", {"budgets": budgets}), 400, param="budgets")


def test_budget_update_changes_given_fields_and_updated_at(client):
    created = new_budget(client, budget_id="tier", max_budget=4, rpm_limit=2)
    time.sleep(0.01)
    answer = post(client, "/budget/update", {"budget_id": "tier", "max_budget": "6"}).get_json()
    assert (answer["max_budget"], answer["rpm_limit"]) == (6.0, 2)
    assert answer["updated_at"] > created["updated_at"]
    assert answer["created_at"] == created["created_at"]


def test_budget_update_is_seen_by_every_customer_on_it(client):
    new_budget(client, budget_id="tier", max_budget=4)
    post(client, "/customer/new", {"user_id": "c1", "budget_id": "tier"})
    post(client, "/budget/update", {"budget_id": "tier", "max_budget": 9, "rpm_limit": 5})
    table = client.get("/customer/info?end_user_id=c1", headers=MASTER).get_json()[
        "litellm_budget_table"
    ]
    assert (table["max_budget"], table["rpm_limit"]) == (9.0, 5)


def test_budget_update_unknown_is_404(client):
    assert_error(post(client, "/budget/update", {"budget_id": "nope"}), 404, param="budget_id")


def test_budget_update_rejects_wrong_values(client):
    new_budget(client, budget_id="tier", max_budget=4)
    resp = post(client, "/budget/update", {"budget_id": "tier", "rpm_limit": "two"})
    assert_error(resp, 400, param="rpm_limit")


def test_budget_delete_unused(client):
    new_budget(client, budget_id="tier", max_budget=4)
    resp = post(client, "/budget/delete", {"id": "tier"})
    assert resp.status_code == 200
    assert resp.get_json()["budget_id"] == "tier"
    assert Budget.select().count() == 0


def test_budget_delete_in_use_is_refused_naming_the_customers(client):
    new_budget(client, budget_id="tier", max_budget=4)
    for user_id in ("c1", "c2"):
        post(client, "/customer/new", {"user_id": user_id, "budget_id": "tier"})
    error = assert_error(post(client, "/budget/delete", {"id": "tier"}), 400, param="id")
    assert "c1" in error["message"] and "c2" in error["message"]
    assert Budget.get_or_none(Budget.budget_id == "tier") is not None


def test_budget_delete_after_detaching_customers(client):
    new_budget(client, budget_id="tier")
    post(client, "/customer/new", {"user_id": "c1", "budget_id": "tier"})
    post(client, "/customer/update", {"user_id": "c1", "budget_id": None})
    assert post(client, "/budget/delete", {"id": "tier"}).status_code == 200


def test_budget_delete_unknown_is_404(client):
    assert_error(post(client, "/budget/delete", {"id": "nope"}), 404, param="id")


def test_the_default_end_user_budget_cannot_be_deleted(make_app, db_url):
    config = base_config(db_url, litellm_settings={"max_end_user_budget_id": "default-tier"})
    client = make_app(config).test_client()
    new_budget(client, budget_id="default-tier", max_budget=1)
    error = assert_error(post(client, "/budget/delete", {"id": "default-tier"}), 400, "id")
    assert "max_end_user_budget_id" in error["message"]
    assert Budget.select().count() == 1


def test_budget_list(client):
    new_budget(client, budget_id="a")
    new_budget(client, budget_id="b", budget_duration="30d")
    body = client.get("/budget/list", headers=MASTER).get_json()
    assert [(row["budget_id"], row["budget_duration"]) for row in body] == [
        ("a", None),
        ("b", "30d"),
    ]
