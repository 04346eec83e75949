"""Model access: key and user model lists, access groups, wildcards, /models, /model/info.

Rules are checked twice: on the access functions against a model table built
from a config, and through the HTTP routes on both databases (rows made with
the Peewee models, as the admin API would).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from proxy.call.access import allowed_model_names, model_allowed, refusing_list
from proxy.call.auth import generate_key, hash_key
from proxy.config import build_config
from proxy.storage.db import database
from proxy.storage.models import Key, SpendLog, User
from proxy.upstream.deployments import ModelTable, redact_url
from tests.conftest import MASTER, base_config, openai_model
from tests.support.mock_openai import MockOpenAI
from tests.support.seeds import azure_embedding_seed_model

UPSTREAM_SECRET = "sk-upstream-SECRET-123"


def _mock(name: str, groups: list[str] | None = None) -> dict[str, Any]:
    return {
        "model_name": name,
        "litellm_params": {
            "model": f"mock/{name}",
            "input_cost_per_token": 0.000001,
            "output_cost_per_token": 0.000002,
        },
        "model_info": {"access_groups": groups or []},
    }


def _table(*entries: dict[str, Any]) -> ModelTable:
    return ModelTable(build_config({"model_list": list(entries)}))


TABLE = _table(
    _mock("gpt-4o", ["beta-models", "gpt"]),
    _mock("mistral", ["beta-models"]),
    _mock("openai/gpt-4o-mini"),
    _mock("openai/o1"),
    _mock("openai-like/x"),
    _mock("claude"),
)


# --- the rules, on the access functions -------------------------------------


@pytest.mark.parametrize("models", [None, [], ()])
def test_empty_list_allows_every_model(models: Any) -> None:
    assert allowed_model_names(models, None, TABLE) == TABLE.names()


def test_model_name_allows_only_that_model() -> None:
    assert allowed_model_names(["claude"], None, TABLE) == ["claude"]


def test_access_group_allows_every_model_in_the_group() -> None:
    assert allowed_model_names(["beta-models"], None, TABLE) == ["gpt-4o", "mistral"]


def test_wildcard_matches_the_public_name_prefix_only() -> None:
    assert allowed_model_names(["openai/*"], None, TABLE) == ["openai/gpt-4o-mini", "openai/o1"]


def test_wildcard_treats_other_glob_characters_literally() -> None:
    table = _table(_mock("team[a]/m"), _mock("teama/m"), _mock("team?/m"))
    assert allowed_model_names(["team[a]/*"], None, table) == ["team[a]/m"]
    assert allowed_model_names(["team?/*"], None, table) == ["team?/m"]


def test_all_proxy_models_allows_every_model() -> None:
    assert allowed_model_names(["all-proxy-models"], None, TABLE) == TABLE.names()


def test_unknown_group_or_model_in_list_allows_nothing_else() -> None:
    assert allowed_model_names(["no-such-group"], None, TABLE) == []


def test_key_list_narrows_user_list() -> None:
    assert allowed_model_names(["gpt-4o", "claude"], ["beta-models"], TABLE) == ["gpt-4o"]


def test_key_list_never_widens_user_list() -> None:
    assert allowed_model_names(["all-proxy-models"], ["beta-models"], TABLE) == [
        "gpt-4o",
        "mistral",
    ]
    assert not model_allowed("claude", ["claude"], ["beta-models"], TABLE)


def test_empty_key_list_inherits_user_list() -> None:
    assert allowed_model_names([], ["openai/*"], TABLE) == ["openai/gpt-4o-mini", "openai/o1"]


def test_list_with_nothing_usable_fails_closed() -> None:
    garbage: list[Any] = [None, 3, ""]
    assert allowed_model_names(garbage, None, TABLE) == []


def test_a_bare_string_is_one_entry() -> None:
    assert allowed_model_names("beta-models", None, TABLE) == ["gpt-4o", "mistral"]


def test_refusing_list_names_the_list_that_refused() -> None:
    assert refusing_list("claude", ["claude"], ["beta-models"], TABLE) == ["beta-models"]
    assert refusing_list("claude", ["gpt-4o"], ["beta-models"], TABLE) == ["gpt-4o"]
    assert refusing_list("gpt-4o", ["gpt-4o"], ["beta-models"], TABLE) is None


def test_groups_count_from_every_entry_sharing_a_model_name() -> None:
    table = _table(_mock("gpt-4o"), _mock("gpt-4o", ["late-group"]))
    assert allowed_model_names(["late-group"], None, table) == ["gpt-4o"]
    assert len(table.deployments) == 2


# --- public info and pricing of Azure deployments ---------------------------


def test_public_info_has_no_api_key_and_masks_credentials_in_api_base() -> None:
    table = _table(
        {
            "model_name": "m",
            "litellm_params": {
                "model": "openai/m",
                "api_key": UPSTREAM_SECRET,
                "api_base": f"https://user:{UPSTREAM_SECRET}@llm.example/v1?token={UPSTREAM_SECRET}",
            },
        }
    )
    info = table.deployments[0].public_info()
    assert UPSTREAM_SECRET not in repr(info)
    assert info["litellm_params"]["api_base"] == "https://***@llm.example/v1?token=***"


def test_redact_url_keeps_a_plain_url() -> None:
    assert redact_url("http://127.0.0.1:8080/v1") == "http://127.0.0.1:8080/v1"
    assert redact_url(None) is None


ADA_002_PER_TOKEN = 0.10e-6  # published: $0.10 per million tokens


def _azure(name: str, deployment: str, **model_info: Any) -> dict[str, Any]:
    return {
        "model_name": name,
        "litellm_params": {"model": f"azure/{deployment}", "api_base": "http://azure.test"},
        "model_info": model_info,
    }


def test_azure_deployment_is_priced_by_its_public_model_name() -> None:
    dep = _table(_azure("text-embedding-ada-002", "azure-embedding-model")).deployments[0]
    expected = ADA_002_PER_TOKEN
    assert dep.price.known
    assert dep.price.input_cost_per_token == expected > 0


def test_azure_base_model_wins_over_the_deployment_name() -> None:
    dep = _table(_azure("emb", "gpt-4o", base_model="text-embedding-3-large")).deployments[0]
    expected = 0.13e-6  # published: $0.13 per million tokens
    assert dep.price.input_cost_per_token == expected


# --- through the routes, on SQLite and Postgres -----------------------------


def _make_key(models: list[str], user_models: list[str] | None = None, **user: Any) -> str:
    """A virtual key (and, with ``user_models``, its user); returns the plain key."""
    plain = generate_key()
    with database.connection_context():
        user_id = None
        if user_models is not None:
            user_id = f"user-{plain[-8:]}"
            User.create(user_id=user_id, models=user_models, **user)
        Key.create(token=hash_key(plain), key_name="sk-...test", user_id=user_id, models=models)
    return plain


def _auth(plain: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {plain}"}


def _chat(app: Flask, plain: str, model: str, path: str = "/chat/completions") -> Any:
    return app.test_client().post(
        path,
        headers=_auth(plain),
        json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
    )


def _embed(app: Flask, plain: str, model: str, text: str = "hello embeddings") -> Any:
    return app.test_client().post(
        "/embeddings", headers=_auth(plain), json={"model": model, "input": text}
    )


def _seed_config(db_url: str, extra: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    models = [
        _mock("gpt-3.5-turbo"),
        _mock("text-embedding-ada-002", ["beta-models"]),
        *(extra or []),
    ]
    return base_config(db_url, model_list=models)


def test_user_in_access_group_calls_group_models_and_no_other(
    db_url: str,
    make_app: Callable[..., Flask],
) -> None:
    app = make_app(_seed_config(db_url))
    plain = _make_key([], ["beta-models"])
    assert _embed(app, plain, "text-embedding-ada-002").status_code == 200
    refused = _chat(app, plain, "gpt-3.5-turbo")
    assert refused.status_code == 401
    error = refused.get_json()["error"]
    assert "key not allowed to access model" in error["message"]
    assert "gpt-3.5-turbo" in error["message"]
    assert "beta-models" in error["message"]
    assert error["type"] == "auth_error"


def test_model_added_to_group_after_restart_is_allowed(
    db_url: str, make_app: Callable[..., Flask]
) -> None:
    first = make_app(_seed_config(db_url))
    plain = _make_key([], ["beta-models"])
    assert _chat(first, plain, "mistral").status_code == 400  # not configured yet
    restarted = make_app(_seed_config(db_url, extra=[_mock("mistral", ["beta-models"])]))
    assert _chat(restarted, plain, "mistral").status_code == 200
    assert _chat(restarted, plain, "gpt-3.5-turbo").status_code == 401


def test_model_removed_from_group_after_restart_is_refused(
    db_url: str, make_app: Callable[..., Flask]
) -> None:
    make_app(_seed_config(db_url, extra=[_mock("mistral", ["beta-models"])]))
    plain = _make_key([], ["beta-models"])
    restarted = make_app(_seed_config(db_url, extra=[_mock("mistral")]))
    assert _chat(restarted, plain, "mistral").status_code == 401


def test_key_models_narrow_user_models_through_the_route(
    db_url: str, make_app: Callable[..., Flask]
) -> None:
    app = make_app(_seed_config(db_url, extra=[_mock("mistral", ["beta-models"])]))
    plain = _make_key(["mistral", "gpt-3.5-turbo"], ["beta-models"])
    assert _chat(app, plain, "mistral").status_code == 200
    assert _embed(app, plain, "text-embedding-ada-002").status_code == 401
    widened = _chat(app, plain, "gpt-3.5-turbo")
    assert widened.status_code == 401
    # The message shows the user's list, the one that refused.
    assert "['beta-models']" in widened.get_json()["error"]["message"]


def test_azure_deployment_route_checks_access(db_url: str, make_app: Callable[..., Flask]) -> None:
    app = make_app(_seed_config(db_url))
    plain = _make_key(["text-embedding-ada-002"])
    resp = _chat(app, plain, "ignored", path="/openai/deployments/gpt-3.5-turbo/chat/completions")
    assert resp.status_code == 401
    assert "gpt-3.5-turbo" in resp.get_json()["error"]["message"]


@pytest.mark.parametrize("path", ["/models", "/v1/models"])
def test_models_lists_only_what_the_caller_may_use(
    db_url: str, make_app: Callable[..., Flask], path: str
) -> None:
    app = make_app(_seed_config(db_url, extra=[_mock("mistral", ["beta-models"])]))
    client = app.test_client()
    plain = _make_key([], ["beta-models"])
    listed = client.get(path, headers=_auth(plain)).get_json()
    assert listed["object"] == "list"
    assert [m["id"] for m in listed["data"]] == ["text-embedding-ada-002", "mistral"]
    for item in listed["data"]:
        assert item["object"] == "model"
        assert isinstance(item["created"], int)
        assert isinstance(item["owned_by"], str)
    everything = client.get(path, headers=MASTER).get_json()
    assert [m["id"] for m in everything["data"]] == [
        "gpt-3.5-turbo",
        "text-embedding-ada-002",
        "mistral",
    ]


def test_models_without_a_key_is_401(db_url: str, make_app: Callable[..., Flask]) -> None:
    resp = make_app(_seed_config(db_url)).test_client().get("/v1/models")
    assert resp.status_code == 401
    assert resp.get_json()["error"]["type"] == "auth_error"


def test_retrieving_a_model_outside_the_list_is_404(
    db_url: str, make_app: Callable[..., Flask]
) -> None:
    client = make_app(_seed_config(db_url)).test_client()
    plain = _make_key([], ["beta-models"])
    ok = client.get("/v1/models/text-embedding-ada-002", headers=_auth(plain))
    assert ok.status_code == 200 and ok.get_json()["id"] == "text-embedding-ada-002"
    assert client.get("/v1/models/gpt-3.5-turbo", headers=_auth(plain)).status_code == 404


@pytest.mark.parametrize("call", ["chat", "embeddings"])
def test_unknown_model_is_400_naming_only_that_model(
    db_url: str, make_app: Callable[..., Flask], call: str
) -> None:
    app = make_app(_seed_config(db_url))
    plain = _make_key([], ["beta-models"])
    resp = _chat(app, plain, "gpt-5") if call == "chat" else _embed(app, plain, "gpt-5")
    assert resp.status_code == 400
    error = resp.get_json()["error"]
    assert error["message"].startswith("Invalid model name passed in model=gpt-5")
    assert error["type"] == "invalid_request_error"
    for configured in ("gpt-3.5-turbo", "text-embedding-ada-002", "beta-models"):
        assert configured not in error["message"]


# --- /model/info -------------------------------------------------------------


def _secret_config(db_url: str, base_url: str) -> dict[str, Any]:
    secret = openai_model("gpt-4o", base_url, api_key=UPSTREAM_SECRET)
    secret["model_info"] = {"access_groups": ["beta-models"]}
    return base_config(db_url, model_list=[secret, _mock("mistral")])


@pytest.mark.parametrize("path", ["/model/info", "/v1/model/info"])
def test_model_info_shows_the_model_list_without_api_keys(
    db_url: str, make_app: Callable[..., Flask], upstream: MockOpenAI, path: str
) -> None:
    app = make_app(_secret_config(db_url, upstream.base_url))
    resp = app.test_client().get(path, headers=MASTER)
    assert resp.status_code == 200
    assert UPSTREAM_SECRET not in resp.get_data(as_text=True)
    data = resp.get_json()["data"]
    assert [d["model_name"] for d in data] == ["gpt-4o", "mistral"]
    first = data[0]
    assert first["litellm_params"]["model"] == "openai/gpt-4o"
    assert first["litellm_params"]["api_base"] == upstream.base_url
    assert "api_key" not in first["litellm_params"]
    assert first["model_info"]["access_groups"] == ["beta-models"]


def test_model_info_with_a_virtual_key_is_403(db_url: str, make_app: Callable[..., Flask]) -> None:
    app = make_app(_seed_config(db_url))
    resp = app.test_client().get("/model/info", headers=_auth(_make_key([])))
    assert resp.status_code == 403
    assert resp.get_json()["error"]["type"] == "auth_error"


def test_model_info_without_a_key_is_401(db_url: str, make_app: Callable[..., Flask]) -> None:
    assert make_app(_seed_config(db_url)).test_client().get("/model/info").status_code == 401


# --- embeddings on the seed's Azure deployment -------------------------------


@pytest.fixture
def azure_seed_app(
    db_url: str,
    make_app: Callable[..., Flask],
    upstream: MockOpenAI,
    monkeypatch: pytest.MonkeyPatch,
) -> Flask:
    """The app on the seed's Azure embedding deployment, served by the mock upstream."""
    monkeypatch.setenv("AZURE_API_BASE", upstream.root_url)
    monkeypatch.setenv("AZURE_API_KEY", UPSTREAM_SECRET)
    models = [azure_embedding_seed_model(), _mock("gpt-3.5-turbo")]
    return make_app(base_config(db_url, model_list=models))


def test_embeddings_reach_azure_and_are_charged_prompt_tokens_times_input_price(
    azure_seed_app: Flask, upstream: MockOpenAI
) -> None:
    app = azure_seed_app
    plain = _make_key([], ["beta-models"])
    resp = _embed(app, plain, "text-embedding-ada-002", "the quick brown fox jumps")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    body = resp.get_json()
    assert body["object"] == "list" and body["data"][0]["object"] == "embedding"

    sent = upstream.requests[-1]
    assert sent.path == "/openai/deployments/azure-embedding-model/embeddings"
    assert sent.query == {"api-version": "2023-07-01-preview"}
    assert sent.headers["api-key"] == UPSTREAM_SECRET
    assert "authorization" not in sent.headers
    assert sent.json["input"] == "the quick brown fox jumps"

    price = ADA_002_PER_TOKEN
    tokens = body["usage"]["prompt_tokens"]
    with database.connection_context():
        log = SpendLog.get()
        key = Key.get(Key.token == hash_key(plain))
        user = User.get(User.user_id == key.user_id)
    assert log.call_type == "embeddings"
    assert log.model_group == "text-embedding-ada-002"
    assert log.prompt_tokens == tokens and log.completion_tokens == 0
    assert math.isclose(log.spend, tokens * price, rel_tol=1e-12)
    assert math.isclose(key.spend, log.spend) and math.isclose(user.spend, log.spend)
    assert UPSTREAM_SECRET not in resp.get_data(as_text=True)


def test_embeddings_are_refused_by_the_user_budget_like_chat(
    azure_seed_app: Flask, upstream: MockOpenAI
) -> None:
    app = azure_seed_app
    plain = _make_key([], ["beta-models"], max_budget=0)
    resp = _embed(app, plain, "text-embedding-ada-002")
    assert resp.status_code == 401
    assert "ExceededBudget" in resp.get_json()["error"]["message"]
    assert upstream.requests == []
    with database.connection_context():
        assert SpendLog.select().count() == 0
