"""The admin API's blueprint, who may call it, and the helpers its views share.

Every admin route is on the one ``admin`` blueprint (:data:`bp`); its views
live in one module per entity (:mod:`~proxy.api.admin.keys`,
:mod:`~proxy.api.admin.users`, :mod:`~proxy.api.admin.customers`,
:mod:`~proxy.api.admin.budgets`, :mod:`~proxy.api.admin.spend`) and in
:mod:`~proxy.api.admin.reports`.

Every route answers JSON and every failure is an OpenAI-shaped error: 401
without a valid key, 403 for a virtual key (which may only read its own
``/key/info``), 400 naming the field for bad input, 404 for an unknown id,
409 for a duplicate id on ``/new``. Request bodies are validated by the
models in :mod:`proxy.api.admin.schemas`; answers are built by
:mod:`proxy.api.admin.serializers`. Every mutation runs in one
``database.atomic()``; spend counters are never written here except by the
read-time budget resets of :mod:`proxy.storage.resets`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, TypeVar

import peewee
from flask import Blueprint, g, request

from proxy.api.admin.schemas import R, parse
from proxy.api.common import json_body, services
from proxy.call.auth import authenticate
from proxy.errors import Forbidden, NotFound
from proxy.storage.models import Key, Team, User
from proxy.storage.resets import apply_due_resets

bp = Blueprint("admin", __name__)

# Routes a virtual key may call (on itself only); every other route needs the master key.
SELF_SERVICE_ENDPOINTS = {"admin.key_info"}

# NOT NULL columns: a client's explicit ``null`` means "back to the default".
_NULL_MEANS = {"models": list, "metadata": dict, "blocked": bool}


@bp.before_request
def _authorize() -> None:
    caller = authenticate(request.headers, services().config.master_key)
    g.admin_caller = caller
    if not caller.is_master and request.endpoint not in SELF_SERVICE_ENDPOINTS:
        raise Forbidden(
            "Authentication Error, only the master key may call this route.", type="auth_error"
        )


def parse_body(schema: type[R]) -> R:
    # An empty body is fine where every field is optional (`curl -X POST .../key/generate`).
    required = any(field.is_required() for field in schema.model_fields.values())
    return parse(schema, json_body(required=required))


def parse_query(schema: type[R]) -> R:
    return parse(schema, request.args.to_dict())


def column_values(values: dict[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """``values`` restricted to ``names``, with ``null`` on NOT NULL columns defaulted."""
    out = {}
    for name in names:
        if name in values:
            value = values[name]
            out[name] = _NULL_MEANS[name]() if value is None and name in _NULL_MEANS else value
    return out


def page_count(total: int, size: int) -> int:
    return math.ceil(total / size)


def ensure_user(user_id: str, now: float) -> None:
    User.insert(user_id=user_id, created_at=now).on_conflict_ignore().execute()


def ensure_team(team_id: str | None) -> None:
    if team_id:
        Team.insert(team_id=team_id).on_conflict_ignore().execute()


def absent(wanted: Iterable[str], found: Iterable[str]) -> list[str]:
    have = set(found)
    return [item for item in wanted if item not in have]


M = TypeVar("M", bound=peewee.Model)
KeyOrUser = TypeVar("KeyOrUser", Key, User)


def find_row(model: type[M], pk: str, param: str, label: str | None = None) -> M:
    """The ``model`` row with primary key ``pk``; else 404 naming ``param``."""
    row = model.get_or_none(model._meta.primary_key == pk)
    if row is None:
        raise NotFound(f"{model.__name__} not found: {label or f'{param}={pk}'}", param=param)
    return row


def fresh_row(row: KeyOrUser) -> KeyOrUser:
    """A key or user with its due budget reset applied (each carries its own period)."""
    apply_due_resets((row, row.budget_duration))
    return row
