"""Admin API, spend: /spend/logs (also as CSV) and /global/spend (HTTP only)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

import peewee
from flask import Response, jsonify, request, stream_with_context, url_for
from flask.typing import ResponseReturnValue

from proxy.api.admin.common import bp, parse_query
from proxy.api.admin.keys import token_of
from proxy.api.admin.schemas import SpendLogsQuery
from proxy.api.admin.serializers import spend_log_row
from proxy.api.common import services
from proxy.storage.models import SpendLog
from proxy.storage.resets import current_proxy_spend


def _filtered_logs(q: SpendLogsQuery) -> peewee.ModelSelect[SpendLog]:
    """The spend-log rows ``q``'s filters select (key, user, team, end user, model,
    status, request id, time window)."""
    start, end = q.window()
    query = SpendLog.select()
    exact = (
        (SpendLog.api_key, token_of(q.api_key) if q.api_key else None),
        (SpendLog.user_id, q.user_id),
        (SpendLog.team_id, q.team_id),
        (SpendLog.end_user, q.end_user),
        (SpendLog.model_group, q.model),
        (SpendLog.status, q.status),
        (SpendLog.request_id, q.request_id),
    )
    for column, value in exact:
        if value:
            query = query.where(column == value)
    if start is not None:
        query = query.where(SpendLog.start_time >= start)
    if end is not None:
        query = query.where(SpendLog.start_time < end)
    return query


def _ordering(q: SpendLogsQuery) -> tuple[Any, Any]:
    if q.order == "desc":
        return SpendLog.start_time.desc(), SpendLog.request_id.desc()
    return SpendLog.start_time, SpendLog.request_id


@bp.get("/spend/logs")
def spend_logs() -> ResponseReturnValue:
    """Spend-log rows, oldest first (``order=desc``: newest first), filtered by key,
    user, team, end user, model, status and time, one page at a time (``page``,
    ``page_size``): the body is the page's list of rows, and a ``Link: <...>;
    rel="next"`` header gives the next page's URL, filters kept, while there is
    one. A worker holds one page, whatever the table's size."""
    q = parse_query(SpendLogsQuery)
    ordered = _filtered_logs(q).order_by(*_ordering(q))
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


CSV_COLUMNS = (
    "request_id", "startTime", "endTime", "duration_seconds", "status", "model", "model_group",
    "api_key", "user", "team_id", "end_user", "prompt_tokens", "completion_tokens",
    "total_tokens", "spend",
)  # fmt: skip
CSV_CHUNK_ROWS = 1000


def _csv_line(values: list[Any]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(values)
    return out.getvalue()


def _csv_lines(q: SpendLogsQuery) -> Iterator[str]:
    """The filtered rows as CSV, read in chunks of :data:`CSV_CHUNK_ROWS` by keyset
    (each chunk starts after the last row sent), so memory stays bounded whatever
    the table's size, and no row is sent twice or skipped while calls are logged."""
    yield _csv_line(list(CSV_COLUMNS))
    base = _filtered_logs(q)
    after: tuple[float, str] | None = None
    while True:
        query = base
        if after is not None:
            moment, request_id = after
            if q.order == "desc":
                later = (SpendLog.start_time < moment) | (
                    (SpendLog.start_time == moment) & (SpendLog.request_id < request_id)
                )
            else:
                later = (SpendLog.start_time > moment) | (
                    (SpendLog.start_time == moment) & (SpendLog.request_id > request_id)
                )
            query = query.where(later)
        chunk: list[SpendLog] = list(query.order_by(*_ordering(q)).limit(CSV_CHUNK_ROWS))
        for log in chunk:
            row = spend_log_row(log)
            row["duration_seconds"] = round(log.end_time - log.start_time, 6)
            yield _csv_line([_csv_value(row[name]) for name in CSV_COLUMNS])
        if len(chunk) < CSV_CHUNK_ROWS:
            return
        after = (chunk[-1].start_time, chunk[-1].request_id)


def _csv_value(value: Any) -> Any:
    # Money keeps every digit it has (repr), never a rounded or scientific-looking text.
    if isinstance(value, float):
        return format(value, ".12f").rstrip("0").rstrip(".") if value else "0"
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@"):
        return "'" + value  # never a formula in a spreadsheet
    return value


@bp.get("/spend/logs/csv")
def spend_logs_csv() -> ResponseReturnValue:
    """Every spend-log row ``/spend/logs`` would page through with the same filters, as
    one CSV download, streamed."""
    q = parse_query(SpendLogsQuery)
    q.window()  # a bad window is a 400 now, before the download starts
    return Response(
        stream_with_context(_csv_lines(q)),
        mimetype="text/csv",
        headers={"Content-Disposition": 'attachment; filename="spend-logs.csv"'},
    )


@bp.get("/global/spend")
def global_spend() -> ResponseReturnValue:
    settings = services().config.litellm_settings
    return jsonify(
        {
            "spend": current_proxy_spend(settings.budget_duration),
            "max_budget": settings.max_budget,
        }
    )
