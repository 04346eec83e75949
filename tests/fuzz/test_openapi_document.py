"""``/openapi.json``: every route, described by the models that validate it.

The fuzzer (test_schemathesis.py) trusts this document, so these tests pin
what it must hold: every API route of the app's ``url_map`` with each of its
methods, the auth of each, request bodies and query parameters that are the
validating pydantic models' own JSON Schemas (and that the routes enforce),
and the error shape on every failure status.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from proxy.api import llm_schemas
from proxy.api.admin import schemas as admin_schemas
from proxy.api.openapi.document import COMPONENT_REF, ROUTES, is_documented, openapi_path
from tests.conftest import MASTER

ERROR_STATUSES = ("400", "401", "403", "404", "409", "413", "429", "503")


@pytest.fixture
def document(client: FlaskClient) -> dict[str, Any]:
    resp = client.get("/openapi.json")  # no key: the document is public
    assert resp.status_code == 200
    return resp.get_json()


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, op)
        for path, item in document["paths"].items()
        for method, op in item.items()
    ]


def resolve(document: dict[str, Any], ref: dict[str, Any]) -> dict[str, Any]:
    name = ref["$ref"].rsplit("/", 1)[1]
    section = "responses" if "/responses/" in ref["$ref"] else "schemas"
    return document["components"][section][name]


def test_every_api_route_and_method_is_in_the_document(app: Flask, document: dict) -> None:
    expected = {
        (openapi_path(rule), method.lower())
        for rule in app.url_map.iter_rules()
        if is_documented(rule)
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}
    }
    listed = {(path, method) for path, method, _ in operations(document)}
    assert expected == listed
    # The walk skipped only the admin UI, static files and the docs themselves.
    skipped = {rule.endpoint for rule in app.url_map.iter_rules() if not is_documented(rule)}
    assert {e.split(".")[0] for e in skipped} <= {"ui", "docs", "static"}
    assert len(listed) >= 49


def test_every_documented_endpoint_has_its_description(app: Flask, document: dict) -> None:
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules() if is_documented(rule)}
    assert endpoints - set(ROUTES) == set(), (
        "add these endpoints to ROUTES (proxy.api.openapi.document)"
    )
    assert [
        op["operationId"] for _, _, op in operations(document) if "undescribed" in op["tags"]
    ] == []
    ids = [op["operationId"] for _, _, op in operations(document)]
    assert len(ids) == len(set(ids))


def test_the_seeds_swagger_links_name_real_operations(document: dict) -> None:
    """004: ``#/user%20management/new_user_user_new_post``; 000: ``new_budget_budget_new_post``."""
    found = {(op["tags"][0], op["operationId"]) for _, _, op in operations(document)}
    assert ("user management", "new_user_user_new_post") in found
    assert ("budget management", "new_budget_budget_new_post") in found


def test_auth_is_declared_per_route(document: dict) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schemes["bearerAuth"]["description"],
    }
    for path, method, op in operations(document):
        if path.startswith("/health/"):
            assert op["security"] == [], path
            continue
        assert {"bearerAuth": []} in op["security"], path
        assert "401" in op["responses"], path
        admin = not path.startswith(
            ("/chat", "/v1/", "/embeddings", "/models", "/openai/", "/completions", "/responses")
        )
        if admin:
            assert "403" in op["responses"], f"{method} {path}"


@pytest.mark.parametrize(
    ("path", "model"),
    [
        ("/key/generate", admin_schemas.KeyGenerate),
        ("/key/update", admin_schemas.KeyUpdate),
        ("/user/new", admin_schemas.UserNew),
        ("/customer/new", admin_schemas.CustomerNew),
        ("/end_user/new", admin_schemas.CustomerNew),
        ("/budget/update", admin_schemas.BudgetUpdate),
        ("/chat/completions", llm_schemas.ChatCompletionRequest),
        ("/v1/embeddings", llm_schemas.EmbeddingRequest),
        (
            "/openai/deployments/{deployment}/chat/completions",
            llm_schemas.DeploymentChatCompletionRequest,
        ),
    ],
)
def test_request_bodies_are_the_validating_models_schemas(
    document: dict, path: str, model: type
) -> None:
    media = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]
    own = model.model_json_schema(ref_template=COMPONENT_REF)
    own.pop("$defs", None)
    assert resolve(document, media["schema"]) == own


def test_every_required_body_field_and_query_parameter_is_enforced(
    client: FlaskClient, document: dict
) -> None:
    """Send each route an empty body or query: the 400 names a field the document requires."""
    checked = 0
    for path, method, op in operations(document):
        if "{" in path:
            continue
        body = op.get("requestBody")
        if body and body["required"]:
            schema = resolve(document, body["content"]["application/json"]["schema"])
            resp = client.open(path, method=method.upper(), json={}, headers=MASTER)
            assert resp.status_code == 400, path
            # Fields required outright, or one of several (anyOf).
            names = set(schema.get("required", []))
            names.update(n for alt in schema.get("anyOf", []) for n in alt.get("required", []))
            error = resp.get_json()["error"]
            if "param" in error:
                assert error["param"] in names, path
            else:  # Anthropic's error shape (/v1/messages) names the field in its message
                assert any(f"'{name}'" in error["message"] for name in names), path
            checked += 1
        required = [p["name"] for p in op.get("parameters", []) if p["required"]]
        if method == "get" and required:
            resp = client.get(path, headers=MASTER)
            assert resp.status_code == 400, path
            assert resp.get_json()["error"]["param"] in required, path
            checked += 1
        if body and not body["required"]:
            resp = client.open(path, method=method.upper(), headers=MASTER)
            assert resp.status_code == 200, f"{path}: {resp.get_data(as_text=True)}"
    assert checked >= 20


def test_failures_are_documented_with_the_error_shape(document: dict) -> None:
    error = document["components"]["schemas"]["ErrorResponse"]
    body = resolve(document, error["properties"]["error"])
    assert set(body["required"]) == {"message", "type", "param", "code"}
    for status in ERROR_STATUSES:
        answer = document["components"]["responses"][f"E{status}"]
        assert answer["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")
    for path, _, op in operations(document):
        for status, answer in op["responses"].items():
            if status in ERROR_STATUSES and path.startswith(("/v1/messages", "/anthropic/")):
                schema = answer["content"]["application/json"]["schema"]
                assert schema["$ref"].endswith("/AnthropicErrorResponse"), path
            elif status in ERROR_STATUSES:
                assert answer == {"$ref": f"#/components/responses/E{status}"}, path
        assert "$ref" in str(op["responses"]["200"]["content"]["application/json"]), path
