"""The OpenAI-compatible routes: chat completions, embeddings, models."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

from proxy.api.common import json_body, services
from proxy.api.llm_schemas import ChatCompletionRequest, EmbeddingRequest, check_body
from proxy.call.access import allowed_model_names
from proxy.call.auth import Caller, authenticate
from proxy.call.gateway import end_user_id, handle_call
from proxy.errors import NotFound, ProxyError

bp = Blueprint("llm", __name__)
# Bodies up to this size are parsed before authentication (see _authenticated_body).
PREFETCH_BODY_LIMIT = 64 * 1024


def validate_chat(body: dict[str, Any]) -> None:
    check_body(ChatCompletionRequest, body)


def validate_embeddings(body: dict[str, Any]) -> None:
    check_body(EmbeddingRequest, body)


def _authenticated_body(svc: Any) -> tuple[Caller, dict[str, Any]]:
    """The caller and the JSON body; a bad body is answered only after a bad key.

    The body is parsed first so that the query that reads the key can also
    read the end user's rows (one round trip for everything the checks need).
    A large body is parsed only once the caller is known: nobody without a
    key gets the server to parse megabytes (the gateway then reads the end
    user's rows on its own).
    """
    length = request.content_length
    if length is None or length > PREFETCH_BODY_LIMIT:
        return authenticate(request.headers, svc.config.master_key), json_body()
    body: dict[str, Any] = {}
    body_error: Exception | None = None
    try:
        body = json_body()
    except (ProxyError, HTTPException) as err:
        body_error = err
    try:
        hint = end_user_id(request.headers, body)
    except ProxyError:
        hint = None  # reported by the gateway, after authentication
    caller = authenticate(
        request.headers,
        svc.config.master_key,
        end_user_id=hint,
        default_budget_id=svc.config.litellm_settings.max_end_user_budget_id,
        prefetch=True,
    )
    if body_error is not None:
        raise body_error
    return caller, body


@bp.post("/chat/completions")
@bp.post("/v1/chat/completions")
@bp.post("/openai/deployments/<path:deployment>/chat/completions")
def chat_completions(deployment: str | None = None) -> ResponseReturnValue:
    svc = services()
    caller, body = _authenticated_body(svc)
    if deployment is not None:
        body["model"] = deployment
    validate_chat(body)
    return handle_call(svc, caller, "chat", body, request.headers)


@bp.post("/embeddings")
@bp.post("/v1/embeddings")
@bp.post("/openai/deployments/<path:deployment>/embeddings")
def embeddings(deployment: str | None = None) -> ResponseReturnValue:
    svc = services()
    caller, body = _authenticated_body(svc)
    if deployment is not None:
        body["model"] = deployment
    validate_embeddings(body)
    return handle_call(svc, caller, "embeddings", body, request.headers)


def _visible_models(svc: Any, caller: Caller) -> list[str]:
    """The model names ``caller`` may use, in config order."""
    if caller.is_master or caller.key is None:
        return svc.models.names()
    user_models = caller.user.models if caller.user is not None else None
    return allowed_model_names(caller.key.models, user_models, svc.models)


@bp.get("/models")
@bp.get("/v1/models")
def list_models() -> ResponseReturnValue:
    svc = services()
    names = _visible_models(svc, authenticate(request.headers, svc.config.master_key))
    data = [
        {
            "id": name,
            "object": "model",
            "created": svc.models.get(name).created,
            "owned_by": svc.models.get(name).owned_by,
        }
        for name in names
    ]
    return jsonify({"object": "list", "data": data})


@bp.get("/v1/models/<path:model>")
@bp.get("/models/<path:model>")
def get_model(model: str) -> ResponseReturnValue:
    svc = services()
    allowed = _visible_models(svc, authenticate(request.headers, svc.config.master_key))
    dep = svc.models.get(model)
    if dep is None or model not in allowed:
        raise NotFound(f"The model '{model}' does not exist", param="model")
    return jsonify(
        {"id": model, "object": "model", "created": dep.created, "owned_by": dep.owned_by}
    )
