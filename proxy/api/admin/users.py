"""Admin API, internal users: /user/new, /user/info, /user/update, /user/delete,
/user/list (HTTP only; see :mod:`proxy.api.admin.common`)."""

from __future__ import annotations

import uuid

import peewee
from flask import jsonify
from flask.typing import ResponseReturnValue

from proxy.api.admin.common import (
    absent,
    bp,
    column_values,
    ensure_team,
    find_row,
    fresh_row,
    page_count,
    parse_body,
    parse_query,
)
from proxy.api.admin.keys import create_key, expiry
from proxy.api.admin.listing import apply_listing
from proxy.api.admin.schemas import UserIds, UserInfoQuery, UserListQuery, UserNew, UserUpdate
from proxy.api.admin.serializers import iso_time, key_info, team_info, user_info
from proxy.call.auth import generate_key
from proxy.errors import Conflict, NotFound
from proxy.storage import clock, counters
from proxy.storage.db import database
from proxy.storage.models import Key, Team, User
from proxy.storage.resets import scheduled_reset

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
    "blocked",
)


@bp.post("/user/new")
def user_new() -> ResponseReturnValue:
    req = parse_body(UserNew)
    now = clock.now()
    user_id = req.user_id or str(uuid.uuid4())
    columns = column_values(req.model_dump(), USER_COLUMNS)
    expires = expiry(req.duration, None, now)
    plain = generate_key()
    try:
        with database.atomic():
            user = User.create(
                user_id=user_id,
                created_at=now,
                budget_reset_at=scheduled_reset(now, req.budget_duration, now),
                **columns,
            )
            ensure_team(req.team_id)
            # The first key carries no budget or models of its own: the
            # user's apply to all of its keys, and follow later user updates.
            key_columns = {"user_id": user_id, "key_alias": req.key_alias}
            key = create_key(plain, now, key_columns, expires)
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
    user = fresh_row(find_row(User, parse_query(UserInfoQuery).user_id, "user_id"))
    keys = list(Key.select().where(Key.user_id == user.user_id).order_by(Key.created_at, Key.token))
    team_ids = {user.team_id, *(key.team_id for key in keys)} - {None}
    teams = Team.select().where(Team.team_id.in_(list(team_ids))).order_by(Team.team_id)
    return jsonify(
        {
            "user_id": user.user_id,
            "user_info": user_info(user),
            "keys": [key_info(fresh_row(key)) for key in keys],
            "teams": [team_info(team) for team in teams],
        }
    )


@bp.post("/user/update")
def user_update() -> ResponseReturnValue:
    req = parse_body(UserUpdate)
    user = find_row(User, req.user_id, "user_id")
    changes = column_values(req.given(), USER_COLUMNS)
    now = clock.now()
    if "budget_duration" in changes:
        changes["budget_reset_at"] = scheduled_reset(
            user.created_at, changes["budget_duration"], now
        )
    with database.atomic():
        ensure_team(changes.get("team_id"))
        if changes:
            User.update(**changes).where(User.user_id == user.user_id).execute()
    return jsonify(user_info(fresh_row(User.get_by_id(user.user_id))))


@bp.post("/user/delete")
def user_delete() -> ResponseReturnValue:
    """Delete users and their keys; their spend logs stay for the record."""
    ids = parse_body(UserIds).user_ids
    with database.atomic():
        found = User.select(User.user_id).where(User.user_id.in_(ids))
        missing = absent(ids, (row.user_id for row in found))
        if missing:
            raise NotFound(f"Users not found: {', '.join(missing)}", param="user_ids")
        keys = [row.token for row in Key.select(Key.token).where(Key.user_id.in_(ids))]
        Key.delete().where(Key.user_id.in_(ids)).execute()
        User.delete().where(User.user_id.in_(ids)).execute()
        counters.forget_entity_stripes("key", keys)
        counters.forget_entity_stripes("user", ids)
    return jsonify({"deleted_users": ids, "deleted_keys": keys})


@bp.get("/user/list")
def user_list() -> ResponseReturnValue:
    q = parse_query(UserListQuery)
    query = User.select()
    if q.team_id:
        query = query.where(User.team_id == q.team_id)
    query = apply_listing(
        query,
        q,
        searched=(User.user_id, User.user_email, User.team_id),
        sortable={"created_at": User.created_at, "spend": User.total_spend(),
                  "user_id": User.user_id, "max_budget": User.max_budget},
        default=(User.created_at, User.user_id),
        tie=User.user_id,
    )  # fmt: skip
    total = query.order_by().count()
    rows = query.paginate(q.page, q.page_size)
    return jsonify(
        {
            "users": [user_info(fresh_row(user)) for user in rows],
            "total": total,
            "page": q.page,
            "page_size": q.page_size,
            "total_pages": page_count(total, q.page_size),
        }
    )
