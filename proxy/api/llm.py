"""The OpenAI-compatible routes: chat completions, embeddings, models."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Response, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

from proxy.api.common import BodyRequest, json_body, services
from proxy.api.llm_schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    CountTokensRequest,
    EmbeddingRequest,
    MessagesRequest,
    ResponsesRequest,
    check_body,
)
from proxy.call import api_bounds
from proxy.call.access import allowed_model_names, list_allows
from proxy.call.auth import Caller, authenticate, hash_key
from proxy.call.gateway import (
    CallAnswer,
    check_model_access,
    end_user_id,
    handle_call,
    resolve_deployment,
)
from proxy.errors import NotFound, ProxyError
from proxy.storage.db import is_unreachable
from proxy.storage.responses import forget_response, owned_response
from proxy.upstream.deployments import Deployment

bp = Blueprint("llm", __name__)
# Bodies up to this size are parsed before authentication (see _authenticated_body).
PREFETCH_BODY_LIMIT = 64 * 1024


def validate_chat(body: dict[str, Any]) -> None:
    check_body(ChatCompletionRequest, body)


def validate_embeddings(body: dict[str, Any]) -> None:
    check_body(EmbeddingRequest, body)


def _authenticated_body(
    svc: Any, req: BodyRequest, metered: bool = True, model: str | None = None
) -> tuple[Caller, dict[str, Any]]:
    """The caller and the JSON body; a bad body is answered only after a bad key.

    The body is parsed first so that the query that reads the key can also
    read the end user's rows (one round trip for everything the checks need)
    and, for a ``metered`` call, run the plugins' read fragments
    (proxy.call.read_fold; ``model`` is the one the route names, else the
    body's). A large body is parsed only once the caller is known: nobody
    without a key gets the server to parse megabytes (the gateway then reads
    the end user's rows on its own, and the plugins decide in their checks).
    """
    length = req.content_length
    if length is None or length > PREFETCH_BODY_LIMIT:
        caller = _identified(
            svc, req.headers, lambda: authenticate(req.headers, svc.config.master_key)
        )
        return caller, json_body(req=req)
    body: dict[str, Any] = {}
    body_error: Exception | None = None
    try:
        body = json_body(req=req)
    except (ProxyError, HTTPException) as err:
        body_error = err
    try:
        hint = end_user_id(req.headers, body)
    except ProxyError:
        hint = None  # reported by the gateway, after authentication
    fold = None
    if metered and body_error is None:
        fold = svc.fold_request(model or body.get("model"), hint)
    caller = _identified(
        svc,
        req.headers,
        lambda: authenticate(
            req.headers,
            svc.config.master_key,
            end_user_id=hint,
            default_budget_id=svc.config.litellm_settings.max_end_user_budget_id,
            prefetch=True,
            fragments=fold.storage if fold is not None else (),
            on_read=fold.remember if fold is not None else None,
        ),
    )
    if body_error is not None:
        raise body_error
    return caller, body


def _identified(svc: Any, headers: Any, authenticated: Callable[[], Caller]) -> Caller:
    """The caller; with the database away, fail-open's last known state of it (or 503)."""
    try:
        caller = authenticated()
    except Exception as err:
        if not (
            is_unreachable(err) and svc.config.general_settings.allow_requests_on_db_unavailable
        ):
            raise
        return svc.last_known.recall(headers, svc.config.master_key)
    svc.last_known.remember(caller)
    return caller


# The metered calls, given the request: Flask's (the views below) or the fast path's
# (proxy.api.fast_path, which answers them without Flask's request context).


def chat_call(svc: Any, req: BodyRequest, deployment: str | None = None) -> CallAnswer:
    caller, body = _authenticated_body(svc, req, model=deployment)
    if deployment is not None:
        body["model"] = deployment
    validate_chat(body)
    return handle_call(svc, caller, "chat", body, req.headers)


def embeddings_call(svc: Any, req: BodyRequest, deployment: str | None = None) -> CallAnswer:
    caller, body = _authenticated_body(svc, req, model=deployment)
    if deployment is not None:
        body["model"] = deployment
    validate_embeddings(body)
    return handle_call(svc, caller, "embeddings", body, req.headers)


def completions_call(svc: Any, req: BodyRequest, deployment: str | None = None) -> CallAnswer:
    caller, body = _authenticated_body(svc, req, model=deployment)
    if deployment is not None:
        body["model"] = deployment
    check_body(CompletionRequest, body)
    return handle_call(svc, caller, "completions", body, req.headers)


def responses_call(svc: Any, req: BodyRequest, deployment: str | None = None) -> CallAnswer:
    caller, body = _authenticated_body(svc, req)
    check_body(ResponsesRequest, body)
    carried = 0
    pinned: Deployment | None = None
    previous = body.get("previous_response_id")
    if previous is not None:
        row = owned_response(previous, _caller_hash(svc, caller))
        if row is None:
            raise NotFound(
                f"Previous response with id '{previous}' not found.", param="previous_response_id"
            )
        carried = int(row.context_tokens)
        pinned = _holder(svc, row)
        if pinned is not None and pinned.model_name != body["model"]:
            pinned = None  # another model: routed as usual (its upstream must know the id)
    return handle_call(
        svc,
        caller,
        "responses",
        body,
        req.headers,
        carried_tokens=carried,
        pinned=pinned,
    )


def messages_call(svc: Any, req: BodyRequest, deployment: str | None = None) -> CallAnswer:
    """Anthropic's Messages API (Claude Code); errors in Anthropic's shape."""
    caller, body = _authenticated_body(svc, req)
    check_body(MessagesRequest, body)
    return handle_call(svc, caller, "messages", body, req.headers)


@bp.post("/chat/completions")
@bp.post("/v1/chat/completions")
@bp.post("/openai/deployments/<path:deployment>/chat/completions")
def chat_completions(deployment: str | None = None) -> ResponseReturnValue:
    return chat_call(services(), request, deployment).response()


@bp.post("/embeddings")
@bp.post("/v1/embeddings")
@bp.post("/openai/deployments/<path:deployment>/embeddings")
def embeddings(deployment: str | None = None) -> ResponseReturnValue:
    return embeddings_call(services(), request, deployment).response()


@bp.post("/completions")
@bp.post("/v1/completions")
@bp.post("/openai/deployments/<path:deployment>/completions")
def completions(deployment: str | None = None) -> ResponseReturnValue:
    return completions_call(services(), request, deployment).response()


def _caller_hash(svc: Any, caller: Caller) -> str | None:
    """The hash responses are filed under: the key's, or the master key's."""
    if caller.key is not None:
        return str(caller.key.token)
    return hash_key(svc.config.master_key) if caller.is_master else None


@bp.post("/responses")
@bp.post("/v1/responses")
def responses() -> ResponseReturnValue:
    return responses_call(services(), request).response()


def _holder(svc: Any, row: Any) -> Deployment | None:
    """The deployment whose upstream stored a response: the one that answered, else
    (a row from before deployments had ids, or a deployment since removed) the
    first of its model name."""
    dep = svc.models.by_id.get(row.deployment_id) if row.deployment_id else None
    return dep or svc.models.get(row.model_group)


def _forward_response(response_id: str, suffix: str = "") -> Response:
    """Pass a stored-response call through to the upstream that created it, for the
    key that created it only (anyone else gets 404, as for an unknown id)."""
    svc = services()
    caller = authenticate(request.headers, svc.config.master_key)
    row = owned_response(response_id, _caller_hash(svc, caller))
    dep = _holder(svc, row) if row is not None else None
    if row is None or dep is None:
        raise NotFound(f"No response found with id '{response_id}'.", param="response_id")
    check_model_access(svc, caller, dep.model_name)
    path = f"responses/{response_id}{suffix}"
    # Everything but ``stream``: a replayed stream would be relayed unmetered and whole.
    query = [(k, v) for k, v in request.args.items(multi=True) if k != "stream"]
    if query:
        path += "?" + urlencode(query)
    status, raw = svc.upstream.forward(dep, request.method, path, client_headers=request.headers)
    if request.method == "DELETE" and status < 300:
        forget_response(response_id)
    return Response(raw, status=status, mimetype="application/json")


@bp.get("/responses/<response_id>")
@bp.get("/v1/responses/<response_id>")
def get_response(response_id: str) -> ResponseReturnValue:
    return _forward_response(response_id)


@bp.delete("/responses/<response_id>")
@bp.delete("/v1/responses/<response_id>")
def delete_response(response_id: str) -> ResponseReturnValue:
    return _forward_response(response_id)


@bp.get("/responses/<response_id>/input_items")
@bp.get("/v1/responses/<response_id>/input_items")
def response_input_items(response_id: str) -> ResponseReturnValue:
    return _forward_response(response_id, "/input_items")


@bp.post("/v1/messages")
@bp.post("/anthropic/v1/messages")
def messages() -> ResponseReturnValue:
    return messages_call(services(), request).response()


@bp.post("/v1/messages/count_tokens")
@bp.post("/anthropic/v1/messages/count_tokens")
def count_tokens() -> ResponseReturnValue:
    """Passed through to an ``anthropic/`` model's upstream; free, so not metered."""
    svc = services()
    caller, body = _authenticated_body(svc, request, metered=False)
    check_body(CountTokensRequest, body)
    dep = resolve_deployment(svc, body["model"])
    check_model_access(svc, caller, dep.model_name)
    if dep.provider != "anthropic" and not dep.answers_itself:
        # No such endpoint upstream: Comptroller's own estimate (about 4 characters a token).
        return jsonify({"input_tokens": api_bounds.input_estimate(body, "messages")})
    upstream_body = {**body, "model": dep.upstream_model}
    status, raw = svc.upstream.forward(
        dep, "POST", "messages/count_tokens", upstream_body, client_headers=request.headers
    )
    return Response(raw, status=status, mimetype="application/json")


def _visible_models(svc: Any, caller: Caller) -> list[str]:
    """The model names ``caller`` may use, in config order."""
    if caller.is_master or caller.key is None:
        return svc.models.names()
    user_models = caller.user.models if caller.user is not None else None
    names = allowed_model_names(caller.key.models, user_models, svc.models)
    team = caller.rows.team if caller.rows is not None else None
    if team is not None:  # a team's models narrow its keys' too
        names = [name for name in names if list_allows(team.models, name, svc.models)]
    return names


@bp.get("/models")
@bp.get("/v1/models")
def list_models() -> ResponseReturnValue:
    svc = services()
    names = _visible_models(
        svc, authenticate(request.headers, svc.config.master_key, prefetch=True)
    )
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
    allowed = _visible_models(
        svc, authenticate(request.headers, svc.config.master_key, prefetch=True)
    )
    dep = svc.models.get(model)
    if dep is None or model not in allowed:
        raise NotFound(f"The model '{model}' does not exist", param="model")
    return jsonify(
        {"id": model, "object": "model", "created": dep.created, "owned_by": dep.owned_by}
    )
