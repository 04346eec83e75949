"""Database rows as the JSON the admin API answers with.

Money is a plain number (US dollars); times are ISO 8601 UTC strings ending
in ``Z`` (epoch seconds in the database), or ``null``. No serializer ever
includes a key's secret: only its SHA-256 ``token`` and display ``key_name``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from proxy.storage.models import Budget, Customer, Key, SpendLog, Team, User


def iso_time(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def money(value: float | None) -> float | None:
    return None if value is None else float(value)


def key_info(key: Key) -> dict[str, Any]:
    return {
        "key_name": key.key_name,
        "token": key.token,
        "expires": iso_time(key.expires),
        "user_id": key.user_id,
        "team_id": key.team_id,
        "key_alias": key.key_alias,
        "models": list(key.models or []),
        "max_budget": money(key.max_budget),
        "soft_budget": money(key.soft_budget),
        "spend": money(key.spend) or 0.0,
        "budget_duration": key.budget_duration,
        "budget_reset_at": iso_time(key.budget_reset_at),
        "max_parallel_requests": key.max_parallel_requests,
        "tpm_limit": key.tpm_limit,
        "rpm_limit": key.rpm_limit,
        "metadata": dict(key.metadata or {}),
        "created_at": iso_time(key.created_at),
        "blocked": bool(key.blocked),
    }


def user_info(user: User) -> dict[str, Any]:
    return {
        "user_id": user.user_id,
        "user_email": user.user_email,
        "team_id": user.team_id,
        "models": list(user.models or []),
        "max_budget": money(user.max_budget),
        "spend": money(user.spend) or 0.0,
        "budget_duration": user.budget_duration,
        "budget_reset_at": iso_time(user.budget_reset_at),
        "max_parallel_requests": user.max_parallel_requests,
        "tpm_limit": user.tpm_limit,
        "rpm_limit": user.rpm_limit,
        "metadata": dict(user.metadata or {}),
        "created_at": iso_time(user.created_at),
        "blocked": bool(user.blocked),
    }


def team_info(team: Team) -> dict[str, Any]:
    """LiteLLM's team row (``LiteLLM_TeamTable``): ``admins`` and ``members`` are the
    user ids of ``members_with_roles`` by role."""
    members = [dict(m) for m in team.members_with_roles or []]
    ids = {
        role: [m.get("user_id") for m in members if m.get("role") == role]
        for role in ("admin", "user")
    }
    return {
        "team_id": team.team_id,
        "team_alias": team.team_alias,
        "admins": ids["admin"],
        "members": ids["user"],
        "members_with_roles": members,
        "metadata": dict(team.metadata or {}),
        "models": list(team.models or []),
        "max_budget": money(team.max_budget),
        "spend": money(team.spend) or 0.0,
        "budget_duration": team.budget_duration,
        "budget_reset_at": iso_time(team.budget_reset_at),
        "max_parallel_requests": team.max_parallel_requests,
        "tpm_limit": team.tpm_limit,
        "rpm_limit": team.rpm_limit,
        "blocked": bool(team.blocked),
        "created_at": iso_time(team.created_at),
        "updated_at": iso_time(team.updated_at),
    }


def budget_row(budget: Budget) -> dict[str, Any]:
    return {
        "budget_id": budget.budget_id,
        "max_budget": money(budget.max_budget),
        "soft_budget": money(budget.soft_budget),
        "max_parallel_requests": budget.max_parallel_requests,
        "tpm_limit": budget.tpm_limit,
        "rpm_limit": budget.rpm_limit,
        "budget_duration": budget.budget_duration,
        "created_at": iso_time(budget.created_at),
        "updated_at": iso_time(budget.updated_at),
    }


def customer_info(customer: Customer, budget: Budget | None) -> dict[str, Any]:
    """Exactly the fields of the seed's ``/customer/info`` answer."""
    return {
        "user_id": customer.user_id,
        "blocked": bool(customer.blocked),
        "alias": customer.customer_alias,
        "spend": money(customer.spend) or 0.0,
        "allowed_model_region": customer.allowed_model_region,
        "default_model": customer.default_model,
        "litellm_budget_table": budget_row(budget) if budget is not None else None,
    }


def spend_log_row(log: SpendLog) -> dict[str, Any]:
    return {
        "request_id": log.request_id,
        "call_type": log.call_type,
        "api_key": log.api_key,
        "user": log.user_id,
        "team_id": log.team_id,
        "end_user": log.end_user,
        "model": log.model,
        "model_group": log.model_group,
        "prompt_tokens": log.prompt_tokens,
        "completion_tokens": log.completion_tokens,
        "total_tokens": log.total_tokens,
        "spend": money(log.spend) or 0.0,
        "startTime": iso_time(log.start_time),
        "endTime": iso_time(log.end_time),
        "status": log.status,
    }
