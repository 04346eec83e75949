"""``/model/info``: the configured deployments for operators (master key only).

Each entry is :meth:`proxy.upstream.deployments.Deployment.public_info`, an
allow-list of fields, so an upstream ``api_key`` can never appear here, plus
the deployment's health as every worker sees it (failures this minute and
the end of its cooldown, from the shared ``deployment_health`` table).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from proxy.api.common import services
from proxy.call.auth import require_master
from proxy.storage import clock
from proxy.storage.cooldowns import FAIL_WINDOW_SECONDS, health_rows

bp = Blueprint("models", __name__)


def _health(row: Any, now: float) -> dict[str, Any]:
    if row is None:
        return {"status": "healthy", "cooldown_until": None, "fails_this_minute": 0}
    cooling = row.cooldown_until > now
    recent = row.window_start > now - FAIL_WINDOW_SECONDS
    return {
        "status": "cooldown" if cooling else "healthy",
        "cooldown_until": row.cooldown_until if cooling else None,
        "fails_this_minute": row.fails if recent else 0,
        "last_error": row.last_error,
    }


@bp.get("/model/info")
@bp.get("/v1/model/info")
def model_info() -> ResponseReturnValue:
    svc = services()
    require_master(request.headers, svc.config.master_key)
    deployments = svc.models.deployments
    rows = health_rows([dep.id for dep in deployments])
    now = clock.now()
    data = []
    for dep in deployments:
        info = dep.public_info()
        info["model_info"]["health"] = _health(rows.get(dep.id), now)
        data.append(info)
    return jsonify({"data": data})
