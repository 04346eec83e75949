"""The metered LLM routes without Flask's request context (a WSGI layer in front of Flask).

Flask's request context (the Request object, URL matching, the session, the
``before``/``after``/``teardown`` dispatch with ``ensure_sync`` per hook) and
Werkzeug's response plumbing cost a metered call about as much CPU as its
whole authentication read (bench/RESULTS.md, issue 20). The LLM routes need
none of what they provide beyond a few lines, so ``POST`` to those routes is
answered here, doing exactly what Flask's path does for them:

- Flask's app context is pushed (``current_app``, ``flask.g``, ``jsonify``,
  the teardown-appcontext functions), not its request context;
- the app's ``before_request`` functions run in order: the core's database
  connect (:func:`proxy.app.connect_for_request`, fail-open included) in its
  request-free form, CORS's preflight skipped (it answers ``OPTIONS`` only), every
  other one marked :func:`proxy.request_hooks.without_request`;
- the view is the one the Flask route runs (``proxy.api.llm.chat_call``...) with
  a :class:`LeanRequest` in place of ``flask.request``;
- an error is answered by the handler Flask would pick (by the exception's
  MRO among the core's handlers), CORS's headers are added to every answer, and
  the ``teardown_request`` functions run in reverse order, as Flask runs them.

Anything else goes to Flask: other methods (``HEAD``, ``OPTIONS``, ``GET``: their
405s and preflights), other paths, and every request while the app has hooks,
error handlers, signal receivers or URL rules this layer cannot vouch for (a
plugin's unmarked hook, say), or a test client preserving its contexts.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from flask import Flask, Response
from flask import signals as flask_signals
from flask.sessions import SecureCookieSessionInterface
from werkzeug.datastructures import EnvironHeaders
from werkzeug.wsgi import get_content_length, get_input_stream

from proxy.api import cors, llm
from proxy.call.gateway import CallAnswer
from proxy.request_hooks import runs_without_request

if TYPE_CHECKING:
    from proxy.call.gateway import Services

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
CallView = Callable[[Any, "LeanRequest", "str | None"], CallAnswer]

# POST path -> (the Flask endpoint that answers it, the call it runs).
ROUTES: dict[str, tuple[str, CallView]] = {
    "/chat/completions": ("llm.chat_completions", llm.chat_call),
    "/v1/chat/completions": ("llm.chat_completions", llm.chat_call),
    "/embeddings": ("llm.embeddings", llm.embeddings_call),
    "/v1/embeddings": ("llm.embeddings", llm.embeddings_call),
    "/completions": ("llm.completions", llm.completions_call),
    "/v1/completions": ("llm.completions", llm.completions_call),
    "/responses": ("llm.responses", llm.responses_call),
    "/v1/responses": ("llm.responses", llm.responses_call),
    "/v1/messages": ("llm.messages", llm.messages_call),
    "/anthropic/v1/messages": ("llm.messages", llm.messages_call),
}
# Azure's paths, which name the deployment: /openai/deployments/<name>/<route>.
AZURE_PREFIX = "/openai/deployments/"
AZURE_ROUTES: dict[str, tuple[str, CallView]] = {
    "chat/completions": ("llm.chat_completions", llm.chat_call),
    "embeddings": ("llm.embeddings", llm.embeddings_call),
    "completions": ("llm.completions", llm.completions_call),
}
# Deployment names taken here (anything else, Flask's URL matching decides).
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# The blueprint of the routes answered here (its own hooks run on Flask's path only).
BLUEPRINT = "llm"
_FLASK_SIGNALS = (
    flask_signals.request_started,
    flask_signals.request_finished,
    flask_signals.request_tearing_down,
    flask_signals.got_request_exception,
)


class LeanRequest:
    """What the LLM views read of a request (:class:`proxy.api.common.BodyRequest`),
    straight from the WSGI environ, as Flask's ``request`` would answer it."""

    __slots__ = ("_data", "content_length", "environ", "headers", "max_content_length")

    def __init__(self, environ: dict[str, Any], max_content_length: int | None) -> None:
        self.environ = environ
        self.headers = EnvironHeaders(environ)
        self.content_length = get_content_length(environ)
        self.max_content_length = max_content_length
        self._data: bytes | None = None

    def get_data(self, cache: bool = True) -> bytes:
        """The body, read as Werkzeug's ``Request.get_data`` reads it (the same 413 and
        400s for a body over the limit or cut short)."""
        if self._data is None:
            stream = get_input_stream(self.environ, max_content_length=self.max_content_length)
            self._data = stream.read()
        return self._data


class LLMFastPath:
    """The WSGI layer (``app.wsgi_app``): LLM calls here, the rest to Flask.

    Built by ``create_app`` once the core's hooks and error handlers are
    registered (what it runs in their place is checked against that), and
    :meth:`install` ed once the plugins have registered theirs.
    """

    def __init__(
        self,
        app: Flask,
        services: Services,
        error_answers: dict[type[Exception], Callable[[Flask, Any, str, bool], Response]],
        connect_hook: Callable[[], None],
        connect_llm: Callable[[], None],
    ) -> None:
        """``connect_hook``: the core's ``before_request`` function, which this layer
        replaces by ``connect_llm`` (what it does for an LLM route, without the request)."""
        self.app = app
        self.services = services
        self.error_answers = error_answers
        self._connect_hook = connect_hook
        self._connect_llm = connect_llm
        self._error_spec = _copy_spec(app.error_handler_spec)
        self._flask: WSGIApp = app.wsgi_app
        self._checked: tuple[Any, ...] | None = None
        self._usable = False

    def install(self) -> None:
        self._flask = self.app.wsgi_app
        self.app.wsgi_app = self  # type: ignore[method-assign]

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get("REQUEST_METHOD") == "POST":
            route = _route(environ.get("PATH_INFO", ""))
            if route is not None and self._usable_now(environ):
                return self._answer(environ, start_response, route[1], route[2])
        return self._flask(environ, start_response)

    # --- whether Flask's path would do only what this one does ----------------

    def _usable_now(self, environ: dict[str, Any]) -> bool:
        if "werkzeug.debug.preserve_context" in environ:
            return False  # a test client keeps the request context after the call
        app = self.app
        config = app.config
        state = (
            _snapshot(app.before_request_funcs),
            _snapshot(app.after_request_funcs),
            _snapshot(app.teardown_request_funcs),
            _snapshot(app.url_value_preprocessors),
            _copy_spec(app.error_handler_spec),
            len(app.view_functions),
            app.session_interface,
            config["SERVER_NAME"],
            config["TRUSTED_HOSTS"],
            config["TRAP_HTTP_EXCEPTIONS"],
            config["TRAP_BAD_REQUEST_ERRORS"],
        )
        if state != self._checked:
            self._checked = state
            self._usable = self._vouch_for(app)
        return self._usable and not any(signal.receivers for signal in _FLASK_SIGNALS)

    def _vouch_for(self, app: Flask) -> bool:
        policy = app.extensions.get(cors.EXTENSION)
        registries = (
            app.before_request_funcs,
            app.after_request_funcs,
            app.teardown_request_funcs,
            app.url_value_preprocessors,
        )
        if any(registry.get(BLUEPRINT) for registry in registries):
            return False  # the llm blueprint's own hooks
        if app.url_value_preprocessors.get(None):
            return False
        for hook in app.before_request_funcs.get(None, []):
            known = hook is self._connect_hook or (policy is not None and hook == policy.preflight)
            if not known and not runs_without_request(hook):
                return False
        for after in app.after_request_funcs.get(None, []):
            if policy is None or after != policy.after:
                return False
        if not all(runs_without_request(hook) for hook in app.teardown_request_funcs.get(None, [])):
            return False
        if _copy_spec(app.error_handler_spec) != self._error_spec:
            return False
        if not _session_untouched_saves_nothing(app):
            return False
        config = app.config
        if config["SERVER_NAME"] is not None or config["TRUSTED_HOSTS"] is not None:
            return False  # Flask would match or check the host
        if config["TRAP_HTTP_EXCEPTIONS"] or config["TRAP_BAD_REQUEST_ERRORS"]:
            return False  # Flask would answer some HTTP errors with another handler
        return _routes_are_the_views(app)

    # --- the call -------------------------------------------------------------

    def _answer(
        self,
        environ: dict[str, Any],
        start_response: Callable[..., Any],
        view: CallView,
        deployment: str | None,
    ) -> Any:
        app = self.app
        path = environ["PATH_INFO"]
        with app.app_context():
            req = LeanRequest(environ, app.config["MAX_CONTENT_LENGTH"])
            error: BaseException | None = None
            try:
                resp: CallAnswer | Response
                try:
                    before = self._before(app)
                    resp = view(self.services, req, deployment) if before is None else before
                except Exception as err:
                    resp = self._error_answer(err, path)
                policy = app.extensions.get(cors.EXTENSION)
                if policy is not None and app.after_request_funcs.get(None):
                    if isinstance(resp, CallAnswer):
                        resp = resp.response()
                    resp = policy.allow(resp, req.headers)
                if isinstance(resp, CallAnswer):
                    start_response(resp.status, resp.headers)
                    return resp.wsgi_body()
                return resp(environ, start_response)
            except BaseException as err:
                error = err
                raise
            finally:
                for hook in reversed(app.teardown_request_funcs.get(None, [])):
                    hook(error)

    def _before(self, app: Flask) -> Response | None:
        policy = app.extensions.get(cors.EXTENSION)
        for hook in app.before_request_funcs.get(None, []):
            if hook is self._connect_hook:
                self._connect_llm()
            elif policy is not None and hook == policy.preflight:
                continue  # answers OPTIONS only
            else:
                answer: Any = hook()
                if answer is not None:
                    return app.make_response(answer)
        return None

    def _error_answer(self, err: Exception, path: str) -> Response:
        for cls in type(err).__mro__:
            answer = self.error_answers.get(cls)
            if answer is not None:
                return answer(self.app, err, path, True)
        raise err  # not an Exception subclass Flask would handle either


def _route(path: str) -> tuple[str, CallView, str | None] | None:
    """The endpoint, call and deployment (Azure's paths) a POST to ``path`` runs."""
    found = ROUTES.get(path)
    if found is not None:
        return found[0], found[1], None
    if path.startswith(AZURE_PREFIX):
        name, _, rest = path[len(AZURE_PREFIX) :].partition("/")
        found = AZURE_ROUTES.get(rest)
        if found is not None and _PLAIN_NAME.fullmatch(name):
            return found[0], found[1], name
    return None


def _routes_are_the_views(app: Flask) -> bool:
    """Whether Flask's URL map sends each of these paths to the view this layer runs."""
    adapter = app.url_map.bind("localhost")
    samples: list[tuple[str, str, dict[str, str]]] = [
        (path, endpoint, {}) for path, (endpoint, _) in ROUTES.items()
    ]
    samples += [
        (f"{AZURE_PREFIX}sample-deployment/{rest}", endpoint, {"deployment": "sample-deployment"})
        for rest, (endpoint, _) in AZURE_ROUTES.items()
    ]
    views = {
        "llm.chat_completions": llm.chat_completions,
        "llm.embeddings": llm.embeddings,
        "llm.completions": llm.completions,
        "llm.responses": llm.responses,
        "llm.messages": llm.messages,
    }
    for path, endpoint, args in samples:
        try:
            matched = adapter.match(path, method="POST")
        except Exception:
            return False
        if matched != (endpoint, args) or app.view_functions.get(endpoint) is not views[endpoint]:
            return False
    return True


def _session_untouched_saves_nothing(app: Flask) -> bool:
    """Whether Flask's session, which no LLM route reads, would add nothing to the
    answer: Flask's signed cookie session (the admin UI's changes only cookie flags)."""
    interface = type(app.session_interface)
    return (
        issubclass(interface, SecureCookieSessionInterface)
        and interface.open_session is SecureCookieSessionInterface.open_session
        and interface.save_session is SecureCookieSessionInterface.save_session
    )


def _snapshot(hooks: dict[Any, list[Any]]) -> list[tuple[Any, list[Any]]]:
    """A copy of a Flask hook registry (its lists change in place)."""
    return [(name, list(funcs)) for name, funcs in hooks.items()]


def _copy_spec(spec: Any) -> dict[tuple[Any, Any], dict[Any, Any]]:
    """The handlers of Flask's ``error_handler_spec`` (blueprint -> code -> class ->
    handler), by (blueprint, code); Flask's lookups add empty entries to it."""
    return {
        (name, code): dict(handlers)
        for name, by_code in spec.items()
        for code, handlers in by_code.items()
        if handlers
    }
