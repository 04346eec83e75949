"""The rate limiter's statements on its tables, shared by every worker and host.

The window is a **fixed minute anchored at its first call**: a scope's
window opens with the first call after the previous one ended and lasts
:data:`~plugins.rate_limiter.limits.WINDOW_SECONDS`; ``requests`` and
``tokens`` count inside it and drop to zero when the next one opens. One row
per scope keeps it cheap, and the reset time a client is told is exactly when
its window ends. The price of a fixed window: a burst at the end of one
window and another at the start of the next can let up to twice the limit
through within a few seconds, never more than the limit within one window.

Deciding is one ``INSERT ... ON CONFLICT DO UPDATE ... RETURNING`` over all
the call's scopes. Every ``SET`` expression reads the row as it was before
the statement, so the row says in the same write whether this call fitted
(``admitted``) and counts it only if it did; the database's row lock makes
concurrent checks of one scope queue, so counts are exact on any number of
workers and hosts. When a call has several scopes and one of them refuses,
the statement's transaction is rolled back, so nothing is counted anywhere.
Rows are always written in (kind, entity) order, so two calls sharing scopes
lock them in the same order and cannot deadlock.

**Settles never queue on the window row (PostgreSQL).** A finished call's
tokens and freed slots go into rows of their own (``rate_limit_settled``,
one per call and scope, written with the spend transaction's COMMIT), which
no other statement waits for. The scope's next check, once it holds the
window row's lock, deletes the settled rows it sees and adds them to the
window in the same statement (:func:`_consumed_cte`). A row is deleted by one
check only, so it counts once; one committed while a check ran is folded in
by the next. Checks of one scope still queue on its window row: an exact
count of requests needs one place that decides them in turn. On SQLite (one
writer at a time) a settle writes the window row itself.

Tokens count in the window their call finished in: a check folds settled
tokens into an open window whenever they were settled; when it opens a new
window, only tokens settled after the previous one ended, within the last
:data:`~plugins.rate_limiter.limits.WINDOW_SECONDS`, count in it.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any, NamedTuple

import peewee

from plugins.rate_limiter.limits import WINDOW_SECONDS, Scope
from plugins.rate_limiter.tables import RateLimitLease
from proxy.plugin_api import atomic, defer_write, features, in_transaction, run, transaction

log = logging.getLogger("comptroller.rate_limiter")

WINDOWS = "rate_limit_window"
LEASES = "rate_limit_lease"
SETTLED = "rate_limit_settled"
_COLUMNS = (
    "kind, entity, window_start, requests, tokens, in_flight, "
    "rpm_limit, tpm_limit, parallel_limit, admitted"
)
_RETURNED = "kind, entity, window_start, requests, tokens, in_flight, admitted"
_STALE = f"{WINDOWS}.window_start <= excluded.window_start - {WINDOW_SECONDS}"
_REQUESTS_NOW = f"(CASE WHEN {_STALE} THEN 0 ELSE {WINDOWS}.requests END)"
_TOKENS_NOW = f"(CASE WHEN {_STALE} THEN 0 ELSE {WINDOWS}.tokens END)"
_FITS = (
    f"((excluded.rpm_limit IS NULL OR {_REQUESTS_NOW} < excluded.rpm_limit)"
    f" AND (excluded.tpm_limit IS NULL OR {_TOKENS_NOW} < excluded.tpm_limit)"
    f" AND (excluded.parallel_limit IS NULL OR {WINDOWS}.in_flight < excluded.parallel_limit))"
)


class WindowState(NamedTuple):
    """A scope's counters as the check left them (after this call, if it was counted);
    a named tuple, as :class:`~plugins.rate_limiter.limits.Scope`."""

    scope: Scope
    window_start: float
    requests: int
    tokens: int
    in_flight: int
    admitted: bool


@dataclass(frozen=True)
class Admission:
    states: list[WindowState]

    @functools.cached_property
    def admitted(self) -> bool:
        # Asked several times per check; the states never change once decided.
        return all(state.admitted for state in self.states)

    @property
    def leased(self) -> list[Scope]:
        """The scopes whose parallel slot this call now holds."""
        if not self.admitted:
            return []
        return [s.scope for s in self.states if s.scope.max_parallel_requests is not None]


def _ordered(scopes: list[Scope]) -> list[Scope]:
    return sorted(scopes, key=lambda scope: scope.row_id)


def _values(count: int, width: int) -> str:
    row = "(" + ", ".join(["%s"] * width) + ")"
    return ", ".join([row] * count)


def _fits_empty_window(scope: Scope) -> bool:
    limits = (scope.rpm_limit, scope.tpm_limit, scope.max_parallel_requests)
    return all(limit is None or limit > 0 for limit in limits)


def admit_sql(count: int) -> str:
    """The deciding upsert for ``count`` scopes (``RETURNING`` their new state)."""
    return (
        f"INSERT INTO {WINDOWS} ({_COLUMNS}) VALUES {_values(count, 10)} "
        f"ON CONFLICT (kind, entity) DO UPDATE SET "
        f"window_start = CASE WHEN {_STALE} THEN excluded.window_start "
        f"ELSE {WINDOWS}.window_start END, "
        f"requests = {_REQUESTS_NOW} + CASE WHEN {_FITS} THEN 1 ELSE 0 END, "
        f"tokens = {_TOKENS_NOW}, "
        f"in_flight = {WINDOWS}.in_flight + CASE WHEN {_FITS} "
        f"AND excluded.parallel_limit IS NOT NULL THEN 1 ELSE 0 END, "
        f"rpm_limit = excluded.rpm_limit, tpm_limit = excluded.tpm_limit, "
        f"parallel_limit = excluded.parallel_limit, "
        f"admitted = CASE WHEN {_FITS} THEN 1 ELSE 0 END "
        f"RETURNING {_RETURNED}, parallel_limit"
    )


def _consumed_cte(locked: str) -> str:
    """The CTE that deletes the settled rows of the windows ``locked`` holds.

    ``locked`` names a CTE of window rows already locked ``FOR UPDATE``:
    joining it makes the delete wait for those locks, so a scope's settled rows
    are only ever deleted by the holder of its window lock (no two checks wait
    for each other's settled rows). A row another check deleted and committed
    meanwhile is skipped by the delete (PostgreSQL re-checks a row whose deleter
    committed), so each counts once.
    """
    return (
        f"rl_consumed AS (DELETE FROM {SETTLED} p USING {locked} l "
        "WHERE p.kind = l.kind AND p.entity = l.entity "
        "RETURNING p.kind, p.entity, p.settled_at, p.tokens, p.released)"
    )


def _fold_ctes(locked: str, now: str) -> str:
    """``rl_consumed`` and ``rl_pending``: per scope, the slots its settled rows give
    back and the tokens that count in the window as the check leaves it (see
    :func:`_pending_of`)."""
    return (
        f"{_consumed_cte(locked)}, rl_pending AS MATERIALIZED (SELECT l.kind, l.entity, "
        f"p.released, p.tokens FROM {locked} l "
        f"CROSS JOIN LATERAL ({_pending_of('l', now)}) p)"
    )


def _stale_at(now: str) -> str:
    """Whether the locked window row ``l`` has ended at ``now`` (SQL)."""
    return f"l.window_start <= {now} - {WINDOW_SECONDS}"


def _pending_of(scope: str, now: str) -> str:
    """The settled rows one scope's check deleted (``rl_consumed``), summed: the
    slots they give back, and the tokens that count in the window as the check
    leaves it (``l``, its locked window row): all of them in an open window; in
    a new one, those settled after the old one ended and within the last window.

    A subquery, not a CTE of its own, in the call's read: PostgreSQL starts every
    CTE up again when the read has waited for a window row (EvalPlanQual)."""
    stale = _stale_at(now)
    return (
        "SELECT c.kind, SUM(c.released)::bigint AS released, "
        f"SUM(CASE WHEN NOT ({stale}) OR c.settled_at >= "
        f"GREATEST(l.window_start, {now} - {2 * WINDOW_SECONDS}) + {WINDOW_SECONDS} "
        "THEN c.tokens ELSE 0 END)::bigint AS tokens FROM rl_consumed c "
        f"WHERE c.kind = {scope}.kind AND c.entity = {scope}.entity GROUP BY c.kind"
    )


def _pending(column: str) -> str:
    """A scope's folded ``rl_pending`` column, in an ``ON CONFLICT`` update."""
    return (
        f"COALESCE((SELECT p.{column} FROM rl_pending p "
        "WHERE p.kind = excluded.kind AND p.entity = excluded.entity), 0)"
    )


_TYPED_ROW = (
    "(%s::text, %s::text, %s::float8, %s::bigint, %s::bigint, %s::int, "
    "%s::bigint, %s::bigint, %s::int, %s::int)"
)


def folding_admit_sql(count: int) -> str:
    """:func:`admit_sql` on PostgreSQL: the scopes' settled rows folded in first.

    The window rows are locked in (kind, entity) order before the settled rows
    are read (``rl_locked``, evaluated by the first row's update, whose own
    lock comes first in that order), so the counts decided on include every
    settle committed before the check and none twice.
    """
    tokens_now = f"({_TOKENS_NOW} + {_pending('tokens')})"
    in_flight_now = f"({WINDOWS}.in_flight - {_pending('released')})"
    fits = (
        f"((excluded.rpm_limit IS NULL OR {_REQUESTS_NOW} < excluded.rpm_limit)"
        f" AND (excluded.tpm_limit IS NULL OR {tokens_now} < excluded.tpm_limit)"
        f" AND (excluded.parallel_limit IS NULL OR {in_flight_now} < excluded.parallel_limit))"
    )
    rows = ", ".join([_TYPED_ROW] * count)
    return (
        f"WITH rl_in ({_COLUMNS}) AS (VALUES {rows}), "
        "rl_locked AS MATERIALIZED (SELECT w.kind, w.entity, w.window_start "
        f"FROM {WINDOWS} w JOIN rl_in i ON w.kind = i.kind AND w.entity = i.entity "
        'ORDER BY w.kind COLLATE "C", w.entity COLLATE "C" FOR UPDATE OF w), '
        f"{_fold_ctes('rl_locked', '(SELECT MAX(window_start) FROM rl_in)')}, "
        f"counted AS (INSERT INTO {WINDOWS} ({_COLUMNS}) SELECT * FROM rl_in "
        f'ORDER BY kind COLLATE "C", entity COLLATE "C" '
        f"ON CONFLICT (kind, entity) DO UPDATE SET "
        f"window_start = CASE WHEN {_STALE} THEN excluded.window_start "
        f"ELSE {WINDOWS}.window_start END, "
        f"requests = {_REQUESTS_NOW} + CASE WHEN {fits} THEN 1 ELSE 0 END, "
        f"tokens = {tokens_now}, "
        f"in_flight = {in_flight_now} + CASE WHEN {fits} "
        f"AND excluded.parallel_limit IS NOT NULL THEN 1 ELSE 0 END, "
        f"rpm_limit = excluded.rpm_limit, tpm_limit = excluded.tpm_limit, "
        f"parallel_limit = excluded.parallel_limit, "
        f"admitted = CASE WHEN {fits} THEN 1 ELSE 0 END "
        f"RETURNING {_RETURNED}, parallel_limit)"
    )


def _admit_params(scopes: list[Scope], now: float) -> list[Any]:
    params: list[Any] = []
    for scope in scopes:
        fits = _fits_empty_window(scope)
        holds_slot = fits and scope.max_parallel_requests is not None
        params += [
            scope.kind,
            scope.entity,
            now,
            1 if fits else 0,
            0,
            1 if holds_slot else 0,
            scope.rpm_limit,
            scope.tpm_limit,
            scope.max_parallel_requests,
            1 if fits else 0,
        ]
    return params


# Fails the statement (division by zero) unless every scope admitted the call.
_ALL_FIT_GUARD = "1 / MIN(admitted) OVER ()"
_DIVISION_BY_ZERO = "22012"


def _one_statement_admit_sql(count: int, with_leases: bool, all_or_nothing: bool = False) -> str:
    """The deciding upsert on PostgreSQL (:func:`folding_admit_sql`), the lease
    rows written by the same statement.

    ``all_or_nothing``: a statement that succeeds only if every scope admits.
    Run outside a transaction it is its own: when a scope refuses, the guard
    column fails the statement and PostgreSQL undoes all of it (no row counted,
    no lease written), with no ``BEGIN``/``COMMIT`` round trips and no row lock
    held across a round trip.
    """
    leased = ""
    if with_leases:
        leased = (
            f", leased AS (INSERT INTO {LEASES} (request_id, kind, entity, expires_at) "
            f"SELECT %s, kind, entity, %s FROM counted "
            f"WHERE admitted = 1 AND parallel_limit IS NOT NULL)"
        )
    guard = f", {_ALL_FIT_GUARD}" if all_or_nothing else ""
    return f"{folding_admit_sql(count)}{leased} SELECT {_RETURNED}{guard} FROM counted"


def _all_fit_in_one_statement(
    scopes: list[Scope], count: int, with_leases: bool, params: list[Any]
) -> Admission | None:
    """The admission in one round trip, or None when some scope refused (nothing counted)."""
    try:
        statement = _one_statement_admit_sql(count, with_leases, all_or_nothing=True)
        rows = run(statement, params).fetchall()
    except peewee.DataError as err:
        cause = getattr(err, "orig", None) or err.__context__  # the driver's error
        if getattr(cause, "pgcode", None) != _DIVISION_BY_ZERO:
            raise
        return None
    return Admission(_states(scopes, rows, rolled_back=False))


def _states(scopes: list[Scope], rows: list[tuple], rolled_back: bool) -> list[WindowState]:
    by_id = {(row[0], row[1]): row for row in rows}
    states = []
    for scope in scopes:
        _, _, window_start, requests, tokens, in_flight, admitted = by_id[scope.row_id][:7]
        counted = bool(admitted) and rolled_back
        states.append(
            WindowState(
                scope=scope,
                window_start=float(window_start),
                # A rolled-back check counted nothing: show the counts it left.
                requests=int(requests) - (1 if counted else 0),
                tokens=int(tokens),
                in_flight=int(in_flight)
                - (1 if counted and scope.max_parallel_requests is not None else 0),
                admitted=bool(admitted),
            )
        )
    return states


def admit(scopes: list[Scope], request_id: str, now: float, lease_until: float) -> Admission:
    """Count the call in every scope if it fits in all of them, else in none.

    One statement: on Postgres a single scope needs no transaction at all and
    several need one (``BEGIN`` travels with the statement, so it costs one
    round trip plus the ``COMMIT``); on SQLite the lease rows follow in the
    same transaction.
    """
    ordered = _ordered(scopes)
    with_leases = any(scope.max_parallel_requests is not None for scope in ordered)
    params = _admit_params(ordered, now)
    if features().writable_ctes:
        sql = _one_statement_admit_sql(len(ordered), with_leases)
        if with_leases:
            params += [request_id, lease_until]
        if len(ordered) == 1:
            rows = run(sql, params).fetchall()
            return Admission(_states(scopes, rows, rolled_back=False))
        if not in_transaction():
            admitted = _all_fit_in_one_statement(scopes, len(ordered), with_leases, params)
            if admitted is not None:
                return admitted
            # Refused somewhere, counted nowhere: decide again to report the counts.
        return _all_or_nothing(scopes, sql, params)
    if len(ordered) == 1 and not with_leases:
        rows = run(admit_sql(1), params, prepare=False).fetchall()
        return Admission(_states(scopes, rows, rolled_back=False))
    with atomic() as txn:
        rows = run(admit_sql(len(ordered)), params, prepare=False).fetchall()
        admission = Admission(_states(scopes, rows, rolled_back=False))
        if not admission.admitted:
            txn.rollback()
            return Admission(_states(scopes, rows, rolled_back=True))
        if admission.leased:
            RateLimitLease.insert_many(
                [
                    {
                        "request_id": request_id,
                        "kind": scope.kind,
                        "entity": scope.entity,
                        "expires_at": lease_until,
                    }
                    for scope in admission.leased
                ]
            ).execute()
        return admission


def _all_or_nothing(scopes: list[Scope], sql: str, params: list[Any]) -> Admission:
    """The statement in a transaction of its own (its ``BEGIN`` travels with
    it), committed only if every scope admitted the call."""
    with transaction() as txn:
        rows = run(sql, params, prepare=False).fetchall()
        if all(row[6] for row in rows):
            return Admission(_states(scopes, rows, rolled_back=False))
        txn.rollback()
        return Admission(_states(scopes, rows, rolled_back=True))


# --- the admission inside the call's one read (PostgreSQL) --------------------------------
#
# ``call_read`` (proxy.hookspecs.call_read_fragment) is one row: the key ``k``, its user
# ``u``, its team ``t``, the end user's customer row ``c``, its budget ``b`` and the default
# end-user budget ``d``. The scopes are derived from it here as limits.scopes_for derives
# them from the context; pre_request_check compares the two before trusting the result.


def _limit_sql(column: str) -> str:
    """limits._limit in SQL: a negative limit is 0, NULL stays NULL."""
    return f"CASE WHEN {column} IS NULL THEN NULL ELSE GREATEST({column}, 0) END"


def _entity_limits(alias: str) -> str:
    return ", ".join(
        _limit_sql(f'r."{alias}.{column}"')
        for column in ("rpm_limit", "tpm_limit", "max_parallel_requests")
    )


def _end_user_limits() -> str:
    """The limits of the budget row that governs the end user (gateway.load_customer):
    its own (``b``), else the default (``d``) if it has no budget of its own."""
    out = []
    for column in ("rpm_limit", "tpm_limit", "max_parallel_requests"):
        value = (
            f'CASE WHEN r."b.budget_id" IS NOT NULL THEN r."b.{column}" '
            f"WHEN r.\"c.user_id\" IS NULL OR COALESCE(r.\"c.budget_id\", '') = '' "
            f'THEN r."d.{column}" END'
        )
        out.append(_limit_sql(f"({value})"))
    return ", ".join(out)


_NOW = "(SELECT now FROM call_read)"
# The call's scopes -> their window rows locked in (kind, entity) order -> their settled
# rows folded in -> whether every one fits -> counted in all (only if every row exists
# and every one fits) -> leases. A scope without a window row yet leaves the decision to
# pre_request_check (``decided`` false): rows are made once per entity, ever. A window
# whose settled rows were folded in is written even when the call is not counted (the
# rows are gone); a refused call opens no new window unless settled tokens count in it.
_STALE_NOW = _stale_at(_NOW)
_KEEPS_OLD_WINDOW = "(NOT g.go AND f.stale AND f.settled_tokens = 0)"
FOLDED_ADMISSION_CTES = (
    "rl_scope AS MATERIALIZED (SELECT kind, entity, rpm, tpm, par FROM call_read r "
    "CROSS JOIN LATERAL (VALUES "
    f"('key', r.\"k.token\", {_entity_limits('k')}), "
    f"('user', r.\"u.user_id\", {_entity_limits('u')}), "
    f"('team', r.\"t.team_id\", {_entity_limits('t')}), "
    '(\'end_user\', CASE WHEN r."b.budget_id" IS NOT NULL OR r."d.budget_id" IS NOT NULL '
    f"THEN NULLIF(r.end_user_id, '') END, {_end_user_limits()})"
    ") AS s (kind, entity, rpm, tpm, par) "
    "WHERE r.caller IS NOT NULL AND entity IS NOT NULL "
    "AND (rpm IS NOT NULL OR tpm IS NOT NULL OR par IS NOT NULL)), "
    f"rl_locked AS MATERIALIZED (SELECT w.kind, w.entity, w.window_start, w.requests, "
    f"w.tokens, w.in_flight FROM {WINDOWS} w JOIN rl_scope s "
    f"ON w.kind = s.kind AND w.entity = s.entity "
    f'ORDER BY w.kind COLLATE "C", w.entity COLLATE "C" FOR UPDATE OF w), '
    f"{_consumed_cte('rl_locked')}, "
    "rl_now AS MATERIALIZED (SELECT s.kind, s.entity, s.rpm, s.tpm, s.par, "
    "l.kind IS NOT NULL AS found, p.kind IS NOT NULL AS consumed, "
    f"COALESCE({_STALE_NOW}, false) AS stale, COALESCE(p.tokens, 0) AS settled_tokens, "
    "l.in_flight - COALESCE(p.released, 0) AS in_flight, "
    f"CASE WHEN {_STALE_NOW} THEN {_NOW} ELSE l.window_start END AS window_start, "
    f"CASE WHEN {_STALE_NOW} THEN 0 ELSE l.requests END AS requests, "
    f"CASE WHEN {_STALE_NOW} THEN 0 ELSE l.tokens END + COALESCE(p.tokens, 0) AS tokens "
    "FROM rl_scope s LEFT JOIN rl_locked l ON l.kind = s.kind AND l.entity = s.entity "
    f"LEFT JOIN LATERAL ({_pending_of('s', _NOW)}) p ON true), "
    "rl_fit AS MATERIALIZED (SELECT n.*, COALESCE((n.rpm IS NULL OR n.requests < n.rpm) "
    "AND (n.tpm IS NULL OR n.tokens < n.tpm) "
    "AND (n.par IS NULL OR n.in_flight < n.par), false) AS fits FROM rl_now n), "
    "rl_go AS MATERIALIZED (SELECT COALESCE(bool_and(found), true) AS decided, "
    "COALESCE(bool_and(found), true) AND COALESCE(bool_and(fits), true) AS go FROM rl_fit), "
    f"rl_counted AS (UPDATE {WINDOWS} w SET "
    f"window_start = CASE WHEN {_KEEPS_OLD_WINDOW} THEN w.window_start "
    "ELSE f.window_start END, "
    f"requests = CASE WHEN {_KEEPS_OLD_WINDOW} THEN w.requests ELSE f.requests END "
    "+ CASE WHEN g.go THEN 1 ELSE 0 END, "
    f"tokens = CASE WHEN {_KEEPS_OLD_WINDOW} THEN w.tokens ELSE f.tokens END, "
    "in_flight = f.in_flight + CASE WHEN g.go AND f.par IS NOT NULL THEN 1 ELSE 0 END, "
    "rpm_limit = CASE WHEN g.go THEN f.rpm ELSE w.rpm_limit END, "
    "tpm_limit = CASE WHEN g.go THEN f.tpm ELSE w.tpm_limit END, "
    "parallel_limit = CASE WHEN g.go THEN f.par ELSE w.parallel_limit END, "
    "admitted = CASE WHEN g.go THEN 1 ELSE w.admitted END "
    "FROM rl_fit f, rl_go g WHERE (g.go OR f.consumed) "
    "AND w.kind = f.kind AND w.entity = f.entity "
    "RETURNING w.kind, w.entity, w.requests, w.in_flight, g.go AS counted), "
    f"rl_leased AS (INSERT INTO {LEASES} (request_id, kind, entity, expires_at) "
    f"SELECT %s::text, c.kind, c.entity, {_NOW} + %s::float8 "
    "FROM rl_counted c JOIN rl_fit f ON f.kind = c.kind AND f.entity = c.entity "
    "WHERE c.counted AND f.par IS NOT NULL), "
    "rl_result AS (SELECT f.kind, f.entity, f.rpm, f.tpm, f.par, g.decided, "
    "COALESCE(c.counted, false) AS counted, f.fits AS admitted, f.window_start, "
    "CASE WHEN c.counted THEN c.requests ELSE f.requests END AS requests, f.tokens, "
    "CASE WHEN c.counted THEN c.in_flight ELSE f.in_flight END AS in_flight "
    "FROM rl_fit f CROSS JOIN rl_go g "
    "LEFT JOIN rl_counted c ON c.kind = f.kind AND c.entity = f.entity)"
)
FOLDED_RESULT = "rl_result"


def folded_admission(scopes: list[Scope], rows: list[dict[str, Any]]) -> Admission | None:
    """The admission the call's read decided, or None if it decided nothing (a scope
    had no window row yet) or decided on other scopes than ``scopes`` (what the
    context says governs the call): pre_request_check then decides on its own."""
    if len(rows) != len(scopes):
        return None
    by_id: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        if not row["decided"]:
            return None
        by_id[(row["kind"], row["entity"])] = row
    if len(by_id) != len(rows):
        return None
    states = []
    for scope in scopes:
        found = by_id.get((scope.kind, scope.entity))
        if found is None or (found["rpm"], found["tpm"], found["par"]) != (
            scope.rpm_limit,
            scope.tpm_limit,
            scope.max_parallel_requests,
        ):
            return None
        states.append(
            WindowState(
                scope,
                float(found["window_start"]),
                int(found["requests"]),
                int(found["tokens"]),
                int(found["in_flight"]),
                bool(found["admitted"]),
            )
        )
    return Admission(states)


def undo_folded(rows: list[dict[str, Any]], request_id: str, now: float) -> None:
    """Give back what the read's admission took: its slots and its requests."""
    counted = [row for row in rows if row["counted"]]
    if not counted:
        return
    if any(row["par"] is not None for row in counted):
        release(request_id, now)
    states = [
        WindowState(
            scope=Scope(row["kind"], row["entity"], row["entity"]),
            window_start=float(row["window_start"]),
            requests=int(row["requests"]),
            tokens=int(row["tokens"]),
            in_flight=int(row["in_flight"]),
            admitted=True,
        )
        for row in counted
    ]
    uncount_requests(states)


def _settle_sql(count: int) -> str:
    """SQLite's settle: the window rows themselves, tokens added."""
    return (
        f"INSERT INTO {WINDOWS} ({_COLUMNS}) VALUES {_values(count, 10)} "
        f"ON CONFLICT (kind, entity) DO UPDATE SET "
        f"window_start = CASE WHEN {_STALE} THEN excluded.window_start "
        f"ELSE {WINDOWS}.window_start END, "
        f"requests = {_REQUESTS_NOW}, "
        f"tokens = {_TOKENS_NOW} + excluded.tokens"
    )


def _settled_rows_sql(count: int, with_release: bool) -> str:
    """PostgreSQL's settle: one settled row per scope with tokens or a freed slot; the
    call's own leases deleted by the same statement (only a lease it still holds: an
    expired one is the sweep's)."""
    prefix = ""
    freed = "0"
    if with_release:
        prefix = (
            f"WITH released AS (DELETE FROM {LEASES} WHERE request_id = %s "
            f"AND expires_at > %s RETURNING kind, entity) "
        )
        freed = "(SELECT COUNT(*) FROM released r WHERE r.kind = v.kind AND r.entity = v.entity)"
    rows = ", ".join(["(%s::text, %s::text, %s::bigint)"] * count)
    return (
        f"{prefix}INSERT INTO {SETTLED} (request_id, kind, entity, settled_at, tokens, released) "
        f"SELECT %s, v.kind, v.entity, %s, v.tokens, {freed} "
        f"FROM (VALUES {rows}) AS v (kind, entity, tokens) "
        f"WHERE v.tokens > 0 OR {freed} > 0"
    )


def settle(
    metered: list[Scope], tokens: int, leased: list[Scope], request_id: str, now: float
) -> None:
    """After a metered call: count its tokens and give back its parallel slots.

    Runs inside the spend transaction, so it adds no commit of its own; no answer
    is read, so on PostgreSQL it goes with the spend transaction's COMMIT, as one
    statement that writes settled rows and locks no window (see the module's
    docstring). Tokens count in the window the call finishes in.
    """
    counted = {scope.row_id: tokens for scope in metered if tokens > 0}
    if features().writable_ctes:
        if not counted and not leased:
            return
        touched = _ordered(list({s.row_id: s for s in [*metered, *leased]}.values()))
        params: list[Any] = [request_id, now] if leased else []
        params += [request_id, now]
        for scope in touched:
            params += [scope.kind, scope.entity, counted.get(scope.row_id, 0)]
        defer_write(_settled_rows_sql(len(touched), bool(leased)), params)
        return
    touched = _ordered([scope for scope in metered if scope.row_id in counted])
    if touched:
        params = []
        for scope in touched:
            params += [scope.kind, scope.entity, now, 0, counted[scope.row_id], 0]
            params += [scope.rpm_limit, scope.tpm_limit, scope.max_parallel_requests, 1]
        defer_write(_settle_sql(len(touched)), params)
    if leased:
        release(request_id, now)


def _release_in_one_statement(condition: str, params: list[Any]) -> int:
    """Delete leases and give their slots back, locking windows in a fixed order."""
    sql = (
        f"WITH released AS (DELETE FROM {LEASES} WHERE {condition} RETURNING kind, entity), "
        f"freed AS (SELECT kind, entity, COUNT(*) AS n FROM released GROUP BY kind, entity), "
        f"locked AS (SELECT w.kind, w.entity, freed.n FROM {WINDOWS} w "
        f"JOIN freed ON w.kind = freed.kind AND w.entity = freed.entity "
        f"ORDER BY w.kind, w.entity FOR UPDATE OF w) "
        f"UPDATE {WINDOWS} SET in_flight = CASE WHEN {WINDOWS}.in_flight > locked.n "
        f"THEN {WINDOWS}.in_flight - locked.n ELSE 0 END "
        f"FROM locked WHERE {WINDOWS}.kind = locked.kind AND {WINDOWS}.entity = locked.entity "
        f"RETURNING locked.n"
    )
    return sum(int(row[0]) for row in run(sql, params, prepare=False).fetchall())


def _release_statement_by_statement(condition: str, params: list[Any]) -> int:
    if not in_transaction():
        with atomic():
            return _release_statement_by_statement(condition, params)
    rows = run(f"DELETE FROM {LEASES} WHERE {condition} RETURNING kind, entity", params).fetchall()
    freed = Counter((row[0], row[1]) for row in rows)
    p = "%s"
    for (kind, entity), n in sorted(freed.items()):
        run(
            f"UPDATE {WINDOWS} SET in_flight = CASE WHEN in_flight > {p} "
            f"THEN in_flight - {p} ELSE 0 END WHERE kind = {p} AND entity = {p}",
            [n, n, kind, entity],
        )
    return sum(freed.values())


def _release_where(condition: str, params: list[Any]) -> int:
    if features().writable_ctes:
        return _release_in_one_statement(condition, params)
    return _release_statement_by_statement(condition, params)


def release(request_id: str, now: float) -> int:
    """Give back the parallel slots ``request_id`` holds; returns how many.

    A lease already past its expiry is left to :func:`reclaim_expired`, so a
    release and a sweep never fight over one lease row; and a lease already
    swept is never given back twice.
    """
    p = "%s"
    return _release_where(f"request_id = {p} AND expires_at > {p}", [request_id, now])


def reclaim_expired(now: float) -> int:
    """Give back the slots of every lease past its expiry (a killed worker's).

    On Postgres, leases another sweep is taking are skipped rather than waited for.
    """
    p = "%s"
    if features().row_locks:
        condition = (
            f"(request_id, kind) IN (SELECT request_id, kind FROM {LEASES} "
            f"WHERE expires_at <= {p} FOR UPDATE SKIP LOCKED)"
        )
        return _release_where(condition, [now])
    return _release_where(f"expires_at <= {p}", [now])


def uncount_requests(states: list[WindowState]) -> None:
    """Take back the request a call was counted for, if its window is still open.

    For a call refused after this plugin admitted it: it never went upstream.
    """
    p = "%s"
    with atomic():
        for state in sorted(states, key=lambda s: s.scope.row_id):
            run(
                f"UPDATE {WINDOWS} SET requests = requests - 1 WHERE kind = {p} "
                f"AND entity = {p} AND window_start = {p} AND requests > 0",
                [state.scope.kind, state.scope.entity, state.window_start],
            )


def current_counts(kind: str, entities: list[str], now: float) -> dict[str, tuple[int, int]]:
    """(requests, tokens) each entity's next check would start from at ``now``: its
    window's if still open, and the settled tokens no check has folded in yet."""
    if not entities:
        return {}
    p = "%s"
    marks = ", ".join([p] * len(entities))
    is_open = f"w.window_start > {p}"
    rows = run(
        f"SELECT w.entity, CASE WHEN {is_open} THEN w.requests ELSE 0 END, "
        f"CASE WHEN {is_open} THEN w.tokens ELSE 0 END + COALESCE((SELECT SUM(s.tokens) "
        f"FROM {SETTLED} s WHERE s.kind = w.kind AND s.entity = w.entity AND ({is_open} "
        f"OR s.settled_at >= w.window_start + {WINDOW_SECONDS} AND s.settled_at > {p})), 0) "
        f"FROM {WINDOWS} w WHERE w.kind = {p} AND w.entity IN ({marks})",
        [*[now - WINDOW_SECONDS] * 4, kind, *entities],
        prepare=False,
    ).fetchall()
    return {row[0]: (int(row[1]), int(row[2])) for row in rows}
