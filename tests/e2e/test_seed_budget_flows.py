"""The seeds' budget flows, end to end: real gunicorn on PostgreSQL, the admin API
driven with the seeds' own curl bodies, LLM calls made with the OpenAI SDK.

The built-in mock models are priced high (``input_cost_per_token`` /
``output_cost_per_token``) so that a budget is reached in a few calls; the
mock answers with 11 tokens.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import requests

from tests.support.databases import truncate_pg_tables
from tests.support.proxy_server import ProxyServer

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

MASTER_KEY = "sk-1234"


def mock_model(name: str, upstream: str, inp: float, out: float, groups: list[str]) -> dict:
    return {
        "model_name": name,
        "litellm_params": {
            "model": f"mock/{upstream}",
            "input_cost_per_token": inp,
            "output_cost_per_token": out,
        },
        "model_info": {"access_groups": groups},
    }


SEED_MODELS = [
    # "what time is it" (7 tokens) + 11 answer tokens: 0.00029 a call, over 0.0001 at once.
    mock_model("azure-gpt-3.5", "gpt-3.5-turbo", 0.00001, 0.00002, ["azure-models"]),
    mock_model("mistral", "mistral-small", 0.000002, 0.000006, []),
    # The tier flow's system + user prompt (15 tokens): 0.15 + 1.1 = 1.25 a call.
    mock_model("gpt-3.5-turbo", "gpt-3.5-turbo", 0.01, 0.1, []),
]


def seed_config(database_url: str, **litellm_settings: Any) -> dict[str, Any]:
    return {
        "model_list": SEED_MODELS,
        "general_settings": {"master_key": MASTER_KEY, "database_url": database_url},
        "litellm_settings": litellm_settings,
    }


@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyServer]:
    # budgets.md, "For 'user' passed to /chat/completions".
    config = seed_config(database_url, max_budget=10, max_user_budget=0.0001)
    with ProxyServer(config, tmp_path_factory.mktemp("seed-budgets"), workers=2, threads=4) as p:
        yield p


def curl(proxy: ProxyServer, path: str, data: str, key: str = MASTER_KEY) -> requests.Response:
    """A seed's curl: the body text exactly as written (comments, trailing commas)."""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    return requests.post(proxy.url + path, data=data.encode(), headers=headers, timeout=30)


def ok(resp: requests.Response) -> dict[str, Any]:
    assert resp.status_code == 200, resp.text
    return resp.json()


def sdk(proxy: ProxyServer, key: str = MASTER_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.url, api_key=key, max_retries=0)


def refused(call: Any) -> str:
    """The message of the 401 that ``call`` raises through the OpenAI SDK."""
    with pytest.raises(openai.AuthenticationError) as caught:
        call()
    error = caught.value.response.json()["error"]
    assert caught.value.status_code == 401 and error["type"] == "auth_error"
    return str(error["message"])


def customer_spend(proxy: ProxyServer, customer: str) -> float:
    resp = requests.get(
        f"{proxy.url}/customer/info",
        params={"end_user_id": customer},
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
        timeout=30,
    )
    return float(ok(resp)["spend"])


ISHAAN3_CALL = """ {
        "model": "azure-gpt-3.5",
        "user": "ishaan3",
        "messages": [
            {
            "role": "user",
            "content": "what time is it"
            }
        ]
        }"""


def test_customer_over_max_user_budget_gets_the_seeds_error_on_the_second_call(proxy) -> None:
    key = ok(curl(proxy, "/key/generate", "{}"))["key"]
    assert curl(proxy, "/chat/completions", ISHAAN3_CALL, key=key).status_code == 200
    second = curl(proxy, "/chat/completions", ISHAAN3_CALL, key=key)
    spend = customer_spend(proxy, "ishaan3")
    assert second.status_code == 401
    assert second.json() == {
        "error": {
            "message": "Authentication Error, ExceededBudget: User ishaan3 has exceeded their "
            f"budget. Current spend: {spend!r}; Max Budget: 0.0001",
            "type": "auth_error",
            "param": "None",
            "code": "401",
        }
    }
    message = refused(
        lambda: sdk(proxy, key).chat.completions.create(
            model="azure-gpt-3.5",
            user="ishaan3",
            messages=[{"role": "user", "content": "what time is it"}],
        )
    )
    assert message == second.json()["error"]["message"]


def test_customer_created_with_max_budget_zero_is_refused(proxy) -> None:
    ok(
        curl(
            proxy,
            "/customer/new",
            """{
        "user_id" : "my-customer-id",
        "max_budget": "0", # 👈 CAN BE FLOAT
    }""",
        )
    )
    message = refused(
        lambda: sdk(proxy).chat.completions.create(
            model="mistral",
            messages=[{"role": "user", "content": "What's the weather like in Boston today?"}],
            user="my-customer-id",
        )
    )
    assert message == (
        "Authentication Error, ExceededBudget: User my-customer-id has exceeded their budget. "
        "Current spend: 0.0; Max Budget: 0.0"
    )


def test_customer_on_my_free_tier_is_refused_once_spend_reaches_4_dollars(proxy) -> None:
    ok(curl(proxy, "/budget/new", '{\n    "budget_id": "my-free-tier", \n    "max_budget": 4 \n}'))
    ok(
        curl(
            proxy,
            "/customer/new",
            """{
    "user_id": "my-customer-id",
    "budget_id": "my-free-tier" # 👈 KEY CHANGE
}""",
        )
    )
    client = sdk(proxy)

    def create() -> Any:
        return client.chat.completions.create(
            model="gpt-3.5-turbo",
            messages=[
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "Hello!"},
            ],
            user="my-customer-id",
        )

    spends = []
    for _ in range(10):
        spend = customer_spend(proxy, "my-customer-id")
        if spend >= 4:
            break
        spends.append(spend)
        assert create().choices[0].message.content
    assert spends == pytest.approx([0.0, 1.25, 2.5, 3.75])  # 4 calls: spend 5.0 >= 4
    assert refused(create) == (
        "Authentication Error, ExceededBudget: User my-customer-id has exceeded their budget. "
        f"Current spend: {spend!r}; Max Budget: 4.0"
    )


def test_key_over_max_budget_gets_exceeded_token_budget(proxy) -> None:
    key = ok(curl(proxy, "/key/generate", '{"max_budget": 2e-07}'))["key"]
    client = sdk(proxy, key)
    messages = [{"role": "user", "content": "respond in 50 lines"}]
    client.chat.completions.create(model="azure-gpt-3.5", messages=messages)
    info = requests.get(
        f"{proxy.url}/key/info",
        params={"key": key},
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
        timeout=30,
    ).json()
    spend = info["info"]["spend"]
    assert refused(
        lambda: client.chat.completions.create(model="azure-gpt-3.5", messages=messages)
    ) == (
        "Authentication Error, ExceededTokenBudget: "
        f"Current spend for token: {spend!r}; Max Budget for Token: 2e-07"
    )


def test_user_budget_covers_all_its_keys(proxy) -> None:
    first = ok(
        curl(
            proxy,
            "/user/new",
            '{"models": ["azure-models"], "max_budget": 0, "user_id": "krrish3@berri.ai"}',
        )
    )["key"]
    second = ok(
        curl(
            proxy,
            "/key/generate",
            '{"models": ["azure-models"], "user_id": "krrish3@berri.ai"}',
        )
    )["key"]
    expected = (
        "Authentication Error, ExceededBudget: User krrish3@berri.ai has exceeded their budget. "
        "Current spend: 0.0; Max Budget: 0.0"
    )
    for key in (first, second):
        assert (
            refused(
                lambda key=key: sdk(proxy, key).chat.completions.create(
                    model="azure-gpt-3.5", messages=[{"role": "user", "content": "hi"}]
                )
            )
            == expected
        )


def test_customer_without_budget_is_held_to_the_default_budget(
    proxy: ProxyServer, database_url: str, tmp_path: Path
) -> None:
    # Step 1: create the default budget (its id is generated).
    budget_id = ok(
        curl(
            proxy,
            "/budget/new",
            '{\n    "max_budget": 10,\n    "rpm_limit": 2,\n    "tpm_limit": 1000\n}',
        )
    )["budget_id"]
    # Step 2: name it in config.yaml (and restart). Prices make one call cost $16.
    config = seed_config(database_url, max_end_user_budget_id=budget_id)
    config["model_list"] = [mock_model("gpt-3.5-turbo", "gpt-3.5-turbo", 1.0, 1.0, [])]
    with ProxyServer(config, tmp_path, workers=1, threads=4, name="default-budget") as restarted:
        ok(curl(restarted, "/customer/new", '{"user_id": "explicit", "max_budget": 100}'))
        client = sdk(restarted)

        def create(user: str) -> Any:
            return client.chat.completions.create(
                model="gpt-3.5-turbo", messages=[{"role": "user", "content": "Hello"}], user=user
            )

        # Step 3: the customer pays its first call, then is over the $10 default.
        create("my-customer-id")
        spend = customer_spend(restarted, "my-customer-id")
        assert spend == 16.0
        assert refused(lambda: create("my-customer-id")) == (
            "Authentication Error, ExceededBudget: User my-customer-id has exceeded their "
            "budget. Current spend: 16.0; Max Budget: 10.0"
        )
        # A customer with an explicit budget is unaffected by the default.
        create("explicit")
        create("explicit")
        assert customer_spend(restarted, "explicit") == 32.0


def test_proxy_max_budget_zero_refuses_everything(database_url: str, tmp_path: Path) -> None:
    truncate_pg_tables(database_url)
    config = seed_config(database_url, max_budget=0, budget_duration="30d")
    with ProxyServer(config, tmp_path, workers=1, threads=4, name="zero-budget") as proxy:
        expected = (
            "Authentication Error, ExceededBudget: Proxy has exceeded its budget. "
            "Current spend: 0.0; Max Budget: 0.0"
        )
        key = ok(curl(proxy, "/key/generate", "{}"))["key"]
        for api_key in (MASTER_KEY, key):
            message = refused(
                lambda api_key=api_key: sdk(proxy, api_key).chat.completions.create(
                    model="gpt-3.5-turbo",
                    messages=[{"role": "user", "content": "what llm are you"}],
                )
            )
            assert message == expected
        resp = requests.post(
            f"{proxy.url}/chat/completions",
            json={"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "x"}]},
            headers={"Authorization": f"Bearer {MASTER_KEY}"},
            timeout=30,
        )
        assert resp.status_code == 401 and resp.json()["error"]["message"] == expected
