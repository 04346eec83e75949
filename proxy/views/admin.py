"""The admin API (master key): keys, users, customers, budgets, spend."""

from __future__ import annotations

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from proxy.auth import require_master
from proxy.models import ProxySpend
from proxy.views.common import services

bp = Blueprint("admin", __name__)


@bp.before_request
def _master_only() -> None:
    require_master(request.headers, services().config.master_key)


@bp.get("/global/spend")
def global_spend() -> ResponseReturnValue:
    row = ProxySpend.get_or_none(ProxySpend.id == 1)
    return jsonify(
        {
            "spend": row.spend if row else 0.0,
            "max_budget": services().config.litellm_settings.max_budget,
        }
    )
