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

Each app gets its own :class:`WebhookAlerter` (the plugin manager makes one
per app), whose sender lives on ``app.extensions["webhook_alerter"]``.
"""

from __future__ import annotations

import logging
import threading
import weakref

from flask import Flask

from plugins.webhook_alerter import events, outbox
from plugins.webhook_alerter.sender import WebhookSender
from plugins.webhook_alerter.settings import load_settings
from proxy.plugin_api import (
    Alert,
    CallContext,
    Config,
    Usage,
    hookimpl,
    in_transaction,
    without_request,
)

log = logging.getLogger("comptroller.webhooks")

EXTENSION = "webhook_alerter"

# The database handle is one per process, so one sender per process polls it:
# an app created later (tests make many) takes over from the one before.
_active: weakref.WeakSet[WebhookSender] = weakref.WeakSet()


def active_sender() -> WebhookSender | None:
    """The sender of the most recently created app, if alerting is on."""
    return next(iter(_active), None)


def shutdown(timeout: float = 5.0) -> None:
    """Stop the active sender (between test apps; its threads are daemons, and
    what it had not sent stays in the outbox for the next process)."""
    for sender in list(_active):
        _active.discard(sender)
        sender.stop(timeout)


class WebhookAlerter:
    """The webhook_alerter hooks of one app."""

    def __init__(self) -> None:
        self.sender: WebhookSender | None = None
        # Set by on_alert in a request thread: wake the sender once the request's
        # transaction has committed, so it does not wait for its next poll.
        self._queued = threading.local()

    @hookimpl
    def plugin_migrations(self) -> tuple[str, str]:
        return ("webhook_alerter", "plugins.webhook_alerter.migrations")

    @hookimpl
    def plugin_startup(self, app: Flask, config: Config) -> None:
        shutdown()
        settings = load_settings(config)
        if settings is None:
            return
        self.sender = sender = WebhookSender(settings)
        _active.add(sender)
        app.extensions[EXTENSION] = sender
        app.before_request(sender.ensure_running)
        app.teardown_request(self._wake_if_queued)
        log.info(
            "webhook alerts on: %d sender thread(s), timeout %ss%s",
            settings.concurrency,
            settings.timeout,
            ", signed" if settings.secret else "",
        )

    @hookimpl
    def post_call_spend(self, ctx: CallContext, usage: Usage, cost: float) -> None:
        if self.sender is None:
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
    def on_alert(self, alert: Alert) -> None:
        """Queue ``alert``: one deferred INSERT in the caller's transaction, no network."""
        if self.sender is None:
            return
        outbox.enqueue(alert)
        self._queued.pending = True
        self.sender.ensure_running()
        if not in_transaction():
            self.sender.wake()
        # Else the sender is woken once the transaction has committed (teardown or
        # call_finished): woken now, it would find nothing it can see yet.

    @hookimpl
    def call_finished(self, ctx: CallContext, outcome: str) -> None:
        # The spend transaction has committed (streams settle after the request's
        # teardown): its alerts are now visible to the senders.
        if ctx.alerts:
            self._wake_if_queued(None)

    @without_request
    def _wake_if_queued(self, exc: BaseException | None) -> None:
        if getattr(self._queued, "pending", False):
            self._queued.pending = False
            if self.sender is not None:
                self.sender.wake()


Plugin = WebhookAlerter
