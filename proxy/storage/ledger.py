"""The spend ledger: one transaction per metered call.

The spend-log row, ``spend = spend + cost`` on the key, its user, its team,
the end user (upserted on first sight) and the proxy counter, the count of a
call whose model has no price (``unpriced_model``), whatever the plugins add
in ``post_call_spend``, and the alerts they raise all land together or not at
all. Increments are atomic SQL; the new totals come back through ``RETURNING``
so plugins can tell exactly which call crossed a threshold, even with many
workers.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any

import peewee
from peewee import EXCLUDED, fn

from proxy.call.pricing import compute_cost
from proxy.plugins import call_each
from proxy.storage.batching import DEFERS_WRITES, BatchedTransaction
from proxy.storage.db import database, is_postgres
from proxy.storage.models import Customer, Key, ProxySpend, SpendLog, Team, UnpricedModel, User
from proxy.storage.prepared import Prepared

if TYPE_CHECKING:
    import pluggy

    from proxy.call.alerts import Alert
    from proxy.call.context import CallContext, Usage

log = logging.getLogger("comptroller.spend")

# Spend transactions one process keeps open at once. They all update the same
# hot rows (a key, its user, the proxy counter), so more of them only queue in
# PostgreSQL's lock manager, which costs server CPU: on 2 cores, 2 gives ~12%
# more calls/s and a third lower p99 than 16 (bench/RESULTS.md). Each costs
# two round trips, so a database far away may want more.
SETTLE_CONCURRENCY = max(1, int(os.environ.get("COMPTROLLER_SETTLE_CONCURRENCY", "2")))
_settling = threading.BoundedSemaphore(SETTLE_CONCURRENCY)


def _increment(model: type, pk_field: object, pk: str | int, cost: float) -> float | None:
    query = (
        model.update({model.spend: model.spend + cost})  # type: ignore[attr-defined]
        .where(pk_field == pk)
        .returning(model.spend)  # type: ignore[attr-defined]
    )
    rows = list(query.execute())
    return rows[0].spend if rows else None


def _upsert_customer(end_user_id: str, cost: float, now: float) -> float:
    query = (
        Customer.insert(user_id=end_user_id, spend=cost, created_at=now)
        .on_conflict(
            conflict_target=[Customer.user_id],
            update={Customer.spend: Customer.spend + EXCLUDED.spend},
        )
        .returning(Customer.spend)
    )
    return list(query.execute())[0].spend


def _upsert_team(team_id: str, cost: float) -> float:
    query = (
        Team.insert(team_id=team_id, spend=cost)
        .on_conflict(
            conflict_target=[Team.team_id],
            update={Team.spend: Team.spend + EXCLUDED.spend},
        )
        .returning(Team.spend)
    )
    return list(query.execute())[0].spend


def _count_unpriced(ctx: CallContext, usage: Usage, end: float) -> None:
    """One more call (and its tokens) charged 0 for ``ctx``'s model group."""
    # A call that commits after a later one must not move last_seen back.
    latest = fn.GREATEST if is_postgres() else fn.MAX  # SQLite's MAX(a, b) is scalar
    UnpricedModel.insert(
        model_group=ctx.deployment.model_name,
        upstream_model=ctx.deployment.upstream_model,
        calls=1,
        tokens=usage.total_tokens,
        first_seen=end,
        last_seen=end,
    ).on_conflict(
        conflict_target=[UnpricedModel.model_group],
        update={
            UnpricedModel.upstream_model: EXCLUDED.upstream_model,
            UnpricedModel.calls: UnpricedModel.calls + 1,
            UnpricedModel.tokens: UnpricedModel.tokens + EXCLUDED.tokens,
            UnpricedModel.last_seen: latest(UnpricedModel.last_seen, EXCLUDED.last_seen),
        },
    ).execute()


def dispatch_alerts(pm: pluggy.PluginManager, alerts: list[Alert]) -> None:
    """Hand each alert to every ``on_alert`` implementation, each isolated.

    pluggy stops a hook chain at the first exception, so implementations are
    called one by one, each in its own savepoint: one failing plugin can
    neither stop the others nor abort the spend transaction around it.
    """
    for alert in alerts:
        call_each(pm.hook.on_alert, savepoint=True, alert=alert)


_LOG_COLUMNS = (
    "request_id, call_type, api_key, user_id, team_id, end_user, model, model_group, "
    "prompt_tokens, completion_tokens, total_tokens, spend, start_time, end_time, status, "
    "metadata"
)
# Increments in the order they lock their rows: the order of the statement-by-
# statement path and of strict reservations (plugins.budgets.common.LOCK_ORDER).
_INCREMENTS = {
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
    "proxy": "UPDATE proxy_spend SET spend = spend + %s WHERE id = 1 RETURNING spend",
}
_ledger_sql: dict[tuple[str, ...], str] = {}
# _count_unpriced for the batched path, sent with the COMMIT (nobody reads its result).
_UNPRICED_UPSERT = (
    "INSERT INTO unpriced_model (model_group, upstream_model, calls, tokens, first_seen, "
    "last_seen) VALUES (%s, %s, 1, %s, %s, %s) ON CONFLICT (model_group) DO UPDATE SET "
    "upstream_model = EXCLUDED.upstream_model, calls = unpriced_model.calls + 1, "
    "tokens = unpriced_model.tokens + EXCLUDED.tokens, "
    "last_seen = GREATEST(unpriced_model.last_seen, EXCLUDED.last_seen)"
)


def _ledger_statement(kinds: tuple[str, ...]) -> str:
    """One statement (data-modifying CTEs): the spend log and every increment,
    answering the new totals in ``kinds`` order. The select list reads the
    increments left to right, so they lock their rows in that order."""
    sql = _ledger_sql.get(kinds)
    if sql is None:
        values = ", ".join(["%s"] * 16)
        ctes = [f"log AS (INSERT INTO spend_log ({_LOG_COLUMNS}) VALUES ({values}))"]
        ctes += [f"new_{kind} AS ({_INCREMENTS[kind]})" for kind in kinds]
        totals = ", ".join(f"(SELECT spend FROM new_{kind})" for kind in kinds)
        sql = _ledger_sql[kinds] = f"WITH {', '.join(ctes)} SELECT {totals}"
    return sql


def _fresh_connection() -> None:
    """Drop the current (dead) connection; the next one is checked before use."""
    try:
        database.close()
    except Exception:
        log.debug("closing a dead connection failed", exc_info=True)
    check_all = getattr(database.obj, "check_all_before_use", None)
    if check_all is not None:
        check_all()
    database.connect()


def _write_ledger_batched(
    pm: pluggy.PluginManager,
    ctx: CallContext,
    usage: Usage,
    cost: float,
    status: str,
    end: float,
    txn: BatchedTransaction,
) -> None:
    """PostgreSQL: the ledger in two round trips (``BEGIN`` + one statement for the
    log and increments; the unpriced count and the plugins' queued writes + ``COMMIT``)."""
    kinds: list[str] = []
    params: list[Any] = [
        ctx.request_id, ctx.call_type, ctx.key_hash, ctx.user_id, ctx.team_id,
        ctx.end_user_id, ctx.deployment.upstream_model, ctx.deployment.model_name,
        usage.prompt_tokens, usage.completion_tokens, usage.total_tokens, cost,
        ctx.start_time, end, status, "{}",
    ]  # fmt: skip
    if ctx.key is not None:
        kinds.append("key")
        params += [cost, ctx.key.token]
    if ctx.user is not None:
        kinds.append("user")
        params += [cost, ctx.user.user_id]
    if ctx.team_id:
        kinds.append("team")
        params += [ctx.team_id, cost, end]
    if ctx.end_user_id:
        kinds.append("customer")
        params += [ctx.end_user_id, cost, end]
    kinds.append("proxy")
    params.append(cost)
    with txn:
        statement = Prepared.of(_ledger_statement(tuple(kinds)))
        row = txn.first_prepared(statement, params).fetchone()
        ctx.spend_after.update(zip(kinds, row, strict=True))
        dep = ctx.deployment
        if not dep.price.known:
            row_params = [dep.model_name, dep.upstream_model, usage.total_tokens, end, end]
            txn.queue(_UNPRICED_UPSERT, row_params)
        pm.hook.post_call_spend(ctx=ctx, usage=usage, cost=cost)
        _dispatch_alerts_batched(pm, ctx.alerts)


def _dispatch_alerts_batched(pm: pluggy.PluginManager, alerts: list[Alert]) -> None:
    """:func:`dispatch_alerts`, without a savepoint for implementations marked
    :func:`~proxy.storage.batching.defers_writes` (their writes go with the COMMIT)."""
    impls = list(reversed(pm.hook.on_alert.get_hookimpls()))
    for alert in alerts:
        for impl in impls:
            try:
                if getattr(impl.function, DEFERS_WRITES, False):
                    impl.function(*[{"alert": alert}[name] for name in impl.argnames])
                else:
                    with database.atomic():
                        impl.function(*[{"alert": alert}[name] for name in impl.argnames])
            except Exception:
                log.exception("on_alert of plugin %s failed", impl.plugin_name)


def record_spend(pm: pluggy.PluginManager, ctx: CallContext, usage: Usage, status: str) -> float:
    """Price ``usage`` and write the ledger for ``ctx`` in one transaction."""
    cost = compute_cost(
        ctx.deployment.price, usage.prompt_tokens, usage.completion_tokens, ctx.call_type
    )
    ctx.usage, ctx.cost = usage, cost
    end = time.time()
    opened = database.connect(reuse_if_open=True)
    try:
        if is_postgres() and not database.in_transaction():
            alerts_before = len(ctx.alerts)
            for attempt in range(2):
                txn = BatchedTransaction(database.obj)
                try:
                    with _settling:
                        _write_ledger_batched(pm, ctx, usage, cost, status, end, txn)
                    return cost
                except (peewee.OperationalError, peewee.InterfaceError):
                    if attempt or txn.commit_sent or not opened:
                        raise  # the database is gone, or it may have committed: never twice
                    # A pooled connection that died while the upstream answered (the pool
                    # only checks idle ones): nothing was committed, so once more on a
                    # connection the pool checks.
                    log.warning("spend transaction of %s lost its connection", ctx.request_id)
                    _fresh_connection()
                except peewee.DatabaseError:
                    log.warning(
                        "spend transaction of %s failed; writing it statement by statement",
                        ctx.request_id,
                        exc_info=True,
                    )
                    del ctx.alerts[alerts_before:]
                    ctx.spend_after.clear()
                    break
                del ctx.alerts[alerts_before:]
                ctx.spend_after.clear()
        with database.atomic():
            SpendLog.insert(
                request_id=ctx.request_id,
                call_type=ctx.call_type,
                api_key=ctx.key_hash,
                user_id=ctx.user_id,
                team_id=ctx.team_id,
                end_user=ctx.end_user_id,
                model=ctx.deployment.upstream_model,
                model_group=ctx.deployment.model_name,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                total_tokens=usage.total_tokens,
                spend=cost,
                start_time=ctx.start_time,
                end_time=end,
                status=status,
            ).execute()
            totals = ctx.spend_after
            if ctx.key is not None:
                totals["key"] = _increment(Key, Key.token, ctx.key.token, cost)
            if ctx.user is not None:
                totals["user"] = _increment(User, User.user_id, ctx.user.user_id, cost)
            if ctx.team_id:
                totals["team"] = _upsert_team(ctx.team_id, cost)
            if ctx.end_user_id:
                totals["customer"] = _upsert_customer(ctx.end_user_id, cost, end)
            totals["proxy"] = _increment(ProxySpend, ProxySpend.id, 1, cost)
            if not ctx.deployment.price.known:
                _count_unpriced(ctx, usage, end)
            pm.hook.post_call_spend(ctx=ctx, usage=usage, cost=cost)
            dispatch_alerts(pm, ctx.alerts)
    finally:
        if opened:
            database.close()
    return cost
