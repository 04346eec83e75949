"""The seed's "Grant Access to new model" flow, end to end under real gunicorn.

Step 1 of the seed is its config (the Azure embedding model in the
``beta-models`` access group); step 2 its ``/user/new`` curl, sent as the
seed writes it (with the inline ``# 👈`` comment); then the seed's "Create
new keys for existing user" curl. Calls are made the way an operator makes
them: with ``requests`` (curl) and with the OpenAI SDK. Finally the proxy is
restarted on the same database with a model added to the group.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import psycopg2
import pytest
import requests

from tests.support.databases import create_pg_database, drop_pg_database
from tests.support.mock_openai import MockOpenAI
from tests.support.proxy_server import ProxyServer
from tests.support.seeds import USER_NEW_ACCESS_GROUP_BODY, azure_embedding_seed_model

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

MASTER_KEY = "sk-1234"
SECRET = "sk-upstream-SECRET-123"
EMBEDDING_PRICE = 0.10e-6  # text-embedding-ada-002: $0.10 per million tokens, published


def _config(db_url: str, base_url: str, later_models: bool = False) -> dict[str, Any]:

    def openai_entry(name: str, groups: list[str]) -> dict[str, Any]:
        return {
            "model_name": name,
            "litellm_params": {"model": f"openai/{name}", "api_base": base_url, "api_key": SECRET},
            "model_info": {"access_groups": groups},
        }

    models = [
        azure_embedding_seed_model(),
        openai_entry("gpt-3.5-turbo", []),
        openai_entry("gpt-4o", ["azure-models"]),
    ]
    if later_models:
        models.append(openai_entry("gpt-4o-mini", ["beta-models"]))
    return {
        "model_list": models,
        "general_settings": {"master_key": MASTER_KEY, "database_url": db_url},
    }


@pytest.fixture
def pg_url() -> Iterator[str]:
    url = create_pg_database("comptroller_access")
    yield url
    drop_pg_database(url)


def _proxy(tmp_path: Path, config: dict[str, Any], mock: MockOpenAI, name: str) -> ProxyServer:
    env = {"AZURE_API_BASE": mock.root_url, "AZURE_API_KEY": SECRET}
    return ProxyServer(config, tmp_path, workers=2, threads=4, env=env, name=name)


class Curl:
    """``curl --header 'Authorization: Bearer <key>'`` against one proxy."""

    def __init__(self, url: str, key: str) -> None:
        self.url, self.session = url, requests.Session()
        self.session.headers["Authorization"] = f"Bearer {key}"

    def post(self, path: str, body: Any) -> requests.Response:
        if isinstance(body, str):
            headers = {"Content-Type": "application/json"}
            return self.session.post(
                self.url + path, data=body.encode(), headers=headers, timeout=30
            )
        return self.session.post(self.url + path, json=body, timeout=30)

    def get(self, path: str) -> requests.Response:
        return self.session.get(self.url + path, timeout=30)

    def chat(self, model: str) -> requests.Response:
        return self.post(
            "/chat/completions",
            {"model": model, "messages": [{"role": "user", "content": "what llm are you"}]},
        )

    def embed(self, text: str = "The food was delicious") -> requests.Response:
        return self.post("/embeddings", {"model": "text-embedding-ada-002", "input": text})

    def model_ids(self) -> list[str]:
        listed = self.get("/v1/models").json()
        assert listed["object"] == "list"
        return [m["id"] for m in listed["data"]]


def _refused_for(resp: requests.Response, model: str) -> None:
    assert resp.status_code == 401, resp.text
    message = resp.json()["error"]["message"]
    assert "key not allowed to access model" in message
    assert model in message


def _spend_logs(db_url: str, user_id: str) -> list[tuple[str, int, int, float]]:
    conn = psycopg2.connect(db_url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT call_type, prompt_tokens, completion_tokens, spend FROM spend_log "
                "WHERE user_id = %s ORDER BY start_time",
                (user_id,),
            )
            return list(cur.fetchall())
    finally:
        conn.close()


def _user_spend(db_url: str, user_id: str) -> float:
    conn = psycopg2.connect(db_url)
    try:
        with conn.cursor() as cur:
            # Its row's base plus its stripes (proxy.storage.stripes).
            cur.execute(
                "SELECT spend + (SELECT COALESCE(SUM(s.spend), 0) FROM spend_stripe s "
                "WHERE s.kind = 'user' AND s.entity_id = user_id) "
                'FROM "user" WHERE user_id = %s',
                (user_id,),
            )
            return float(cur.fetchone()[0])
    finally:
        conn.close()


def test_seed_access_group_flow_with_curl_sdk_and_restart(
    tmp_path: Path, pg_url: str, mock_openai: MockOpenAI
) -> None:
    mock = mock_openai
    mock.reset()
    with _proxy(tmp_path, _config(pg_url, mock.base_url), mock, "first") as proxy:
        admin = Curl(proxy.url, MASTER_KEY)

        # The seed's /user/new, verbatim: the group, and max_budget 0.
        made = admin.post("/user/new", USER_NEW_ACCESS_GROUP_BODY)
        assert made.status_code == 200, made.text
        broke = Curl(proxy.url, made.json()["key"])
        over = broke.embed()
        assert over.status_code == 401
        assert "ExceededBudget" in over.json()["error"]["message"]  # past access, on budget
        _refused_for(broke.chat("gpt-3.5-turbo"), "gpt-3.5-turbo")

        # The same group without the zero budget: the group's models and no other.
        made = admin.post("/user/new", {"models": ["beta-models"]})
        assert made.status_code == 200, made.text
        user_id = made.json()["user_id"]
        user = Curl(proxy.url, made.json()["key"])
        assert user.model_ids() == ["text-embedding-ada-002"]
        embedded = user.embed()
        assert embedded.status_code == 200, embedded.text
        assert embedded.json()["data"][0]["object"] == "embedding"
        sent = mock.requests[-1]
        assert sent.path == "/openai/deployments/azure-embedding-model/embeddings"
        assert sent.query["api-version"] == "2023-07-01-preview"
        assert sent.headers["api-key"] == SECRET
        _refused_for(user.chat("gpt-3.5-turbo"), "gpt-3.5-turbo")
        unknown = user.chat("gpt-5")
        assert unknown.status_code == 400
        assert unknown.json()["error"]["message"].startswith(
            "Invalid model name passed in model=gpt-5"
        )

        # /key/generate for the user inherits the group ...
        inherited = admin.post("/key/generate", {"user_id": user_id})
        assert inherited.status_code == 200, inherited.text
        inherited_key = inherited.json()["key"]
        assert Curl(proxy.url, inherited_key).model_ids() == ["text-embedding-ada-002"]
        # ... and the seed's key with {"models": ["azure-models"]} narrows it to nothing.
        narrowed = admin.post("/key/generate", {"models": ["azure-models"], "user_id": user_id})
        assert narrowed.status_code == 200, narrowed.text
        narrow = Curl(proxy.url, narrowed.json()["key"])
        assert narrow.model_ids() == []
        _refused_for(narrow.chat("gpt-4o"), "gpt-4o")
        _refused_for(narrow.embed(), "text-embedding-ada-002")

        # The OpenAI SDK, pointed at the proxy.
        client = openai.OpenAI(api_key=inherited_key, base_url=proxy.url, max_retries=0)
        assert [m.id for m in client.models.list()] == ["text-embedding-ada-002"]
        sdk_embedding = client.embeddings.create(model="text-embedding-ada-002", input="hello")
        assert len(sdk_embedding.data[0].embedding) > 0
        with pytest.raises(openai.AuthenticationError) as denied:
            client.chat.completions.create(
                model="gpt-3.5-turbo", messages=[{"role": "user", "content": "hi"}]
            )
        assert "key not allowed to access model" in str(denied.value)
        with pytest.raises(openai.BadRequestError):
            client.embeddings.create(model="no-such-model", input="hello")

        everything = [
            m.id for m in openai.OpenAI(api_key=MASTER_KEY, base_url=proxy.url).models.list()
        ]
        assert everything == ["text-embedding-ada-002", "gpt-3.5-turbo", "gpt-4o"]
        info = admin.get("/model/info")
        assert info.status_code == 200
        assert SECRET not in info.text
        assert Curl(proxy.url, inherited_key).get("/model/info").status_code == 403

    # Spend: one row per successful embedding call, prompt tokens x input price.
    logs = _spend_logs(pg_url, user_id)
    assert [row[0] for row in logs] == ["embeddings", "embeddings"]
    for _, prompt_tokens, completion_tokens, spend in logs:
        assert completion_tokens == 0
        assert math.isclose(spend, prompt_tokens * EMBEDDING_PRICE, rel_tol=1e-9)
    assert math.isclose(_user_spend(pg_url, user_id), sum(row[3] for row in logs), rel_tol=1e-9)

    # Restart on the same database with gpt-4o-mini added to beta-models.
    later = _config(pg_url, mock.base_url, later_models=True)
    with _proxy(tmp_path, later, mock, "restarted") as proxy:
        user = Curl(proxy.url, inherited_key)
        assert user.model_ids() == ["text-embedding-ada-002", "gpt-4o-mini"]
        assert user.chat("gpt-4o-mini").status_code == 200
        assert mock.requests[-1].json["model"] == "gpt-4o-mini"
        _refused_for(user.chat("gpt-3.5-turbo"), "gpt-3.5-turbo")
        client = openai.OpenAI(api_key=inherited_key, base_url=f"{proxy.url}/v1", max_retries=0)
        answer = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
        assert answer.choices[0].message.content
        assert [m.id for m in client.models.list()] == ["text-embedding-ada-002", "gpt-4o-mini"]
