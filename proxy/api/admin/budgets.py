"""Admin API, budget rows (pricing tiers): /budget/new, /budget/info, /budget/update,
/budget/delete, /budget/list (HTTP only; which customers a budget governs is
:mod:`proxy.storage.customer_budgets`)."""

from __future__ import annotations

import uuid

import peewee
from flask import jsonify
from flask.typing import ResponseReturnValue

from proxy.api.admin.common import absent, bp, find_row, parse_body
from proxy.api.admin.schemas import BUDGET_FIELDS, BudgetDelete, BudgetInfo, BudgetNew, BudgetUpdate
from proxy.api.admin.serializers import budget_row
from proxy.api.common import services
from proxy.errors import Conflict, NotFound
from proxy.storage import clock, customer_budgets
from proxy.storage.db import database
from proxy.storage.models import Budget


def _default_id() -> str | None:
    return services().config.litellm_settings.max_end_user_budget_id


@bp.post("/budget/new")
def budget_new() -> ResponseReturnValue:
    req = parse_body(BudgetNew)
    budget_id = req.budget_id or str(uuid.uuid4())
    customer_budgets.refuse_reserved_id(budget_id)
    now = clock.now()
    values = {name: getattr(req, name) for name in BUDGET_FIELDS}
    try:
        with database.atomic():
            budget = Budget.create(budget_id=budget_id, created_at=now, updated_at=now, **values)
    except peewee.IntegrityError:
        raise Conflict(f"Budget already exists: budget_id={budget_id}", param="budget_id") from None
    return jsonify(budget_row(budget))


@bp.post("/budget/info")
def budget_info() -> ResponseReturnValue:
    ids = parse_body(BudgetInfo).budgets
    rows = {b.budget_id: b for b in Budget.select().where(Budget.budget_id.in_(ids))}
    missing = absent(ids, rows)
    if missing:
        raise NotFound(f"Budgets not found: {', '.join(missing)}", param="budgets")
    return jsonify([budget_row(rows[budget_id]) for budget_id in dict.fromkeys(ids)])


@bp.post("/budget/update")
def budget_update() -> ResponseReturnValue:
    """Edit a budget row; every customer on it follows at once.

    A new ``budget_duration`` reschedules the customers on the budget, those
    that follow it as the default end-user budget included, in the same
    transaction.
    """
    req = parse_body(BudgetUpdate)
    budget = find_row(Budget, req.budget_id, "budget_id")
    changes = req.given("budget_id")
    now = clock.now()
    with database.atomic():
        Budget.update(updated_at=now, **changes).where(
            Budget.budget_id == budget.budget_id
        ).execute()
        duration = changes.get("budget_duration", budget.budget_duration)
        if duration != budget.budget_duration:
            customer_budgets.reschedule_customers(budget.budget_id, _default_id(), duration, now)
    return jsonify(budget_row(Budget.get_by_id(budget.budget_id)))


@bp.post("/budget/delete")
def budget_delete() -> ResponseReturnValue:
    budget_id = parse_body(BudgetDelete).id
    customer_budgets.refuse_deleting_the_default(budget_id, _default_id())
    with database.atomic():
        budget = find_row(Budget, budget_id, "id")
        customer_budgets.refuse_deleting_a_used_budget(budget_id)
        Budget.delete().where(Budget.budget_id == budget_id).execute()
    return jsonify(budget_row(budget))


@bp.get("/budget/list")
def budget_list() -> ResponseReturnValue:
    rows = Budget.select().order_by(Budget.created_at, Budget.budget_id)
    return jsonify([budget_row(budget) for budget in rows])
