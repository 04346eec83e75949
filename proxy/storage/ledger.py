"""The spend ledger: one transaction per metered call.

The spend-log row, ``spend = spend + cost`` on the key, its user, its team,
the end user (upserted on first sight) and the proxy counter, each into one
of its stripes on PostgreSQL (:mod:`proxy.storage.stripes`,
:mod:`proxy.storage.counters`), the count of a
call whose model has no price (``unpriced_model``), whatever the plugins add
in ``post_call_spend``, and the alerts they raise all land together or not at
all. Increments are atomic SQL; the new totals come back through ``RETURNING``
so plugins can tell exactly which call crossed a threshold, even with many
workers.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import peewee

from proxy.call.cost import cost_of
from proxy.hookcalls import call_hook
from proxy.plugins import call_each
from proxy.storage import clock, counters, stripes
from proxy.storage.batching import batched_transaction, current_batch, defer_write
from proxy.storage.db import close_broken_connection, database, is_postgres
from proxy.storage.plugin_access import atomic
from proxy.storage.prepared import run_statement

if TYPE_CHECKING:
    import pluggy

    from proxy.call.alerts import Alert
    from proxy.call.context import CallContext, Usage

log = logging.getLogger("comptroller.spend")

# Spend transactions one process keeps open at once. Measured when they all
# updated the same hot rows (a key, its user, the proxy counter; striped since),
# more of them only queued in PostgreSQL's lock manager, which costs server
# CPU: on 2 cores, 2 gave ~12% more calls/s and a third lower p99 than 16
# (bench/RESULTS.md). Each costs two round trips, so a database far away may
# want more.
SETTLE_CONCURRENCY = max(1, int(os.environ.get("COMPTROLLER_SETTLE_CONCURRENCY", "2")))
_settling = threading.BoundedSemaphore(SETTLE_CONCURRENCY)


def dispatch_alerts(pm: pluggy.PluginManager, alerts: list[Alert]) -> None:
    """Hand each alert to every ``on_alert`` implementation, each isolated.

    pluggy stops a hook chain at the first exception, so implementations are
    called one by one, each in its own savepoint: one failing plugin can
    neither stop the others nor abort the transaction around it. In a batched
    spend transaction a savepoint costs a round trip only if the
    implementation sends a statement at once (proxy.storage.batching).
    """
    for alert in alerts:
        call_each(pm, "on_alert", isolate=atomic, alert=alert)


_LOG_COLUMNS = (
    "request_id, call_type, api_key, user_id, team_id, end_user, model, model_group, "
    "prompt_tokens, completion_tokens, total_tokens, spend, start_time, end_time, status, "
    "metadata, overrun"
)
_LOG_INSERT = f"INSERT INTO spend_log ({_LOG_COLUMNS}) VALUES ({', '.join(['%s'] * 17)})"
# Increments in the order they lock their rows (the order of strict
# reservations too, plugins.budgets.common.LOCK_ORDER). On PostgreSQL the
# key's, user's, team's and customer's go to a stripe (proxy.storage.stripes)
# and the proxy's to one of its own (proxy.storage.counters): no row every call
# of a busy key locks. SQLite (one writer) adds to the rows themselves.
_SQLITE_INCREMENTS = {
    "key": 'UPDATE "key" SET spend = spend + %s WHERE token = %s RETURNING spend',
    "user": 'UPDATE "user" SET spend = spend + %s WHERE user_id = %s RETURNING spend',
    "team": (
        "INSERT INTO team (team_id, spend, created_at) VALUES (%s, %s, %s) "
        "ON CONFLICT (team_id) DO UPDATE SET spend = team.spend + EXCLUDED.spend "
        "RETURNING spend"
    ),
    "customer": (
        "INSERT INTO customer (user_id, spend, blocked, created_at) VALUES (%s, %s, false, %s) "
        "ON CONFLICT (user_id) DO UPDATE SET spend = customer.spend + EXCLUDED.spend "
        "RETURNING spend"
    ),
    "proxy": counters.INCREMENT_SQL,
}
# The base of the key (never a stripe: this path is rare) and its whole counter.
_KEY_TOTAL = stripes.total_sql("key", '"key"')
_FOLLOW_REGENERATED_KEY = (
    f'UPDATE "key" SET spend = spend + %s WHERE previous_token = %s RETURNING {_KEY_TOTAL}, token'
)
_LOG_TO_KEY = "UPDATE spend_log SET api_key = %s WHERE request_id = %s"
# One more call (and its tokens) charged 0 for a model group; nobody reads its
# result, so it goes with the COMMIT. A call that commits after a later one
# must not move last_seen back.
_UNPRICED_UPSERT = (
    "INSERT INTO unpriced_model (model_group, upstream_model, calls, tokens, first_seen, "
    "last_seen) VALUES (%s, %s, 1, %s, %s, %s) ON CONFLICT (model_group) DO UPDATE SET "
    "upstream_model = EXCLUDED.upstream_model, calls = unpriced_model.calls + 1, "
    "tokens = unpriced_model.tokens + EXCLUDED.tokens, "
    "last_seen = CASE WHEN EXCLUDED.last_seen > unpriced_model.last_seen "
    "THEN EXCLUDED.last_seen ELSE unpriced_model.last_seen END"
)
_ledger_sql: dict[tuple[str, ...], str] = {}


@dataclass
class _Ledger:
    """One call's ledger: the spend-log row and the increments, in lock order."""

    log_params: list[Any]
    increments: list[tuple[str, str, float]]  # (kind, entity id, cost); the proxy's id ""
    end: float

    def write(self) -> dict[str, float | None]:
        """Write it; the new totals by kind. PostgreSQL: one statement (data-modifying
        CTEs, which also carry the held ``BEGIN``); SQLite: statement by statement."""
        kinds = tuple(kind for kind, _, _ in self.increments)
        if is_postgres():
            params = list(self.log_params)
            stripe = stripes.pick_stripe()
            for kind, entity_id, cost in self.increments:
                if kind == "proxy":
                    params += [counters.pick_stripe(), cost, self.end]
                else:
                    params += stripes.settle_params(kind, entity_id, stripe, cost, self.end)
            row = run_statement(_ledger_statement(kinds), params).fetchone()
            totals: dict[str, float | None] = dict(zip(kinds, row, strict=True))
        else:
            run_statement(_LOG_INSERT, self.log_params)
            totals = {}
            for kind, entity_id, cost in self.increments:
                row = run_statement(
                    _SQLITE_INCREMENTS[kind], self._sqlite_params(kind, entity_id, cost)
                ).fetchone()
                totals[kind] = row[-1] if row else None
        if "key" in totals and totals["key"] is None:
            totals["key"] = self._follow_regenerated_key()
        return totals

    def _sqlite_params(self, kind: str, entity_id: str, cost: float) -> list[Any]:
        if kind in ("key", "user"):
            return [cost, entity_id]
        if kind == "proxy":
            return [counters.pick_stripe(), cost, self.end]  # its header row on SQLite
        return [entity_id, cost, self.end]

    def _follow_regenerated_key(self) -> float | None:
        """The call's key was regenerated (or deleted) while the call was upstream.

        Regenerated: its row now has a new hash and keeps the one the call knew
        as ``previous_token``; the call's cost goes there (to the base) and its
        spend-log row follows the key, so the key's spend stays the sum of its
        logs. Deleted: there is no counter left to add to (``None``, as
        before). Only this rare path costs a statement more.
        """
        _, old_token, cost = self.increments[0]
        row = run_statement(_FOLLOW_REGENERATED_KEY, [cost, old_token]).fetchone()
        if row is None:
            return None
        run_statement(_LOG_TO_KEY, [row[1], self.log_params[0]])
        return float(row[0])


def _ledger_statement(kinds: tuple[str, ...]) -> str:
    """The spend log and every increment as one statement, answering the new
    totals in ``kinds`` order. The select list reads the increments left to
    right, so they lock their rows in that order."""
    sql = _ledger_sql.get(kinds)
    if sql is None:
        ctes = [f"log AS ({_LOG_INSERT})"]
        totals = []
        for kind in kinds:
            if kind == "proxy":
                ctes.append(f"new_proxy AS ({counters.INCREMENT_SQL})")
                totals.append(counters.TOTAL_AFTER_SQL)
            else:
                ctes += [f"{name} AS ({cte})" for name, cte in stripes.settle_ctes(kind)]
                totals.append(stripes.settle_total(kind))
        sql = _ledger_sql[kinds] = f"WITH {', '.join(ctes)} SELECT {', '.join(totals)}"
    return sql


def _ledger(
    ctx: CallContext, usage: Usage, cost: float, status: str, end: float, overrun: float
) -> _Ledger:
    log_params: list[Any] = [
        ctx.request_id, ctx.call_type, ctx.key_hash, ctx.user_id, ctx.team_id,
        ctx.end_user_id, ctx.deployment.upstream_model, ctx.model_group,
        usage.prompt_tokens, usage.completion_tokens, usage.total_tokens, cost,
        ctx.start_time, end, status, json.dumps(_log_metadata(ctx, usage)), overrun,
    ]  # fmt: skip
    increments: list[tuple[str, str, float]] = []
    if ctx.key is not None:
        increments.append(("key", ctx.key.token, cost))
    if ctx.user is not None:
        increments.append(("user", ctx.user.user_id, cost))
    if ctx.team_id:
        increments.append(("team", ctx.team_id, cost))
    if ctx.end_user_id:
        increments.append(("customer", ctx.end_user_id, cost))
    increments.append(("proxy", "", cost))
    return _Ledger(log_params, increments, end)


def _log_metadata(ctx: CallContext, usage: Usage) -> dict[str, Any]:
    """Which deployment answered (``model_group`` is the model asked for, ``model``
    the upstream model that answered; after a fallback ``model_name`` differs), and
    the usage's flag if it has one."""
    dep = ctx.deployment
    meta: dict[str, Any] = {
        "model_id": dep.id,
        "model_name": dep.model_name,
        "provider": dep.provider,
    }
    if usage.flag:
        meta["usage_flag"] = usage.flag
    return meta


def overrun_of(ctx: CallContext, cost: float) -> float:
    """How much ``cost`` exceeds the call's worst case (0 when the bound held).

    The call is charged in full either way; a positive overrun is recorded on its
    spend-log row, counted by ``/metrics`` and raised as a ``cost_overrun`` alert,
    since it means a budget may have been overshot by that much.
    """
    if ctx.worst_case is None:
        return 0.0
    reserved = ctx.estimated_cost
    # Float noise of equal amounts is no overrun.
    if cost <= reserved + max(1e-12, reserved * 1e-9):
        return 0.0
    log.warning(
        "call %s to %s was billed %r, more than its worst case %r",
        ctx.request_id,
        ctx.deployment.model_name,
        cost,
        reserved,
    )
    return cost - reserved


def overrun_alert(ctx: CallContext, cost: float, overrun: float) -> Alert:
    from proxy.call.alerts import Alert

    return Alert(
        spend=cost,
        token=ctx.key_hash,
        customer_id=ctx.end_user_id,
        user_id=ctx.user_id,
        team_id=ctx.team_id,
        key_alias=ctx.key.key_alias if ctx.key is not None else None,
        event="cost_overrun",
        event_group="proxy",
        event_message=(
            f"Call {ctx.request_id} to model {ctx.deployment.model_name} was billed "
            f"{cost!r}, {overrun!r} more than its worst case {ctx.estimated_cost!r}: "
            "charged in full; a budget may have been exceeded by the difference"
        ),
    )


def _fresh_connection() -> None:
    """Drop the current (dead) connection; the next one is checked before use."""
    close_broken_connection()
    check_all = getattr(database.obj, "check_all_before_use", None)
    if check_all is not None:
        check_all()
    database.connect()


def _run_plugins(pm: pluggy.PluginManager, ctx: CallContext, usage: Usage, cost: float) -> None:
    call_hook(pm, "post_call_spend", ctx=ctx, usage=usage, cost=cost)
    dispatch_alerts(pm, ctx.alerts)


def spend_recorded(request_id: str) -> bool:
    """Whether the call's spend-log row (so its whole spend transaction) is in."""
    row = run_statement("SELECT 1 FROM spend_log WHERE request_id = %s", [request_id]).fetchone()
    return row is not None


def price_call(ctx: CallContext, usage: Usage) -> float:
    """What ``usage`` costs on ``ctx``'s deployment."""
    return cost_of(ctx.deployment.price, usage, ctx.call_type, at=ctx.start_time)


def record_spend(
    pm: pluggy.PluginManager,
    ctx: CallContext,
    usage: Usage,
    status: str,
    cost: float | None = None,
    end: float | None = None,
    overrun: float | None = None,
) -> float:
    """Price ``usage`` and write the ledger for ``ctx`` in one transaction.

    ``post_call_spend`` and ``on_alert`` run inside it, once. If their part
    fails (an implementation of ``post_call_spend`` raises, a deferred write
    fails the commit, the connection drops after the ledger was written), the
    transaction is rolled back and the ledger alone written again: the call
    is billed exactly once, without the plugins' writes (proxy/hookspecs.py).
    """
    if usage.flag:
        log.warning("call %s: %s (recorded as flagged)", ctx.request_id, usage.flag)
    if cost is None:
        cost = price_call(ctx, usage)
    ctx.usage, ctx.cost = usage, cost
    if end is None:
        end = clock.now()
    if overrun is None:
        overrun = overrun_of(ctx, cost)
    if overrun:
        ctx.alerts.append(overrun_alert(ctx, cost, overrun))
    ledger = _ledger(ctx, usage, cost, status, end, overrun)
    unpriced = None
    if not ctx.deployment.price.known:
        dep = ctx.deployment
        unpriced = [dep.model_name, dep.upstream_model, usage.total_tokens, end, end]
    opened = database.connect(reuse_if_open=True)
    try:
        with_plugins = True
        reconnected = False
        alerts_before = len(ctx.alerts)
        while True:
            plugins_ran = False
            batch = None
            try:
                with _settling, batched_transaction():
                    batch = current_batch()
                    ctx.spend_after.update(ledger.write())
                    if unpriced is not None:
                        defer_write(_UNPRICED_UPSERT, unpriced)
                    if with_plugins:
                        plugins_ran = True
                        _run_plugins(pm, ctx, usage, cost)
                return cost
            except Exception as err:
                del ctx.alerts[alerts_before:]
                ctx.spend_after.clear()
                if isinstance(err, (peewee.OperationalError, peewee.InterfaceError)):
                    if batch is not None and batch.commit_sent:
                        raise  # it may have committed: never twice
                    if reconnected or not opened:
                        raise  # the database is gone
                    # A pooled connection that died while the upstream answered (the
                    # pool only checks idle ones): nothing was committed, so once
                    # more on a connection the pool checks.
                    log.warning("spend transaction of %s lost its connection", ctx.request_id)
                    reconnected = True
                    _fresh_connection()
                elif not plugins_ran:
                    raise  # the ledger itself failed
                if plugins_ran:
                    log.exception(
                        "the plugins' part of the spend transaction of %s failed; "
                        "recording the spend without it",
                        ctx.request_id,
                    )
                    with_plugins = False
    finally:
        if opened:
            database.close()
