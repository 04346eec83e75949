"""Builtin plugin rate_limiter: RPM, TPM and parallel requests, exact across hosts.

Limits come from the key, its user and the end user's budget row (its own or
the ``max_end_user_budget_id`` default); a call must fit in all of them and
the tightest one answers. Counts live in the database (this plugin's tables,
see :mod:`plugins.rate_limiter.store` for the statements and the window), so
every worker and host sees the same numbers.

Per call: no statement at all when no limit applies; otherwise one statement
to decide and, when a TPM or parallel limit applies, one more inside the
spend transaction (the call's real tokens, the slot given back). A call that
fails or is refused after the check gives its slot back when it ends.

On PostgreSQL the deciding statement is part of the call's one read
(``call_read_fragment``: :data:`store.FOLDED_ADMISSION_CTES`), so deciding
costs no round trip of its own; the check then only reads the decision. The
read runs before authentication and the budgets have had their say, so a
call they refuse gives back what the read took (the fragment's ``undo``: its
slots and its request). Where the read could not decide (a scope's first
call ever, the rows changed under the call, SQLite, a large body) the check
decides with its own statement, as before.

Settings (``plugins.settings.rate_limiter``): ``lease_seconds``, how long a
parallel slot stays held if the worker holding it dies (default: the
deployment's timeout plus 60 s).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from plugins.rate_limiter import store
from plugins.rate_limiter.limits import (
    DEPLOYMENT_KIND,
    PLUGIN_NAME,
    Scope,
    configured_lease_seconds,
    deployment_scope,
    lease_seconds,
    scopes_for,
)
from plugins.rate_limiter.report import rate_limit_headers, refusal, refused_by_parallel_only
from proxy.plugin_api import ReadFragment, after_commit, database_now, features, hookimpl

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    from flask import Flask

    from proxy.plugin_api import CallContext, CallRead, Config, Deployment, Refusal, Usage


@dataclass
class Taken:
    """What an admitted call holds, so that :func:`call_finished` can give it back."""

    scopes: list[Scope]
    states: list[store.WindowState]
    leased: list[Scope] = field(default_factory=list)
    # Set once the spend transaction that gave the slots back has committed.
    released: bool = False

    def mark_released(self) -> None:
        self.released = True


@hookimpl
def plugin_migrations() -> tuple[str, str]:
    return ("rate_limiter", "plugins.rate_limiter.migrations")


@hookimpl
def plugin_startup(app: Flask, config: Config) -> None:
    configured_lease_seconds(config)  # a bad setting stops start-up, naming the key


def _fold_params(read: CallRead) -> Sequence[Any]:
    return [read.request_id, lease_seconds(read)]


def _undo_fold(read: CallRead, rows: list[dict[str, Any]]) -> None:
    store.undo_folded(rows, read.request_id, database_now())


@hookimpl
def call_read_fragment(config: Config) -> ReadFragment | None:
    if not features().writable_ctes:
        return None
    return ReadFragment(
        name=PLUGIN_NAME,
        ctes=store.FOLDED_ADMISSION_CTES,
        result=store.FOLDED_RESULT,
        params=_fold_params,
        undo=_undo_fold,
    )


def _decided_in_the_read(ctx: CallContext, scopes: list[Scope]) -> store.Admission | None:
    """The admission the call's read decided, if it decided one for these scopes."""
    rows = ctx.read_results.pop(PLUGIN_NAME, None)
    if rows is None:
        return None
    admission = store.folded_admission(scopes, rows)
    if admission is None:
        # Decided on rows that no longer describe the call, or not at all: undone,
        # then decided here.
        store.undo_folded(rows, ctx.request_id, ctx.now())
    return admission


@hookimpl
def pre_request_check(ctx: CallContext) -> Refusal | None:
    scopes = scopes_for(ctx)
    folded = _decided_in_the_read(ctx, scopes)
    if not scopes:
        return None
    now = ctx.now()
    lease_until = now + lease_seconds(ctx)
    admission = folded or store.admit(scopes, ctx.request_id, now, lease_until)
    if not admission.admitted and refused_by_parallel_only(admission):
        # Slots of calls whose worker died come back once their lease expires.
        if store.reclaim_expired(now):
            admission = store.admit(scopes, ctx.request_id, now, lease_until)
    ctx.response_headers.update(rate_limit_headers(admission, now))
    if not admission.admitted:
        return refusal(admission, now)
    ctx.plugin_state[PLUGIN_NAME] = Taken(scopes, admission.states, admission.leased)
    return None


@hookimpl
def deployment_admit(deployment: Deployment, request_id: str, now: float) -> bool | None:
    scope = deployment_scope(deployment)
    if scope is None:
        return None
    # No parallel limit, so no lease: the lease time is never used.
    return store.admit([scope], request_id, now, 0.0).admitted


@hookimpl
def deployment_usage(
    deployments: list[Deployment], now: float
) -> dict[str, tuple[int, int]] | None:
    return store.current_counts(DEPLOYMENT_KIND, [d.id for d in deployments], now)


@hookimpl
def post_call_spend(ctx: CallContext, usage: Usage, cost: float) -> None:
    taken: Taken | None = ctx.plugin_state.get(PLUGIN_NAME)
    answered = deployment_scope(ctx.deployment)
    # The deployment that answered counts the call's tokens (its tpm, usage-based routing).
    counted = [answered] if answered is not None else []
    if taken is None:
        if counted:
            store.settle(counted, usage.total_tokens, [], ctx.request_id, ctx.now())
        return
    metered = [scope for scope in taken.scopes if scope.tpm_limit is not None] + counted
    store.settle(metered, usage.total_tokens, taken.leased, ctx.request_id, ctx.now())
    if taken.leased:
        # Only if the spend commits; a rolled-back one leaves it to call_finished.
        after_commit(taken.mark_released)


@hookimpl
def call_finished(ctx: CallContext, outcome: str) -> None:
    taken: Taken | None = ctx.plugin_state.pop(PLUGIN_NAME, None)
    if taken is None:
        return
    if taken.leased and not taken.released:
        store.release(ctx.request_id, ctx.now())
    if outcome == "refused":
        # A later check refused it: it never went upstream, so it does not count.
        store.uncount_requests(taken.states)
