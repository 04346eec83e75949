"""``/metrics`` (master key): what an operator's Prometheus scrapes.

Every number comes from the database, so any worker of any host answers the
same: the calls charged 0 because their model has no price, with their tokens
(the ``unpriced_model`` rows the spend ledger writes), the calls an upstream
billed beyond their worst case (``spend_log.overrun``), and the proxy-wide
spend counter. The answer is the Prometheus text exposition format (0.0.4);
a client that asks for ``application/json`` gets the same numbers as JSON.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from flask import Blueprint, Response, jsonify, request
from flask.typing import ResponseReturnValue

from proxy.api.admin.serializers import iso_time
from proxy.api.common import services
from proxy.call.auth import require_master
from proxy.storage.models import UnpricedModel
from proxy.storage.overruns import Overruns, cost_overruns
from proxy.storage.resets import current_proxy_spend

bp = Blueprint("metrics", __name__)

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"

Sample = tuple[dict[str, str], float]


@bp.before_request
def _master_only() -> None:
    require_master(request.headers, services().config.master_key)


def escape_label(value: str) -> str:
    """A label value as the text format quotes it: backslash, quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _family(name: str, kind: str, help_text: str, samples: Iterable[Sample]) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    for labels, value in samples:
        pairs = ",".join(f'{label}="{escape_label(text)}"' for label, text in labels.items())
        lines.append(f"{name}{{{pairs}}} {_number(value)}" if pairs else f"{name} {_number(value)}")
    return lines


def unpriced_rows() -> list[UnpricedModel]:
    """The ``unpriced_model`` rows by model group, and a zero row for each model
    configured here without a price and not called yet: a series that exists
    before its first call lets ``increase()`` see that call."""
    rows = {row.model_group: row for row in UnpricedModel.select()}
    for dep in services().models.by_name.values():
        if not dep.price.known and dep.model_name not in rows:
            rows[dep.model_name] = UnpricedModel(
                model_group=dep.model_name,
                upstream_model=dep.upstream_model,
                calls=0,
                tokens=0,
                first_seen=None,
                last_seen=None,
            )
    return [rows[name] for name in sorted(rows)]


def exposition(
    rows: list[UnpricedModel], proxy_spend: float, overruns: Overruns | None = None
) -> str:
    """The Prometheus text format of the unpriced counts, the overruns and the proxy
    counter."""
    labels = [{"model": r.model_group, "upstream_model": r.upstream_model} for r in rows]
    lines = _family(
        "comptroller_unpriced_calls_total",
        "counter",
        "Calls charged 0 because their model has no price (no litellm_params override, "
        "not in the price table).",
        zip(labels, (r.calls for r in rows), strict=True),
    )
    lines += _family(
        "comptroller_unpriced_tokens_total",
        "counter",
        "Tokens (prompt + completion) of the calls charged 0 for want of a price.",
        zip(labels, (r.tokens for r in rows), strict=True),
    )
    overruns = overruns or Overruns(0, 0.0)
    lines += _family(
        "comptroller_cost_overrun_calls_total",
        "counter",
        "Calls an upstream billed more than their worst case (charged in full; each "
        "raised a cost_overrun alert).",
        [({}, overruns.calls)],
    )
    lines += _family(
        "comptroller_cost_overrun_usd_total",
        "counter",
        "US dollars billed beyond the worst case of those calls: by how much a strict "
        "budget may have been exceeded.",
        [({}, overruns.usd)],
    )
    lines += _family(
        "comptroller_proxy_spend_usd",
        "gauge",
        "Proxy-wide spend in US dollars, since the proxy budget's last reset.",
        [({}, proxy_spend)],
    )
    return "\n".join(lines) + "\n"


@bp.get("/metrics")
def metrics() -> ResponseReturnValue:
    rows = unpriced_rows()
    overruns = cost_overruns()
    spend = current_proxy_spend(services().config.litellm_settings.budget_duration)
    wanted = request.accept_mimetypes.best_match(
        ["text/plain", "application/json"], default="text/plain"
    )
    if wanted == "application/json":
        return jsonify(
            {
                "unpriced_models": [
                    {
                        "model": r.model_group,
                        "upstream_model": r.upstream_model,
                        "calls": r.calls,
                        "tokens": r.tokens,
                        "first_seen": iso_time(r.first_seen),
                        "last_seen": iso_time(r.last_seen),
                    }
                    for r in rows
                ],
                "cost_overruns": {"calls": overruns.calls, "usd": overruns.usd},
                "proxy_spend": spend,
            }
        )
    return Response(exposition(rows, spend, overruns), content_type=PROMETHEUS_TEXT)
