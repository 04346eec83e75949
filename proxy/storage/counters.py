"""The proxy-wide spend counter, striped so that settles never queue on one row.

Every metered call adds its cost to the proxy counter. Were that one row,
every spend transaction would take its row lock and hold it until COMMIT, so
settles of all keys would run one after another, however many workers,
hosts and database cores (bench/RESULTS.md, the settle benchmark).

So the counter is the sum of the ``proxy_spend`` rows. Row 1 is the header:
it keeps ``budget_reset_at`` and ``created_at`` and whatever spend was counted
before striping; a reset locks it to decide which worker resets. A settle
adds to one of :data:`STRIPES` other rows (ids 2 and up), picked at random
per call, upserted so a missing stripe can never drop a cost. Every read (a
call's checks, admin reads, strict reservations) sees the sum; a reset zeroes
every row in the transaction that moves the header's schedule.
"""

from __future__ import annotations

import random

from proxy.storage.db import database, is_postgres
from proxy.storage.models import ProxySpend, SpendStripe

HEADER_ID = 1
STRIPES = 16
FIRST_STRIPE = HEADER_ID + 1

# The proxy counter's sum, as a scalar subquery (PostgreSQL and SQLite).
TOTAL_SQL = 'SELECT COALESCE(SUM("spend"), 0) FROM "proxy_spend"'
# The header row with the whole counter as its spend: what a call's read joins.
HEADER_WITH_TOTAL_SQL = (
    f'SELECT "id", ({TOTAL_SQL}) AS "spend", "budget_reset_at", "created_at" '
    f'FROM "proxy_spend" WHERE "id" = {HEADER_ID}'
)
# Add a cost to one stripe; its id and new spend back (the ledger adds the others).
INCREMENT_SQL = (
    "INSERT INTO proxy_spend (id, spend, created_at) VALUES (%s, %s, %s) "
    "ON CONFLICT (id) DO UPDATE SET spend = proxy_spend.spend + EXCLUDED.spend "
    "RETURNING id, spend"
)
# The counter after an increment in the same statement (PostgreSQL: data-modifying
# CTE ``new_proxy``): this call's stripe plus the others as of the statement's snapshot.
TOTAL_AFTER_SQL = (
    "(SELECT spend FROM new_proxy) + (SELECT COALESCE(SUM(spend), 0) FROM proxy_spend "
    "WHERE id <> (SELECT id FROM new_proxy))"
)


def pick_stripe() -> int:
    """The stripe one settle adds to: random, so concurrent settles rarely share one.

    SQLite takes one writer at a time, so striping would buy nothing there: its
    settles add to the header, whose new spend is then the whole counter.
    """
    if not is_postgres():
        return HEADER_ID
    return FIRST_STRIPE + random.randrange(STRIPES)


def proxy_counter() -> ProxySpend | None:
    """The header row with the whole counter as its ``spend`` (None: no header)."""
    rows = list(ProxySpend.raw(HEADER_WITH_TOTAL_SQL))
    return rows[0] if rows else None


def proxy_total() -> float:
    """The proxy counter: the sum of its rows."""
    row = database.execute_sql(TOTAL_SQL).fetchone()
    return float(row[0]) if row else 0.0


def zero_stripes() -> None:
    """A reset's second half, in the transaction of the header's conditional update."""
    ProxySpend.update(spend=0.0).where(ProxySpend.id != HEADER_ID).execute()


# The stripes of keys, users, teams and customers (proxy.storage.stripes): every
# write to them besides a settle's add, each in its caller's transaction.


def zero_entity_stripes(kind: str, entity_id: str) -> None:
    """A reset's second half, in the transaction of the entity row's conditional update."""
    S = SpendStripe
    S.update(spend=0.0).where((S.kind == kind) & (S.entity_id == entity_id)).execute()


def forget_entity_stripes(kind: str, entity_ids: list[str]) -> None:
    """Deleting entities deletes their stripes (an id made again starts from 0).

    In the transaction of the rows' ``DELETE``, after it: that waited for the
    settles holding the rows (``FOR KEY SHARE``), so their stripes are seen.
    """
    if entity_ids:
        S = SpendStripe
        S.delete().where((S.kind == kind) & (S.entity_id.in_(entity_ids))).execute()


def move_key_stripes(old_token: str, new_token: str) -> None:
    """A regenerated key's stripes follow its new hash, in the transaction that
    gave the row the new hash (which waited for the settles holding the row)."""
    S = SpendStripe
    S.update(entity_id=new_token).where((S.kind == "key") & (S.entity_id == old_token)).execute()
