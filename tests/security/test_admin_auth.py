"""Every admin route refuses a virtual key (403) and a missing or wrong key (401).

The routes come from walking the app's ``url_map``: anything that is not an
LLM route, a health probe, the docs or the admin UI's pages is an admin
route, so a route added later is covered without editing this file. Each
refusal must leave the database exactly as it was. The master key is
compared with ``hmac.compare_digest`` on every path that checks it.
"""

from __future__ import annotations

import ast
import hmac
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.routing import Rule

import proxy
from proxy.call.auth import generate_key, hash_key
from proxy.storage.db import database
from proxy.storage.models import Key, User
from tests.conftest import MASTER, MASTER_KEY
from tests.security.dump import dump_database
from tests.support.source_ast import parse_source

# Blueprints that are not the admin API (each checks its own callers).
NOT_ADMIN = {"llm", "health", "docs", "ui"}
BODY = {
    "key": "sk-someone-else",
    "keys": ["sk-someone-else"],
    "user_id": "victim",
    "user_ids": ["victim"],
    "budget_id": "victim-budget",
    "budgets": ["victim-budget"],
    "id": "victim-budget",
    "max_budget": 1000,
}
EXPECTED_ADMIN = {
    "admin.key_generate",
    "admin.key_delete",
    "admin.user_new",
    "admin.customer_block",
    "admin.budget_new",
    "admin.spend_logs",
    "admin.global_spend",
    "admin_reports.top_keys",
    "models.model_info",
}
QUERY = {"key": "sk-someone-else", "user_id": "victim", "end_user_id": "victim"}


def admin_rules(app: Flask) -> list[tuple[Rule, str]]:
    found = []
    for rule in app.url_map.iter_rules():
        blueprint = rule.endpoint.rsplit(".", 1)[0] if "." in rule.endpoint else rule.endpoint
        if blueprint in NOT_ADMIN or rule.endpoint == "static":
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            found.append((rule, method))
    return found


def _virtual_key() -> str:
    plain = generate_key()
    with database.connection_context():
        User.create(user_id="key-owner")
        Key.create(token=hash_key(plain), key_name="sk-...own", user_id="key-owner")
    return plain


def _call(client: FlaskClient, rule: Rule, method: str, headers: dict[str, str]) -> Any:
    path = rule.rule.replace("<", "").replace(">", "")  # no admin route takes a path variable
    return client.open(path, method=method, headers=headers, json=BODY, query_string=QUERY)


def _assert_refused(resp: Any, status: int, label: str) -> None:
    assert resp.status_code == status, f"{label}: {resp.status_code} {resp.get_data()[:200]!r}"
    error = resp.get_json()["error"]
    assert error["type"] == "auth_error", label
    assert error["code"] == str(status), label
    assert set(error) == {"message", "type", "param", "code"}, label


def test_every_admin_route_refuses_no_key_a_wrong_key_and_a_virtual_key(
    app: Flask, client: FlaskClient, db_url: str
) -> None:
    plain = _virtual_key()
    rules = admin_rules(app)
    # The walk found the admin API (keys, users, customers, budgets, spend, models).
    assert EXPECTED_ADMIN <= {rule.endpoint for rule, _ in rules}
    before = dump_database(db_url)
    callers = {
        "no key": ({}, 401),
        "wrong key": ({"Authorization": "Bearer sk-not-a-key"}, 401),
        "master key as api-key with a typo": ({"api-key": MASTER_KEY + "x"}, 401),
        "virtual key": ({"Authorization": f"Bearer {plain}"}, 403),
    }
    for rule, method in rules:
        for who, (headers, status) in callers.items():
            resp = _call(client, rule, method, headers)
            _assert_refused(resp, status, f"{method} {rule.rule} with {who}")
    assert dump_database(db_url) == before  # refused before anything was written


def test_a_virtual_key_reads_only_its_own_key_info(client: FlaskClient) -> None:
    plain = _virtual_key()
    own = {"Authorization": f"Bearer {plain}"}
    assert client.get("/key/info", headers=own).get_json()["key"] == hash_key(plain)
    other = client.post("/key/generate", json={}, headers=MASTER).get_json()["key"]
    resp = client.get("/key/info", query_string={"key": other}, headers=own)
    _assert_refused(resp, 403, "another key's info")


def test_the_docs_need_no_key_and_show_no_secret(client: FlaskClient) -> None:
    for path in ("/openapi.json", "/docs"):
        resp = client.get(path)
        assert resp.status_code == 200
        assert MASTER_KEY not in resp.get_data(as_text=True)


def test_the_master_key_is_compared_in_constant_time(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    chat = {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hi"}]}
    paths: list[tuple[str, str, dict[str, str], int]] = [
        ("POST", "/chat/completions", MASTER, 200),
        ("GET", "/key/list", {"Authorization": "Bearer sk-1235"}, 401),
        ("GET", "/models", {"api-key": MASTER_KEY}, 200),
    ]
    for method, path, headers, status in paths:
        compared.clear()
        assert client.open(path, method=method, json=chat, headers=headers).status_code == status
        presented = headers.get("Authorization", "").removeprefix("Bearer ") or headers["api-key"]
        assert (presented.encode(), MASTER_KEY.encode()) in compared, path
    compared.clear()
    login = client.post("/ui/login", data={"master_key": "sk-1234-wrong"})
    assert login.status_code in (200, 401, 403)
    assert (b"sk-1234-wrong", MASTER_KEY.encode()) in compared


def test_no_code_compares_the_master_key_with_equals() -> None:
    """``==`` on a secret leaks its length of common prefix through timing."""
    offenders = []
    for path in Path(proxy.__file__).parent.rglob("*.py"):
        for node in ast.walk(parse_source(path)):
            if isinstance(node, ast.Compare) and any(
                isinstance(op, ast.Eq | ast.NotEq) for op in node.ops
            ):
                text = ast.unparse(node)
                # Recognising the public trial key "sk-1234" is not checking a secret.
                if "master_key" in text and "DEFAULT_MASTER_KEY" not in text:
                    offenders.append(f"{path.name}:{node.lineno}: {text}")
    assert offenders == []
