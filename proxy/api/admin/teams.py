"""The admin API's teams (master key): LiteLLM's ``/team/*`` routes and shapes.

A team's ``max_budget`` (with ``budget_duration``) and its rpm, tpm and
parallel limits cover every key with its ``team_id``, and the keys of its
members that have no team of their own; the ``team_budget`` plugin and the
rate limiter enforce them. Members are LiteLLM's ``members_with_roles``;
adding a user to a team also makes it the user's team when it has none.

A key made with a ``team_id`` nobody created yet makes a bare team row that
only counts spend; ``/team/new`` with that id takes the row over (its spend
stays). A team made by ``/team/new`` carries ``updated_at``: a second
``/team/new`` with its id is 409.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import peewee
from flask import jsonify
from flask.typing import ResponseReturnValue

from proxy.api.admin.common import bp, column_values, parse_body, parse_query
from proxy.api.admin.listing import apply_listing
from proxy.api.admin.schemas import (
    TeamIds,
    TeamListQuery,
    TeamMember,
    TeamMemberAdd,
    TeamMemberDelete,
    TeamNew,
    TeamRef,
    TeamUpdate,
)
from proxy.api.admin.serializers import key_info, team_info, user_info
from proxy.errors import BadRequest, Conflict, NotFound
from proxy.storage import clock, counters
from proxy.storage.db import database
from proxy.storage.models import Key, Team, User
from proxy.storage.plugin_access import lock_rows
from proxy.storage.resets import apply_due_resets, scheduled_reset

TEAM_COLUMNS = (
    "team_alias",
    "models",
    "max_budget",
    "budget_duration",
    "max_parallel_requests",
    "tpm_limit",
    "rpm_limit",
    "metadata",
    "blocked",
)


def _columns(values: dict[str, Any]) -> dict[str, Any]:
    return column_values(values, TEAM_COLUMNS)


def _locked_team(team_id: str) -> Team:
    """The team row, locked until the transaction ends (members are read, then
    written back); 404 naming ``team_id`` if there is none."""
    team = lock_rows(Team.select().where(Team.team_id == team_id)).first()
    if team is None:
        raise NotFound(f"Team not found: team_id={team_id}", param="team_id")
    return team


def _fresh(team: Team) -> Team:
    apply_due_resets((team, team.budget_duration))
    return team


def _member_row(member: TeamMember, now: float) -> dict[str, Any]:
    """The member as stored, its user row made if new (found by email when no id is given)."""
    user_id = member.user_id
    if user_id is None:
        known = User.get_or_none(User.user_email == member.user_email)
        user_id = known.user_id if known is not None else str(uuid.uuid4())
    User.insert(
        user_id=user_id, user_email=member.user_email, created_at=now
    ).on_conflict_ignore().execute()
    return {"user_id": user_id, "user_email": member.user_email, "role": member.role}


def _add_members(team: Team, members: list[TeamMember], now: float) -> list[str]:
    """Append ``members`` to the (locked) team; 400 for one already in it. Their user
    ids; the team becomes the team of each that had none."""
    current = [dict(m) for m in team.members_with_roles or []]
    have = {m.get("user_id") for m in current}
    added = []
    for member in members:
        row = _member_row(member, now)
        if row["user_id"] in have:
            raise BadRequest(
                f"User {row['user_id']} is already a member of team {team.team_id}",
                param="member",
            )
        have.add(row["user_id"])
        current.append(row)
        added.append(row["user_id"])
    Team.update(members_with_roles=current, updated_at=now).where(
        Team.team_id == team.team_id
    ).execute()
    User.update(team_id=team.team_id).where(
        User.user_id.in_(added) & User.team_id.is_null()
    ).execute()
    return added


@bp.post("/team/new")
def team_new() -> ResponseReturnValue:
    req = parse_body(TeamNew)
    team_id = req.team_id or str(uuid.uuid4())
    values = _columns({name: getattr(req, name) for name in TEAM_COLUMNS})
    now = clock.now()
    try:
        with database.atomic():
            bare = Team.get_or_none(Team.team_id == team_id)
            if bare is not None and bare.updated_at is not None:
                raise Conflict(f"Team already exists: team_id={team_id}", param="team_id")
            created = bare.created_at if bare is not None else now
            reset_at = scheduled_reset(created, req.budget_duration, now)
            if bare is None:
                Team.create(
                    team_id=team_id,
                    created_at=now,
                    updated_at=now,
                    budget_reset_at=reset_at,
                    **values,
                )
            else:
                Team.update(updated_at=now, budget_reset_at=reset_at, **values).where(
                    Team.team_id == team_id
                ).execute()
            _add_members(_locked_team(team_id), req.members_with_roles or [], now)
    except peewee.IntegrityError:
        raise Conflict(f"Team already exists: team_id={team_id}", param="team_id") from None
    return jsonify(team_info(_fresh(Team.get_by_id(team_id))))


@bp.get("/team/info")
def team_info_route() -> ResponseReturnValue:
    team_id = parse_query(TeamRef).team_id
    team = Team.get_or_none(Team.team_id == team_id)
    if team is None:
        raise NotFound(f"Team not found: team_id={team_id}", param="team_id")
    keys = Key.select().where(Key.team_id == team_id).order_by(Key.created_at, Key.token)
    return jsonify(
        {
            "team_id": team_id,
            "team_info": team_info(_fresh(team)),
            "keys": [key_info(key) for key in keys],
            "team_memberships": [],
        }
    )


@bp.post("/team/update")
def team_update() -> ResponseReturnValue:
    req = parse_body(TeamUpdate)
    changes = _columns(req.given("team_id"))
    now = clock.now()
    with database.atomic():
        team = _locked_team(req.team_id)
        if "budget_duration" in changes and changes["budget_duration"] != team.budget_duration:
            # A new period restarts the schedule from creation, without a reset now.
            changes["budget_reset_at"] = scheduled_reset(
                team.created_at, changes["budget_duration"], now
            )
        Team.update(updated_at=now, **changes).where(Team.team_id == team.team_id).execute()
    team = _fresh(Team.get_by_id(req.team_id))
    return jsonify({"team_id": team.team_id, "data": team_info(team)})


@bp.post("/team/delete")
def team_delete() -> ResponseReturnValue:
    """Delete teams with their keys (as LiteLLM does); members stay, without the team."""
    ids = list(dict.fromkeys(parse_body(TeamIds).team_ids))
    with database.atomic():
        found = {row.team_id for row in Team.select(Team.team_id).where(Team.team_id.in_(ids))}
        missing = [team_id for team_id in ids if team_id not in found]
        if missing:
            raise NotFound(f"Teams not found: {', '.join(missing)}", param="team_ids")
        keys = [row.token for row in Key.select(Key.token).where(Key.team_id.in_(ids))]
        Key.delete().where(Key.team_id.in_(ids)).execute()
        User.update(team_id=None).where(User.team_id.in_(ids)).execute()
        Team.delete().where(Team.team_id.in_(ids)).execute()
        counters.forget_entity_stripes("key", keys)
        counters.forget_entity_stripes("team", ids)
    return jsonify({"deleted_teams": ids, "deleted_keys": keys})


@bp.get("/team/list")
def team_list() -> ResponseReturnValue:
    """Every team (LiteLLM answers a list), oldest first; ``user_id`` keeps the teams
    it is a member of; ``page``/``page_size`` bound the answer."""
    q = parse_query(TeamListQuery)
    query = Team.select()
    if q.user_id:
        # Members are stored as compact JSON: the member's own "user_id" entry.
        query = query.where(Team.members_with_roles.contains(f'"user_id":{json.dumps(q.user_id)}'))
    query = apply_listing(
        query,
        q,
        searched=(Team.team_id, Team.team_alias),
        sortable={"created_at": Team.created_at, "spend": Team.total_spend(),
                  "team_id": Team.team_id, "team_alias": Team.team_alias,
                  "max_budget": Team.max_budget},
        default=(Team.created_at, Team.team_id),
        tie=Team.team_id,
    )  # fmt: skip
    rows = query.paginate(q.page, q.page_size)
    total = query.order_by().count()
    resp = jsonify([team_info(_fresh(team)) for team in rows])
    resp.headers["x-total-count"] = str(total)
    return resp


@bp.post("/team/member_add")
def team_member_add() -> ResponseReturnValue:
    req = parse_body(TeamMemberAdd)
    members = req.member if isinstance(req.member, list) else [req.member]
    now = clock.now()
    with database.atomic():
        added = _add_members(_locked_team(req.team_id), members, now)
    users = User.select().where(User.user_id.in_(added)).order_by(User.user_id)
    return jsonify(
        {
            **team_info(_fresh(Team.get_by_id(req.team_id))),
            "updated_users": [user_info(user) for user in users],
            "updated_team_memberships": [],
        }
    )


@bp.post("/team/member_delete")
def team_member_delete() -> ResponseReturnValue:
    req = parse_body(TeamMemberDelete)
    if req.user_id is None and not req.user_email:
        raise BadRequest("'user_id' or 'user_email' is required", param="user_id")
    now = clock.now()
    with database.atomic():
        team = _locked_team(req.team_id)
        members = [dict(m) for m in team.members_with_roles or []]

        def is_named(m: dict[str, Any]) -> bool:
            if req.user_id is not None:
                return m.get("user_id") == req.user_id
            return m.get("user_email") == req.user_email

        gone = [m for m in members if is_named(m)]
        if not gone:
            who = req.user_id if req.user_id is not None else req.user_email
            param = "user_id" if req.user_id is not None else "user_email"
            raise NotFound(f"User {who} is not a member of team {team.team_id}", param=param)
        kept = [m for m in members if not is_named(m)]
        Team.update(members_with_roles=kept, updated_at=now).where(
            Team.team_id == team.team_id
        ).execute()
        ids = [m.get("user_id") for m in gone]
        User.update(team_id=None).where(
            User.user_id.in_(ids) & (User.team_id == team.team_id)
        ).execute()
    return jsonify(team_info(_fresh(Team.get_by_id(req.team_id))))


def _set_blocked(blocked: bool) -> ResponseReturnValue:
    team_id = parse_body(TeamRef).team_id
    with database.atomic():
        _locked_team(team_id)
        Team.update(blocked=blocked, updated_at=clock.now()).where(
            Team.team_id == team_id
        ).execute()
    return jsonify(team_info(_fresh(Team.get_by_id(team_id))))


@bp.post("/team/block")
def team_block() -> ResponseReturnValue:
    """Refuse every call of the team's keys (401) until ``/team/unblock``."""
    return _set_blocked(True)


@bp.post("/team/unblock")
def team_unblock() -> ResponseReturnValue:
    return _set_blocked(False)
