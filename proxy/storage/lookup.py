"""Everything a call's checks read, in one query.

The key (by hash) with its user and its team (the key's, else its user's),
the end user (customer) with its own budget
row, the default end-user budget row (``max_end_user_budget_id``) and the
proxy counter come back as one row of LEFT JOINs (each spend counter summed
from its stripes: proxy.storage.stripes, proxy.storage.counters), so adding
a budget level costs no round trip (DESIGN.md, step 2). A missing key, customer or budget
is a row of NULLs, so the master key and a new end user use the same query.

The SQL is written once per parameter style, and each row's columns become
model objects through the models' own constructors: building a peewee query
per call would cost more CPU than the round trip it saves.

On PostgreSQL, plugins may add statements to the read (``call_read_fragment``,
proxy/hookspecs.py): the read becomes the first CTE, ``call_read``, of one
statement whose other CTEs are the plugins' (writes included: PostgreSQL runs
data-modifying CTEs at the top level of a ``WITH``), and each plugin's result
rows come back as one JSON column of the same row. ``call_read`` has one row:
every column of the joined rows as ``"<alias>.<column>"`` (aliases as in
:data:`READ_ALIASES`), ``"now"`` (the database's clock), ``"end_user_id"``
and ``"caller"`` (``'master'``, ``'key'`` for a key that exists, else NULL).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import peewee

from proxy.storage import clock, counters, stripes
from proxy.storage.db import database, is_postgres
from proxy.storage.models import Budget, Customer, Key, ProxySpend, StripedSpend, Team, User
from proxy.storage.prepared import Prepared

# (alias, model) in the order their columns appear in the row.
_PARTS: tuple[tuple[str, type[peewee.Model]], ...] = (
    ("k", Key),
    ("u", User),
    ("t", Team),
    ("c", Customer),
    ("b", Budget),
    ("d", Budget),
    ("p", ProxySpend),
)
_FIELDS: dict[type[peewee.Model], list[peewee.Field]] = {
    model: list(model._meta.sorted_fields) for _, model in _PARTS
}
_PK_INDEX: dict[type[peewee.Model], int] = {
    model: [field.name for field in fields].index(cast(peewee.Field, model._meta.primary_key).name)
    for model, fields in _FIELDS.items()
}
# The number of model columns in a read's row (the server's time comes next).
_WIDTH = sum(len(_FIELDS[model]) for _, model in _PARTS)
_sql_by_param: dict[str, str] = {}
# What ``call_read``'s columns are named after (proxy/hookspecs.py, call_read_fragment).
READ_ALIASES = {
    "k": "the key",
    "u": "its user",
    "t": "its team (the key's, else its user's)",
    "c": "the end user's customer row",
    "b": "the customer's own budget row",
    "d": "the default end-user budget row (max_end_user_budget_id)",
    "p": "the proxy counter (spend summed over its stripes)",
}
_composed_sql: dict[tuple[tuple[str, str], ...], str] = {}


@dataclass(frozen=True)
class Fragment:
    """A plugin's part of the read (PostgreSQL): ``ctes`` are ``name AS (...)``
    clauses appended to the read's ``WITH`` (``%s`` placeholders, filled from
    ``params`` in order), ``result`` the CTE whose rows come back."""

    name: str
    ctes: str
    result: str
    params: Sequence[Any] = ()


@dataclass
class CallRows:
    """The rows one call's checks read; ``None`` where there is none."""

    key: Key | None
    user: User | None
    team: Team | None  # the key's team, else its user's
    end_user_id: str | None
    customer: Customer | None
    customer_budget: Budget | None  # the customer's own or tier row
    default_budget: Budget | None  # the max_end_user_budget_id row
    proxy_spend: ProxySpend | None
    # Each fragment's result rows (as dicts), by fragment name.
    folded: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def _sql(param: str, named: bool = False) -> str:
    key = f"{param}:named" if named else param
    sql = _sql_by_param.get(key)
    if sql is None:
        columns = ", ".join(
            _column(alias, model, field) + (f' AS "{alias}.{field.column_name}"' * named)
            for alias, model in _PARTS
            for field in _FIELDS[model]
        )
        if param == "%s":
            # PostgreSQL: the server's time too, for the database clock (no round trip of its own).
            columns += f", {clock.POSTGRES_NOW}" + (' AS "server_now"' if named else "")
        if named:
            # For plugins' fragments: the clock as this process reads it (a frozen one in
            # tests), else the server's; and the end user even when it has no row yet.
            columns += (
                f', COALESCE({param}::float8, {clock.POSTGRES_NOW}) AS "now"'
                f', {param}::text AS "end_user_id"'
                f", CASE WHEN {param}::text IS NULL THEN 'master' "
                f'WHEN k."token" IS NOT NULL THEN \'key\' END AS "caller"'
            )
        sql = (
            f"SELECT {columns} FROM (SELECT 1 AS one) AS one "
            f'LEFT JOIN "key" AS k ON k."token" = {param} '
            f'LEFT JOIN "user" AS u ON u."user_id" = k."user_id" '
            f'LEFT JOIN "team" AS t ON t."team_id" = COALESCE(k."team_id", u."team_id") '
            f'LEFT JOIN "customer" AS c ON c."user_id" = {param} '
            f'LEFT JOIN "budget" AS b ON b."budget_id" = c."budget_id" '
            f'LEFT JOIN "budget" AS d ON d."budget_id" = {param} '
            # The proxy counter is the sum of its stripes (proxy.storage.counters).
            f'LEFT JOIN ({counters.HEADER_WITH_TOTAL_SQL}) AS p ON p."id" = {counters.HEADER_ID}'
        )
        _sql_by_param[key] = sql
    return sql


def _with_fragments(fragments: Sequence[Fragment]) -> str:
    """The read as ``call_read`` with the fragments' CTEs, their results as JSON columns."""
    shape = tuple((f.ctes, f.result) for f in fragments)
    sql = _composed_sql.get(shape)
    if sql is None:
        ctes = "".join(f", {f.ctes}" for f in fragments)
        results = "".join(
            f", (SELECT COALESCE(json_agg(r), '[]'::json) FROM {f.result} AS r)" for f in fragments
        )
        sql = (
            f"WITH call_read AS MATERIALIZED ({_sql('%s', named=True)}){ctes} "
            f"SELECT call_read.*{results} FROM call_read"
        )
        _composed_sql[shape] = sql
    return sql


def _column(alias: str, model: type[peewee.Model], field: peewee.Field) -> str:
    """One column of the row; a key's, user's, team's or customer's spend is the
    sum of its base and its stripes (proxy.storage.stripes)."""
    if field.name == "spend" and issubclass(model, StripedSpend):
        return stripes.total_sql(model.spend_kind, alias)
    return f'{alias}."{field.column_name}"'


def _model(model: type[peewee.Model], fields: list[peewee.Field], values: Any) -> Any:
    """A model object from its columns, or None when the join found no row."""
    if values[_PK_INDEX[model]] is None:
        return None
    return model(
        **{
            field.name: (None if value is None else field.python_value(value))
            for field, value in zip(fields, values, strict=True)
        }
    )


def load_call_rows(
    token_hash: str | None,
    end_user_id: str | None,
    default_budget_id: str | None,
    fragments: Sequence[Fragment] = (),
) -> CallRows:
    """One query for the rows of a call (``token_hash`` None for the master key).

    ``fragments`` (PostgreSQL only): plugins' statements run in the same one;
    their rows come back in :attr:`CallRows.folded`.
    """
    params: tuple[Any, ...] = (token_hash, end_user_id, default_budget_id)
    folded: dict[str, list[dict[str, Any]]] = {}
    if fragments:
        assert is_postgres(), "fragments are composed on PostgreSQL only"
        read_params: list[Any] = [clock.fresh_now(), end_user_id, token_hash, *params]
        for fragment in fragments:
            read_params.extend(fragment.params)
        row = Prepared.of(_with_fragments(fragments)).run(read_params).fetchone()
        clock.observe(row[_WIDTH])
        for index, fragment in enumerate(fragments):
            folded[fragment.name] = row[_WIDTH + 4 + index]
    elif is_postgres():
        cursor = Prepared.of(_sql("%s")).run(params)
        row = cursor.fetchone()
        clock.observe(row[-1])
    else:
        row = database.execute_sql(_sql(database.param), params).fetchone()
    objects: list[Any] = []
    start = 0
    for _, model in _PARTS:
        fields = _FIELDS[model]
        objects.append(_model(model, fields, row[start : start + len(fields)]))
        start += len(fields)
    key, user, team, customer, budget, default, proxy_spend = objects
    return CallRows(key, user, team, end_user_id, customer, budget, default, proxy_spend, folded)
