"""Every field an admin answer carries is declared in its OpenAPI response model.

The response models (:mod:`proxy.api.openapi.responses`) allow extra fields,
so that the document promises only what it names and an answer may grow;
neither schemathesis nor pydantic would notice a field added to a serializer
without its line there. This test does: it makes every admin answer on a
seeded proxy and walks each against the model ``/openapi.json`` documents
for its route, nested models, lists and unions included.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import pytest
from flask import Flask
from pydantic import BaseModel, RootModel

from proxy.api.openapi.document import ROUTES
from tests.conftest import MASTER, base_config

Answer = tuple[str, str, Any]  # method, path, JSON answer


def undeclared(annotation: Any, value: Any, at: str = "$") -> list[str]:
    """The paths in ``value`` that ``annotation`` does not declare."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return undeclared(typing.get_args(annotation)[0], value, at)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        found = [undeclared(option, value, at) for option in options]
        return min(found, key=len) if found else []
    if origin in (list, tuple, set) and isinstance(value, list):
        (item,) = typing.get_args(annotation)[:1] or (Any,)
        return [p for i, v in enumerate(value) for p in undeclared(item, v, f"{at}[{i}]")]
    if origin is dict and isinstance(value, dict):
        args = typing.get_args(annotation)
        kind = args[1] if len(args) == 2 else Any
        return [p for k, v in value.items() for p in undeclared(kind, v, f"{at}.{k}")]
    if isinstance(annotation, type) and issubclass(annotation, RootModel):
        return undeclared(annotation.model_fields["root"].annotation, value, at)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if not isinstance(value, dict):
            return []
        fields = {(f.alias or name): f for name, f in annotation.model_fields.items()}
        out = []
        for key, item in value.items():
            if key not in fields:
                out.append(f"{at}.{key}")
            else:
                out.extend(undeclared(fields[key].annotation, item, f"{at}.{key}"))
        return out
    return []  # Any, scalars, free-form dicts


def test_the_walker_finds_an_undeclared_nested_field() -> None:
    class Inner(BaseModel):
        a: int

    class Outer(BaseModel):
        items: list[Inner]
        maybe: Inner | None = None

    assert undeclared(Outer, {"items": [{"a": 1}], "maybe": None}) == []
    assert undeclared(Outer, {"items": [{"a": 1, "b": 2}], "c": 3}) == ["$.items[0].b", "$.c"]


@pytest.fixture
def seeded(make_app: Callable[..., Flask], db_url: str) -> tuple[Flask, list[Answer]]:
    """A proxy after one of every admin change, and the answers those changes gave."""
    mock = {"model_name": "mock-gpt", "litellm_params": {"model": "mock/gpt-3.5-turbo"}}
    app = make_app(base_config(db_url, model_list=[mock]))
    client = app.test_client()
    answers: list[Answer] = []

    def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        resp = client.post(path, json=body, headers=MASTER)
        assert resp.status_code == 200, (path, resp.get_data(as_text=True))
        answers.append(("POST", path, resp.get_json()))
        return resp.get_json()

    post("/budget/new", {"budget_id": "tier", "max_budget": 5, "budget_duration": "30d"})
    post("/team/new", {"team_id": "team-1", "max_budget": 50})
    post("/user/new", {"user_id": "u1", "max_budget": 10})
    post("/team/member_add", {"team_id": "team-1", "member": {"role": "user", "user_id": "u1"}})
    key = post("/key/generate", {"user_id": "u1", "team_id": "team-1", "rpm_limit": 10})["key"]
    post("/key/update", {"key": key, "metadata": {"a": 1}})
    post("/key/block", {"key": key})
    post("/key/unblock", {"key": key})
    post("/user/update", {"user_id": "u1", "max_budget": 11})
    post("/customer/new", {"user_id": "c-tier", "budget_id": "tier"})
    post("/customer/new", {"user_id": "c-own", "max_budget": 2})
    post("/customer/update", {"user_id": "c-own", "max_budget": 3})
    post("/customer/block", {"user_ids": ["c-tier"]})
    post("/customer/unblock", {"user_ids": ["c-tier"]})
    post("/budget/update", {"budget_id": "tier", "max_budget": 6})
    post("/budget/info", {"budgets": ["tier"]})
    post("/team/update", {"team_id": "team-1", "max_budget": 60})
    post("/team/block", {"team_id": "team-1"})
    post("/team/unblock", {"team_id": "team-1"})
    chat = {"model": "mock-gpt", "user": "c-own", "messages": [{"role": "user", "content": "hi"}]}
    call = client.post("/chat/completions", json=chat, headers={"Authorization": f"Bearer {key}"})
    assert call.status_code == 200, call.get_data(as_text=True)
    key = post("/key/regenerate", {"key": key})["key"]
    today = datetime.now(timezone.utc).date().isoformat()
    for path in (
        f"/key/info?key={key}",
        "/key/list?return_full_object=true",
        "/user/info?user_id=u1",
        "/user/list",
        "/customer/info?end_user_id=c-own",
        "/customer/list",
        "/budget/list",
        "/team/info?team_id=team-1",
        "/team/list",
        "/spend/logs",
        "/spend/logs/csv",  # text/csv: its route is walked, there is no JSON to check
        "/global/spend/report?group_by=customer",
        "/global/spend",
        "/global/spend/daily",
        "/global/spend/top_customers",
        "/global/spend/top_keys",
        f"/global/spend/report?start_date={today}&end_date={today}&group_by=team",
    ):
        resp = client.get(path, headers=MASTER)
        assert resp.status_code == 200, (path, resp.get_data(as_text=True))
        answers.append(("GET", path, resp.get_json(silent=True)))
    post("/team/member_delete", {"team_id": "team-1", "user_id": "u1"})
    post("/key/delete", {"keys": [key]})
    post("/user/delete", {"user_ids": ["u1"]})
    post("/customer/delete", {"user_ids": ["c-own", "c-tier"]})
    post("/budget/delete", {"id": "tier"})
    post("/team/delete", {"team_ids": ["team-1"]})
    return app, answers


def test_every_admin_answer_field_is_documented(seeded: tuple[Flask, list[Answer]]) -> None:
    app, answers = seeded
    adapter = app.url_map.bind("localhost")
    checked = set()
    problems = {}
    for method, path, answer in answers:
        endpoint, _ = adapter.match(path.split("?", 1)[0], method=method)
        checked.add(endpoint)
        missing = undeclared(ROUTES[endpoint].response, answer)
        if missing:
            problems[f"{method} {path}"] = missing
    assert problems == {}, "fields missing from proxy/api/openapi/responses.py"
    admin = {
        name
        for name, doc in ROUTES.items()
        if name.startswith(("admin.", "admin_reports.")) and doc.text_media_type is None
    }
    assert admin - checked == set()  # every documented JSON admin answer was walked
