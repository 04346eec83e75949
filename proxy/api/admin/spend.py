"""Admin API, spend: /spend/logs and /global/spend (HTTP only)."""

from __future__ import annotations

from typing import Any

from flask import jsonify, request, url_for
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
    """Spend-log rows, oldest first, filtered by key, user, end user and time, one
    page at a time (``page``, ``page_size``): the body is the page's list of rows,
    and a ``Link: <...>; rel="next"`` header gives the next page's URL, filters
    kept, while there is one. A worker holds one page, whatever the table's size."""
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
    ordered = query.order_by(SpendLog.start_time, SpendLog.request_id)
    # One row more than the page tells whether there is a next page.
    window = ordered.limit(q.page_size + 1).offset((q.page - 1) * q.page_size)
    rows = [spend_log_row(row) for row in window.iterator()]
    resp = jsonify(rows[: q.page_size])
    if len(rows) > q.page_size:
        args: dict[str, Any] = {
            **request.args.to_dict(),
            "page": q.page + 1,
            "page_size": q.page_size,
        }
        next_url = url_for("admin.spend_logs", **args)
        resp.headers["Link"] = f'<{next_url}>; rel="next"'
    return resp


@bp.get("/global/spend")
def global_spend() -> ResponseReturnValue:
    settings = services().config.litellm_settings
    return jsonify(
        {
            "spend": current_proxy_spend(settings.budget_duration),
            "max_budget": settings.max_budget,
        }
    )
