"""The OpenAI-compatible routes: chat completions, embeddings, models."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from proxy.access import allowed_model_names
from proxy.auth import Caller, authenticate
from proxy.errors import BadRequest, NotFound
from proxy.gateway import handle_call
from proxy.views.common import json_body, services

bp = Blueprint("llm", __name__)


def _require_type(body: dict[str, Any], name: str, kinds: tuple[type, ...], what: str) -> None:
    if name in body and body[name] is not None:
        value = body[name]
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise BadRequest(f"'{name}' must be {what}", param=name)


def validate_chat(body: dict[str, Any]) -> None:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' is required and must be a string", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' is required and must be a non-empty array", param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise BadRequest(
                f"'messages[{i}]' must be an object with a string 'role'", param=f"messages[{i}]"
            )
    _require_type(body, "stream", (bool,), "a boolean")
    _require_type(body, "max_tokens", (int,), "an integer")
    _require_type(body, "max_completion_tokens", (int,), "an integer")
    _require_type(body, "stream_options", (dict,), "an object")
    _require_type(body, "metadata", (dict,), "an object")
    for name in ("max_tokens", "max_completion_tokens"):
        if isinstance(body.get(name), int) and body[name] < 1:
            raise BadRequest(f"'{name}' must be at least 1", param=name)


def validate_embeddings(body: dict[str, Any]) -> None:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' is required and must be a string", param="model")
    inp = body.get("input")
    if isinstance(inp, str) and inp:
        return
    if isinstance(inp, list) and inp:
        return
    raise BadRequest("'input' is required: a string or a non-empty array", param="input")


@bp.post("/chat/completions")
@bp.post("/v1/chat/completions")
@bp.post("/openai/deployments/<path:deployment>/chat/completions")
def chat_completions(deployment: str | None = None) -> ResponseReturnValue:
    svc = services()
    caller = authenticate(request.headers, svc.config.master_key)
    body = json_body()
    if deployment is not None:
        body["model"] = deployment
    validate_chat(body)
    return handle_call(svc, caller, "chat", body, request.headers)


@bp.post("/embeddings")
@bp.post("/v1/embeddings")
@bp.post("/openai/deployments/<path:deployment>/embeddings")
def embeddings(deployment: str | None = None) -> ResponseReturnValue:
    svc = services()
    caller = authenticate(request.headers, svc.config.master_key)
    body = json_body()
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
