"""Admin API, customers (end users): /customer/* and its /end_user/* aliases (HTTP only).

Which budget row governs a customer (its own, a tier, the default) and how an
update moves it are the rules of :mod:`proxy.storage.customer_budgets`.
"""

from __future__ import annotations

import peewee
from flask import jsonify
from flask.typing import ResponseReturnValue

from proxy.api.admin.common import (
    absent,
    bp,
    column_values,
    find_row,
    parse_body,
    parse_query,
)
from proxy.api.admin.listing import apply_listing
from proxy.api.admin.schemas import (
    BUDGET_FIELDS,
    CustomerInfoQuery,
    CustomerListQuery,
    CustomerNew,
    CustomerUpdate,
    UserIds,
)
from proxy.api.admin.serializers import customer_info
from proxy.api.common import services
from proxy.errors import BadRequest, Conflict, NotFound
from proxy.storage import clock, counters, customer_budgets
from proxy.storage.db import database
from proxy.storage.models import Budget, Customer
from proxy.storage.resets import scheduled_reset

CUSTOMER_COLUMNS = ("alias", "blocked", "budget_id", "allowed_model_region", "default_model")


def _default_budget() -> Budget | None:
    """The ``max_end_user_budget_id`` row that customers without a budget follow."""
    return customer_budgets.default_budget(
        services().config.litellm_settings.max_end_user_budget_id
    )


def _check_default_model(model: str | None) -> None:
    if model and services().models.get(model) is None:
        raise BadRequest(
            f"Invalid value for 'default_model': no model named {model!r} is configured",
            param="default_model",
        )


def _own_budget_conflict() -> BadRequest:
    return BadRequest(
        "Give either 'budget_id' (a shared budget) or the customer's own budget values "
        f"({', '.join(BUDGET_FIELDS)}), not both",
        param="budget_id",
    )


@bp.post("/customer/new")
@bp.post("/end_user/new")
def customer_new() -> ResponseReturnValue:
    req = parse_body(CustomerNew)
    own = {k: v for k, v in req.given().items() if k in BUDGET_FIELDS and v is not None}
    if own and req.budget_id:
        raise _own_budget_conflict()
    tier = customer_budgets.shared_budget(req.budget_id, req.user_id) if req.budget_id else None
    _check_default_model(req.default_model)
    default = _default_budget()
    now = clock.now()
    try:
        with database.atomic():
            budget = customer_budgets.create_own_budget(own, now) if own else tier
            budget_id = budget.budget_id if budget else None
            period = customer_budgets.period(budget_id, budget, default)
            customer = Customer.create(
                user_id=req.user_id,
                customer_alias=req.alias,
                blocked=req.blocked,
                budget_id=budget_id,
                allowed_model_region=req.allowed_model_region,
                default_model=req.default_model,
                budget_reset_at=scheduled_reset(now, period, now),
                created_at=now,
            )
    except peewee.IntegrityError:
        raise Conflict(
            f"Customer already exists: user_id={req.user_id}; use /customer/update",
            param="user_id",
        ) from None
    return jsonify(customer_info(customer, budget))


@bp.get("/customer/info")
@bp.get("/end_user/info")
def customer_info_route() -> ResponseReturnValue:
    customer = find_row(Customer, parse_query(CustomerInfoQuery).end_user_id, "end_user_id")
    budget = customer_budgets.budget_of(customer)
    customer = customer_budgets.fresh(customer, budget, _default_budget())
    return jsonify(customer_info(customer, budget))


@bp.post("/customer/update")
@bp.post("/end_user/update")
def customer_update() -> ResponseReturnValue:
    req = parse_body(CustomerUpdate)
    customer = find_row(Customer, req.user_id, "user_id")
    given = req.given("user_id")
    if "budget_id" in given and any(k in given for k in BUDGET_FIELDS):
        raise _own_budget_conflict()
    if given.get("budget_id"):
        customer_budgets.shared_budget(given["budget_id"], customer.user_id)
    _check_default_model(given.get("default_model"))
    now = clock.now()
    default = _default_budget()
    old_budget = customer_budgets.budget_of(customer)
    old_period = customer_budgets.period(customer.budget_id, old_budget, default)
    own = {k: v for k, v in given.items() if k in BUDGET_FIELDS}
    with database.atomic():
        changes = column_values(given, CUSTOMER_COLUMNS)
        if "alias" in changes:
            changes["customer_alias"] = changes.pop("alias")
        changes["budget_id"] = customer_budgets.next_budget_id(
            customer, own, now, move="budget_id" in given, target=given.get("budget_id")
        )
        new_budget = Budget.get_or_none(Budget.budget_id == changes["budget_id"])
        new_period = customer_budgets.period(changes["budget_id"], new_budget, default)
        if new_period != old_period:
            # A new period restarts the schedule from creation, without a reset now.
            changes["budget_reset_at"] = scheduled_reset(customer.created_at, new_period, now)
        Customer.update(**changes).where(Customer.user_id == customer.user_id).execute()
    customer = customer_budgets.fresh(Customer.get_by_id(customer.user_id), new_budget, default)
    return jsonify(customer_info(customer, new_budget))


def _existing_customers(ids: list[str]) -> list[Customer]:
    rows = list(Customer.select().where(Customer.user_id.in_(ids)))
    missing = absent(ids, (row.user_id for row in rows))
    if missing:
        raise NotFound(f"Customers not found: {', '.join(missing)}", param="user_ids")
    return rows


@bp.post("/customer/delete")
@bp.post("/end_user/delete")
def customer_delete() -> ResponseReturnValue:
    """Delete customers with their own budget rows; shared tiers stay."""
    ids = parse_body(UserIds).user_ids
    with database.atomic():
        rows = _existing_customers(ids)
        Customer.delete().where(Customer.user_id.in_(ids)).execute()
        counters.forget_entity_stripes("customer", ids)
        customer_budgets.delete_own_budgets(rows)
    return jsonify({"deleted_customers": ids})


@bp.post("/customer/block")
@bp.post("/end_user/block")
def customer_block() -> ResponseReturnValue:
    """Block end users, creating the unknown ones: an operator can block an id
    before it ever calls."""
    ids = list(dict.fromkeys(parse_body(UserIds).user_ids))
    now = clock.now()
    with database.atomic():
        rows = [{"user_id": user_id, "blocked": True, "created_at": now} for user_id in ids]
        Customer.insert_many(rows).on_conflict(
            conflict_target=[Customer.user_id], update={Customer.blocked: True}
        ).execute()
    return jsonify({"blocked_users": ids})


@bp.post("/customer/unblock")
@bp.post("/end_user/unblock")
def customer_unblock() -> ResponseReturnValue:
    ids = parse_body(UserIds).user_ids
    with database.atomic():
        _existing_customers(ids)
        Customer.update(blocked=False).where(Customer.user_id.in_(ids)).execute()
    return jsonify({"unblocked_users": ids})


@bp.get("/customer/list")
@bp.get("/end_user/list")
def customer_list() -> ResponseReturnValue:
    """Every customer, oldest first (LiteLLM's answer); with ``page_size``, one page
    of them and their number in ``x-total-count``; ``search``, ``sort``, ``order``
    as the other lists."""
    q = parse_query(CustomerListQuery)
    query = apply_listing(
        Customer.select(),
        q,
        searched=(Customer.user_id, Customer.customer_alias),
        sortable={"created_at": Customer.created_at, "spend": Customer.total_spend(),
                  "user_id": Customer.user_id, "alias": Customer.customer_alias,
                  "budget_id": Customer.budget_id},
        default=(Customer.created_at, Customer.user_id),
        tie=Customer.user_id,
    )  # fmt: skip
    total = None
    if q.page_size is not None:
        total = query.order_by().count()
        query = query.paginate(q.page, q.page_size)
    customers = list(query)
    budget_rows = Budget.select()
    if total is not None:  # a page: only its customers' budget rows
        wanted = list({c.budget_id for c in customers if c.budget_id})
        budget_rows = budget_rows.where(Budget.budget_id.in_(wanted))
    budgets = {b.budget_id: b for b in budget_rows}
    default = _default_budget()
    answer = []
    for customer in customers:
        budget = budgets.get(customer.budget_id) if customer.budget_id else None
        answer.append(customer_info(customer_budgets.fresh(customer, budget, default), budget))
    resp = jsonify(answer)
    if total is not None:
        resp.headers["x-total-count"] = str(total)
    return resp
