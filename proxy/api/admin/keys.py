"""Admin API, keys: /key/generate, /key/info, /key/update, /key/block, /key/unblock,
/key/regenerate, /key/delete, /key/list (HTTP only; see :mod:`proxy.api.admin.common`)."""

from __future__ import annotations

import hmac
import re
import uuid
from datetime import datetime, timezone
from typing import Any

import peewee
from flask import g, jsonify
from flask.typing import ResponseReturnValue

from proxy.api.admin.common import (
    absent,
    bp,
    column_values,
    ensure_team,
    ensure_user,
    find_row,
    fresh_row,
    page_count,
    parse_body,
    parse_query,
)
from proxy.api.admin.listing import apply_listing
from proxy.api.admin.schemas import (
    KeyDelete,
    KeyGenerate,
    KeyInfoQuery,
    KeyListQuery,
    KeyRef,
    KeyRegenerate,
    KeyUpdate,
    parse,
)
from proxy.api.admin.serializers import key_info
from proxy.api.common import json_body, services
from proxy.call.alerts import Alert
from proxy.call.auth import display_name, generate_key, hash_key
from proxy.durations import first_reset
from proxy.errors import BadRequest, Conflict, Forbidden, NotFound
from proxy.storage import clock, counters
from proxy.storage.db import database
from proxy.storage.ledger import dispatch_alerts
from proxy.storage.models import Key, SpendLog
from proxy.storage.resets import scheduled_reset

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


def token_of(value: str) -> str:
    """A key given as its plain ``sk-...`` secret or as its SHA-256 token."""
    return value if _TOKEN_HASH.fullmatch(value) else hash_key(value)


def _key_label(value: str) -> str:
    """How an error names a key without echoing a secret back."""
    return value if _TOKEN_HASH.fullmatch(value) else display_name(value)


def _find_key(value: str) -> Key:
    return find_row(Key, token_of(value), "key", label=_key_label(value))


def expiry(duration: str | None, expires: datetime | None, now: float) -> float | None:
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


def create_key(plain: str, now: float, columns: dict[str, Any], expires: float | None) -> Key:
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
    req = parse_body(KeyGenerate)
    now = clock.now()
    expires = expiry(req.duration, req.expires, now)
    user_id = req.user_id or str(uuid.uuid4())
    columns = column_values({**req.model_dump(), "user_id": user_id}, KEY_COLUMNS)
    plain = req.key or generate_key()
    if req.key is not None and hmac.compare_digest(req.key, services().config.master_key):
        raise BadRequest("'key' must not be the master key", param="key")
    try:
        with database.atomic():
            # A user row for every key's user, so its spend is tracked from the first call.
            ensure_user(user_id, now)
            ensure_team(req.team_id)
            key = create_key(plain, now, columns, expires)
    except peewee.IntegrityError:
        # Only a chosen key value can collide with an existing key.
        raise Conflict(f"Key already exists: key={display_name(plain)}", param="key") from None
    return jsonify({"key": plain, **key_info(key)})


@bp.get("/key/info", endpoint="key_info")
def key_info_route() -> ResponseReturnValue:
    caller = g.admin_caller
    value = parse_query(KeyInfoQuery).key
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
    key = fresh_row(_find_key(value))
    return jsonify({"key": key.token, "info": key_info(key)})


@bp.post("/key/update")
def key_update() -> ResponseReturnValue:
    req = parse_body(KeyUpdate)
    key = _find_key(req.key)
    given = req.given()
    now = clock.now()
    changes = column_values(given, (*KEY_COLUMNS, "blocked"))
    if "duration" in given or "expires" in given:
        changes["expires"] = expiry(req.duration, req.expires, now)
    if "budget_duration" in changes:
        changes["budget_reset_at"] = scheduled_reset(
            key.created_at, changes["budget_duration"], now
        )
    with database.atomic():
        if changes.get("user_id"):
            ensure_user(changes["user_id"], now)
        ensure_team(changes.get("team_id"))
        if changes:
            Key.update(**changes).where(Key.token == key.token).execute()
    key = fresh_row(Key.get_by_id(key.token))
    return jsonify({"key": key.token, **key_info(key)})


def _set_blocked(blocked: bool) -> ResponseReturnValue:
    key = _find_key(parse_body(KeyRef).key)
    with database.atomic():
        Key.update(blocked=blocked).where(Key.token == key.token).execute()
    key = fresh_row(Key.get_by_id(key.token))
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
    its logs. The old secret is an unknown key from the next lookup on; the
    old hash stays only as ``previous_token``, where a call already upstream
    settles (``proxy.storage.ledger``).
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
                Key.update(token=token, key_name=display_name(plain), previous_token=old.token)
                .where(Key.token == old.token)
                .execute()
            )
            if not moved:
                raise NotFound(f"Key not found: key={_key_label(req.key)}", param="key")
            SpendLog.update(api_key=token).where(SpendLog.api_key == old.token).execute()
            counters.move_key_stripes(old.token, token)
    except peewee.IntegrityError:
        raise Conflict(f"Key already exists: key={display_name(plain)}", param="new_key") from None
    return jsonify({"key": plain, **key_info(fresh_row(Key.get_by_id(token)))})


@bp.post("/key/delete")
def key_delete() -> ResponseReturnValue:
    req = parse_body(KeyDelete)
    if req.keys is None and req.key_aliases is None:
        raise BadRequest("'keys' or 'key_aliases' is required", param="keys")
    keys, aliases = req.keys or [], req.key_aliases or []
    tokens = {value: token_of(value) for value in keys}
    with database.atomic():
        found = Key.select(Key.token).where(Key.token.in_(list(tokens.values())))
        missing = absent(tokens.values(), (row.token for row in found))
        if missing:
            labels = [_key_label(v) for v, t in tokens.items() if t in missing]
            raise NotFound(f"Keys not found: {', '.join(labels)}", param="keys")
        aliased = Key.select(Key.key_alias).where(Key.key_alias.in_(aliases))
        missing = absent(aliases, (str(row.key_alias) for row in aliased))
        if missing:
            raise NotFound(f"No key has the alias: {', '.join(missing)}", param="key_aliases")
        doomed = Key.token.in_(list(tokens.values())) | Key.key_alias.in_(aliases)
        gone = [row.token for row in Key.select(Key.token).where(doomed)]
        Key.delete().where(doomed).execute()
        counters.forget_entity_stripes("key", gone)
    return jsonify({"deleted_keys": [*keys, *aliases]})


@bp.get("/key/list")
def key_list() -> ResponseReturnValue:
    q = parse_query(KeyListQuery)
    query = Key.select()
    if q.user_id:
        query = query.where(Key.user_id == q.user_id)
    if q.team_id:
        query = query.where(Key.team_id == q.team_id)
    query = apply_listing(
        query,
        q,
        searched=(Key.key_alias, Key.key_name, Key.user_id, Key.team_id),
        sortable={"created_at": Key.created_at, "spend": Key.total_spend(),
                  "key_alias": Key.key_alias, "user_id": Key.user_id, "team_id": Key.team_id,
                  "expires": Key.expires},
        default=(Key.created_at, Key.token),
        tie=Key.token,
    )  # fmt: skip
    total = query.order_by().count()
    rows = query.paginate(q.page, q.size)
    keys = [key_info(fresh_row(k)) if q.return_full_object else k.token for k in rows]
    return jsonify(
        {
            "keys": keys,
            "total_count": total,
            "current_page": q.page,
            "total_pages": page_count(total, q.size),
        }
    )
