"""/customer/* (end users): own budgets, pricing tiers, blocking."""

from __future__ import annotations

import time
from typing import Any

import pytest

from proxy.storage.models import Budget, Customer
from tests.conftest import MASTER, base_config
from tests.support.admin_api import post, post_ok
from tests.support.assertions import assert_error

INFO_FIELDS = [
    "user_id", "blocked", "alias", "spend", "allowed_model_region", "default_model",
    "litellm_budget_table",
]  # fmt: skip
BUDGET_ROW_FIELDS = {
    "budget_id", "max_budget", "soft_budget", "max_parallel_requests", "tpm_limit", "rpm_limit",
    "budget_duration", "created_at", "updated_at",
}  # fmt: skip


def new_customer(client: Any, **body: Any) -> dict[str, Any]:
    return post_ok(client, "/customer/new", body)


def new_tier(client: Any, budget_id: str, **values: Any) -> None:
    post_ok(client, "/budget/new", {"budget_id": budget_id, **values})


def info(client: Any, user_id: str) -> dict[str, Any]:
    resp = client.get(f"/customer/info?end_user_id={user_id}", headers=MASTER)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.get_json()


def chat(client: Any, user: str) -> Any:
    body = {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hi"}], "user": user}
    return client.post("/chat/completions", json=body, headers=MASTER)


# --- /customer/new -----------------------------------------------------------


def test_new_customer_with_own_budget_from_the_seed_body(client):
    raw = '{\n    "user_id" : "my-customer-id",\n    "max_budget": "0", # 👈 CAN BE FLOAT\n}'
    resp = client.post(
        "/customer/new", data=raw.encode(), headers=MASTER, content_type="application/json"
    )
    assert resp.status_code == 200, resp.get_data(as_text=True)
    answer = resp.get_json()
    assert list(answer) == INFO_FIELDS
    table = answer["litellm_budget_table"]
    assert set(table) == BUDGET_ROW_FIELDS
    assert table["max_budget"] == 0.0
    customer = Customer.get_by_id("my-customer-id")
    assert customer.budget_id == table["budget_id"]
    assert Budget.get_by_id(customer.budget_id).max_budget == 0.0


def test_new_customer_own_budget_holds_limits_and_period(client):
    answer = new_customer(
        client, user_id="c1", max_budget=5, rpm_limit=2, tpm_limit=100,
        max_parallel_requests=1, soft_budget=4, budget_duration="1d",
    )  # fmt: skip
    table = answer["litellm_budget_table"]
    assert (table["rpm_limit"], table["tpm_limit"], table["max_parallel_requests"]) == (2, 100, 1)
    assert (table["soft_budget"], table["budget_duration"]) == (4.0, "1d")
    customer = Customer.get_by_id("c1")
    assert customer.budget_reset_at == pytest.approx(customer.created_at + 86400)


def test_new_customer_on_a_pricing_tier(client):
    new_tier(client, "my-free-tier", max_budget=4)
    answer = new_customer(client, user_id="my-customer-id", budget_id="my-free-tier")
    assert answer["litellm_budget_table"]["budget_id"] == "my-free-tier"
    assert answer["litellm_budget_table"]["max_budget"] == 4.0
    assert Budget.select().count() == 1


def test_new_customer_without_budget_has_null_budget_table(client):
    answer = new_customer(client, user_id="c1", alias="Acme", allowed_model_region="eu")
    assert answer == {
        "user_id": "c1",
        "blocked": False,
        "alias": "Acme",
        "spend": 0.0,
        "allowed_model_region": "eu",
        "default_model": None,
        "litellm_budget_table": None,
    }
    assert Budget.select().count() == 0


def test_new_customer_with_a_configured_default_model(client):
    assert new_customer(client, user_id="c1", default_model="mistral")["default_model"] == "mistral"


def test_new_customer_with_budget_id_and_own_values_is_400(client):
    new_tier(client, "tier", max_budget=4)
    resp = post(client, "/customer/new", {"user_id": "c1", "budget_id": "tier", "max_budget": 1})
    assert_error(resp, 400, param="budget_id")
    assert Customer.select().count() == 0 and Budget.select().count() == 1


def test_new_customer_with_an_unknown_budget_id_is_400_naming_it(client):
    resp = post(client, "/customer/new", {"user_id": "c1", "budget_id": "no-such-tier"})
    error = assert_error(resp, 400, param="budget_id")
    assert "no-such-tier" in error["message"]
    assert Customer.select().count() == 0


def test_new_customer_cannot_share_another_customers_own_budget(client):
    own_id = new_customer(client, user_id="c1", max_budget=1)["litellm_budget_table"]["budget_id"]
    resp = post(client, "/customer/new", {"user_id": "c2", "budget_id": own_id})
    assert_error(resp, 400, param="budget_id")


def test_duplicate_customer_is_409_and_makes_no_budget(client):
    new_customer(client, user_id="c1")
    resp = post(client, "/customer/new", {"user_id": "c1", "max_budget": 3})
    error = assert_error(resp, 409, param="user_id")
    assert "c1" in error["message"]
    assert Budget.select().count() == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_budget", "free"), ("max_budget", -3), ("blocked", "yes"), ("rpm_limit", 1.5),
     ("allowed_model_region", "mars"), ("default_model", "no-such-model"), ("alias", 1),
     ("budget_duration", "soon"), ("budget_id", 3)],
)  # fmt: skip
def test_new_customer_rejects_wrong_values(client, field, value):
    resp = post(client, "/customer/new", {"user_id": "c1", field: value})
    assert_error(resp, 400, param=field)
    assert Customer.select().count() == 0


# --- /customer/info ----------------------------------------------------------


def test_customer_info_has_exactly_the_seed_fields(client):
    new_customer(client, user_id="ishaan3")
    Customer.update(spend=Customer.spend + 0.001413).where(Customer.user_id == "ishaan3").execute()
    body = info(client, "ishaan3")
    assert list(body) == INFO_FIELDS
    assert body["spend"] == pytest.approx(0.001413)
    assert body["litellm_budget_table"] is None


def test_customer_info_after_a_metered_call(client):
    assert chat(client, "ishaan3").status_code == 200
    body = info(client, "ishaan3")
    assert body["spend"] > 0 and isinstance(body["spend"], float)
    assert body["blocked"] is False


def test_customer_info_unknown_is_404(client):
    resp = client.get("/customer/info?end_user_id=ghost", headers=MASTER)
    assert_error(resp, 404, param="end_user_id")


def test_customer_info_without_id_is_400(client):
    assert_error(client.get("/customer/info", headers=MASTER), 400, param="end_user_id")


def test_customer_info_applies_a_due_reset_of_its_budget_period(client):
    new_customer(client, user_id="c1", max_budget=1, budget_duration="30s")
    Customer.update(spend=0.9, budget_reset_at=time.time() - 1).where(
        Customer.user_id == "c1"
    ).execute()
    assert info(client, "c1")["spend"] == 0.0


def test_customer_info_resets_on_the_default_budget_period(make_app, db_url):
    client = make_app(
        base_config(db_url, litellm_settings={"max_end_user_budget_id": "default-tier"})
    ).test_client()
    new_tier(client, "default-tier", max_budget=1, budget_duration="1h")
    new_customer(client, user_id="c1")
    Customer.update(spend=0.5, budget_reset_at=time.time() - 1).where(
        Customer.user_id == "c1"
    ).execute()
    body = info(client, "c1")
    assert body["spend"] == 0.0
    assert body["litellm_budget_table"] is None  # it follows the default, has none of its own


# --- /customer/update --------------------------------------------------------


def test_update_alias_region_and_blocked(client):
    new_customer(client, user_id="c1")
    body = {"user_id": "c1", "alias": "Acme", "allowed_model_region": "us", "blocked": True}
    answer = post(client, "/customer/update", body).get_json()
    assert (answer["alias"], answer["allowed_model_region"], answer["blocked"]) == (
        "Acme",
        "us",
        True,
    )
    assert Customer.get_by_id("c1").blocked is True


def test_update_own_budget_values_in_place(client):
    own_id = new_customer(client, user_id="c1", max_budget=1, rpm_limit=2)["litellm_budget_table"][
        "budget_id"
    ]
    answer = post(client, "/customer/update", {"user_id": "c1", "max_budget": "7.5"}).get_json()
    table = answer["litellm_budget_table"]
    assert (table["budget_id"], table["max_budget"], table["rpm_limit"]) == (own_id, 7.5, 2)
    assert Budget.select().count() == 1


def test_update_from_tier_to_own_budget_leaves_the_tier_alone(client):
    new_tier(client, "tier", max_budget=4, rpm_limit=9)
    new_customer(client, user_id="c1", budget_id="tier")
    answer = post(client, "/customer/update", {"user_id": "c1", "max_budget": 10}).get_json()
    table = answer["litellm_budget_table"]
    assert table["budget_id"] != "tier"
    assert (table["max_budget"], table["rpm_limit"]) == (10.0, None)
    assert Budget.get_by_id("tier").max_budget == 4.0


def test_update_from_own_budget_to_tier_drops_the_own_budget(client):
    new_tier(client, "tier", max_budget=4)
    own_id = new_customer(client, user_id="c1", max_budget=1)["litellm_budget_table"]["budget_id"]
    answer = post(client, "/customer/update", {"user_id": "c1", "budget_id": "tier"}).get_json()
    assert answer["litellm_budget_table"]["budget_id"] == "tier"
    assert Budget.get_or_none(Budget.budget_id == own_id) is None


def test_update_budget_id_null_detaches(client):
    own_id = new_customer(client, user_id="c1", max_budget=1)["litellm_budget_table"]["budget_id"]
    answer = post(client, "/customer/update", {"user_id": "c1", "budget_id": None}).get_json()
    assert answer["litellm_budget_table"] is None
    assert Customer.get_by_id("c1").budget_id is None
    assert Budget.get_or_none(Budget.budget_id == own_id) is None


def test_update_to_a_tier_with_a_period_schedules_the_reset(client):
    new_tier(client, "monthly", max_budget=4, budget_duration="1mo")
    new_customer(client, user_id="c1")
    post(client, "/customer/update", {"user_id": "c1", "budget_id": "monthly"})
    assert Customer.get_by_id("c1").budget_reset_at > time.time() + 27 * 86400


def test_update_with_only_null_budget_values_makes_no_own_budget(client):
    new_customer(client, user_id="c1")
    answer = post(client, "/customer/update", {"user_id": "c1", "max_budget": None}).get_json()
    assert answer["litellm_budget_table"] is None
    assert Budget.select().count() == 0


def test_moving_to_the_default_budget_keeps_spend_and_schedules_from_creation(make_app, db_url):
    config = base_config(db_url, litellm_settings={"max_end_user_budget_id": "default-tier"})
    client = make_app(config).test_client()
    new_tier(client, "default-tier", max_budget=1, budget_duration="1h")
    new_tier(client, "tier", max_budget=4)
    new_customer(client, user_id="c1", budget_id="tier")
    created = time.time() - 10.5 * 3600
    Customer.update(spend=0.5, created_at=created).where(Customer.user_id == "c1").execute()
    answer = post(client, "/customer/update", {"user_id": "c1", "budget_id": None}).get_json()
    assert answer["spend"] == 0.5
    assert Customer.get_by_id("c1").budget_reset_at == pytest.approx(created + 11 * 3600)


def test_update_with_budget_id_and_own_values_is_400(client):
    new_tier(client, "tier", max_budget=4)
    new_customer(client, user_id="c1")
    body = {"user_id": "c1", "budget_id": "tier", "rpm_limit": 3}
    assert_error(post(client, "/customer/update", body), 400, param="budget_id")
    assert Customer.get_by_id("c1").budget_id is None


def test_update_unknown_customer_is_404(client):
    assert_error(post(client, "/customer/update", {"user_id": "ghost", "alias": "x"}), 404)


def test_update_to_an_unknown_budget_is_400(client):
    new_customer(client, user_id="c1")
    resp = post(client, "/customer/update", {"user_id": "c1", "budget_id": "nope"})
    assert_error(resp, 400, param="budget_id")


def test_update_rejects_wrong_values(client):
    new_customer(client, user_id="c1", max_budget=1)
    resp = post(client, "/customer/update", {"user_id": "c1", "max_budget": "lots"})
    assert_error(resp, 400, param="max_budget")


# --- /customer/delete, block, unblock, list -----------------------------------


def test_delete_removes_customers_and_their_own_budgets_only(client):
    new_tier(client, "tier", max_budget=4)
    new_customer(client, user_id="c1", max_budget=1)
    new_customer(client, user_id="c2", budget_id="tier")
    new_customer(client, user_id="c3")
    resp = post(client, "/customer/delete", {"user_ids": ["c1", "c2"]})
    assert resp.status_code == 200
    assert resp.get_json() == {"deleted_customers": ["c1", "c2"]}
    assert [c.user_id for c in Customer.select()] == ["c3"]
    assert [b.budget_id for b in Budget.select()] == ["tier"]


def test_delete_with_an_unknown_id_deletes_nothing(client):
    new_customer(client, user_id="c1")
    error = assert_error(post(client, "/customer/delete", {"user_ids": ["c1", "ghost"]}), 404)
    assert "ghost" in error["message"]
    assert Customer.select().count() == 1


def test_blocked_customer_gets_403_and_unblock_lifts_it(client):
    new_customer(client, user_id="c1")
    assert post(client, "/customer/block", {"user_ids": ["c1"]}).get_json() == {
        "blocked_users": ["c1"]
    }
    error = assert_error(chat(client, "c1"), 403)
    assert error["message"] == "User blocked from making LLM API Calls. User=c1"
    assert post(client, "/customer/unblock", {"user_ids": ["c1"]}).get_json() == {
        "unblocked_users": ["c1"]
    }
    assert chat(client, "c1").status_code == 200


def test_block_an_end_user_before_its_first_call(client):
    assert post(client, "/customer/block", {"user_ids": ["abuser"]}).status_code == 200
    assert Customer.get_by_id("abuser").blocked is True
    assert_error(chat(client, "abuser"), 403)


def test_unblock_unknown_customer_is_404(client):
    assert_error(post(client, "/customer/unblock", {"user_ids": ["ghost"]}), 404)


@pytest.mark.parametrize("ids", [[], "c1", [None], None])
def test_block_needs_a_list_of_ids(client, ids):
    assert_error(post(client, "/customer/block", {"user_ids": ids}), 400, param="user_ids")


def test_customer_list(client):
    new_tier(client, "tier", max_budget=4)
    new_customer(client, user_id="c1", budget_id="tier")
    new_customer(client, user_id="c2")
    body = client.get("/customer/list", headers=MASTER).get_json()
    assert [c["user_id"] for c in body] == ["c1", "c2"]
    assert body[0]["litellm_budget_table"]["budget_id"] == "tier"
    assert all(list(c) == INFO_FIELDS for c in body)


def test_end_user_routes_are_aliases(client):
    assert post(client, "/end_user/new", {"user_id": "c1"}).status_code == 200
    resp = client.get("/end_user/info?end_user_id=c1", headers=MASTER)
    assert resp.get_json()["user_id"] == "c1"
