"""Liveness and readiness probes (no auth), and ``/health``: every deployment
called on demand (master key)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from proxy.api.admin.schemas import HealthQuery, parse
from proxy.api.common import services
from proxy.call.auth import require_master
from proxy.errors import NotFound, ProxyError, ServiceUnavailable
from proxy.storage.db import database, is_unreachable, unavailable_reason
from proxy.upstream.deployments import Deployment, redact_url

bp = Blueprint("health", __name__)


@bp.get("/health/liveliness")
@bp.get("/health/liveness")
def liveliness() -> ResponseReturnValue:
    return jsonify({"status": "I'm alive!"})


@bp.get("/health/readiness")
def readiness() -> ResponseReturnValue:
    """200 once the migrations are applied and the database answers; 503 saying why not."""
    schema = services().schema
    if not schema.ensure():
        raise ServiceUnavailable(f"Not ready: {schema.reason}.")
    try:
        with database.connection_context():
            database.execute_sql("SELECT 1")
    except Exception as err:
        if not is_unreachable(err):
            raise
        raise ServiceUnavailable(
            f"Not ready: {unavailable_reason(err)} ({type(err).__name__})."
        ) from None
    return jsonify({"status": "healthy", "db": "connected"})


# A health check waits at most this long for one deployment.
HEALTH_CHECK_TIMEOUT = 30.0
HEALTH_CHECK_THREADS = 8


def _check(svc: Any, dep: Deployment) -> dict[str, Any]:
    """One tiny real call to ``dep`` (not metered: no key pays for it)."""
    entry: dict[str, Any] = {
        "model": f"{dep.provider}/{dep.upstream_model}",
        "model_name": dep.model_name,
        "model_id": dep.id,
        "api_base": redact_url(dep.api_base),
    }
    probe = replace(dep, timeout=min(dep.timeout, HEALTH_CHECK_TIMEOUT))
    body: dict[str, Any] = {"model": dep.upstream_model}
    if dep.mode == "embedding":
        call_type = "embeddings"
        body["input"] = "ping"
    else:
        call_type = "chat"
        body.update(messages=[{"role": "user", "content": "ping"}], max_tokens=1)
    try:
        svc.upstream.call_raw(probe, call_type, body)
    except ProxyError as err:
        entry["error"] = f"{err.status} {err.message}"[:500]
    return entry


@bp.get("/health")
def deployments_health() -> ResponseReturnValue:
    """Every deployment (or those of ``?model=``) called now, as LiteLLM's ``/health``."""
    svc = services()
    require_master(request.headers, svc.config.master_key)
    model = parse(HealthQuery, request.args.to_dict()).model
    deployments = [d for d in svc.models.deployments if model is None or d.model_name == model]
    if model is not None and not deployments:
        raise NotFound(f"Invalid model name passed in model={model}", param="model")
    database.close()  # no connection held while the upstreams answer
    with ThreadPoolExecutor(max_workers=HEALTH_CHECK_THREADS) as pool:
        results = list(pool.map(lambda dep: _check(svc, dep), deployments))
    healthy = [r for r in results if "error" not in r]
    unhealthy = [r for r in results if "error" in r]
    return jsonify(
        {
            "healthy_endpoints": healthy,
            "unhealthy_endpoints": unhealthy,
            "healthy_count": len(healthy),
            "unhealthy_count": len(unhealthy),
        }
    )
