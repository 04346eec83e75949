"""``/model/info``: the configured model list for operators (master key only).

Each entry is :meth:`proxy.upstream.deployments.Deployment.public_info`, an
allow-list of fields, so an upstream ``api_key`` can never appear here.
"""

from __future__ import annotations

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from proxy.api.common import services
from proxy.call.auth import require_master

bp = Blueprint("models", __name__)


@bp.get("/model/info")
@bp.get("/v1/model/info")
def model_info() -> ResponseReturnValue:
    svc = services()
    require_master(request.headers, svc.config.master_key)
    return jsonify({"data": [dep.public_info() for dep in svc.models.deployments]})
