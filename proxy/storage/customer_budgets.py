"""Which budget row governs a customer (end user), and how admin changes move it.

A customer is on one of three kinds of budget:

- its **own** budget: a ``budget`` row named ``customer-budget-<hex>``
  (:data:`OWN_BUDGET_PREFIX`), made from the budget values given to
  ``/customer/new`` or ``/customer/update``, edited in place, deleted with
  its customer; ``/budget/new`` refuses the prefix, so the name alone tells
  an own budget from a shared one;
- a **tier**: a shared row made with ``/budget/new`` (``budget_id``); it is
  never deleted while a customer is on it;
- none: the customer follows the **default** end-user budget
  (``litellm_settings.max_end_user_budget_id``), if one is configured.

The governing row's ``budget_duration`` is the customer's reset period. The
admin views (:mod:`proxy.api.admin.customers`, :mod:`proxy.api.admin.budgets`)
call these functions and keep to HTTP; every function that writes runs in the
caller's transaction.
"""

from __future__ import annotations

import uuid
from typing import Any

import peewee

from proxy.errors import BadRequest
from proxy.storage.models import Budget, Customer
from proxy.storage.resets import apply_due_resets, reschedule

OWN_BUDGET_PREFIX = "customer-budget-"


def is_own_budget(budget_id: str | None) -> bool:
    return bool(budget_id) and str(budget_id).startswith(OWN_BUDGET_PREFIX)


def budget_of(customer: Customer) -> Budget | None:
    """The budget row the customer is on (own or tier), if any."""
    if not customer.budget_id:
        return None
    return Budget.get_or_none(Budget.budget_id == customer.budget_id)


def default_budget(default_id: str | None) -> Budget | None:
    """The default end-user budget row that customers without a budget follow."""
    return Budget.get_or_none(Budget.budget_id == default_id) if default_id else None


def period(budget_id: str | None, budget: Budget | None, default: Budget | None) -> str | None:
    """The reset period of a customer: its budget row's, else the default budget's."""
    governing = budget if budget_id else default
    return governing.budget_duration if governing else None


def fresh(customer: Customer, budget: Budget | None, default: Budget | None) -> Customer:
    """The customer with its due budget reset applied."""
    apply_due_resets((customer, period(customer.budget_id, budget, default)))
    return customer


def shared_budget(budget_id: str, customer_id: str) -> Budget:
    """The tier a customer is being put on; 400 naming it if unusable (unknown, or
    another customer's own budget)."""
    budget = Budget.get_or_none(Budget.budget_id == budget_id)
    if budget is None:
        raise BadRequest(f"Budget not found: budget_id={budget_id}", param="budget_id")
    if is_own_budget(budget_id):
        owner = Customer.get_or_none(Customer.budget_id == budget_id)
        if owner is None or owner.user_id != customer_id:
            raise BadRequest(
                f"budget_id={budget_id} is another customer's own budget; "
                "assign a shared budget made with /budget/new",
                param="budget_id",
            )
    return budget


def create_own_budget(values: dict[str, Any], now: float) -> Budget:
    budget_id = f"{OWN_BUDGET_PREFIX}{uuid.uuid4().hex}"
    return Budget.create(budget_id=budget_id, created_at=now, updated_at=now, **values)


def next_budget_id(
    customer: Customer, own: dict[str, Any], now: float, *, move: bool, target: str | None
) -> str | None:
    """Apply a customer update's budget part; return the budget id it ends on.

    ``move`` (``budget_id`` given) puts the customer on the tier ``target`` (or
    on none with ``None``); ``own`` budget values edit the customer's own
    budget in place, or give it one (replacing a tier) if it has none.
    """
    current = customer.budget_id
    if not move:
        if not own:
            return current
        if is_own_budget(current):
            Budget.update(updated_at=now, **own).where(Budget.budget_id == current).execute()
            return current
        values = {k: v for k, v in own.items() if v is not None}
        if not values:
            # Only nulls: nothing to limit, so no own budget (it would hide the default).
            return current
        target = create_own_budget(values, now).budget_id
    if is_own_budget(current) and target != current:
        Budget.delete().where(Budget.budget_id == current).execute()
    return target


def delete_own_budgets(customers: list[Customer]) -> None:
    """Delete the own budget rows of customers being deleted; tiers stay."""
    own = [row.budget_id for row in customers if is_own_budget(row.budget_id)]
    if own:
        Budget.delete().where(Budget.budget_id.in_(own)).execute()


def refuse_reserved_id(budget_id: str) -> None:
    """``/budget/new`` may not make a row that would pass for a customer's own budget."""
    if is_own_budget(budget_id):
        raise BadRequest(
            f"Invalid value for 'budget_id': the prefix {OWN_BUDGET_PREFIX!r} is reserved "
            "for customers' own budgets",
            param="budget_id",
        )


def customers_on(budget_id: str, default_id: str | None) -> peewee.Expression:
    """The customers whose period is ``budget_id``'s (see :func:`period`)."""
    on = Customer.budget_id == budget_id
    if budget_id == default_id:
        on |= Customer.budget_id.is_null()
    return on


def reschedule_customers(
    budget_id: str, default_id: str | None, duration: str | None, now: float
) -> int:
    """Put the customers on ``budget_id`` (the default's followers included) on its new period."""
    return reschedule(Customer, customers_on(budget_id, default_id), duration, now)


def refuse_deleting_the_default(budget_id: str, default_id: str | None) -> None:
    """The default end-user budget is deleted only after the config stops naming it."""
    if budget_id == default_id:
        raise BadRequest(
            f"Budget {budget_id} is the default end-user budget "
            "(litellm_settings.max_end_user_budget_id); change the config first",
            param="id",
        )


def refuse_deleting_a_used_budget(budget_id: str) -> None:
    """A budget is deleted only when no customer is on it."""
    users = Customer.select(Customer.user_id).where(Customer.budget_id == budget_id)
    names = [row.user_id for row in users.order_by(Customer.user_id).limit(11)]
    if names:
        shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
        raise BadRequest(
            f"Budget {budget_id} is used by customers: {shown}; move them to another budget first",
            param="id",
        )
