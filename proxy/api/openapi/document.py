"""The OpenAPI 3.1 document of a running app, served at ``/openapi.json``.

Paths come from walking the app's ``url_map``, so a route added later is
never missing: a route without an entry in :data:`ROUTES` is still listed
(with its auth and error answers) and a test fails until it gets one.
Request bodies and query parameters are the JSON Schemas of the very
pydantic models that validate them (:mod:`proxy.api.admin.schemas`,
:mod:`proxy.api.llm_schemas`); answers are the models of
:mod:`proxy.api.openapi.responses`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Literal

from flask import Flask
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from werkzeug.routing import Rule

from proxy.api import llm_schemas as llm
from proxy.api.admin import schemas as admin
from proxy.api.openapi import responses as out

# Endpoints that are not part of the API: the admin UI, static files, the docs themselves.
UNDOCUMENTED_BLUEPRINTS = ("ui", "docs")
UNDOCUMENTED_ENDPOINTS = ("static",)

Auth = Literal["master", "key", "own_key", "none"]

# LiteLLM's Swagger tags, so the seeds' "See Swagger" deep links land on the right section.
KEYS = "key management"
USERS = "user management"
CUSTOMERS = "Customer Management"
BUDGETS = "budget management"
TEAMS = "team management"
SPEND = "Budget & Spend Tracking"
MODELS = "model management"
LLM = "LLM"
HEALTH = "health"
METRICS = "metrics"

END_USER_HEADERS = ("x-litellm-customer-id", "x-litellm-end-user-id")

# The ids the seeds' curls use, in the examples.
SEED_USER = "krrish3@berri.ai"
SEED_CUSTOMER = "ishaan3"
SEED_BUDGET = "my-free-tier"
SEED_TEAM = "core-infra"

COMPONENT_REF = "#/components/schemas/{model}"

_STATUS_TEXT = {
    400: "Bad input: malformed JSON or a wrong field (named in `param`).",
    401: "No key, a wrong or expired key, or a budget exceeded.",
    403: "A virtual key on a master-key route, or a blocked end user.",
    404: "Not found.",
    409: "The id already exists.",
    413: "The request body is over general_settings.max_request_size_mb (10 MB by default).",
    429: "A rate limit (rpm, tpm or parallel requests) is reached; see Retry-After.",
    502: "The upstream could not be reached.",
    503: "The database is unavailable; nothing was done or charged.",
    504: "The upstream did not answer within the model's timeout.",
}


@dataclass(frozen=True)
class RouteDoc:
    """What the document says about one endpoint (every path and method it serves)."""

    summary: str
    tag: str
    response: type[BaseModel]
    body: type[BaseModel] | None = None
    # The body model when the path names the model (``/openai/deployments/{deployment}/...``).
    path_model_body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    auth: Auth = "master"
    errors: tuple[int, ...] = ()
    streams: bool = False
    # Upstream errors keep their status, so an LLM route can answer any 4xx/5xx.
    relays_upstream: bool = False
    description: str | None = None
    # A request body (or query) that works as is, after the seeds; Swagger UI pre-fills it.
    example: dict[str, Any] | None = None
    # LiteLLM's function name, where a seed links to the operation ("new_user").
    name: str | None = None
    # A text media type the success may come in instead of JSON, with an example answer.
    text_media_type: str | None = None
    text_example: str | None = None
    # The error shape when it is not OpenAI's (Anthropic's on /v1/messages).
    error_model: type[BaseModel] | None = None
    # How a stream ends, for the success description.
    stream_note: str = "one `data: {chunk}` line each, ending with `data: [DONE]`"


def _key_routes() -> dict[str, RouteDoc]:
    return {
        "admin.key_generate": RouteDoc(
            "Generate a virtual key",
            KEYS,
            out.GeneratedKey,
            body=admin.KeyGenerate,
            errors=(400,),
            example={
                "models": ["gpt-3.5-turbo", "gpt-4o-mini"],
                "max_budget": 10,
                "budget_duration": "30d",
                "duration": "30d",
                "key_alias": "my-first-key",
                "metadata": {"team": "core-infra"},
            },
            description="The plain key is in `key`, shown only here; only its SHA-256 is stored.",
        ),
        "admin.key_info": RouteDoc(
            "Read a key",
            KEYS,
            out.KeyInfoResponse,
            query=admin.KeyInfoQuery,
            auth="own_key",
            errors=(400, 404),
            description="The master key reads any key (by its secret or its token); a virtual "
            "key reads only itself (403 for any other).",
        ),
        "admin.key_update": RouteDoc(
            "Update a key", KEYS, out.UpdatedKey, body=admin.KeyUpdate, errors=(400, 404)
        ),
        "admin.key_block": RouteDoc(
            "Block a key (its calls get 401 until unblocked)",
            KEYS,
            out.UpdatedKey,
            body=admin.KeyRef,
            errors=(400, 404),
        ),
        "admin.key_unblock": RouteDoc(
            "Unblock a key", KEYS, out.UpdatedKey, body=admin.KeyRef, errors=(400, 404)
        ),
        "admin.key_regenerate": RouteDoc(
            "Give a key a new secret (same settings and spend)",
            KEYS,
            out.GeneratedKey,
            body=admin.KeyRegenerate,
            errors=(400, 404, 409),
            description="The new plain key is in `key`, shown only here; the old secret is "
            "refused from this moment on. The key may also be named in the path: "
            "`POST /key/{key}/regenerate`.",
        ),
        "admin.key_delete": RouteDoc(
            "Delete keys", KEYS, out.KeyDeleteResponse, body=admin.KeyDelete, errors=(400, 404)
        ),
        "admin.key_list": RouteDoc(
            "List keys",
            KEYS,
            out.KeyListResponse,
            query=admin.KeyListQuery,
            errors=(400,),
            example={"user_id": SEED_USER, "return_full_object": True},
        ),
    }


def _user_routes() -> dict[str, RouteDoc]:
    return {
        "admin.user_new": RouteDoc(
            "Create an internal user and its first key",
            USERS,
            out.NewUser,
            body=admin.UserNew,
            errors=(400, 409),
            example={"models": ["azure-models"], "max_budget": 0, "user_id": SEED_USER},
            name="new_user",
        ),
        "admin.user_info": RouteDoc(
            "Read a user and its keys",
            USERS,
            out.UserInfoResponse,
            query=admin.UserInfoQuery,
            example={"user_id": SEED_USER},
            errors=(400, 404),
        ),
        "admin.user_update": RouteDoc(
            "Update a user",
            USERS,
            out.UserInfo,
            body=admin.UserUpdate,
            errors=(400, 404),
            example={"user_id": SEED_USER, "max_budget": 20, "budget_duration": "1mo"},
        ),
        "admin.user_delete": RouteDoc(
            "Delete users and their keys",
            USERS,
            out.UserDeleteResponse,
            body=admin.UserIds,
            errors=(400, 404),
        ),
        "admin.user_list": RouteDoc(
            "List users", USERS, out.UserListResponse, query=admin.UserListQuery, errors=(400,)
        ),
    }


def _customer_routes() -> dict[str, RouteDoc]:
    return {
        "admin.customer_new": RouteDoc(
            "Create an end user (customer)",
            CUSTOMERS,
            out.CustomerInfo,
            body=admin.CustomerNew,
            errors=(400, 409),
            example={"user_id": SEED_CUSTOMER, "max_budget": "0.0001", "budget_duration": "1d"},
        ),
        "admin.customer_info_route": RouteDoc(
            "Read an end user",
            CUSTOMERS,
            out.CustomerInfo,
            query=admin.CustomerInfoQuery,
            example={"end_user_id": SEED_CUSTOMER},
            errors=(400, 404),
        ),
        "admin.customer_update": RouteDoc(
            "Update an end user",
            CUSTOMERS,
            out.CustomerInfo,
            body=admin.CustomerUpdate,
            errors=(400, 404),
            example={"user_id": SEED_CUSTOMER, "budget_id": SEED_BUDGET},
        ),
        "admin.customer_delete": RouteDoc(
            "Delete end users (and their own budgets)",
            CUSTOMERS,
            out.CustomerDeleteResponse,
            body=admin.UserIds,
            errors=(400, 404),
        ),
        "admin.customer_block": RouteDoc(
            "Block end users (unknown ids are created blocked)",
            CUSTOMERS,
            out.CustomerBlockResponse,
            body=admin.UserIds,
            errors=(400,),
        ),
        "admin.customer_unblock": RouteDoc(
            "Unblock end users",
            CUSTOMERS,
            out.CustomerUnblockResponse,
            body=admin.UserIds,
            errors=(400, 404),
        ),
        "admin.customer_list": RouteDoc(
            "List end users",
            CUSTOMERS,
            out.CustomerList,
            query=admin.CustomerListQuery,
            errors=(400,),
            description="Every end user, oldest first; with `page_size`, one page of them "
            "and their number in the `x-total-count` header. `search` (in the id and alias), "
            "`sort` (created_at, spend, user_id, alias, budget_id) and `order` (asc, desc).",
        ),
    }


def _budget_routes() -> dict[str, RouteDoc]:
    return {
        "admin.budget_new": RouteDoc(
            "Create a budget row (a pricing tier)",
            BUDGETS,
            out.BudgetRow,
            body=admin.BudgetNew,
            errors=(400, 409),
            example={"budget_id": SEED_BUDGET, "max_budget": 4, "rpm_limit": 10},
            name="new_budget",
        ),
        "admin.budget_info": RouteDoc(
            "Read budget rows",
            BUDGETS,
            out.BudgetList,
            body=admin.BudgetInfo,
            errors=(400, 404),
            example={"budgets": [SEED_BUDGET]},
        ),
        "admin.budget_update": RouteDoc(
            "Update a budget row (every customer on it follows)",
            BUDGETS,
            out.BudgetRow,
            body=admin.BudgetUpdate,
            errors=(400, 404),
            example={"budget_id": SEED_BUDGET, "max_budget": 5, "tpm_limit": 1000},
        ),
        "admin.budget_delete": RouteDoc(
            "Delete a budget row no customer uses",
            BUDGETS,
            out.BudgetRow,
            body=admin.BudgetDelete,
            errors=(400, 404),
        ),
        "admin.budget_list": RouteDoc("List budget rows", BUDGETS, out.BudgetList),
    }


def _team_routes() -> dict[str, RouteDoc]:
    member = {"role": "user", "user_id": SEED_USER}
    return {
        "admin.team_new": RouteDoc(
            "Create a team (its budget and limits cover its keys)",
            TEAMS,
            out.TeamInfo,
            body=admin.TeamNew,
            errors=(400, 409),
            example={
                "team_id": SEED_TEAM,
                "team_alias": "Core infrastructure",
                "max_budget": 100,
                "budget_duration": "30d",
                "rpm_limit": 100,
                "members_with_roles": [member],
            },
            name="new_team",
        ),
        "admin.team_info_route": RouteDoc(
            "Read a team and its keys",
            TEAMS,
            out.TeamInfoResponse,
            query=admin.TeamRef,
            errors=(400, 404),
            example={"team_id": SEED_TEAM},
        ),
        "admin.team_update": RouteDoc(
            "Update a team",
            TEAMS,
            out.TeamUpdateResponse,
            body=admin.TeamUpdate,
            errors=(400, 404),
            example={"team_id": SEED_TEAM, "max_budget": 200, "tpm_limit": 100000},
        ),
        "admin.team_delete": RouteDoc(
            "Delete teams and their keys",
            TEAMS,
            out.TeamDeleteResponse,
            body=admin.TeamIds,
            errors=(400, 404),
        ),
        "admin.team_list": RouteDoc(
            "List teams", TEAMS, out.TeamList, query=admin.TeamListQuery, errors=(400,)
        ),
        "admin.team_member_add": RouteDoc(
            "Add members to a team",
            TEAMS,
            out.TeamMemberAddResponse,
            body=admin.TeamMemberAdd,
            errors=(400, 404),
            example={
                "team_id": SEED_TEAM,
                "member": {"role": "admin", "user_id": "ops@example.com"},
            },
        ),
        "admin.team_member_delete": RouteDoc(
            "Remove a member from a team",
            TEAMS,
            out.TeamInfo,
            body=admin.TeamMemberDelete,
            errors=(400, 404),
        ),
        "admin.team_block": RouteDoc(
            "Block a team (its keys' calls get 401)",
            TEAMS,
            out.TeamInfo,
            body=admin.TeamRef,
            errors=(400, 404),
        ),
        "admin.team_unblock": RouteDoc(
            "Unblock a team", TEAMS, out.TeamInfo, body=admin.TeamRef, errors=(400, 404)
        ),
    }


def _spend_routes() -> dict[str, RouteDoc]:
    return {
        "admin.spend_logs": RouteDoc(
            "Spend-log rows",
            SPEND,
            out.SpendLogList,
            query=admin.SpendLogsQuery,
            errors=(400,),
            example={"end_user": SEED_CUSTOMER, "start_date": "2024-01-01"},
        ),
        "admin.spend_logs_csv": RouteDoc(
            "Spend-log rows as one CSV download (streamed)",
            SPEND,
            out.SpendLogCsv,
            query=admin.SpendLogsQuery,
            errors=(400,),
            description="The rows `/spend/logs` pages through with the same filters "
            "(`page` and `page_size` are ignored), all of them, streamed in chunks.",
            text_media_type="text/csv",
            text_example="request_id,startTime,endTime,duration_seconds,status,model,...\r\n",
        ),
        "admin_reports.spend_report": RouteDoc(
            "Spend per day and team, customer, key, user or model",
            SPEND,
            out.SpendReport,
            query=admin.SpendReportQuery,
            errors=(400,),
            example={"start_date": "2024-04-01", "end_date": "2024-06-30", "group_by": "team"},
        ),
        "admin.global_spend": RouteDoc("Proxy-wide spend and budget", SPEND, out.GlobalSpend),
        "admin_reports.spend_per_day": RouteDoc(
            "Spend per UTC day", SPEND, out.DailySpend, query=admin.ReportWindow, errors=(400,)
        ),
        "admin_reports.top_customers": RouteDoc(
            "End users by spend", SPEND, out.TopCustomers, query=admin.TopQuery, errors=(400,)
        ),
        "admin_reports.top_keys": RouteDoc(
            "Keys by spend", SPEND, out.TopKeys, query=admin.TopQuery, errors=(400,)
        ),
    }


_STORED_RESPONSE_NOTE = (
    "Passed through, unmetered, to the upstream that created the response; any other "
    "key gets 404, as for an unknown id."
)


def _llm_routes() -> dict[str, RouteDoc]:
    upstream = (400, 403, 429, 502, 504)
    return {
        "llm.chat_completions": RouteDoc(
            "Chat completion (OpenAI-compatible, metered)",
            LLM,
            out.ChatCompletion,
            body=llm.ChatCompletionRequest,
            path_model_body=llm.DeploymentChatCompletionRequest,
            auth="key",
            errors=upstream,
            example={
                "model": "gpt-3.5-turbo",
                "user": SEED_CUSTOMER,
                "messages": [{"role": "user", "content": "what time is it"}],
            },
            streams=True,
            relays_upstream=True,
        ),
        "llm.embeddings": RouteDoc(
            "Embeddings (OpenAI-compatible, metered)",
            LLM,
            out.EmbeddingList,
            body=llm.EmbeddingRequest,
            path_model_body=llm.DeploymentEmbeddingRequest,
            auth="key",
            errors=upstream,
            example={"model": "text-embedding-ada-002", "input": ["hello world"]},
            relays_upstream=True,
        ),
        "llm.completions": RouteDoc(
            "Legacy text completion (OpenAI-compatible, metered)",
            LLM,
            out.TextCompletion,
            body=llm.CompletionRequest,
            path_model_body=llm.DeploymentCompletionRequest,
            auth="key",
            errors=upstream,
            example={
                "model": "gpt-3.5-turbo",
                "prompt": "Say this is a test",
                "max_tokens": 7,
            },
            streams=True,
            relays_upstream=True,
            description="`prompt` may be a string, strings, token ids or lists of token ids; "
            "`n` x `best_of` answers per prompt are billed and reserved.",
        ),
        "llm.responses": RouteDoc(
            "Create a response (OpenAI Responses API, metered)",
            LLM,
            out.ResponseObject,
            body=llm.ResponsesRequest,
            auth="key",
            errors=(*upstream, 404),
            example={"model": "gpt-4o-mini", "input": "Tell me a three sentence bedtime story."},
            streams=True,
            stream_note="typed `event: response.*` events, ending with `response.completed` "
            "(which carries the usage the call is billed for)",
            relays_upstream=True,
            description="Metered from `usage` (cached input and reasoning tokens priced). "
            "`previous_response_id` must name a response this key created (else 404); "
            "`background: true` is refused (it cannot be metered).",
        ),
        "llm.get_response": RouteDoc(
            "Retrieve a stored response (only the key that created it)",
            LLM,
            out.ResponseObject,
            auth="key",
            errors=(404, 502, 504),
            relays_upstream=True,
            description=_STORED_RESPONSE_NOTE,
        ),
        "llm.delete_response": RouteDoc(
            "Delete a stored response (only the key that created it)",
            LLM,
            out.ResponseDeleted,
            auth="key",
            errors=(404, 502, 504),
            relays_upstream=True,
            description=_STORED_RESPONSE_NOTE,
        ),
        "llm.response_input_items": RouteDoc(
            "A stored response's input items (only the key that created it)",
            LLM,
            out.ItemList,
            auth="key",
            errors=(404, 502, 504),
            relays_upstream=True,
            description=_STORED_RESPONSE_NOTE,
        ),
        "llm.messages": RouteDoc(
            "Create a message (Anthropic Messages API, metered; Claude Code)",
            LLM,
            out.AnthropicMessage,
            body=llm.MessagesRequest,
            auth="key",
            errors=upstream,
            example={
                "model": "claude-sonnet-4-5",
                "max_tokens": 1024,
                "messages": [{"role": "user", "content": "Hello, Claude"}],
            },
            streams=True,
            stream_note="Anthropic's `message_start`, `content_block_*`, `message_delta` "
            "(with usage) and `message_stop` events",
            relays_upstream=True,
            error_model=out.AnthropicErrorResponse,
            description="Anthropic's request, answer, events and error shape. The key may "
            "come as `x-api-key` or `Authorization: Bearer`; `anthropic-version` and "
            "`anthropic-beta` are passed on. Cache writes and reads are priced at their rates.",
        ),
        "llm.count_tokens": RouteDoc(
            "Count a message's input tokens (Anthropic, passed through, free)",
            LLM,
            out.TokenCount,
            body=llm.CountTokensRequest,
            auth="key",
            errors=upstream,
            example={
                "model": "claude-sonnet-4-5",
                "messages": [{"role": "user", "content": "Hello, Claude"}],
            },
            relays_upstream=True,
            error_model=out.AnthropicErrorResponse,
        ),
        "llm.list_models": RouteDoc("Models the caller may use", LLM, out.ModelList, auth="key"),
        "llm.get_model": RouteDoc("One model", LLM, out.Model, auth="key", errors=(404,)),
        "models.model_info": RouteDoc(
            "Configured models, without upstream keys", MODELS, out.ModelInfoResponse
        ),
        "metrics.metrics": RouteDoc(
            "Prometheus metrics: unpriced calls and proxy spend",
            METRICS,
            out.Metrics,
            description="The Prometheus text exposition format (JSON with `Accept: "
            "application/json`), the same from every worker and host: "
            "`comptroller_unpriced_calls_total` and `comptroller_unpriced_tokens_total` "
            "per `model` and `upstream_model` count the calls charged 0 because the model "
            "has no price (no litellm_params override, not in the price table); "
            "`comptroller_proxy_spend_usd` is the proxy-wide spend counter.",
            text_media_type="text/plain; version=0.0.4",
            text_example=(
                "# HELP comptroller_unpriced_calls_total Calls charged 0 ...\n"
                "# TYPE comptroller_unpriced_calls_total counter\n"
                'comptroller_unpriced_calls_total{model="my-llm",upstream_model="my-llm"} 3\n'
                "# HELP comptroller_unpriced_tokens_total Tokens ...\n"
                "# TYPE comptroller_unpriced_tokens_total counter\n"
                'comptroller_unpriced_tokens_total{model="my-llm",upstream_model="my-llm"} 412\n'
                "# HELP comptroller_proxy_spend_usd Proxy-wide spend ...\n"
                "# TYPE comptroller_proxy_spend_usd gauge\n"
                "comptroller_proxy_spend_usd 12.5\n"
            ),
        ),
        "health.liveliness": RouteDoc(
            "Liveness probe (no database)", HEALTH, out.Liveliness, auth="none"
        ),
        "health.readiness": RouteDoc(
            "Readiness probe (checks the database)", HEALTH, out.Readiness, auth="none"
        ),
        "health.deployments_health": RouteDoc(
            "Call every deployment now and say which answer",
            HEALTH,
            out.DeploymentsHealth,
            query=admin.HealthQuery,
            errors=(404,),
            description="One tiny real call per deployment (or per deployment of `model`), "
            "not metered; `unhealthy_endpoints` carry the upstream's error. Keys never show.",
        ),
    }


ROUTES: dict[str, RouteDoc] = {
    **_key_routes(),
    **_user_routes(),
    **_customer_routes(),
    **_budget_routes(),
    **_team_routes(),
    **_spend_routes(),
    **_llm_routes(),
}


def is_documented(rule: Rule) -> bool:
    """API routes, as opposed to the admin UI, static files and the docs."""
    blueprint = rule.endpoint.rsplit(".", 1)[0] if "." in rule.endpoint else ""
    return blueprint not in UNDOCUMENTED_BLUEPRINTS and rule.endpoint not in UNDOCUMENTED_ENDPOINTS


def openapi_path(rule: Rule) -> str:
    """``/models/<path:model>`` as ``/models/{model}``."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)


def _operation_id(name: str, method: str, path: str) -> str:
    """FastAPI's scheme, as LiteLLM's Swagger has it: ``new_user_user_new_post``."""
    return re.sub(r"\W", "_", f"{name}{path}") + f"_{method.lower()}"


def _version() -> str:
    try:
        return version("comptroller")
    except PackageNotFoundError:
        return "0.0.0"


class _Schemas:
    """Collects pydantic models; their ``$ref``s are filled in by :meth:`components`."""

    def __init__(self) -> None:
        self.refs: dict[type[BaseModel], list[dict[str, Any]]] = {}

    def ref(self, model: type[BaseModel]) -> dict[str, Any]:
        placeholder: dict[str, Any] = {}
        self.refs.setdefault(model, []).append(placeholder)
        return placeholder

    def components(self) -> dict[str, Any]:
        """``components.schemas``; points every placeholder at its model's entry."""
        pairs = [(model, "validation") for model in self.refs]
        refs, defs = models_json_schema(pairs, ref_template=COMPONENT_REF)  # type: ignore[arg-type]
        for model, placeholders in self.refs.items():
            for placeholder in placeholders:
                placeholder.update(refs[(model, "validation")])
        return dict(defs.get("$defs", {}))


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """``Id | None`` as a query parameter: absent is how a query says null."""
    options = schema.get("anyOf")
    if not options:
        return schema
    kept = [option for option in options if option.get("type") != "null"]
    rest = {k: v for k, v in schema.items() if k != "anyOf" and (k, v) != ("default", None)}
    return {**kept[0], **rest} if len(kept) == 1 else {**rest, "anyOf": kept}


def query_parameters(
    model: type[BaseModel], example: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    schema = model.model_json_schema()
    required = set(schema.get("required", []))
    params = []
    for name, prop in schema.get("properties", {}).items():
        prop = _without_null(prop)
        prop.pop("title", None)
        param: dict[str, Any] = {
            "name": name,
            "in": "query",
            "required": name in required,
            "schema": prop,
        }
        if "description" in prop:
            param["description"] = prop["description"]
        if example and name in example:
            param["example"] = example[name]
        params.append(param)
    return params


def _path_parameters(rule: Rule) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "string", "minLength": 1},
            "description": "A model_name from the proxy's model_list."
            if name in ("model", "deployment")
            else None,
        }
        for name in sorted(rule.arguments)
    ]


def _end_user_header(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": False,
        "description": "The end user (customer) to meter the call to; wins over the body's `user`.",
        "schema": {"type": "string", "minLength": 1, "maxLength": 255},
    }


def _security(auth: Auth) -> list[dict[str, list[str]]]:
    if auth == "none":
        return []
    return [{"bearerAuth": []}, {"apiKeyHeader": []}]


_AUTH_NOTE = {
    "master": "Master key only: a virtual key gets 403, no key 401.",
    "own_key": "The master key, or a virtual key reading itself.",
    "key": "The master key or a virtual key.",
    "none": "No key needed.",
}


def _error(status: int) -> dict[str, Any]:
    return {"$ref": f"#/components/responses/E{status}"}


def _error_statuses(
    doc: RouteDoc, method: str, has_body: bool, rule_has_path_parameters: bool
) -> list[int]:
    statuses = set(doc.errors)
    if doc.auth != "none":
        statuses.add(401)
    if doc.auth in ("master", "own_key"):
        statuses.add(403)
    if has_body or method == "POST":
        statuses.update((400, 413))
    if doc.query is not None:
        statuses.add(400)
    if doc.query is not None or rule_has_path_parameters:
        statuses.add(414)
    if doc.response is not out.Liveliness:  # liveness never touches the database
        statuses.add(503)
    return sorted(statuses)


def _success(doc: RouteDoc, schemas: _Schemas) -> dict[str, Any]:
    content: dict[str, Any] = {}
    if doc.text_media_type is not None:
        text: dict[str, Any] = {"schema": {"type": "string"}}
        if doc.text_example is not None:
            text["example"] = doc.text_example
        content[doc.text_media_type] = text
    content["application/json"] = {"schema": schemas.ref(doc.response)}
    description = "Success."
    if doc.streams:
        content["text/event-stream"] = {"schema": {"type": "string"}}
        description += f" With `stream: true`: server-sent events, {doc.stream_note}."
    answer: dict[str, Any] = {"description": description, "content": content}
    if doc.relays_upstream:
        answer["headers"] = _rate_limit_headers()
    return answer


def _rate_limit_headers() -> dict[str, Any]:
    names = [
        f"x-ratelimit-{what}-{unit}"
        for unit in ("requests", "tokens")
        for what in ("limit", "remaining", "reset")
    ]
    return {
        name: {
            "description": "The tightest limit that applies to this call (when one is set).",
            "schema": {"type": "string"},
        }
        for name in names
    }


def _operation(rule: Rule, method: str, doc: RouteDoc | None, schemas: _Schemas) -> dict[str, Any]:
    path = openapi_path(rule)
    name = (doc.name if doc else None) or rule.endpoint.rsplit(".", 1)[-1]
    op: dict[str, Any] = {"operationId": _operation_id(name, method, path)}
    parameters = [{k: v for k, v in p.items() if v is not None} for p in _path_parameters(rule)]
    if doc is None:
        # A route this module does not know yet: listed, with only what every route shares.
        op.update(summary=rule.endpoint, tags=["undescribed"])
        op["responses"] = {
            "default": {"description": "Not described yet.", "content": {"*/*": {}}},
        }
        if parameters:
            op["parameters"] = parameters
        return op
    op.update(summary=doc.summary, tags=[doc.tag])
    op["description"] = " ".join(filter(None, [doc.description, _AUTH_NOTE[doc.auth]]))
    op["security"] = _security(doc.auth)
    if doc.query is not None:
        parameters += query_parameters(doc.query, doc.example)
    if doc.relays_upstream:
        parameters += [_end_user_header(name) for name in END_USER_HEADERS]
    if parameters:
        op["parameters"] = parameters
    body = doc.path_model_body if doc.path_model_body and rule.arguments else doc.body
    if body is not None:
        # Required fields, or one of several (``anyOf`` of ``required`` lists).
        required = any(field.is_required() for field in body.model_fields.values()) or bool(
            body.model_json_schema().get("anyOf")
        )
        media: dict[str, Any] = {"schema": schemas.ref(body)}
        if doc.example is not None and doc.query is None:
            media["example"] = doc.example
        op["requestBody"] = {"required": required, "content": {"application/json": media}}
    responses: dict[str, Any] = {"200": _success(doc, schemas)}
    for status in _error_statuses(doc, method, body is not None, bool(rule.arguments)):
        if doc.error_model is not None and status != 414:
            responses[str(status)] = {
                "description": _STATUS_TEXT.get(status, "Error."),
                "content": {"application/json": {"schema": schemas.ref(doc.error_model)}},
            }
        else:
            responses[str(status)] = _error(status)
    if doc.relays_upstream:
        responses["default"] = {
            "description": "An upstream error, relayed with its own status and message.",
            "content": {
                "application/json": {"schema": schemas.ref(doc.error_model or out.ErrorResponse)}
            },
        }
    op["responses"] = responses
    return op


def _error_components(schemas: _Schemas) -> dict[str, Any]:
    responses = {}
    for status, text in _STATUS_TEXT.items():
        answer: dict[str, Any] = {
            "description": text,
            "content": {"application/json": {"schema": schemas.ref(out.ErrorResponse)}},
        }
        if status == 429:
            answer["headers"] = {
                "Retry-After": {"description": "Seconds to wait.", "schema": {"type": "string"}}
            }
        responses[f"E{status}"] = answer
    # Answered by Comptroller's gunicorn worker before the app sees the request
    # (proxy.serving), in the same error shape.
    responses["E414"] = {
        "description": "The URL is over the HTTP server's request-line limit (gunicorn's "
        "limit_request_line, 4094 bytes by default).",
        "content": {"application/json": {"schema": schemas.ref(out.ErrorResponse)}},
    }
    return responses


def documented_rules(app: Flask) -> list[Rule]:
    return sorted(
        (rule for rule in app.url_map.iter_rules() if is_documented(rule)),
        key=lambda rule: rule.rule,
    )


def build_document(app: Flask) -> dict[str, Any]:
    """The OpenAPI 3.1 document for every API route of ``app``."""
    schemas = _Schemas()
    paths: dict[str, dict[str, Any]] = {}
    for rule in documented_rules(app):
        doc = ROUTES.get(rule.endpoint)
        item = paths.setdefault(openapi_path(rule), {})
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            item[method.lower()] = _operation(rule, method, doc, schemas)
    responses = _error_components(schemas)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Comptroller",
            "version": _version(),
            "description": (
                "OpenAI-compatible LLM gateway that meters spend and enforces budgets and "
                "rate limits. Send the master key or a virtual key as "
                "`Authorization: Bearer <key>` (or `api-key: <key>`). Every error has the "
                'shape `{"error": {"message", "type", "param", "code"}}`.'
            ),
        },
        "paths": paths,
        "components": {
            "schemas": schemas.components(),
            "responses": responses,
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The master key or a virtual key (sk-...).",
                },
                "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "api-key"},
            },
        },
        "security": _security("key"),
        "tags": [{"name": name} for name in dict.fromkeys(d.tag for d in ROUTES.values())],
    }
