"""Read-only spend reports for the admin UI's Spend tab (master key).

Everything here is a sum over spend-log rows in a window of whole UTC days
ending today: spend per day, and the customers and keys that spent most.
The spend logs are the ledger the counters are checked against, so these
numbers agree with ``/spend/logs`` for the same window.
"""

from __future__ import annotations

import hmac
from datetime import datetime, timedelta, timezone
from typing import Any

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue
from peewee import fn

from proxy.api.admin.schemas import ReportWindow, SpendReportQuery, TopQuery, parse
from proxy.api.common import services
from proxy.call.auth import hash_key, require_master
from proxy.storage.days import DAY, utc_day_number
from proxy.storage.models import Key, SpendLog, now

bp = Blueprint("admin_reports", __name__)


@bp.before_request
def _master_only() -> None:
    require_master(request.headers, services().config.master_key)


def _window_start(days: int, at: float) -> float:
    """Midnight UTC of the first day of a window of ``days`` days ending today."""
    today = datetime.fromtimestamp(at, tz=timezone.utc).date()
    first = today - timedelta(days=days - 1)
    return datetime(first.year, first.month, first.day, tzinfo=timezone.utc).timestamp()


def _day_number() -> Any:
    """SQL for the UTC day of ``start_time`` (days since the epoch)."""
    return utc_day_number(SpendLog.start_time)


def _rows(query: Any) -> list[dict[str, Any]]:
    return list(query.dicts())


def _day_text(day_number: int) -> str:
    return datetime.fromtimestamp(day_number * DAY, tz=timezone.utc).strftime("%Y-%m-%d")


@bp.get("/global/spend/daily")
def spend_per_day() -> ResponseReturnValue:
    """``{"days": [{"date", "spend", "requests"}], "total_spend", "total_requests"}``,
    one entry per UTC day of the window (zero days included), oldest first."""
    q = parse(ReportWindow, request.args.to_dict())
    start = _window_start(q.days, now())
    day = _day_number()
    rows = _rows(
        SpendLog.select(
            day.alias("day"),
            fn.SUM(SpendLog.spend).alias("spend"),
            fn.COUNT(SpendLog.request_id).alias("requests"),
        )
        .where(SpendLog.start_time >= start)
        .group_by(day)
    )
    by_day = {int(row["day"]): row for row in rows}
    first = int(start // DAY)
    days = []
    for number in range(first, first + q.days):
        row: dict[str, Any] = by_day.get(number, {})
        days.append(
            {
                "date": _day_text(number),
                "spend": float(row.get("spend") or 0.0),
                "requests": int(row.get("requests") or 0),
            }
        )
    return jsonify(
        {
            "days": days,
            "total_spend": sum(d["spend"] for d in days),
            "total_requests": sum(d["requests"] for d in days),
        }
    )


def _top_spenders(column: Any, q: TopQuery) -> list[dict[str, Any]]:
    """Spend and request count per non-null value of the spend-log ``column`` in the
    window, most spend first (ties in ``column`` order), at most ``q.limit`` rows."""
    start = _window_start(q.days, now())
    total = fn.SUM(SpendLog.spend)
    return _rows(
        SpendLog.select(
            column,
            total.alias("spend"),
            fn.COUNT(SpendLog.request_id).alias("requests"),
        )
        .where((SpendLog.start_time >= start) & column.is_null(False))
        .group_by(column)
        .order_by(total.desc(), column)
        .limit(q.limit)
    )


@bp.get("/global/spend/top_customers")
def top_customers() -> ResponseReturnValue:
    """End users by spend in the window, most first: ``[{"end_user", "spend", "requests"}]``."""
    rows = _top_spenders(SpendLog.end_user, parse(TopQuery, request.args.to_dict()))
    return jsonify(
        [
            {"end_user": r["end_user"], "spend": float(r["spend"]), "requests": int(r["requests"])}
            for r in rows
        ]
    )


@bp.get("/global/spend/top_keys")
def top_keys() -> ResponseReturnValue:
    """Virtual keys by spend in the window, most first. A deleted key keeps its
    spend under its token, with ``key_name: null``; the master key's calls are
    the entry with ``is_master_key: true``."""
    rows = _top_spenders(SpendLog.api_key, parse(TopQuery, request.args.to_dict()))
    keys = {k.token: k for k in Key.select().where(Key.token.in_([r["api_key"] for r in rows]))}
    return jsonify([_key_entry(row, keys.get(row["api_key"])) for row in rows])


def _key_entry(row: dict[str, Any], key: Key | None) -> dict[str, Any]:
    return {
        "token": row["api_key"],
        "is_master_key": hmac.compare_digest(
            row["api_key"] or "", hash_key(services().config.master_key)
        ),
        "key_name": key.key_name if key else None,
        "key_alias": key.key_alias if key else None,
        "user_id": key.user_id if key else None,
        "spend": float(row["spend"]),
        "requests": int(row["requests"]),
    }


# The spend-log column each ``group_by`` sums over, and LiteLLM's names for the
# list of groups of a day and for a group's id in it.
_REPORT_GROUPS: dict[str, tuple[Any, str, str]] = {
    "team": (SpendLog.team_id, "teams", "team_name"),
    "customer": (SpendLog.end_user, "customers", "customer"),
    "api_key": (SpendLog.api_key, "api_keys", "api_key"),
    "user": (SpendLog.user_id, "users", "user"),
    "model": (SpendLog.model_group, "models", "model"),
}


@bp.get("/global/spend/report")
def spend_report() -> ResponseReturnValue:
    """Spend per UTC day and ``group_by`` value (team, customer, api_key, user or
    model), each with its per-model breakdown, LiteLLM's report shape:
    ``[{"group_by_day", "<groups>": [{"<id>", "total_spend", "total_tokens",
    "requests", "metadata": [{"model", "spend", "total_tokens", "requests"}]}]}]``,
    days with spend only, oldest first, groups by spend (most first). Rows with
    no value (no team, no end user) are one group named ``null``."""
    q = parse(SpendReportQuery, request.args.to_dict())
    first, last = q.days(datetime.fromtimestamp(now(), tz=timezone.utc).date())
    start = datetime(first.year, first.month, first.day, tzinfo=timezone.utc).timestamp()
    end = start + ((last - first).days + 1) * DAY
    column, groups_name, id_name = _REPORT_GROUPS[q.group_by]
    day = _day_number()
    rows = _rows(
        SpendLog.select(
            day.alias("day"),
            column.alias("group_id"),
            SpendLog.model_group.alias("model"),
            fn.SUM(SpendLog.spend).alias("spend"),
            fn.SUM(SpendLog.total_tokens).alias("tokens"),
            fn.COUNT(SpendLog.request_id).alias("requests"),
        )
        .where((SpendLog.start_time >= start) & (SpendLog.start_time < end))
        .group_by(day, column, SpendLog.model_group)
    )
    days: dict[int, dict[Any, dict[str, Any]]] = {}
    for row in rows:
        group = days.setdefault(int(row["day"]), {}).setdefault(
            row["group_id"],
            {id_name: row["group_id"], "total_spend": 0.0, "total_tokens": 0, "requests": 0,
             "metadata": []},
        )  # fmt: skip
        spend, tokens, requests = (
            float(row["spend"] or 0),
            int(row["tokens"] or 0),
            int(row["requests"]),
        )
        group["total_spend"] += spend
        group["total_tokens"] += tokens
        group["requests"] += requests
        group["metadata"].append(
            {"model": row["model"], "spend": spend, "total_tokens": tokens, "requests": requests}
        )
    report = []
    for number in sorted(days):
        groups = sorted(days[number].values(), key=lambda g: (-g["total_spend"], str(g[id_name])))
        for group in groups:
            group["metadata"].sort(key=lambda m: (-m["spend"], m["model"]))
        stamp = datetime.fromtimestamp(number * DAY, tz=timezone.utc).isoformat()
        report.append({"group_by_day": stamp, groups_name: groups})
    return jsonify(report)
