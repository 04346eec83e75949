"""Bill every answered call exactly once: settle through the journal, replay what is left.

:func:`settle_spend` writes the call's journal entry (write-ahead), then its
spend transaction; the entry goes once that commits. When the database
cannot take it, the entry is made durable and the caller carries on: the
client gets the answer the upstream gave. :class:`JournalReplayer` writes
what the journal holds (entries kept in an outage, or left by a worker that
died mid-settle) once the database is back, from any worker of the host.
The spend-log row's primary key is the call id, so a replay of a call whose
transaction did commit (a crash after the COMMIT, a lost acknowledgement)
finds its row and only drops the entry: never billed twice.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING, Any, Protocol

import peewee

from proxy.call.context import CallContext, Usage
from proxy.call.cost import Price, Rates
from proxy.call.customers import load_customer
from proxy.storage import clock
from proxy.storage.db import is_unreachable
from proxy.storage.journal import Entry
from proxy.storage.ledger import overrun_of, price_call, record_spend, spend_recorded
from proxy.storage.lookup import load_call_rows
from proxy.upstream.deployments import Deployment

if TYPE_CHECKING:
    import pluggy

    from proxy.config import Config
    from proxy.storage.journal import SpendJournal
    from proxy.storage.schema_gate import SchemaGate
    from proxy.upstream.deployments import ModelTable


class Services(Protocol):
    """What settling and replaying use of the app's services (proxy.call.gateway)."""

    config: Config
    models: ModelTable
    pm: pluggy.PluginManager
    schema: SchemaGate
    journal: SpendJournal
    replayer: JournalReplayer


log = logging.getLogger("comptroller.settle")

# How often each worker looks for entries to replay while there are some.
REPLAY_EVERY_SECONDS = 1.0


def _record(
    ctx: CallContext, usage: Usage, cost: float, overrun: float, status: str, end: float
) -> dict:
    """What a replay needs to write the call's ledger as the call would have."""
    return {
        "request_id": ctx.request_id,
        "call_type": ctx.call_type,
        "model_name": ctx.deployment.model_name,
        # The model asked for, and the deployment that answered (after a fallback,
        # another model's): the replayed spend log says both, as the live one would.
        "model_group": ctx.model_group,
        "deployment_id": ctx.deployment.id,
        "upstream_model": ctx.deployment.upstream_model,
        "price_known": ctx.deployment.price.known,
        "is_master": ctx.is_master,
        "key_token": ctx.key.token if ctx.key is not None else None,
        "team_id": ctx.team_id,
        "end_user_id": ctx.end_user_id,
        "start_time": ctx.start_time,
        "end_time": end,
        "status": status,
        "usage": usage.as_dict(),
        "cost": cost,
        "overrun": overrun,
    }


def settle_spend(services: Services, ctx: CallContext, usage: Usage, status: str) -> None:
    """Record the spend of a call the upstream answered; never raises for the database.

    Committed, or journaled for a replay: either way the caller answers the client.
    """
    cost = price_call(ctx, usage)
    overrun = overrun_of(ctx, cost)
    end = clock.now()
    record = _record(ctx, usage, cost, overrun, status, end)
    entry: Entry | None = None
    try:
        entry = services.journal.write(ctx.request_id, record)
    except OSError:
        log.exception("spend journal not writable: %s is settled without it", ctx.request_id)
    try:
        record_spend(services.pm, ctx, usage, status, cost=cost, end=end, overrun=overrun)
    except Exception as err:
        if entry is None:
            log.exception("the spend of %s (%.6f USD) is LOST", ctx.request_id, cost)
            return
        entry.keep()
        if is_unreachable(err):
            log.warning(
                "database unavailable: the spend of %s (%.6f USD) is journaled for replay",
                ctx.request_id,
                cost,
            )
        else:
            log.exception("the spend of %s failed; journaled for replay", ctx.request_id)
        services.replayer.wake()
        _carry_forward(ctx, cost)
        return
    if entry is not None:
        entry.done()
    _carry_forward(ctx, cost)


def _carry_forward(ctx: CallContext, cost: float) -> None:
    """Keep this worker's last known state of the caller current (fail-open checks it
    while the database is away): the new totals, or the journaled cost added."""
    for kind, row in (("key", ctx.key), ("user", ctx.user)):
        if row is None:
            continue
        total = ctx.spend_after.get(kind)
        row.spend = total if total is not None else (row.spend or 0.0) + cost


def _deployment(services: Services, record: dict[str, Any]) -> Deployment:
    found = services.models.by_id.get(record.get("deployment_id") or "")
    if found is None:
        found = services.models.get(record["model_name"])
    if found is not None:
        return found
    # The model left the config since: its name, and whether it had a price, suffice.
    price = Price(Rates(), known=record["price_known"], model=record["upstream_model"])
    return Deployment(
        model_name=record["model_name"],
        provider="unknown",
        upstream_model=record["upstream_model"],
        api_base=None,
        api_key=None,
        api_version=None,
        timeout=0.0,
        access_groups=(),
        price=price,
        created=0,
    )


def _context(services: Services, record: dict[str, Any]) -> CallContext:
    """The call's context as a settle sees it, from today's rows: budgets and
    alerts judge the replayed spend against the current counters."""
    default_budget = services.config.litellm_settings.max_end_user_budget_id
    rows = load_call_rows(record["key_token"], record["end_user_id"], default_budget)
    key = rows.key
    ctx = CallContext(
        config=services.config,
        call_type=record["call_type"],
        deployment=_deployment(services, record),
        body={},
        is_master=record["is_master"],
        key=key,
        user=rows.user if key is not None else None,
        team_id=record["team_id"],
        end_user_id=record["end_user_id"],
        request_id=record["request_id"],
        start_time=record["start_time"],
        model_group=record.get("model_group") or "",
    )
    if rows.team is not None and rows.team.team_id == ctx.team_id:
        ctx.team = rows.team
    load_customer(services.config, ctx, rows)
    ctx.proxy_spend = rows.proxy_spend
    return ctx


def replay_entry(services: Services, entry: Entry) -> bool:
    """Write one entry's spend; True when the entry is resolved (written or found)."""
    record = entry.record
    if spend_recorded(record["request_id"]):
        entry.done()
        return True
    ctx = _context(services, record)
    usage = Usage(**record["usage"])
    try:
        record_spend(
            services.pm,
            ctx,
            usage,
            record["status"],
            cost=record["cost"],
            end=record["end_time"],
            overrun=record.get("overrun", 0.0),
        )
    except peewee.IntegrityError:
        if not spend_recorded(record["request_id"]):
            raise
        # Another host or worker wrote it meanwhile.
    entry.done()
    log.info("replayed the journaled spend of %s", record["request_id"])
    return True


class JournalReplayer:
    """Replays this host's journal from this process: a thread that runs while
    entries remain (every :data:`REPLAY_EVERY_SECONDS`), started when this process
    keeps an entry and once at its first request (entries left by a worker that
    died, or by an earlier run)."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._pid: int | None = None
        self._fresh_state()

    def _fresh_state(self) -> None:
        self._state_lock = threading.Lock()
        self._replay_lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def ensure_running(self) -> None:
        """Once per process (again after a fork): look for entries left behind."""
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._fresh_state()
            self.wake()

    def wake(self) -> None:
        with self._state_lock:
            if self._thread is not None and self._thread.is_alive():
                self._wake.set()
                return
            self._thread = threading.Thread(
                target=self._run, name="spend-journal-replay", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        journal = self.services.journal
        while True:
            if self.services.schema.ready and journal.has_pending():
                self.replay()
            with self._state_lock:
                if not journal.has_pending():
                    self._thread = None
                    return
            self._wake.wait(REPLAY_EVERY_SECONDS)
            self._wake.clear()

    def replay(self) -> int:
        """Write every entry that can be written now; how many were resolved."""
        if not self._replay_lock.acquire(blocking=False):
            return 0
        resolved = 0
        try:
            from proxy.storage.db import database

            for entry in self.services.journal.pending():
                try:
                    with database.connection_context():
                        replay_entry(self.services, entry)
                    resolved += 1
                except Exception as err:
                    entry.release()
                    if is_unreachable(err):
                        break  # still away: try again later
                    log.exception("replaying %s failed; kept", entry.path.name)
        finally:
            self._replay_lock.release()
        return resolved
