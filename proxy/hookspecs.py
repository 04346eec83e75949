"""The hooks a Comptroller plugin may implement, and their contract.

Builtin plugins (``plugins/``) and third-party plugins (entry-point group
``comptroller``) implement the same hooks with ``@hookimpl`` and reach the
core only through :mod:`proxy.plugin_api`. Hooks are called with keyword
arguments only; an implementation may declare only the arguments it uses.

Order. pluggy calls the last registered first. Builtins are registered so
that their checks run in SPEC order (proxy, key, user, end user, default end
user budgets, then the rate limiter); third-party plugins are registered
after every builtin, so their implementations run *before* the builtins'
(``tryfirst``/``trylast`` move them). A third-party plugin that replaces a
builtin by name is registered in the builtin's place and runs in its turn.
Wrappers (``wrapper=True``, as ``strict_budgets`` on ``pre_request_check``)
run around all the others. The core calls hooks with pluggy's semantics but
without its per-call overhead (:mod:`proxy.hookcalls`); while anything
monitors hook calls (``add_hookcall_monitoring``, ``enable_tracing``) they go
through pluggy itself, so it sees every one.

Transactions.

- ``plugin_tables``, ``plugin_startup``: at start-up, outside any request.
- ``call_read_fragment``: once per app at start-up; the fragment itself runs
  in the call's one read, its own statement (autocommit) before any check.
- ``pre_request_check``: no transaction is open; a plugin opens its own
  (``plugin_api.transaction()``) if it needs one.
- ``post_call_spend`` then ``on_alert``: inside the call's spend
  transaction, after the core's ledger writes; everything they write lands
  with the spend or not at all. ``plugin_api.defer_write`` sends a write
  with the ``COMMIT`` (no round trip of its own on PostgreSQL).
- ``on_alert`` outside a call (``key_created`` from the admin API): inside
  the transaction of the admin change.
- ``call_finished``: after the spend transaction has committed (or failed);
  no transaction is open.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from flask import Flask

    from proxy.call.alerts import Alert
    from proxy.call.context import CallContext, ReadFragment, Refusal, Usage
    from proxy.config import Config
    from proxy.upstream.deployments import Deployment

hookspec = pluggy.HookspecMarker("comptroller")
hookimpl = pluggy.HookimplMarker("comptroller")


@hookspec
def plugin_tables() -> list[Any] | None:
    """Return the Peewee models this plugin owns, for tables without migrations.

    Called at start-up; missing tables are created (``CREATE TABLE IF NOT
    EXISTS``) after every migration has run. An existing table is never
    altered: a plugin whose tables will change declares migrations instead
    (:func:`plugin_migrations`).
    """


@hookspec
def plugin_migrations() -> tuple[str, Any] | None:
    """Return ``(namespace, package)``: the schema migrations of this plugin's tables.

    ``package`` is a Python package (or its dotted name) of modules
    ``mNNNN_<what>.py``, each frozen DDL of its own time: ``SQLITE`` and
    ``POSTGRES`` tuples of statements (or ``STATEMENTS`` for both), and
    optionally ``apply(db)`` for a step that needs Python. At start-up (and
    ``comptroller migrate``), after the core's migrations and in the same
    transaction (under the PostgreSQL advisory lock), each module not yet
    applied runs once, in name order, and is recorded in
    ``comptroller_migration`` as ``<namespace>:<module>``. Never edit an
    applied migration: add the next one. Plugins sharing tables return the
    same pair (the budget plugins do); the first migration of tables that
    already exist uses ``CREATE TABLE IF NOT EXISTS``.
    """


@hookspec
def plugin_startup(app: Flask, config: Config) -> None:
    """Called once per process when the app is created.

    A plugin reads its settings here (``config.plugin_settings(name)``) and
    may start background work. It must not open a database connection that
    outlives this call: gunicorn forks workers after start-up.
    """


@hookspec
def call_read_fragment(config: Config) -> ReadFragment | None:
    """Return a :class:`~proxy.call.context.ReadFragment`: a statement to run
    inside every metered call's one read, or ``None``.

    For a plugin that must read or write before the call goes upstream and
    would otherwise cost every call a round trip of its own (the rate limiter
    decides its admission this way: one statement for the core's read and its
    decision, so a metered call with every plugin on costs 3 round trips, not
    4). Called once per app after ``plugin_startup``, and only where the
    database runs data-modifying CTEs (PostgreSQL, ``features().writable_ctes``);
    elsewhere the plugin does its work in :func:`pre_request_check`.

    Composition (proxy.storage.lookup): ``WITH call_read AS (<the read>),
    <the fragments' CTEs> SELECT call_read.*, <each result as JSON>``.
    ``call_read`` is one row: every column of the rows the core reads, named
    ``"<alias>.<column>"`` (``k`` key, ``u`` its user, ``t`` its team, ``c``
    the end user's customer row, ``b`` that customer's budget row, ``d`` the
    default end-user budget row, ``p`` the proxy counter; NULLs where there is
    no row), ``"now"`` (the database's clock, as ``ctx.now()``) and
    ``"end_user_id"``. Every CTE runs in the read's one statement and its
    one transaction (autocommit): a write lands even if the call is then
    refused, and a statement that fails fails the read (the call gets a
    5xx). So a fragment must not fail on data (decide with ``CASE``, never
    with an error), must lock rows in a fixed order, and must be undoable.

    Results: the ``result`` CTE's rows reach the plugin as
    ``ctx.read_results[name]`` (a list of dicts). The plugin takes them
    (``pop``) in :func:`pre_request_check`; from then on it owns what the
    fragment took and gives it back in :func:`call_finished` as usual. If
    the call ends before the plugin took them (authentication or a bad body
    refused it, or an earlier check did, or the plugin's check never ran),
    the core calls ``undo(read, rows)`` instead, at the end of the request.
    The read runs before the core knows whether the call will be refused,
    so what the fragment decides is speculative until the plugin takes it;
    a plugin that finds the result does not fit the context (the rows it
    was computed from no longer describe the call) undoes it itself and
    falls back to deciding in :func:`pre_request_check`.

    Why a fragment rather than a round trip of its own: the admission must
    be decided before the call goes upstream, and the read is the one
    statement every call sends then; psycopg2 has no pipelining, and two
    statements in one ``execute`` return only the last one's rows
    (bench/RESULTS.md, "Round trips per metered call").
    """


@hookspec(firstresult=True)
def pre_request_check(ctx: CallContext) -> Refusal | None:
    """Decide whether the call described by ``ctx`` may go upstream.

    Return a :class:`~proxy.call.context.Refusal` to refuse it (the first refusal
    wins and later plugins are not asked) or ``None`` to let it pass. A plugin
    that takes something to decide (a rate-limit slot, a reservation) records
    it on ``ctx`` so that :func:`call_finished` can give it back. May add
    response headers to ``ctx.response_headers``.
    """


@hookspec
def post_call_spend(ctx: CallContext, usage: Usage, cost: float) -> None:
    """A metered call succeeded and cost ``cost`` US dollars.

    Runs once per metered call, inside the spend transaction, after the core
    has written the spend log and the spend increments (their new totals are
    in ``ctx.spend_after``), so any statement a plugin runs here lands or
    rolls back with them. Alerts go to ``ctx.alerts``; the core hands them
    to :func:`on_alert` in the same transaction.

    Never called twice for a call: if the plugins' part of the transaction
    fails (an implementation raises, which also stops pluggy's chain; a
    deferred write fails the commit; the connection drops), the transaction
    rolls back and the core writes the ledger again without the plugins. The
    call is billed exactly once; the plugins' writes and alerts for it are
    lost (and logged), and :func:`call_finished` still gives back what
    :func:`pre_request_check` took.
    """


@hookspec
def call_finished(ctx: CallContext, outcome: str) -> None:
    """The call is over: ``outcome`` is ``success``, ``refused``, ``failed``
    or ``disconnected``. Give back whatever :func:`pre_request_check` took.

    Always called once per call that reached the checks, including after a
    refusal. Every implementation runs even if another raises.
    """


@hookspec
def on_alert(alert: Alert) -> None:
    """Deliver ``alert`` (or queue it for delivery).

    Called inside the transaction that caused the alert, so a queued alert
    lands exactly when the spend does. Each plugin's implementation is called
    on its own (as pluggy calls it), inside its own savepoint: every one runs even
    if another raises, and a failing one's writes are rolled back alone. An
    implementation must not block on the network.
    """


@hookspec(firstresult=True)
def deployment_admit(deployment: Deployment, request_id: str, now: float) -> bool | None:
    """The router is about to send one attempt of a call to ``deployment``,
    which has ``rpm`` and/or ``tpm`` limits.

    Count the attempt and return ``True`` if it fits in the deployment's
    current minute, ``False`` (counting nothing) if the deployment is at its
    limit: the router then picks another deployment. The count must hold
    across every worker and host. The tokens of the call that answered are
    counted in :func:`post_call_spend` (``ctx.deployment`` is the deployment
    that answered). ``now`` is the database's clock (``proxy.storage.clock``).
    ``None``: this plugin does not keep deployment limits.
    """


@hookspec(firstresult=True)
def deployment_usage(
    deployments: list[Deployment], now: float
) -> dict[str, tuple[int, int]] | None:
    """Requests and tokens counted so far in the current minute, per deployment id,
    for ``usage-based-routing``. A deployment not in the answer has used nothing."""
