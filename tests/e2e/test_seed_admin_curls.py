"""Every admin curl of the seed documents, replayed against real gunicorn on PostgreSQL.

Bodies are the seeds' own text, ``# 👈`` comments, trailing commas and the
unquoted ``10s`` included. Each test is one section of a seed, on emptied
tables, because the seeds reuse ids across sections.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.support.proxy_server import ProxyServer
from tests.support.seeds import CUSTOMER_CURL_BODY, USER_NEW_ACCESS_GROUP_BODY

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

MASTER_KEY = "sk-1234"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
CUSTOMER_INFO_FIELDS = [
    "user_id", "blocked", "alias", "spend", "allowed_model_region", "default_model",
    "litellm_budget_table",
]  # fmt: skip


@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyServer]:
    config = {"general_settings": {"master_key": MASTER_KEY, "database_url": database_url}}
    with ProxyServer(config, tmp_path_factory.mktemp("seed-admin"), workers=2, threads=4) as proxy:
        yield proxy


def curl(proxy: ProxyServer, method: str, path: str, data: str | None = None) -> Any:
    """What the seed's curl sends: the master key and the body text as written."""
    headers = {"Authorization": f"Bearer {MASTER_KEY}", "Content-Type": "application/json"}
    body = data.encode("utf-8") if data is not None else None
    resp = requests.request(method, proxy.url + path, data=body, headers=headers, timeout=30)
    assert resp.status_code < 500, resp.text
    return resp


def ok(resp: Any) -> dict[str, Any]:
    assert resp.status_code == 200, resp.text
    return resp.json()


# --- customers.md: tracking customer spend ---------------------------------


def test_customer_spend_is_tracked_and_shown_by_customer_info(proxy):
    ok(curl(proxy, "POST", "/chat/completions", CUSTOMER_CURL_BODY))
    answer = ok(curl(proxy, "GET", "/customer/info?end_user_id=ishaan3"))
    assert list(answer) == CUSTOMER_INFO_FIELDS
    assert answer["user_id"] == "ishaan3"
    assert answer["blocked"] is False
    assert answer["alias"] is None
    assert isinstance(answer["spend"], float) and answer["spend"] > 0
    assert answer["allowed_model_region"] is None
    assert answer["default_model"] is None
    assert answer["litellm_budget_table"] is None


# --- customers.md: default budget for all customers -------------------------


def test_create_default_budget(proxy):
    body = """{
    "max_budget": 10,
    "rpm_limit": 2,
    "tpm_limit": 1000
}"""
    answer = ok(curl(proxy, "POST", "/budget/new", body))
    assert answer["budget_id"]
    assert (answer["max_budget"], answer["rpm_limit"], answer["tpm_limit"]) == (10, 2, 1000)
    listed = ok(curl(proxy, "POST", "/budget/info", f'{{"budgets": ["{answer["budget_id"]}"]}}'))
    assert listed == [answer]


# --- customers.md: quick start, customer with a budget ----------------------


def test_create_customer_with_budget(proxy):
    body = """{
        "user_id" : "my-customer-id",
        "max_budget": "0", # 👈 CAN BE FLOAT
    }"""
    answer = ok(curl(proxy, "POST", "/customer/new", body))
    assert answer["user_id"] == "my-customer-id"
    assert answer["litellm_budget_table"]["max_budget"] == 0
    info = ok(curl(proxy, "GET", "/customer/info?end_user_id=my-customer-id"))
    assert list(info) == CUSTOMER_INFO_FIELDS
    assert info["litellm_budget_table"]["max_budget"] == 0


# --- customers.md: assign pricing tiers -------------------------------------


def test_pricing_tier_budget_and_assignment(proxy):
    budget = """{
    "budget_id": "my-free-tier",
    "max_budget": 4
}
"""
    answer = ok(curl(proxy, "POST", "/budget/new", budget))
    assert (answer["budget_id"], answer["max_budget"]) == ("my-free-tier", 4)
    assign = """{
    "user_id": "my-customer-id",
    "budget_id": "my-free-tier" # 👈 KEY CHANGE
}
"""
    customer = ok(curl(proxy, "POST", "/customer/new", assign))
    assert customer["user_id"] == "my-customer-id"
    assert customer["litellm_budget_table"]["budget_id"] == "my-free-tier"
    assert customer["litellm_budget_table"]["max_budget"] == 4
    # The seed's "Test it!" tab repeats the same curl: the customer now exists.
    again = curl(proxy, "POST", "/customer/new", assign)
    assert again.status_code == 409
    assert "my-customer-id" in again.json()["error"]["message"]


# --- users.md: budgets for users ---------------------------------------------


def test_add_budget_to_user_then_key_for_existing_user(proxy):
    body = '{"models": ["azure-models"], "max_budget": 0, "user_id": "krrish3@berri.ai"}'
    resp = curl(proxy, "POST", "/user/new", body)
    answer = ok(resp)
    assert answer["key"].startswith("sk-")
    assert "expires" in answer
    assert answer["user_id"] == "krrish3@berri.ai"
    assert re.search(r'"max_budget":\s*0\.0[,}]', resp.text)  # a float, as the seed shows
    body = '{"models": ["azure-models"], "user_id": "krrish3@berri.ai"}'
    key = ok(curl(proxy, "POST", "/key/generate", body))
    assert key["user_id"] == "krrish3@berri.ai"
    assert key["models"] == ["azure-models"]
    info = ok(curl(proxy, "GET", "/user/info?user_id=krrish3@berri.ai"))
    assert {k["token"] for k in info["keys"]} == {answer["token"], key["token"]}


def test_add_budget_duration_to_user(proxy):
    body = """{
  "team_id": "core-infra", # [OPTIONAL]
  "max_budget": 10,
  "budget_duration": 10s,
}"""
    answer = ok(curl(proxy, "POST", "/user/new", body))
    assert answer["key"].startswith("sk-")
    assert UUID.match(answer["user_id"])
    assert (answer["team_id"], answer["max_budget"], answer["budget_duration"]) == (
        "core-infra", 10, "10s",
    )  # fmt: skip
    assert answer["budget_reset_at"].endswith("Z")


# --- users.md: budgets for keys ----------------------------------------------


def test_add_budgets_to_keys(proxy):
    body = """{
  "team_id": "core-infra", # [OPTIONAL]
  "max_budget": 10,
}"""
    answer = ok(curl(proxy, "POST", "/key/generate", body))
    assert answer["key"].startswith("sk-")
    assert (answer["team_id"], answer["max_budget"]) == ("core-infra", 10)
    info = ok(curl(proxy, "GET", f"/key/info?key={answer['key']}"))
    assert info["key"] == answer["token"]
    assert info["info"]["max_budget"] == 10


def test_add_budget_duration_to_keys(proxy):
    body = """{
  "team_id": "core-infra", # [OPTIONAL]
  "max_budget": 10,
  "budget_duration": 10s,
}"""
    answer = ok(curl(proxy, "POST", "/key/generate", body))
    assert (answer["budget_duration"], answer["max_budget"]) == ("10s", 10)
    assert answer["budget_reset_at"].endswith("Z")


# --- users.md: rate limits ----------------------------------------------------


def assert_new_key_with_the_seeds_limits(answer: dict[str, Any]) -> None:
    """A new key (with its expiry field) that has the rate limits of users.md."""
    assert answer["key"].startswith("sk-")
    assert "expires" in answer
    limits = (answer["max_parallel_requests"], answer["tpm_limit"], answer["rpm_limit"])
    assert limits == (10, 20, 4)


def test_rate_limits_per_user(proxy):
    body = (
        '{"user_id": "krrish@berri.ai", "max_parallel_requests": 10, "tpm_limit": 20, '
        '"rpm_limit": 4}'
    )
    answer = ok(curl(proxy, "POST", "/user/new", body))
    assert_new_key_with_the_seeds_limits(answer)
    assert answer["user_id"] == "krrish@berri.ai"


def test_rate_limits_per_key(proxy):
    body = '{"max_parallel_requests": 10, "tpm_limit": 20, "rpm_limit": 4}'
    answer = ok(curl(proxy, "POST", "/key/generate", body))
    assert_new_key_with_the_seeds_limits(answer)
    assert UUID.match(answer["user_id"])  # 👈 auto-generated


# --- users.md: model access groups and keys for existing users ----------------


def test_user_with_model_access_group(proxy):
    answer = ok(curl(proxy, "POST", "/user/new", USER_NEW_ACCESS_GROUP_BODY))
    assert (answer["models"], answer["max_budget"]) == (["beta-models"], 0)


def test_create_new_keys_for_existing_user(proxy):
    ok(curl(proxy, "POST", "/user/new", '{"user_id": "krrish@berri.ai"}'))
    body = '{"models": ["azure-models"], "user_id": "krrish@berri.ai"}'
    answer = ok(curl(proxy, "POST", "/key/generate", body))
    assert answer["user_id"] == "krrish@berri.ai"
    listed = ok(curl(proxy, "GET", "/key/list?user_id=krrish@berri.ai"))
    assert answer["token"] in listed["keys"] and listed["total_count"] == 2


def test_no_admin_route_answers_a_virtual_key(proxy):
    plain = ok(curl(proxy, "POST", "/key/generate", "{}"))["key"]
    resp = requests.get(
        proxy.url + "/customer/info?end_user_id=ishaan3",
        headers={"Authorization": f"Bearer {plain}"},
        timeout=30,
    )
    assert resp.status_code == 403
    assert resp.json()["error"]["type"] == "auth_error"
