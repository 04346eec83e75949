"""No response of any route shows an upstream ``api_key``.

The test walks ``app.url_map`` (so routes added later are scanned too) and
calls every rule with every method, with the master key, a virtual key and no
key, without a body and with plausible bodies, including calls whose upstream
fails. Each body and header is searched for the distinctive upstream secret.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.routing import Rule

from proxy.call.auth import generate_key, hash_key
from proxy.storage.db import database
from proxy.storage.models import Key, User
from tests.conftest import MASTER, base_config, openai_model
from tests.support.mock_openai import MockOpenAI
from tests.support.proxy_server import free_port

SECRET = "sk-upstream-SECRET-123"
# Partial or re-encoded forms would leak it as well.
FRAGMENTS = (SECRET, "upstream-SECRET", "SECRET-123")
MODEL = "gpt-4o"
AZURE_MODEL = "text-embedding-ada-002"


def _config(db_url: str, base_url: str, root_url: str) -> dict[str, Any]:
    chat = openai_model(MODEL, base_url, api_key=SECRET)
    chat["model_info"] = {"access_groups": ["beta-models"]}
    azure = {
        "model_name": AZURE_MODEL,
        "litellm_params": {
            "model": "azure/azure-embedding-model",
            "api_base": root_url,
            "api_key": SECRET,
            "api_version": "2023-07-01-preview",
        },
        "model_info": {"access_groups": ["beta-models"]},
    }
    dead = openai_model("dead-upstream", f"http://127.0.0.1:{free_port()}/v1", api_key=SECRET)
    return base_config(db_url, model_list=[chat, azure, dead])


def _bodies(plain: str) -> Iterator[dict[str, Any] | None]:
    """No body, an empty object, then bodies the LLM and admin routes accept."""
    yield None
    yield {}
    messages = [{"role": "user", "content": "tell me your api key"}]
    yield {"model": MODEL, "messages": messages, "input": "embed me"}
    yield {"model": MODEL, "messages": messages, "stream": True}
    yield {"model": AZURE_MODEL, "input": ["embed", "me"], "messages": messages}
    yield {"model": "dead-upstream", "messages": messages, "input": "x"}
    yield {
        "models": ["beta-models"],
        "user_id": "scan-user",
        "user_email": "scan@example.com",
        "key_alias": "scan-alias",
        "max_budget": 10,
        "budget_id": "scan-budget",
        "metadata": {"note": "scan"},
        "key": plain,
        "keys": [plain],
        "user_ids": ["scan-user"],
        "budgets": ["scan-budget"],
        "id": "scan-budget",
    }


def _url(rule: Rule, plain: str) -> str:
    """The rule's path with each variable filled with a plausible value."""
    values = {"deployment": MODEL, "model": MODEL, "model_name": MODEL}

    def fill(match: re.Match[str]) -> str:
        return values.get(match.group(1), "scan-value")

    path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", fill, rule.rule)
    query = f"key={plain}&user_id=scan-user&end_user_id=scan-user&api_key={hash_key(plain)}"
    return f"{path}?{query}"


def _leaks(data: bytes, headers: Any) -> list[str]:
    text = data.decode("utf-8", "replace") + "\n" + "\n".join(f"{k}: {v}" for k, v in headers)
    return [fragment for fragment in FRAGMENTS if fragment in text]


def _virtual_key() -> str:
    plain = generate_key()
    with database.connection_context():
        User.create(user_id="scan-owner", models=[])
        Key.create(token=hash_key(plain), key_name="sk-...scan", user_id="scan-owner")
    return plain


_LINK = re.compile(r'(?:href|src|action)="(/[^"#]*)"')


class Scanner:
    """Calls routes, records each answer's status and any secret it shows."""

    def __init__(self) -> None:
        self.statuses: dict[str, set[int]] = {}
        self.leaks: list[str] = []
        self.links: set[str] = set()

    def call(self, client: FlaskClient, rule: str, url: str, label: str, **kwargs: Any) -> None:
        resp = client.open(url, **kwargs)
        data = resp.get_data()
        assert resp.status_code < 500 or resp.status_code in (502, 503, 504), (
            f"{label}: {resp.status_code} {data[:300]!r}"
        )
        found = _leaks(data, resp.headers.items())
        if found:
            self.leaks.append(f"{label}: {found}")
        self.statuses.setdefault(rule, set()).add(resp.status_code)
        if resp.mimetype == "text/html":
            self.links.update(_LINK.findall(data.decode("utf-8", "replace")))


def test_no_route_shows_an_upstream_api_key(
    db_url: str, make_app: Callable[..., Flask], upstream: MockOpenAI
) -> None:
    app = make_app(_config(db_url, upstream.base_url, upstream.root_url))
    plain = _virtual_key()
    master = app.test_client()
    rules = {rule.rule for rule in app.url_map.iter_rules()}
    if "/ui/login" in rules:  # the admin UI's pages are scanned logged in
        master.post("/ui/login", data={"master_key": MASTER["Authorization"].split()[1]})
    callers = {
        "master": (master, MASTER),
        "virtual": (app.test_client(), {"Authorization": f"Bearer {plain}"}),
        "none": (app.test_client(), {}),
    }
    upstream.fail_next(2, 401, f"Incorrect API key provided: {SECRET}")
    scan = Scanner()
    for rule in app.url_map.iter_rules():
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            for who, (client, headers) in callers.items():
                for body in _bodies(plain):
                    label = f"{method} {rule.rule} as {who} with {body}"
                    url = _url(rule, plain)
                    scan.call(
                        client, rule.rule, url, label, method=method, headers=headers, json=body
                    )
    # Pages the HTML links to (for example one per UI tab), fetched logged in.
    crawled: set[str] = set()
    while scan.links - crawled:
        link = min(scan.links - crawled)
        crawled.add(link)
        scan.call(master, link, link, f"GET {link} (linked)", headers=MASTER)
    assert scan.leaks == []
    # The scan reached the routes that could show the secret, and they answered.
    for route in ("/chat/completions", "/embeddings", "/v1/models", "/model/info"):
        assert 200 in scan.statuses[route], (route, scan.statuses.get(route))
    assert 502 in scan.statuses["/chat/completions"]  # the dead upstream's error was scanned too
    # ... and the secret really was in use, so a leak was possible.
    sent = [r.headers for r in upstream.requests]
    assert any(h.get("authorization") == f"Bearer {SECRET}" for h in sent)
    assert any(h.get("api-key") == SECRET for h in sent)


@pytest.mark.parametrize("path", ["/model/info", "/v1/model/info"])
def test_model_info_lists_the_deployments_it_hides_keys_of(
    db_url: str, make_app: Callable[..., Flask], upstream: MockOpenAI, path: str
) -> None:
    app = make_app(_config(db_url, upstream.base_url, upstream.root_url))
    resp = app.test_client().get(path, headers=MASTER)
    data = resp.get_json()["data"]
    assert [d["model_name"] for d in data] == [MODEL, AZURE_MODEL, "dead-upstream"]
    assert data[1]["litellm_params"]["api_base"] == upstream.root_url
    assert _leaks(resp.get_data(), resp.headers.items()) == []


@pytest.mark.parametrize(
    "body",
    [
        {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
        {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True},
        {"model": AZURE_MODEL, "input": "hi"},
    ],
    ids=["chat", "stream", "azure-embeddings"],
)
def test_upstream_error_echoing_the_key_is_masked(
    db_url: str, make_app: Callable[..., Flask], upstream: MockOpenAI, body: dict[str, Any]
) -> None:
    app = make_app(_config(db_url, upstream.base_url, upstream.root_url))
    upstream.fail_next(1, 401, f"Incorrect API key provided: {SECRET}.")
    path = "/embeddings" if "input" in body else "/chat/completions"
    resp = app.test_client().post(path, headers=MASTER, json=body)
    assert resp.status_code == 401
    assert resp.get_json()["error"]["message"] == "Incorrect API key provided: ***."
    assert _leaks(resp.get_data(), resp.headers.items()) == []
