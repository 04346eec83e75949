"""Spend counters of keys, users, teams and customers, striped so that a busy one
never makes settles queue on its row.

Were a key's counter its row's ``spend`` column, every spend transaction of
that key would take the row's lock and hold it until COMMIT, so the calls of
one key (and of its user, team and end user) would settle one after another,
however many workers, hosts and database cores (bench/RESULTS.md, the settle
benchmark). So an entity's spend is its row's ``spend`` (the *base*: spend
counted before striping, the first-sight insert of a team or end user, a
regenerated key's rare catch-up) plus its rows of ``spend_stripe`` (kind,
entity id, stripe number): a settle adds its cost to one of :data:`STRIPES`
stripes, picked at random per call and upserted in the ledger's one statement
(:func:`settle_ctes`), which takes only a ``FOR KEY SHARE`` lock on the
entity's row (settles do not block each other; a delete, or a key's new hash,
waits for them).

Every reader sums: :func:`total_sql` (raw SQL: the call's one read, strict
reservations, the ledger's read-back) and, from the same text,
``proxy.storage.models``' peewee expression (admin reads and lists, sorting
by spend). A reset zeroes the base and the stripes in one transaction
(``proxy.storage.resets``); deleting an entity deletes its stripes, and a
regenerated key's stripes follow its new hash (``proxy.storage.counters``).

SQLite takes one writer at a time, so striping would buy nothing there: its
settles add to the entity's row and it has no stripes, but it is read through
the same sums.

Only SQL text lives here (no models), so that the models can use it.
"""

from __future__ import annotations

import random

STRIPES = 16
TABLE = "spend_stripe"

# kind -> (table, primary-key column): the entities whose spend is striped.
ENTITIES: dict[str, tuple[str, str]] = {
    "key": ('"key"', "token"),
    "user": ('"user"', "user_id"),
    "team": ("team", "team_id"),
    "customer": ("customer", "user_id"),
}
# Made on a settle's first sight of the id (the others must exist to be counted).
_BORN_ON_SETTLE: dict[str, str] = {
    "team": (
        "INSERT INTO team (team_id, spend, created_at) "
        "SELECT %s::varchar, %s::double precision, %s::double precision "
        "WHERE NOT EXISTS (SELECT 1 FROM had_team) "
        "ON CONFLICT (team_id) DO UPDATE SET spend = team.spend + EXCLUDED.spend "
        "RETURNING team_id AS id, spend"
    ),
    "customer": (
        "INSERT INTO customer (user_id, spend, blocked, created_at) "
        "SELECT %s::varchar, %s::double precision, false, %s::double precision "
        "WHERE NOT EXISTS (SELECT 1 FROM had_customer) "
        "ON CONFLICT (user_id) DO UPDATE SET spend = customer.spend + EXCLUDED.spend "
        "RETURNING user_id AS id, spend"
    ),
}


def stripes_parts(kind: str, where: str = "", also: str = "") -> tuple[str, str]:
    """The sum of one entity's stripes as SQL text around its id: ``before + id + after``
    (``where``: one more condition on ``s``, the stripe row; ``also``: more
    ``(stripe, spend)`` rows, a ``UNION ALL SELECT``). Summed in stripe order, so
    that every reader (and the ledger's read-back, when no settle runs meanwhile)
    gets the very same float."""
    more = f" AND {where}" if where else ""
    before = (
        f"(SELECT COALESCE(SUM(x.spend), 0) FROM (SELECT s.stripe, s.spend FROM {TABLE} AS s "
        f"WHERE s.kind = '{kind}' AND s.entity_id = "
    )
    return before, f"{more}{' ' + also if also else ''} ORDER BY 1) AS x)"


def stripes_sql(kind: str, entity: str, where: str = "", also: str = "") -> str:
    """The sum of the stripes of the entity whose id is the SQL ``entity``."""
    before, after = stripes_parts(kind, where, also)
    return f"{before}{entity}{after}"


def total_sql(kind: str, alias: str) -> str:
    """The whole counter of the ``kind`` row aliased ``alias``: base plus stripes."""
    pk = ENTITIES[kind][1]
    return f'({alias}."spend" + {stripes_sql(kind, f"{alias}.{pk}")})'


def pick_stripe() -> int:
    """The stripe a settle adds to: random, so concurrent settles rarely share one."""
    return random.randrange(STRIPES)


def settle_ctes(kind: str) -> list[tuple[str, str]]:
    """The ledger's common table expressions for ``kind`` (PostgreSQL), as ``(name, sql)``.

    ``had_<kind>`` locks the entity's row ``FOR KEY SHARE`` (concurrent settles
    share it; a delete or a key's new hash waits for them); ``new_<kind>`` adds
    the cost to one stripe; for a team or end user seen the first time,
    ``born_<kind>`` makes its row with the cost as its base. Parameters, in
    order: entity id, stripe, cost (then entity id, cost, time for those made
    on sight: :func:`settle_params`).
    """
    table, pk = ENTITIES[kind]
    ctes = [
        (f"had_{kind}", f"SELECT {pk} AS id, spend FROM {table} WHERE {pk} = %s FOR KEY SHARE"),
        (
            f"new_{kind}",
            f"INSERT INTO {TABLE} (kind, entity_id, stripe, spend) "
            f"SELECT '{kind}', id, %s::integer, %s::double precision FROM had_{kind} "
            f"ON CONFLICT (kind, entity_id, stripe) DO UPDATE "
            f"SET spend = {TABLE}.spend + EXCLUDED.spend RETURNING stripe, spend",
        ),
    ]
    if kind in _BORN_ON_SETTLE:
        ctes.append((f"born_{kind}", _BORN_ON_SETTLE[kind]))
    return ctes


def settle_params(kind: str, entity_id: str, stripe: int, cost: float, end: float) -> list[object]:
    params: list[object] = [entity_id, stripe, cost]
    if kind in _BORN_ON_SETTLE:
        params += [entity_id, cost, end]
    return params


def settle_total(kind: str) -> str:
    """The entity's counter after the settle's CTEs, as a scalar subquery (NULL: no row).

    Its base, this call's stripe as written, and the other stripes as of the
    statement's snapshot (another call's concurrent add may be missing: the
    budget alerts allow for that, plugins.budgets.alerts).
    """
    rows = f"SELECT id, spend FROM had_{kind}"
    if kind in _BORN_ON_SETTLE:
        rows += f" UNION ALL SELECT id, spend FROM born_{kind}"
    # This call's stripe as it wrote it, the others as of the statement's snapshot.
    mine = f"SELECT n.stripe, n.spend FROM new_{kind} AS n"
    not_mine = f"s.stripe <> COALESCE((SELECT n.stripe FROM new_{kind} AS n), -1)"
    stripes_now = stripes_sql(kind, "b.id", not_mine, also=f"UNION ALL {mine}")
    return f"(SELECT b.spend + {stripes_now} FROM ({rows}) AS b)"
