"""The admin API (master key): keys, users, customers, budgets, spend.

Every route answers JSON and every failure is an OpenAI-shaped error: 401
without a valid key, 403 for a virtual key (which may only read its own
``/key/info``), 400 naming the field for bad input, 404 for an unknown id,
409 for a duplicate id on ``/new``. Request bodies are validated by the
models in :mod:`proxy.api.admin.schemas`; answers are built by :mod:`proxy.api.admin.serializers`.
Every mutation runs in one ``database.atomic()``; spend counters are never
written here except by the read-time budget resets of :mod:`proxy.storage.resets`.
"""

from __future__ import annotations

import hmac
import math
import re
import time
import uuid
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any, TypeVar

import peewee
from flask import Blueprint, g, jsonify, request
from flask.typing import ResponseReturnValue

from proxy.api.admin.schemas import (
    BUDGET_FIELDS,
    BudgetDelete,
    BudgetInfo,
    BudgetNew,
    BudgetUpdate,
    CustomerInfoQuery,
    CustomerNew,
    CustomerUpdate,
    KeyDelete,
    KeyGenerate,
    KeyInfoQuery,
    KeyListQuery,
    KeyRef,
    KeyRegenerate,
    KeyUpdate,
    R,
    SpendLogsQuery,
    UserIds,
    UserInfoQuery,
    UserListQuery,
    UserNew,
    UserUpdate,
    parse,
)
from proxy.api.admin.serializers import (
    budget_row,
    customer_info,
    iso_time,
    key_info,
    spend_log_row,
    team_info,
    user_info,
)
from proxy.api.common import json_body, services
from proxy.call.alerts import Alert
from proxy.call.auth import authenticate, display_name, generate_key, hash_key
from proxy.durations import first_reset
from proxy.errors import BadRequest, Conflict, Forbidden, NotFound
from proxy.storage.db import database
from proxy.storage.ledger import dispatch_alerts
from proxy.storage.models import Budget, Customer, Key, SpendLog, Team, User
from proxy.storage.resets import apply_due_resets, current_proxy_spend, reschedule, scheduled_reset

bp = Blueprint("admin", __name__)

# Routes a virtual key may call (on itself only); every other route needs the master key.
SELF_SERVICE_ENDPOINTS = {"admin.key_info"}

# A customer's own budget row is named with this prefix, which /budget/new
# refuses: that is how an own budget (edited in place, deleted with its
# customer) is told apart from a shared pricing tier.
OWN_BUDGET_PREFIX = "customer-budget-"

_TOKEN_HASH = re.compile(r"[0-9a-f]{64}")

KEY_COLUMNS = (
    "models",
    "user_id",
    "team_id",
    "key_alias",
    "max_budget",
    "soft_budget",
    "budget_duration",
    "max_parallel_requests",
    "tpm_limit",
    "rpm_limit",
    "metadata",
)
USER_COLUMNS = (
    "user_email",
    "team_id",
    "models",
    "max_budget",
    "budget_duration",
    "max_parallel_requests",
    "tpm_limit",
    "rpm_limit",
    "metadata",
)
CUSTOMER_COLUMNS = ("alias", "blocked", "budget_id", "allowed_model_region", "default_model")
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


# --- helpers ---------------------------------------------------------------


def _body(schema: type[R]) -> R:
    # An empty body is fine where every field is optional (`curl -X POST .../key/generate`).
    required = any(field.is_required() for field in schema.model_fields.values())
    return parse(schema, json_body(required=required))


def _query(schema: type[R]) -> R:
    return parse(schema, request.args.to_dict())


def _columns(values: dict[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """``values`` restricted to ``names``, with ``null`` on NOT NULL columns defaulted."""
    out = {}
    for name in names:
        if name in values:
            value = values[name]
            out[name] = _NULL_MEANS[name]() if value is None and name in _NULL_MEANS else value
    return out


def _page_count(total: int, size: int) -> int:
    return math.ceil(total / size)


def _ensure_user(user_id: str, now: float) -> None:
    User.insert(user_id=user_id, created_at=now).on_conflict_ignore().execute()


def _ensure_team(team_id: str | None) -> None:
    if team_id:
        Team.insert(team_id=team_id).on_conflict_ignore().execute()


def _missing(wanted: Iterable[str], found: Iterable[str]) -> list[str]:
    have = set(found)
    return [item for item in wanted if item not in have]


M = TypeVar("M", bound=peewee.Model)
KeyOrUser = TypeVar("KeyOrUser", Key, User)


def _find(model: type[M], pk: str, param: str, label: str | None = None) -> M:
    """The ``model`` row with primary key ``pk``; else 404 naming ``param``."""
    row = model.get_or_none(model._meta.primary_key == pk)
    if row is None:
        raise NotFound(f"{model.__name__} not found: {label or f'{param}={pk}'}", param=param)
    return row


def _fresh(row: KeyOrUser) -> KeyOrUser:
    """A key or user with its due budget reset applied (each carries its own period)."""
    apply_due_resets((row, row.budget_duration))
    return row


# --- keys ------------------------------------------------------------------


def token_of(value: str) -> str:
    """A key given as its plain ``sk-...`` secret or as its SHA-256 token."""
    return value if _TOKEN_HASH.fullmatch(value) else hash_key(value)


def _key_label(value: str) -> str:
    """How an error names a key without echoing a secret back."""
    return value if _TOKEN_HASH.fullmatch(value) else display_name(value)


def _find_key(value: str) -> Key:
    return _find(Key, token_of(value), "key", label=_key_label(value))


def _expiry(duration: str | None, expires: datetime | None, now: float) -> float | None:
    """``expires`` for a key from ``duration`` ("30d") or an explicit time."""
    if duration and expires is not None:
        raise BadRequest("Give either 'duration' or 'expires', not both", param="expires")
    if duration:
        return first_reset(now, duration)
    if expires is None:
        return None
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=timezone.utc)
    moment = expires.timestamp()
    if moment <= now:
        raise BadRequest("Invalid value for 'expires': it is in the past", param="expires")
    return moment


def _key_created_alert(key: Key) -> Alert:
    return Alert(
        spend=0.0,
        max_budget=key.max_budget,
        token=key.token,
        user_id=key.user_id,
        team_id=key.team_id,
        key_alias=key.key_alias,
        event="key_created",
        event_group="key",
        event_message=f"API key created. Key={key.key_name}, user_id={key.user_id}",
    )


def _create_key(plain: str, now: float, columns: dict[str, Any], expires: float | None) -> Key:
    """Insert a key and raise its ``key_created`` alert (caller holds the transaction)."""
    key = Key.create(
        token=hash_key(plain),
        key_name=display_name(plain),
        expires=expires,
        budget_reset_at=scheduled_reset(now, columns.get("budget_duration"), now),
        created_at=now,
        **columns,
    )
    dispatch_alerts(services().pm, [_key_created_alert(key)])
    return key


@bp.post("/key/generate")
def key_generate() -> ResponseReturnValue:
    req = _body(KeyGenerate)
    now = time.time()
    expires = _expiry(req.duration, req.expires, now)
    user_id = req.user_id or str(uuid.uuid4())
    columns = _columns({**req.model_dump(), "user_id": user_id}, KEY_COLUMNS)
    plain = req.key or generate_key()
    if req.key is not None and hmac.compare_digest(req.key, services().config.master_key):
        raise BadRequest("'key' must not be the master key", param="key")
    try:
        with database.atomic():
            # A user row for every key's user, so its spend is tracked from the first call.
            _ensure_user(user_id, now)
            _ensure_team(req.team_id)
            key = _create_key(plain, now, columns, expires)
    except peewee.IntegrityError:
        # Only a chosen key value can collide with an existing key.
        raise Conflict(f"Key already exists: key={display_name(plain)}", param="key") from None
    return jsonify({"key": plain, **key_info(key)})


@bp.get("/key/info", endpoint="key_info")
def key_info_route() -> ResponseReturnValue:
    caller = g.admin_caller
    value = _query(KeyInfoQuery).key
    if caller.key is not None:
        # A virtual key reads only itself; checked before any lookup so that
        # it cannot probe which other keys exist.
        if value is not None and token_of(value) != caller.key.token:
            raise Forbidden(
                "Authentication Error, a virtual key may only read its own /key/info.",
                type="auth_error",
            )
        value = caller.key.token
    if value is None:
        raise BadRequest("'key' is required", param="key")
    key = _fresh(_find_key(value))
    return jsonify({"key": key.token, "info": key_info(key)})


@bp.post("/key/update")
def key_update() -> ResponseReturnValue:
    req = _body(KeyUpdate)
    key = _find_key(req.key)
    given = req.given()
    now = time.time()
    changes = _columns(given, (*KEY_COLUMNS, "blocked"))
    if "duration" in given or "expires" in given:
        changes["expires"] = _expiry(req.duration, req.expires, now)
    if "budget_duration" in changes:
        changes["budget_reset_at"] = scheduled_reset(
            key.created_at, changes["budget_duration"], now
        )
    with database.atomic():
        if changes.get("user_id"):
            _ensure_user(changes["user_id"], now)
        _ensure_team(changes.get("team_id"))
        if changes:
            Key.update(**changes).where(Key.token == key.token).execute()
    key = _fresh(Key.get_by_id(key.token))
    return jsonify({"key": key.token, **key_info(key)})


def _set_blocked(blocked: bool) -> ResponseReturnValue:
    key = _find_key(_body(KeyRef).key)
    with database.atomic():
        Key.update(blocked=blocked).where(Key.token == key.token).execute()
    key = _fresh(Key.get_by_id(key.token))
    return jsonify({"key": key.token, **key_info(key)})


@bp.post("/key/block")
def key_block() -> ResponseReturnValue:
    """Refuse every call with the key (401) until ``/key/unblock``; nothing else changes."""
    return _set_blocked(True)


@bp.post("/key/unblock")
def key_unblock() -> ResponseReturnValue:
    return _set_blocked(False)


@bp.post("/key/regenerate")
@bp.post("/key/<path:key>/regenerate")
def key_regenerate(key: str | None = None) -> ResponseReturnValue:
    """A new secret for a key: same settings and spend, the old secret refused at once.

    The key's row takes the new hash in place, and its spend-log rows follow
    it in the same transaction, so the key's spend still equals the sum of
    its logs. The old hash then exists nowhere, so the old secret is an
    unknown key from the next lookup on.
    """
    body = json_body(required=key is None)
    req = parse(KeyRegenerate, {**body, "key": key} if key is not None else body)
    old = _find_key(req.key)
    plain = req.new_key or generate_key()
    if req.new_key is not None and hmac.compare_digest(plain, services().config.master_key):
        raise BadRequest("'new_key' must not be the master key", param="new_key")
    token = hash_key(plain)
    try:
        with database.atomic():
            moved = (
                Key.update(token=token, key_name=display_name(plain))
                .where(Key.token == old.token)
                .execute()
            )
            if not moved:
                raise NotFound(f"Key not found: key={_key_label(req.key)}", param="key")
            SpendLog.update(api_key=token).where(SpendLog.api_key == old.token).execute()
    except peewee.IntegrityError:
        raise Conflict(f"Key already exists: key={display_name(plain)}", param="new_key") from None
    return jsonify({"key": plain, **key_info(_fresh(Key.get_by_id(token)))})


@bp.post("/key/delete")
def key_delete() -> ResponseReturnValue:
    req = _body(KeyDelete)
    if req.keys is None and req.key_aliases is None:
        raise BadRequest("'keys' or 'key_aliases' is required", param="keys")
    keys, aliases = req.keys or [], req.key_aliases or []
    tokens = {value: token_of(value) for value in keys}
    with database.atomic():
        found = Key.select(Key.token).where(Key.token.in_(list(tokens.values())))
        missing = _missing(tokens.values(), (row.token for row in found))
        if missing:
            labels = [_key_label(v) for v, t in tokens.items() if t in missing]
            raise NotFound(f"Keys not found: {', '.join(labels)}", param="keys")
        aliased = Key.select(Key.key_alias).where(Key.key_alias.in_(aliases))
        missing = _missing(aliases, (str(row.key_alias) for row in aliased))
        if missing:
            raise NotFound(f"No key has the alias: {', '.join(missing)}", param="key_aliases")
        doomed = Key.token.in_(list(tokens.values())) | Key.key_alias.in_(aliases)
        Key.delete().where(doomed).execute()
    return jsonify({"deleted_keys": [*keys, *aliases]})


@bp.get("/key/list")
def key_list() -> ResponseReturnValue:
    q = _query(KeyListQuery)
    query = Key.select()
    if q.user_id:
        query = query.where(Key.user_id == q.user_id)
    if q.team_id:
        query = query.where(Key.team_id == q.team_id)
    total = query.count()
    rows = query.order_by(Key.created_at, Key.token).paginate(q.page, q.size)
    keys = [key_info(_fresh(k)) if q.return_full_object else k.token for k in rows]
    return jsonify(
        {
            "keys": keys,
            "total_count": total,
            "current_page": q.page,
            "total_pages": _page_count(total, q.size),
        }
    )


# --- internal users --------------------------------------------------------


@bp.post("/user/new")
def user_new() -> ResponseReturnValue:
    req = _body(UserNew)
    now = time.time()
    user_id = req.user_id or str(uuid.uuid4())
    columns = _columns(req.model_dump(), USER_COLUMNS)
    expires = _expiry(req.duration, None, now)
    plain = generate_key()
    try:
        with database.atomic():
            user = User.create(
                user_id=user_id,
                created_at=now,
                budget_reset_at=scheduled_reset(now, req.budget_duration, now),
                **columns,
            )
            _ensure_team(req.team_id)
            # The first key carries no budget or models of its own: the
            # user's apply to all of its keys, and follow later user updates.
            key_columns = {"user_id": user_id, "key_alias": req.key_alias}
            key = _create_key(plain, now, key_columns, expires)
    except peewee.IntegrityError:
        raise Conflict(f"User already exists: user_id={user_id}", param="user_id") from None
    return jsonify(
        {
            "key": plain,
            "expires": iso_time(key.expires),
            "key_name": key.key_name,
            "token": key.token,
            **user_info(user),
        }
    )


@bp.get("/user/info", endpoint="user_info")
def user_info_route() -> ResponseReturnValue:
    user = _fresh(_find(User, _query(UserInfoQuery).user_id, "user_id"))
    keys = list(Key.select().where(Key.user_id == user.user_id).order_by(Key.created_at, Key.token))
    team_ids = {user.team_id, *(key.team_id for key in keys)} - {None}
    teams = Team.select().where(Team.team_id.in_(list(team_ids))).order_by(Team.team_id)
    return jsonify(
        {
            "user_id": user.user_id,
            "user_info": user_info(user),
            "keys": [key_info(_fresh(key)) for key in keys],
            "teams": [team_info(team) for team in teams],
        }
    )


@bp.post("/user/update")
def user_update() -> ResponseReturnValue:
    req = _body(UserUpdate)
    user = _find(User, req.user_id, "user_id")
    changes = _columns(req.given(), USER_COLUMNS)
    now = time.time()
    if "budget_duration" in changes:
        changes["budget_reset_at"] = scheduled_reset(
            user.created_at, changes["budget_duration"], now
        )
    with database.atomic():
        _ensure_team(changes.get("team_id"))
        if changes:
            User.update(**changes).where(User.user_id == user.user_id).execute()
    return jsonify(user_info(_fresh(User.get_by_id(user.user_id))))


@bp.post("/user/delete")
def user_delete() -> ResponseReturnValue:
    """Delete users and their keys; their spend logs stay for the record."""
    ids = _body(UserIds).user_ids
    with database.atomic():
        found = User.select(User.user_id).where(User.user_id.in_(ids))
        missing = _missing(ids, (row.user_id for row in found))
        if missing:
            raise NotFound(f"Users not found: {', '.join(missing)}", param="user_ids")
        keys = [row.token for row in Key.select(Key.token).where(Key.user_id.in_(ids))]
        Key.delete().where(Key.user_id.in_(ids)).execute()
        User.delete().where(User.user_id.in_(ids)).execute()
    return jsonify({"deleted_users": ids, "deleted_keys": keys})


@bp.get("/user/list")
def user_list() -> ResponseReturnValue:
    q = _query(UserListQuery)
    query = User.select()
    if q.team_id:
        query = query.where(User.team_id == q.team_id)
    total = query.count()
    rows = query.order_by(User.created_at, User.user_id).paginate(q.page, q.page_size)
    return jsonify(
        {
            "users": [user_info(_fresh(user)) for user in rows],
            "total": total,
            "page": q.page,
            "page_size": q.page_size,
            "total_pages": _page_count(total, q.page_size),
        }
    )


# --- customers (end users) -------------------------------------------------


def is_own_budget(budget_id: str | None) -> bool:
    return bool(budget_id) and str(budget_id).startswith(OWN_BUDGET_PREFIX)


def _customer_budget(customer: Customer) -> Budget | None:
    if not customer.budget_id:
        return None
    return Budget.get_or_none(Budget.budget_id == customer.budget_id)


def _default_budget() -> Budget | None:
    """The ``max_end_user_budget_id`` row that customers without a budget follow."""
    default_id = services().config.litellm_settings.max_end_user_budget_id
    return Budget.get_or_none(Budget.budget_id == default_id) if default_id else None


def _period(budget_id: str | None, budget: Budget | None, default: Budget | None) -> str | None:
    """The reset period of a customer: its budget row's, else the default budget's."""
    governing = budget if budget_id else default
    return governing.budget_duration if governing else None


def _fresh_customer(customer: Customer, budget: Budget | None, default: Budget | None) -> Customer:
    apply_due_resets((customer, _period(customer.budget_id, budget, default)))
    return customer


def _shared_budget(budget_id: str, customer_id: str) -> Budget:
    """The pricing tier a customer is being put on; 400 naming it if unusable."""
    budget = Budget.get_or_none(Budget.budget_id == budget_id)
    if budget is None:
        raise BadRequest(f"Budget not found: budget_id={budget_id}", param="budget_id")
    if is_own_budget(budget_id):
        owner = Customer.get_or_none(Customer.budget_id == budget_id)
        if owner is None or owner.user_id != customer_id:
            raise BadRequest(
                f"budget_id={budget_id} is another customer's own budget; "
                "assign a shared budget made with /budget/new",
                param="budget_id",
            )
    return budget


def _check_default_model(model: str | None) -> None:
    if model and services().models.get(model) is None:
        raise BadRequest(
            f"Invalid value for 'default_model': no model named {model!r} is configured",
            param="default_model",
        )


def _own_budget_conflict() -> BadRequest:
    return BadRequest(
        "Give either 'budget_id' (a shared budget) or the customer's own budget values "
        f"({', '.join(BUDGET_FIELDS)}), not both",
        param="budget_id",
    )


def _create_own_budget(values: dict[str, Any], now: float) -> Budget:
    budget_id = f"{OWN_BUDGET_PREFIX}{uuid.uuid4().hex}"
    return Budget.create(budget_id=budget_id, created_at=now, updated_at=now, **values)


@bp.post("/customer/new")
@bp.post("/end_user/new")
def customer_new() -> ResponseReturnValue:
    req = _body(CustomerNew)
    own = {k: v for k, v in req.given().items() if k in BUDGET_FIELDS and v is not None}
    if own and req.budget_id:
        raise _own_budget_conflict()
    tier = _shared_budget(req.budget_id, req.user_id) if req.budget_id else None
    _check_default_model(req.default_model)
    default = _default_budget()
    now = time.time()
    try:
        with database.atomic():
            budget = _create_own_budget(own, now) if own else tier
            budget_id = budget.budget_id if budget else None
            customer = Customer.create(
                user_id=req.user_id,
                customer_alias=req.alias,
                blocked=req.blocked,
                budget_id=budget_id,
                allowed_model_region=req.allowed_model_region,
                default_model=req.default_model,
                budget_reset_at=scheduled_reset(now, _period(budget_id, budget, default), now),
                created_at=now,
            )
    except peewee.IntegrityError:
        raise Conflict(
            f"Customer already exists: user_id={req.user_id}; use /customer/update",
            param="user_id",
        ) from None
    return jsonify(customer_info(customer, budget))


@bp.get("/customer/info")
@bp.get("/end_user/info")
def customer_info_route() -> ResponseReturnValue:
    customer = _find(Customer, _query(CustomerInfoQuery).end_user_id, "end_user_id")
    budget = _customer_budget(customer)
    customer = _fresh_customer(customer, budget, _default_budget())
    return jsonify(customer_info(customer, budget))


def _next_budget_id(customer: Customer, given: dict[str, Any], now: float) -> str | None:
    """Apply a customer update's budget part; return the budget id it ends on.

    ``budget_id`` moves the customer to a shared tier (or to none with
    ``null``); own budget values edit the customer's own budget in place, or
    give it one (replacing a tier) if it has none.
    """
    own = {k: v for k, v in given.items() if k in BUDGET_FIELDS}
    current = customer.budget_id
    if "budget_id" in given:
        target = given["budget_id"]
    elif not own:
        return current
    elif is_own_budget(current):
        Budget.update(updated_at=now, **own).where(Budget.budget_id == current).execute()
        return current
    else:
        values = {k: v for k, v in own.items() if v is not None}
        if not values:
            # Only nulls: nothing to limit, so no own budget (it would hide the default).
            return current
        target = _create_own_budget(values, now).budget_id
    if is_own_budget(current) and target != current:
        Budget.delete().where(Budget.budget_id == current).execute()
    return target


@bp.post("/customer/update")
@bp.post("/end_user/update")
def customer_update() -> ResponseReturnValue:
    req = _body(CustomerUpdate)
    customer = _find(Customer, req.user_id, "user_id")
    given = req.given("user_id")
    if "budget_id" in given and any(k in given for k in BUDGET_FIELDS):
        raise _own_budget_conflict()
    if given.get("budget_id"):
        _shared_budget(given["budget_id"], customer.user_id)
    _check_default_model(given.get("default_model"))
    now = time.time()
    default = _default_budget()
    old_period = _period(customer.budget_id, _customer_budget(customer), default)
    with database.atomic():
        changes = _columns(given, CUSTOMER_COLUMNS)
        if "alias" in changes:
            changes["customer_alias"] = changes.pop("alias")
        changes["budget_id"] = _next_budget_id(customer, given, now)
        new_budget = Budget.get_or_none(Budget.budget_id == changes["budget_id"])
        new_period = _period(changes["budget_id"], new_budget, default)
        if new_period != old_period:
            # A new period restarts the schedule from creation, without a reset now.
            changes["budget_reset_at"] = scheduled_reset(customer.created_at, new_period, now)
        Customer.update(**changes).where(Customer.user_id == customer.user_id).execute()
    customer = _fresh_customer(Customer.get_by_id(customer.user_id), new_budget, default)
    return jsonify(customer_info(customer, new_budget))


def _existing_customers(ids: list[str]) -> list[Customer]:
    rows = list(Customer.select().where(Customer.user_id.in_(ids)))
    missing = _missing(ids, (row.user_id for row in rows))
    if missing:
        raise NotFound(f"Customers not found: {', '.join(missing)}", param="user_ids")
    return rows


@bp.post("/customer/delete")
@bp.post("/end_user/delete")
def customer_delete() -> ResponseReturnValue:
    """Delete customers with their own budget rows; shared tiers stay."""
    ids = _body(UserIds).user_ids
    with database.atomic():
        rows = _existing_customers(ids)
        own = [row.budget_id for row in rows if is_own_budget(row.budget_id)]
        Customer.delete().where(Customer.user_id.in_(ids)).execute()
        if own:
            Budget.delete().where(Budget.budget_id.in_(own)).execute()
    return jsonify({"deleted_customers": ids})


@bp.post("/customer/block")
@bp.post("/end_user/block")
def customer_block() -> ResponseReturnValue:
    """Block end users, creating the unknown ones: an operator can block an id
    before it ever calls."""
    ids = list(dict.fromkeys(_body(UserIds).user_ids))
    now = time.time()
    with database.atomic():
        rows = [{"user_id": user_id, "blocked": True, "created_at": now} for user_id in ids]
        Customer.insert_many(rows).on_conflict(
            conflict_target=[Customer.user_id], update={Customer.blocked: True}
        ).execute()
    return jsonify({"blocked_users": ids})


@bp.post("/customer/unblock")
@bp.post("/end_user/unblock")
def customer_unblock() -> ResponseReturnValue:
    ids = _body(UserIds).user_ids
    with database.atomic():
        _existing_customers(ids)
        Customer.update(blocked=False).where(Customer.user_id.in_(ids)).execute()
    return jsonify({"unblocked_users": ids})


@bp.get("/customer/list")
@bp.get("/end_user/list")
def customer_list() -> ResponseReturnValue:
    budgets = {b.budget_id: b for b in Budget.select()}
    default = _default_budget()
    customers = Customer.select().order_by(Customer.created_at, Customer.user_id)
    answer = []
    for customer in customers:
        budget = budgets.get(customer.budget_id) if customer.budget_id else None
        answer.append(customer_info(_fresh_customer(customer, budget, default), budget))
    return jsonify(answer)


# --- budgets ---------------------------------------------------------------


@bp.post("/budget/new")
def budget_new() -> ResponseReturnValue:
    req = _body(BudgetNew)
    budget_id = req.budget_id or str(uuid.uuid4())
    if is_own_budget(budget_id):
        raise BadRequest(
            f"Invalid value for 'budget_id': the prefix {OWN_BUDGET_PREFIX!r} is reserved "
            "for customers' own budgets",
            param="budget_id",
        )
    now = time.time()
    values = {name: getattr(req, name) for name in BUDGET_FIELDS}
    try:
        with database.atomic():
            budget = Budget.create(budget_id=budget_id, created_at=now, updated_at=now, **values)
    except peewee.IntegrityError:
        raise Conflict(f"Budget already exists: budget_id={budget_id}", param="budget_id") from None
    return jsonify(budget_row(budget))


@bp.post("/budget/info")
def budget_info() -> ResponseReturnValue:
    ids = _body(BudgetInfo).budgets
    rows = {b.budget_id: b for b in Budget.select().where(Budget.budget_id.in_(ids))}
    missing = _missing(ids, rows)
    if missing:
        raise NotFound(f"Budgets not found: {', '.join(missing)}", param="budgets")
    return jsonify([budget_row(rows[budget_id]) for budget_id in dict.fromkeys(ids)])


@bp.post("/budget/update")
def budget_update() -> ResponseReturnValue:
    """Edit a budget row; every customer on it follows at once.

    A new ``budget_duration`` reschedules the customers on the budget, those
    that follow it as the default end-user budget included, in the same
    transaction.
    """
    req = _body(BudgetUpdate)
    budget = _find(Budget, req.budget_id, "budget_id")
    changes = req.given("budget_id")
    now = time.time()
    with database.atomic():
        Budget.update(updated_at=now, **changes).where(
            Budget.budget_id == budget.budget_id
        ).execute()
        duration = changes.get("budget_duration", budget.budget_duration)
        if duration != budget.budget_duration:
            reschedule(Customer, _customers_on(budget.budget_id), duration, now)
    return jsonify(budget_row(Budget.get_by_id(budget.budget_id)))


def _customers_on(budget_id: str) -> peewee.Expression:
    """The customers whose period is ``budget_id``'s (see :func:`_period`)."""
    on = Customer.budget_id == budget_id
    if budget_id == services().config.litellm_settings.max_end_user_budget_id:
        on |= Customer.budget_id.is_null()
    return on


@bp.post("/budget/delete")
def budget_delete() -> ResponseReturnValue:
    budget_id = _body(BudgetDelete).id
    if budget_id == services().config.litellm_settings.max_end_user_budget_id:
        raise BadRequest(
            f"Budget {budget_id} is the default end-user budget "
            "(litellm_settings.max_end_user_budget_id); change the config first",
            param="id",
        )
    with database.atomic():
        budget = _find(Budget, budget_id, "id")
        users = Customer.select(Customer.user_id).where(Customer.budget_id == budget_id)
        names = [row.user_id for row in users.order_by(Customer.user_id).limit(11)]
        if names:
            shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
            raise BadRequest(
                f"Budget {budget_id} is used by customers: {shown}; "
                "move them to another budget first",
                param="id",
            )
        Budget.delete().where(Budget.budget_id == budget_id).execute()
    return jsonify(budget_row(budget))


@bp.get("/budget/list")
def budget_list() -> ResponseReturnValue:
    rows = Budget.select().order_by(Budget.created_at, Budget.budget_id)
    return jsonify([budget_row(budget) for budget in rows])


# --- spend -----------------------------------------------------------------


@bp.get("/spend/logs")
def spend_logs() -> ResponseReturnValue:
    """Spend-log rows, oldest first, filtered by key, user, end user and time."""
    q = _query(SpendLogsQuery)
    start, end = q.window()
    query = SpendLog.select()
    if q.api_key:
        query = query.where(SpendLog.api_key == token_of(q.api_key))
    if q.user_id:
        query = query.where(SpendLog.user_id == q.user_id)
    if q.end_user:
        query = query.where(SpendLog.end_user == q.end_user)
    if q.request_id:
        query = query.where(SpendLog.request_id == q.request_id)
    if start is not None:
        query = query.where(SpendLog.start_time >= start)
    if end is not None:
        query = query.where(SpendLog.start_time < end)
    rows = query.order_by(SpendLog.start_time, SpendLog.request_id)
    return jsonify([spend_log_row(row) for row in rows])


@bp.get("/global/spend")
def global_spend() -> ResponseReturnValue:
    settings = services().config.litellm_settings
    return jsonify(
        {
            "spend": current_proxy_spend(settings.budget_duration),
            "max_budget": settings.max_budget,
        }
    )
