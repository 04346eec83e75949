"""The application factory."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import peewee
from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from proxy.api import cors
from proxy.api.fast_path import LLMFastPath
from proxy.call import read_fold
from proxy.call.gateway import Services
from proxy.call.router import Router
from proxy.call.settle import JournalReplayer
from proxy.config import Config, load_config
from proxy.errors import ProxyError, ServiceUnavailable, error_shape
from proxy.plugins import make_plugin_manager
from proxy.request_hooks import without_request
from proxy.storage.db import (
    PoolExhausted,
    close_broken_connection,
    connection_budget_warning,
    database,
    init_database,
    is_unreachable,
    unavailable_reason,
)
from proxy.storage.journal import SpendJournal, journal_directory
from proxy.storage.migrate import plugin_schema
from proxy.storage.schema_gate import SchemaGate
from proxy.upstream.client import UpstreamClient
from proxy.upstream.deployments import ModelTable
from proxy.workers import workers_per_host

log = logging.getLogger("comptroller")

# Routes that answer without the database (the ``docs`` blueprint too).
NO_DATABASE_ENDPOINTS = frozenset({"health.liveliness", "ui.static"})
READINESS_ENDPOINT = "health.readiness"


def _warn_if_pools_exceed_the_server() -> None:
    warning = connection_budget_warning(workers_per_host())
    if warning:
        log.warning(warning)


_HTTP_TYPES = {
    401: "auth_error",
    403: "auth_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


def _unavailable_message(err: BaseException, llm: bool) -> str:
    """A true 503 message: what failed, and what it means for this request."""
    reason = unavailable_reason(err)
    reason = reason[0].upper() + reason[1:]
    if llm:
        # The gateway turns every database failure after the upstream answered into
        # a committed or journaled charge: one that gets here happened before.
        return f"{reason}: the call was not sent to the model and nothing was charged."
    return f"{reason}; retry shortly."


# Each error handler answers from the error, the request's path (the answer's shape)
# and whether the route is an LLM call; Flask's handlers and the LLM routes' fast path
# (proxy.api.fast_path) both answer with these.
ErrorAnswer = Callable[[Flask, Any, str, bool], Response]


def _proxy_error(app: Flask, err: ProxyError, path: str, llm: bool) -> Response:
    return err.response(error_shape(path))


def _http_error(app: Flask, err: HTTPException, path: str, llm: bool) -> Response:
    status = err.code or 500
    message = err.description or err.name
    if status == 413:
        limit = app.config.get("MAX_CONTENT_LENGTH")
        message = f"Request body too large: the limit is {limit} bytes."
    return ProxyError(
        message, status=status, type=_HTTP_TYPES.get(status, "invalid_request_error")
    ).response(error_shape(path))


def _database_down(app: Flask, err: Exception, path: str, llm: bool) -> Response:
    log.error("database error: %s", err)
    close_broken_connection()
    # The other idle pooled connections most likely died with this one
    # (server restart, backends terminated): drop them all, so each one
    # does not fail a call of its own before the pool replaces it.
    close_idle = getattr(database.obj, "close_idle", None)
    if close_idle is not None:
        close_idle()
    return ServiceUnavailable(_unavailable_message(err, llm)).response(error_shape(path))


def _unexpected(app: Flask, err: Exception, path: str, llm: bool) -> Response:
    log.exception("unhandled error")
    return ProxyError(
        "Internal error in Comptroller; it has been logged.", status=500, type="api_error"
    ).response(error_shape(path))


ERROR_ANSWERS: dict[type[Exception], ErrorAnswer] = {
    ProxyError: _proxy_error,
    HTTPException: _http_error,
    peewee.OperationalError: _database_down,
    peewee.InterfaceError: _database_down,
    PoolExhausted: _database_down,
    Exception: _unexpected,
}


def _register_error_handlers(app: Flask) -> None:
    for error_class, answer in ERROR_ANSWERS.items():

        def handler(err: Any, answer: ErrorAnswer = answer) -> Response:
            return answer(app, err, request.path, request.blueprint == "llm")

        app.register_error_handler(error_class, handler)


def _connect_llm(services: Services) -> None:
    """``_connect`` (in create_app) for an LLM route."""
    services.replayer.ensure_running()
    connect_for_request(services, llm=True)


def connect_for_request(services: Services, llm: bool) -> None:
    """A request that reads the database: 503 until the schema is ready, then a
    connection (fail-open: an LLM call goes on without one, proxy.call.last_known)."""
    if not services.schema.ensure():
        raise ServiceUnavailable(f"Comptroller is not ready: {services.schema.reason}.")
    try:
        database.connect(reuse_if_open=True)
    except Exception as err:
        fail_open = services.config.general_settings.allow_requests_on_db_unavailable
        if not (fail_open and llm and is_unreachable(err)):
            raise


def create_app(
    config: Config | None = None, extra_plugins: list[tuple[str, Any]] | None = None
) -> Flask:
    """Build the Flask app for ``config`` (default: :func:`load_config`).

    ``extra_plugins`` registers plugin objects directly (``(name, plugin)``),
    as tests and embedding applications do.
    """
    config = config or load_config()
    app = Flask("comptroller")
    app.config["MAX_CONTENT_LENGTH"] = int(
        config.general_settings.max_request_size_mb * 1024 * 1024
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]
    init_database(config.database_url, config.general_settings.database_connection_pool_limit)
    pm = make_plugin_manager(config, extra_plugins)
    tables, plugin_migrations = plugin_schema(pm)
    schema = SchemaGate(
        tables, plugin_migrations=plugin_migrations, on_ready=_warn_if_pools_exceed_the_server
    )
    # A database that cannot be reached is waited for; any other failure (a broken
    # migration) stops start-up as before.
    if not schema.attempt(raise_unexpected=True):
        schema.start()
    journal = SpendJournal(
        journal_directory(config.general_settings.spend_journal_dir, config.database_url)
    )
    journal.prepare()
    models = ModelTable(config)
    services = Services(
        config=config,
        models=models,
        upstream=UpstreamClient(),
        pm=pm,
        schema=schema,
        journal=journal,
        router=Router(models, config.router_settings, pm),
    )
    services.replayer = JournalReplayer(services)
    services.replayer.ensure_running()  # entries an earlier process left behind
    app.extensions["comptroller"] = services
    cors.install(app, config.general_settings.allowed_origins)

    @app.before_request
    def _connect() -> None:
        # Liveness must not depend on the database, or a database outage restarts every
        # pod; nor the API documentation, which describes the routes, not their data.
        # Readiness reports on the database itself.
        # This process's journal replay (entries left by a worker that died, or kept in
        # an outage) starts with its first request, whatever it asks for.
        services.replayer.ensure_running()
        if request.endpoint in NO_DATABASE_ENDPOINTS or request.blueprint == "docs":
            return
        if request.endpoint == READINESS_ENDPOINT:
            return
        connect_for_request(services, request.blueprint == "llm")

    @app.teardown_request
    @without_request
    def _close(exc: BaseException | None) -> None:
        if not database.is_closed():
            database.close()

    from proxy.api import docs, health, llm, metrics
    from proxy.api import models as models_views
    from proxy.api.admin import budgets, customers, keys, spend, teams, users  # noqa: F401 (see below)
    from proxy.api.admin import reports as admin_reports
    from proxy.api.admin.common import bp as admin_bp
    from proxy.ui import views as ui_views

    app.register_blueprint(llm.bp)
    # One "admin" blueprint; importing the entity modules above put their routes on it.
    app.register_blueprint(admin_bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(models_views.bp)
    app.register_blueprint(admin_reports.bp)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(ui_views.bp)
    app.register_blueprint(docs.bp)
    _register_error_handlers(app)
    # What the fast path answers for Flask: the hooks and error handlers registered
    # until now, which it runs itself (a plugin's, registered below, must be marked).
    fast = LLMFastPath(
        app,
        services,
        ERROR_ANSWERS,
        connect_hook=_connect,
        connect_llm=lambda: _connect_llm(services),
    )
    pm.hook.plugin_startup(app=app, config=config)
    services.read_fragments = read_fold.collect(pm, config)
    read_fold.install(app)
    fast.install()
    return app
