"""Everything a call's checks read, in one query.

The key (by hash) with its user and its team (the key's, else its user's),
the end user (customer) with its own budget
row, the default end-user budget row (``max_end_user_budget_id``) and the
proxy counter come back as one row of LEFT JOINs, so adding a budget level
costs no round trip (DESIGN.md, step 2). A missing key, customer or budget
is a row of NULLs, so the master key and a new end user use the same query.

The SQL is written once per parameter style, and each row's columns become
model objects through the models' own constructors: building a peewee query
per call would cost more CPU than the round trip it saves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import peewee

from proxy.storage import clock, counters
from proxy.storage.db import database, is_postgres
from proxy.storage.models import Budget, Customer, Key, ProxySpend, Team, User
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
_sql_by_param: dict[str, str] = {}


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


def _sql(param: str) -> str:
    sql = _sql_by_param.get(param)
    if sql is None:
        columns = ", ".join(
            f'{alias}."{field.column_name}"' for alias, model in _PARTS for field in _FIELDS[model]
        )
        if param == "%s":
            # PostgreSQL: the server's time too, for the database clock (no round trip of its own).
            columns += f", {clock.POSTGRES_NOW}"
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
        _sql_by_param[param] = sql
    return sql


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
    token_hash: str | None, end_user_id: str | None, default_budget_id: str | None
) -> CallRows:
    """One query for the rows of a call (``token_hash`` None for the master key)."""
    params = (token_hash, end_user_id, default_budget_id)
    if is_postgres():
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
    return CallRows(key, user, team, end_user_id, customer, budget, default, proxy_spend)
