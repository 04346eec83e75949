"""One metered LLM call, from an authenticated request to its spend row.

identify -> check (plugins) -> call upstream -> settle spend -> release.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pluggy
from flask import Response, jsonify

from proxy.call import api_bounds, read_fold
from proxy.call.access import list_allows, refusing_list
from proxy.call.auth import Caller
from proxy.call.bound import DEFAULT_OUTPUT_CAP, WorstCase, call_worst_case
from proxy.call.context import (
    CallContext,
    CallRead,
    ReadFragment,
    Refusal,
    Usage,
    new_request_id,
)
from proxy.call.customers import call_rows, load_customer
from proxy.call.estimate import estimate_prompt_tokens
from proxy.call.last_known import LastKnownCallers
from proxy.call.router import Router
from proxy.call.settle import JournalReplayer, settle_spend
from proxy.config import Config
from proxy.errors import AuthError, BadRequest, Forbidden, ProxyError
from proxy.hookcalls import call_hook
from proxy.plugins import call_each
from proxy.storage.db import database, is_unreachable
from proxy.storage.journal import SpendJournal
from proxy.storage.resets import apply_due_resets
from proxy.storage.responses import remember_response
from proxy.storage.schema_gate import SchemaGate
from proxy.upstream.apis import APIS
from proxy.upstream.client import StreamRelay, UpstreamClient, upstream_path
from proxy.upstream.deployments import Deployment, ModelTable

log = logging.getLogger("comptroller.gateway")
T = TypeVar("T")

END_USER_HEADERS = ("x-litellm-customer-id", "x-litellm-end-user-id")


@dataclass
class Services:
    """What every request needs, built once per process by ``create_app``."""

    config: Config
    models: ModelTable
    upstream: UpstreamClient
    pm: pluggy.PluginManager
    schema: SchemaGate
    journal: SpendJournal
    router: Router
    # Set by create_app once the services exist (it replays with them).
    replayer: JournalReplayer = field(init=False)
    # Fail-open's last known state of each caller (proxy.call.last_known).
    last_known: LastKnownCallers = field(default_factory=LastKnownCallers)
    # The plugins' statements run in each metered call's read, by name (proxy.call.read_fold).
    read_fragments: dict[str, ReadFragment] = field(default_factory=dict)

    def fold_request(self, model: Any, end_user: str | None) -> read_fold.FoldRequest | None:
        """What a metered call's read runs for the plugins, if any: asked before
        authentication, for a call to ``model`` (what the body names)."""
        if not self.read_fragments or not isinstance(model, str):
            return None
        deployment = self.models.get(model)
        if deployment is None:
            return None  # refused before any check: nothing for the plugins to decide
        read = CallRead(
            request_id=new_request_id(),
            config=self.config,
            model_group=deployment.model_name,
            max_upstream_seconds=self.router.max_seconds(deployment.model_name),
            end_user_id=end_user,
        )
        return read_fold.FoldRequest.of(read, self.read_fragments)


def end_user_id(headers: Any, body: dict[str, Any]) -> str | None:
    """The end user: the first of the two headers, ``user``, ``metadata.user_id``.

    Surrounding whitespace is not part of an id, and a blank one names nobody
    (the next source is tried), so every stored end user can be managed by the
    admin API, whose ids are stripped the same way.
    """
    for name in END_USER_HEADERS:
        value = headers.get(name)
        if value and value.strip():
            return _storable_id(_utf8_header(value, name).strip(), name)
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise BadRequest("'user' must be a string", param="user")
    if user and user.strip():
        return _storable_id(user.strip(), "user")
    metadata = body.get("metadata")
    if isinstance(metadata, dict):
        meta_user = metadata.get("user_id")
        if isinstance(meta_user, str) and meta_user.strip():
            return _storable_id(meta_user.strip(), "metadata.user_id")
    return None


def _utf8_header(value: str, name: str) -> str:
    """A header value as the client wrote it: WSGI hands over its bytes as latin-1
    text, and clients send non-ASCII ids as UTF-8 (as in a JSON body)."""
    if value.isascii():
        return value
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        raise BadRequest(f"'{name}' must be UTF-8 text", param=name) from None


def _storable_id(value: str, param: str) -> str:
    """An end-user id fits the customer table (255 characters, no NUL), or 400 before any call."""
    if len(value) > 255 or "\x00" in value:
        raise BadRequest(f"'{param}' must be at most 255 characters without NUL", param=param)
    return value


def resolve_deployment(services: Services, model: str) -> Deployment:
    """The first deployment of the model group ``model`` (the router picks the one that answers)."""
    deployment = services.models.get(model)
    if deployment is None:
        raise BadRequest(f"Invalid model name passed in model={model}", param="model")
    return deployment


def check_model_access(services: Services, caller: Caller, model: str) -> None:
    if caller.is_master or caller.key is None:
        return
    user_models = caller.user.models if caller.user is not None else None
    refused_by = refusing_list(model, caller.key.models, user_models, services.models)
    if refused_by is not None:
        raise AuthError(
            f"Authentication Error, key not allowed to access model. "
            f"This key can only access models={refused_by}. "
            f"Tried to access {model}",
            param="model",
        )
    team = caller.rows.team if caller.rows is not None else None
    if team is not None and not list_allows(team.models, model, services.models):
        raise AuthError(
            f"Authentication Error, team not allowed to access model. "
            f"This team can only access models={list(team.models)}. "
            f"Tried to access {model}",
            param="model",
        )


def _make_boundable(ctx: CallContext, bound: WorstCase) -> None:
    """Strict mode: a call whose cost has no bound is refused before any budget is
    touched; a call with no output limit to a model whose cap is unknown is sent
    with Comptroller's default cap, so that the bound reserved is one the upstream keeps."""
    config = ctx.config.general_settings
    # Every deployment the router may send the call to, fallbacks included.
    unpriced = [d for d in ctx.reachable if not d.price.known and not d.answers_itself]
    if unpriced and not config.allow_unpriced_models:
        raise BadRequest(
            f"Model {unpriced[0].model_name} has no price, so strict budget enforcement "
            "cannot bound what its calls cost: set input_cost_per_token and "
            "output_cost_per_token in its litellm_params, or "
            "general_settings.allow_unpriced_models: true",
            param="model",
        )
    if bound.unbounded is not None:
        raise BadRequest(
            f"Strict budget enforcement cannot bound this call's cost: {bound.unbounded}",
            param="messages",
        )
    if bound.default_output_cap:
        limit = "max_output_tokens" if ctx.call_type == "responses" else "max_tokens"
        ctx.body[limit] = DEFAULT_OUTPUT_CAP


def build_context(
    services: Services,
    caller: Caller,
    deployment: Deployment,
    call_type: str,
    body: dict,
    headers: Any,
    carried_tokens: int = 0,
) -> CallContext:
    config = services.config
    # The plugins' fragments ran in the read that authenticated the caller: the call
    # keeps that read's id (leases were taken under it).
    folded = read_fold.pending()
    ctx = CallContext(
        config=config,
        call_type=call_type,
        deployment=deployment,
        body=body,
        stream=bool(body.get("stream")) and APIS[call_type].streams,
        is_master=caller.is_master,
        key=caller.key,
        user=caller.user,
        end_user_id=end_user_id(headers, body),
        carried_input_tokens=carried_tokens,
        model_group=deployment.model_name,
        reachable=services.router.reachable(deployment.model_name),
        max_upstream_seconds=services.router.max_seconds(deployment.model_name),
        request_id=folded.read.request_id if folded is not None else new_request_id(),
    )
    if caller.key is not None:
        ctx.team_id = caller.key.team_id or (caller.user.team_id if caller.user else None)
    if not caller.last_known:  # fail-open with the database away: no rows to read
        _load_rows(services, caller, ctx)
    ctx.worst_case = call_worst_case(ctx)
    ctx.estimated_cost = ctx.worst_case.cost
    if config.general_settings.budget_enforcement == "strict":
        _make_boundable(ctx, ctx.worst_case)
    if ctx.call_type == "chat":
        ctx.request_id = f"chatcmpl-{ctx.request_id.split('-', 1)[1]}"
    _take_read_results(services, caller, ctx)
    return ctx


def _take_read_results(services: Services, caller: Caller, ctx: CallContext) -> None:
    """The fragments' results go on ``ctx`` if they were computed for this call's rows
    (the read that authenticated it covered its end user); else they are given back."""
    folded = read_fold.claim()
    if folded is None:
        return
    rows = caller.rows
    if rows is not None and not caller.last_known and rows.end_user_id == ctx.end_user_id:
        ctx.read = folded.read
        ctx.read_results = folded.results
    else:
        read_fold.give_back(folded.read, folded.fragments, folded.results)


def _load_rows(services: Services, caller: Caller, ctx: CallContext) -> None:
    """The team, end user and proxy rows the checks read, with due resets applied."""
    rows = call_rows(services.config, ctx, caller.rows)
    ctx.team = rows.team
    load_customer(services.config, ctx, rows)
    if ctx.customer is not None and ctx.customer.blocked:
        raise Forbidden(
            f"User blocked from making LLM API Calls. User={ctx.end_user_id}", type="auth_error"
        )
    ctx.proxy_spend = rows.proxy_spend
    customer_duration = ctx.end_user_budget.budget_duration if ctx.end_user_budget else None
    apply_due_resets(
        (ctx.key, ctx.key.budget_duration if ctx.key else None),
        (ctx.user, ctx.user.budget_duration if ctx.user else None),
        (ctx.team, ctx.team.budget_duration if ctx.team else None),
        (ctx.customer, customer_duration),
        (ctx.proxy_spend, services.config.litellm_settings.budget_duration),
    )


# Headers of a streamed answer (before its Content-Type, as Werkzeug orders them).
STREAM_HEADERS = (("Cache-Control", "no-cache"), ("X-Accel-Buffering", "no"))
_NEWLINE = re.compile(r"[\r\n]")


class CallAnswer:
    """A metered call's answer: 200, its headers, and its body (bytes, or the relay of a
    stream). The LLM routes' fast path (proxy.api.fast_path) hands it to the WSGI server
    as it is; Flask's path makes it the Werkzeug response it stands for
    (:meth:`response`, the same status line, headers in the same order, and body).
    Building a Werkzeug response (its ``Headers``, set one by one) cost a call more CPU
    than the rest of the answer together."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, body: bytes | Iterator[bytes], headers: list[tuple[str, str]]) -> None:
        self.status = "200 OK"
        self.body = body
        self.headers = headers

    def response(self) -> Response:
        return Response(self.body, headers=self.headers)

    def wsgi_body(self) -> Iterable[bytes]:
        """The body as the WSGI server iterates it (a stream's relay is closed by the server,
        which runs its settle when the client has gone)."""
        return [self.body] if isinstance(self.body, bytes) else self.body


def _answer(
    ctx: CallContext, body: bytes | Iterator[bytes], head: list[tuple[str, str]]
) -> CallAnswer:
    """The answer with ``head`` (Content-Type...) then the plugins' headers and the call id,
    each set once: a later value replaces an earlier one of the same name in place, as
    Werkzeug's ``headers[name] = value`` does (and a value must be one line)."""
    headers = head
    where = {name.lower(): i for i, (name, _) in enumerate(headers)}
    for name, value in (*ctx.response_headers.items(), ("x-comptroller-call-id", ctx.request_id)):
        text = value if isinstance(value, str) else str(value)
        if _NEWLINE.search(text):
            raise ValueError("Header values must not contain newline characters.")
        lower = name.lower()
        i = where.get(lower)
        if i is None:
            where[lower] = len(headers)
            headers.append((name, text))
        else:
            headers[i] = (headers[i][0], text)
    return CallAnswer(body, headers)


def run_checks(services: Services, ctx: CallContext) -> Refusal | None:
    """Every plugin's ``pre_request_check``: the first refusal wins."""
    refusal: Refusal | None = call_hook(services.pm, "pre_request_check", ctx=ctx)
    return refusal


def _finish(services: Services, ctx: CallContext, outcome: str) -> None:
    # What the read's fragments took for plugins whose check never took it (refused first).
    read_fold.give_back(ctx.read, services.read_fragments, ctx.read_results)
    call_each(services.pm, "call_finished", ctx=ctx, outcome=outcome)


def handle_call(
    services: Services,
    caller: Caller,
    call_type: str,
    body: dict[str, Any],
    headers: Any,
    carried_tokens: int = 0,
    pinned: Deployment | None = None,
) -> CallAnswer:
    """Run one LLM call through checks, upstream and the spend ledger.

    ``headers`` are the client's: they name the end user, and an ``anthropic/``
    upstream gets the client's ``anthropic-version``/``anthropic-beta``.
    ``pinned``: the one deployment that can answer (a Responses continuation goes
    to the upstream that stored the conversation), instead of the router's pick.
    """

    def route(send: Callable[[Deployment], T]) -> T:
        if pinned is not None:
            return send(pinned)
        return services.router.route(ctx.model_group, ctx.request_id, send)

    api = APIS[call_type]
    deployment = resolve_deployment(services, body["model"])
    check_model_access(services, caller, deployment.model_name)
    if not deployment.answers_itself:
        upstream_path(deployment, call_type)  # 400 before any check for an API it lacks
    if services.config.general_settings.budget_enforcement == "strict":
        unbounded = api_bounds.unbounded_part(body, call_type)
        if unbounded is not None:
            field_name, why = unbounded
            raise BadRequest(f"Not accepted with strict budgets: {why}.", param=field_name)
    ctx = build_context(services, caller, deployment, call_type, body, headers, carried_tokens)
    try:
        # Fail-open with the database away: the last known state was checked instead.
        refusal = None if caller.last_known else run_checks(services, ctx)
    except BaseException:
        # A check that crashed after others took slots: give those back too.
        _finish(services, ctx, "failed")
        raise
    if refusal is not None:
        _finish(services, ctx, "refused")
        raise ProxyError(
            refusal.message,
            status=refusal.status,
            type=refusal.type,
            code=refusal.code,
            headers={**ctx.response_headers, **refusal.headers},
        )
    if not database.in_transaction():
        # Hold no connection while the upstream answers (seconds to minutes): one the
        # database drops meanwhile must not be the one the spend is then written on.
        database.close()
    if ctx.stream:
        try:
            relay = route(lambda dep: _open_stream(services, ctx, dep, headers))
        except BaseException:
            _finish(services, ctx, "failed")
            raise
        return stream_answer(services, ctx, relay)
    try:
        answer, raw = route(
            lambda dep: services.upstream.call_raw(
                dep, call_type, _upstream_body(ctx, dep), client_headers=headers
            )
        )
    except BaseException:
        _finish(services, ctx, "failed")
        raise
    try:
        usage = api.answer_usage(answer) or _fallback_usage(ctx, api.output_chars(answer))
    except BaseException:
        _finish(services, ctx, "failed")
        raise
    # From here on the client gets the upstream's answer, whatever the database does.
    settle_spend(services, ctx, usage, "success")
    _finish(services, ctx, "success")
    if call_type == "responses":
        _remember_response(ctx, answer.get("id"), usage)
    # The upstream's own bytes when there are some: parsed once (for usage), not re-encoded.
    content_type = "application/json"
    if raw is None:
        jsonified = jsonify(answer)
        raw, content_type = jsonified.get_data(), jsonified.headers["Content-Type"]
    return _answer(ctx, raw, [("Content-Type", content_type), ("Content-Length", str(len(raw)))])


def _prompt_estimate(ctx: CallContext) -> int:
    if ctx.call_type in api_bounds.BOUNDED_CALL_TYPES:
        return api_bounds.input_estimate(ctx.body, ctx.call_type) + ctx.carried_input_tokens
    return estimate_prompt_tokens(ctx.body, ctx.call_type)


def _upstream_body(ctx: CallContext, dep: Deployment) -> dict[str, Any]:
    """What ``dep`` is sent: ``ctx.body`` (a check may have changed it, as
    clamp_max_tokens lowers max_tokens) under the deployment's own model name.

    Sets ``ctx.deployment``: the call is billed for the deployment that answers.
    """
    ctx.deployment = dep
    body = {**ctx.body, "model": dep.upstream_model}
    if not APIS[ctx.call_type].upstream_metadata:
        body.pop("metadata", None)
    if not dep.answers_itself:
        upstream_path(dep, ctx.call_type)  # 400 if this deployment lacks the API
        body.pop("mock_response", None)
    return body


class PrimedStream:
    """A stream whose first event has arrived: until then the router may fail over;
    once the client has a byte, an error is relayed and the partial answer billed."""

    def __init__(self, relay: StreamRelay) -> None:
        self.relay = relay
        self._events = iter(relay)
        try:
            self._first: bytes | None = next(self._events)
        except StopIteration:
            self._first = None
        except BaseException:
            relay.close()
            raise

    def __iter__(self) -> Iterator[bytes]:
        if self._first is not None:
            yield self._first
        yield from self._events


def _open_stream(
    services: Services, ctx: CallContext, dep: Deployment, headers: Any
) -> PrimedStream:
    body = _upstream_body(ctx, dep)
    options = body.get("stream_options")
    if APIS[ctx.call_type].stream_usage_option:
        body["stream_options"] = {
            **(options if isinstance(options, dict) else {}),
            "include_usage": True,
        }
    wants_usage = isinstance(options, dict) and options.get("include_usage") is True
    relay = services.upstream.stream(
        dep, body, relay_usage=wants_usage, call_type=ctx.call_type, client_headers=headers
    )
    return PrimedStream(relay)


def _fallback_usage(ctx: CallContext, output_chars: int) -> Usage:
    """An upstream that reports no usage is charged from an estimate."""
    return Usage(_prompt_estimate(ctx), (output_chars + 3) // 4)


def stream_answer(services: Services, ctx: CallContext, primed: PrimedStream) -> CallAnswer:
    """Relay the stream; meter it when it ends or when the client goes away."""
    relay = primed.relay

    def generate() -> Iterator[bytes]:
        outcome = "disconnected"
        try:
            yield from primed
            outcome = "success"
        except ProxyError as err:
            outcome = "failed"
            yield APIS[ctx.call_type].stream_error(err)
        finally:
            relay.close()
            settle_stream(services, ctx, relay, outcome)

    head = [*STREAM_HEADERS, ("Content-Type", "text/event-stream; charset=utf-8")]
    return _answer(ctx, generate(), head)


def settle_stream(services: Services, ctx: CallContext, relay: StreamRelay, outcome: str) -> None:
    """Charge a finished or interrupted stream for what the client received."""
    try:
        usage = relay.usage
        # The text relayed is counted only where it is billed from (a stream that ended
        # with its usage is not: its meter may not have counted it, proxy.upstream.meters).
        if usage is None:
            relayed = relay.text_chars
            if relayed > 0:
                usage = Usage(_prompt_estimate(ctx), (relayed + 3) // 4)
        elif not relay.meter.complete:
            # The input side came first (Anthropic's message_start): the output so far
            # is at least what was relayed.
            usage.completion_tokens = max(usage.completion_tokens, (relay.text_chars + 3) // 4)
        if usage is not None and (outcome != "failed" or relay.text_chars > 0):
            status = "success" if outcome == "success" else outcome
            settle_spend(services, ctx, usage, status)
            if ctx.call_type == "responses":
                _remember_response(ctx, relay.meter.response_id, usage)
    except Exception:
        log.exception("metering stream %s failed", ctx.request_id)
    finally:
        # Never raises: the stream's last bytes are already on their way to the client.
        # After the request: a connection a plugin's release opens (as in a chat call;
        # one that fails is logged, and leases expire) goes back to the pool here.
        was_open = not database.is_closed()
        try:
            _finish(services, ctx, outcome)
        finally:
            if not was_open and not database.is_closed():
                database.close()


def _remember_response(ctx: CallContext, response_id: Any, usage: Usage) -> None:
    """Keep a Responses API answer's owner (best effort: the answer goes out anyway)."""
    try:
        remember_response(ctx, response_id, usage)
    except Exception as err:
        if not is_unreachable(err):
            raise
        log.warning(
            "database unavailable: response %s of %s not remembered", response_id, ctx.request_id
        )
