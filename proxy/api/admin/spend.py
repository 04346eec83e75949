"""Admin API, spend: /spend/logs and /global/spend (HTTP only)."""

from __future__ import annotations

from flask import jsonify
from flask.typing import ResponseReturnValue

from proxy.api.admin.common import bp, parse_query
from proxy.api.admin.keys import token_of
from proxy.api.admin.schemas import SpendLogsQuery
from proxy.api.admin.serializers import spend_log_row
from proxy.api.common import services
from proxy.storage.models import SpendLog
from proxy.storage.resets import current_proxy_spend


@bp.get("/spend/logs")
def spend_logs() -> ResponseReturnValue:
    """Spend-log rows, oldest first, filtered by key, user, end user and time."""
    q = parse_query(SpendLogsQuery)
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
