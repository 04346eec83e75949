"""Search and sort for the admin list routes (``/customer/list``, ``/key/list``,
``/user/list``, ``/team/list``), done by the database so a page of 100,000
rows costs one bounded query.

``search`` keeps the rows where any of the route's text columns contains the
term (case-insensitive); ``sort`` names one of the route's sortable columns
and ``order`` is ``asc`` or ``desc``; ties are broken by the primary key, so
paging is stable.
"""

from __future__ import annotations

import functools
import operator
from typing import Any, TypeVar

import peewee

from proxy.api.admin.schemas import Listing
from proxy.errors import BadRequest
from proxy.storage.search import contains_text

M = TypeVar("M", bound=peewee.Model)


def apply_listing(
    query: peewee.ModelSelect[M],
    q: Listing,
    searched: tuple[peewee.Field, ...],
    sortable: dict[str, peewee.ColumnBase],
    default: tuple[Any, ...],
    tie: peewee.Field,
) -> peewee.ModelSelect[M]:
    """``query`` filtered by ``q.search`` over ``searched`` and ordered by ``q.sort``."""
    term = (q.search or "").strip().replace("\x00", "")
    if term:
        matches = [contains_text(column, term) for column in searched]
        query = query.where(functools.reduce(operator.or_, matches))
    if q.sort is None:
        return query.order_by(*default)
    column = sortable.get(q.sort)
    if column is None:
        raise BadRequest(f"Invalid value for 'sort': one of {', '.join(sortable)}", param="sort")
    if q.order == "desc":
        return query.order_by(column.desc(), tie.desc())
    return query.order_by(column, tie)
