"""Everything a Comptroller plugin needs, and the only core module it imports.

Builtin plugins (``plugins/``) use exactly this, so a third-party plugin can
do whatever a builtin does, as cheaply::

    from proxy.plugin_api import PluginModel, Refusal, defer_write, hookimpl

The hooks and their contract (when each runs, in which transaction, in
which order) are in :mod:`proxy.hookspecs`.

Database access, the same on SQLite and PostgreSQL:

- :class:`PluginModel`: the Peewee base model bound to the app's database;
  a plugin's tables subclass it (and are returned by ``plugin_tables``).
  Peewee queries on them work in every hook.
- :func:`defer_write`: a write whose result nobody reads. Inside the spend
  transaction (``post_call_spend``, ``on_alert``) it travels with the
  ``COMMIT`` on PostgreSQL, costing no round trip; elsewhere it runs at once.
- :func:`run`: a statement run now (``%s`` placeholders), prepared on
  PostgreSQL; its cursor is returned (``RETURNING`` rows, say).
- :func:`atomic`, :func:`transaction`, :func:`in_transaction`,
  :func:`after_commit`: transactions; :func:`lock_rows` and
  :func:`features` where the two databases differ; :func:`spend_expression`
  reads an entity's committed spend inside a plugin's own statement.
- :class:`KeepAliveRoutes`: keep-alive HTTP connections for a plugin's own
  requests, as cheap as the proxy's upstream calls; a POST whose answer
  matters only by its status (a webhook) is cheaper still with
  :meth:`KeepAliveOrigin.post_for_status`.
- :func:`connect`/:func:`close`: a background thread's own connection;
  :func:`database_now`: the database's clock, which every host shares
  (``ctx.now()`` in a hook).

A plugin whose check must write before the call goes upstream may run that
statement inside the call's one read instead of a round trip of its own:
:class:`ReadFragment` (``call_read_fragment`` in :mod:`proxy.hookspecs`).

Per-app state (a sender thread, a client) goes on ``app.extensions`` in
``plugin_startup``, which hands the plugin its ``app``. A ``before_request`` or
``teardown_request`` function registered there that does not read the request
is marked with :func:`without_request`, so the LLM routes keep their fast path
(:mod:`proxy.request_hooks`).
"""

from __future__ import annotations

from proxy.call.alerts import Alert
from proxy.call.bound import LIMIT_FIELDS, WorstCase, call_worst_case
from proxy.call.context import CallContext, CallRead, ReadFragment, Refusal, Usage
from proxy.config import Config, ConfigError
from proxy.durations import parse_duration
from proxy.hookspecs import hookimpl
from proxy.keepalive import KeepAliveOrigin, KeepAliveRoutes
from proxy.request_hooks import without_request
from proxy.storage.batching import defer_write
from proxy.storage.clock import now as database_now
from proxy.storage.db import BaseModel as PluginModel
from proxy.storage.db import JSONField
from proxy.storage.plugin_access import (
    Features,
    after_commit,
    atomic,
    close,
    connect,
    features,
    in_transaction,
    lock_rows,
    run,
    spend_expression,
    transaction,
)
from proxy.upstream.deployments import Deployment

__all__ = [
    "LIMIT_FIELDS",
    "Alert",
    "CallContext",
    "CallRead",
    "Config",
    "ConfigError",
    "Deployment",
    "Features",
    "JSONField",
    "KeepAliveOrigin",
    "KeepAliveRoutes",
    "PluginModel",
    "ReadFragment",
    "Refusal",
    "Usage",
    "WorstCase",
    "after_commit",
    "atomic",
    "call_worst_case",
    "close",
    "connect",
    "database_now",
    "defer_write",
    "features",
    "hookimpl",
    "in_transaction",
    "lock_rows",
    "parse_duration",
    "run",
    "spend_expression",
    "transaction",
    "without_request",
]
