"""Builtin plugin webhook_alerter: durable webhook alerts (SPEC section 9).

On with ``general_settings.alerting: ["webhook"]`` and ``WEBHOOK_URL`` (or
``plugins.settings.webhook_alerter.url``); off, it adds no alerts and writes
nothing. It raises ``spend_tracked`` for every metered call of an end user
and ``projected_limit_exceeded`` once per entity per budget period, and
queues every alert that reaches ``on_alert`` (its own, the budget plugins',
``key_created`` from the admin API) in an outbox table, inside the
transaction that caused it. Sender threads in each worker deliver the
outbox later (``plugins/webhooks/sender.py`` says why threads, and how);
they start with the first request a process serves.

The hooks get no app handle, so the process's one active sender lives in a
module variable, replaced each time an app is created (as in tests).
"""

from __future__ import annotations

import atexit
import logging
import threading

from flask import Flask

from plugins.webhook_alerter import events, outbox
from plugins.webhook_alerter.sender import WebhookSender
from plugins.webhook_alerter.settings import load_settings
from proxy.call.alerts import Alert
from proxy.call.context import CallContext, Usage
from proxy.config import Config
from proxy.hookspecs import hookimpl
from proxy.storage.db import database

log = logging.getLogger("comptroller.webhooks")

EXTENSION = "webhook_alerter"

_sender: WebhookSender | None = None
# Set by on_alert in a request thread: wake the sender once the request's
# transaction has committed, so it does not wait for its next poll.
_queued = threading.local()


def active_sender() -> WebhookSender | None:
    """The sender of the most recently created app, if alerting is on."""
    return _sender


def shutdown(timeout: float = 5.0) -> None:
    """Stop the active sender (at interpreter exit, and between test apps)."""
    global _sender
    sender, _sender = _sender, None
    if sender is not None:
        sender.stop(timeout)


atexit.register(shutdown)


@hookimpl
def plugin_migrations() -> tuple[str, str]:
    return ("webhook_alerter", "plugins.webhook_alerter.migrations")


@hookimpl
def plugin_startup(app: Flask, config: Config) -> None:
    global _sender
    shutdown()
    settings = load_settings(config)
    if settings is None:
        return
    _sender = WebhookSender(settings)
    app.extensions[EXTENSION] = _sender
    app.before_request(_sender.ensure_running)
    app.teardown_request(_wake_if_queued)
    log.info(
        "webhook alerts on: %d sender thread(s), timeout %ss%s",
        settings.concurrency,
        settings.timeout,
        ", signed" if settings.secret else "",
    )


@hookimpl
def post_call_spend(ctx: CallContext, usage: Usage, cost: float) -> None:
    if _sender is None:
        return
    # This runs inside the spend transaction: an alert that cannot be built
    # (a bad budget_duration in a row, say) is logged, never a failed call.
    try:
        tracked = events.spend_tracked(ctx)
        if tracked is not None:
            ctx.alerts.append(tracked)
        ctx.alerts.extend(events.projected_limit_alerts(ctx, ctx.now()))
    except Exception:
        log.exception("building webhook alerts for call %s failed", ctx.request_id)


@hookimpl
def on_alert(alert: Alert) -> None:
    """Queue ``alert``: one INSERT in the caller's transaction, no network."""
    if _sender is None:
        return
    outbox.enqueue(alert)
    _queued.pending = True
    _sender.ensure_running()
    if not database.in_transaction():
        _sender.wake()
    # Else the sender is woken once the transaction has committed (teardown or
    # call_finished): woken now, it would find nothing it can see yet.


@hookimpl
def call_finished(ctx: CallContext, outcome: str) -> None:
    # The spend transaction has committed (streams settle after the request's
    # teardown): its alerts are now visible to the senders.
    if ctx.alerts:
        _wake_if_queued(None)


def _wake_if_queued(exc: BaseException | None) -> None:
    if getattr(_queued, "pending", False):
        _queued.pending = False
        if _sender is not None:
            _sender.wake()
