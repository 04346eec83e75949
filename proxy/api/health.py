"""Liveness and readiness probes (no auth)."""

from __future__ import annotations

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from proxy.errors import ServiceUnavailable
from proxy.storage.db import database

bp = Blueprint("health", __name__)


@bp.get("/health/liveliness")
@bp.get("/health/liveness")
def liveliness() -> ResponseReturnValue:
    return jsonify({"status": "I'm alive!"})


@bp.get("/health/readiness")
def readiness() -> ResponseReturnValue:
    try:
        database.execute_sql("SELECT 1")
    except Exception as err:
        raise ServiceUnavailable(f"database not reachable: {type(err).__name__}") from None
    return jsonify({"status": "healthy", "db": "connected"})
