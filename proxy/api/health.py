"""Liveness and readiness probes (no auth)."""

from __future__ import annotations

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from proxy.api.common import services
from proxy.errors import ServiceUnavailable
from proxy.storage.db import database, is_unreachable, unavailable_reason

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
