"""Tables owned by the core: keys, users, teams, customers, budgets, spend.

Times are UTC epoch seconds (float) on both backends: comparisons in SQL
(``budget_reset_at <= now``) stay exact and backend-independent. Money is
US dollars as a double.
"""

from __future__ import annotations

from typing import Any, ClassVar

import peewee

from proxy.storage import clock, stripes
from proxy.storage.db import BaseModel, JSONField


def now() -> float:
    """Creation and update times come from the database's clock (see proxy.storage.clock)."""
    return clock.now()


class StripedSpend:
    """A key, user, team or customer: its spend is its row's ``spend`` plus its
    stripes (:mod:`proxy.storage.stripes`).

    Every read through the model without a column list (``select()``,
    ``get``, ``get_or_none``, ``get_by_id``) answers the whole counter as
    ``spend``; :meth:`total_spend` is that expression, for sorting and for
    reads of chosen columns. Writes to ``spend`` write the base alone.
    """

    spend_kind: ClassVar[str]

    @classmethod
    def total_spend(cls) -> peewee.ColumnBase:
        model: Any = cls
        before, after = stripes.stripes_parts(cls.spend_kind)
        stripe_sum = peewee.NodeList(
            (peewee.SQL(before), model._meta.primary_key, peewee.SQL(after))
        )
        return peewee.NodeList((model.spend, peewee.SQL("+"), stripe_sum), parens=True)

    @classmethod
    def select(cls, *fields: Any) -> Any:
        model: Any = cls
        if fields:
            return super().select(*fields)  # type: ignore[misc]
        columns = [
            cls.total_spend().alias("spend") if field.name == "spend" else field
            for field in model._meta.sorted_fields
        ]
        return peewee.ModelSelect(model, columns, is_default=True)


class Budget(BaseModel):
    """A budget row: a pricing tier shared by customers, or a customer's own."""

    budget_id = peewee.CharField(primary_key=True, max_length=255)
    max_budget = peewee.DoubleField(null=True)
    soft_budget = peewee.DoubleField(null=True)
    max_parallel_requests = peewee.IntegerField(null=True)
    tpm_limit = peewee.BigIntegerField(null=True)
    rpm_limit = peewee.BigIntegerField(null=True)
    budget_duration = peewee.CharField(null=True, max_length=32)
    created_at = peewee.DoubleField(default=now)
    updated_at = peewee.DoubleField(default=now)


class Team(StripedSpend, BaseModel):
    """A team: its spend covers every key with its ``team_id`` (and keys of users
    in it without one); its budget and limits are checked by ``team_budget``."""

    spend_kind = "team"

    team_id = peewee.CharField(primary_key=True, max_length=255)
    team_alias = peewee.CharField(null=True, max_length=255)
    spend = peewee.DoubleField(default=0.0)
    created_at = peewee.DoubleField(default=now)
    max_budget = peewee.DoubleField(null=True)
    budget_duration = peewee.CharField(null=True, max_length=32)
    budget_reset_at = peewee.DoubleField(null=True)
    max_parallel_requests = peewee.IntegerField(null=True)
    tpm_limit = peewee.BigIntegerField(null=True)
    rpm_limit = peewee.BigIntegerField(null=True)
    # Nullable (NULL reads as empty / not blocked): the spend ledger inserts a bare
    # team row with raw SQL when a key names a team nobody created.
    models = JSONField(null=True, default=list)
    # LiteLLM's members_with_roles: [{"user_id": ..., "user_email": ..., "role": "admin"|"user"}]
    members_with_roles = JSONField(null=True, default=list)
    metadata = JSONField(null=True, default=dict)
    blocked = peewee.BooleanField(null=True, default=False)
    updated_at = peewee.DoubleField(null=True)  # set by /team/new and every change after


class User(StripedSpend, BaseModel):
    """An internal user: its budget and limits cover all of its keys."""

    spend_kind = "user"

    user_id = peewee.CharField(primary_key=True, max_length=255)
    user_email = peewee.CharField(null=True, max_length=255)
    team_id = peewee.CharField(null=True, max_length=255)
    models = JSONField(default=list)
    max_budget = peewee.DoubleField(null=True)
    spend = peewee.DoubleField(default=0.0)
    budget_duration = peewee.CharField(null=True, max_length=32)
    budget_reset_at = peewee.DoubleField(null=True)
    max_parallel_requests = peewee.IntegerField(null=True)
    tpm_limit = peewee.BigIntegerField(null=True)
    rpm_limit = peewee.BigIntegerField(null=True)
    metadata = JSONField(default=dict)
    created_at = peewee.DoubleField(default=now)
    # Every call with one of the user's keys is refused (migration m0004).
    blocked = peewee.BooleanField(default=False)


class Key(StripedSpend, BaseModel):
    """A virtual key. Only the SHA-256 of the secret is stored (``token``)."""

    spend_kind = "key"

    token = peewee.CharField(primary_key=True, max_length=64)
    key_name = peewee.CharField(max_length=32)  # "sk-...abcd", for display
    key_alias = peewee.CharField(null=True, max_length=255)
    user_id = peewee.CharField(null=True, max_length=255, index=True)
    team_id = peewee.CharField(null=True, max_length=255)
    models = JSONField(default=list)
    max_budget = peewee.DoubleField(null=True)
    soft_budget = peewee.DoubleField(null=True)
    spend = peewee.DoubleField(default=0.0)
    budget_duration = peewee.CharField(null=True, max_length=32)
    budget_reset_at = peewee.DoubleField(null=True)
    expires = peewee.DoubleField(null=True)
    max_parallel_requests = peewee.IntegerField(null=True)
    tpm_limit = peewee.BigIntegerField(null=True)
    rpm_limit = peewee.BigIntegerField(null=True)
    metadata = JSONField(default=dict)
    blocked = peewee.BooleanField(default=False)
    created_at = peewee.DoubleField(default=now)
    # The hash before the last /key/regenerate: calls in flight then settle on it.
    previous_token = peewee.CharField(null=True, max_length=64, index=True)


class Customer(StripedSpend, BaseModel):
    """An end user ("customer"): the ``user`` a client passes on a call."""

    spend_kind = "customer"

    user_id = peewee.CharField(primary_key=True, max_length=255)
    # Not named "alias": that would shadow peewee's Model.alias().
    customer_alias = peewee.CharField(column_name="alias", null=True, max_length=255)
    spend = peewee.DoubleField(default=0.0)
    blocked = peewee.BooleanField(default=False)
    budget_id = peewee.CharField(null=True, max_length=255, index=True)
    allowed_model_region = peewee.CharField(null=True, max_length=32)
    default_model = peewee.CharField(null=True, max_length=255)
    budget_reset_at = peewee.DoubleField(null=True)
    created_at = peewee.DoubleField(default=now)


class ProxySpend(BaseModel):
    """The proxy-wide counter: a single row with id 1."""

    id = peewee.IntegerField(primary_key=True)
    spend = peewee.DoubleField(default=0.0)
    budget_reset_at = peewee.DoubleField(null=True)
    created_at = peewee.DoubleField(default=now)


class SpendStripe(BaseModel):
    """One stripe of a key's, user's, team's or customer's spend (migration m0011,
    :mod:`proxy.storage.stripes`)."""

    kind = peewee.CharField(max_length=16)
    entity_id = peewee.CharField(max_length=255)
    stripe = peewee.IntegerField()
    spend = peewee.DoubleField(default=0.0)

    class Meta:
        table_name = "spend_stripe"
        primary_key = peewee.CompositeKey("kind", "entity_id", "stripe")


class SpendLog(BaseModel):
    request_id = peewee.CharField(primary_key=True, max_length=64)
    call_type = peewee.CharField(max_length=32)
    api_key = peewee.CharField(null=True, max_length=64, index=True)
    user_id = peewee.CharField(null=True, max_length=255, index=True)
    team_id = peewee.CharField(null=True, max_length=255)
    end_user = peewee.CharField(null=True, max_length=255, index=True)
    model = peewee.CharField(max_length=255)
    model_group = peewee.CharField(max_length=255)
    # 64-bit (migration m0005): whatever an upstream reports fits.
    prompt_tokens = peewee.BigIntegerField(default=0)
    completion_tokens = peewee.BigIntegerField(default=0)
    total_tokens = peewee.BigIntegerField(default=0)
    spend = peewee.DoubleField(default=0.0)
    start_time = peewee.DoubleField(index=True)
    end_time = peewee.DoubleField()
    status = peewee.CharField(max_length=32, default="success")
    metadata = JSONField(default=dict)
    # USD the upstream billed beyond the call's worst case (migration m0007): 0 when the
    # bound held. Indexed for /metrics, which sums the few rows above 0.
    overrun = peewee.DoubleField(default=0.0, index=True)


class UnpricedModel(BaseModel):
    """Calls charged 0 because their model has no price, per model group (migration m0002).

    Counted in each call's spend transaction, so the numbers hold across workers
    and hosts; ``/metrics`` exports them.
    """

    model_group = peewee.CharField(primary_key=True, max_length=255)
    upstream_model = peewee.CharField(max_length=255)
    # 64-bit: a free model's token count outgrows a 32-bit counter.
    calls = peewee.BigIntegerField(default=0)
    tokens = peewee.BigIntegerField(default=0)
    first_seen = peewee.DoubleField(default=now)
    last_seen = peewee.DoubleField(default=now)


CORE_MODELS: list[type[BaseModel]] = [
    Budget, Team, User, Key, Customer, ProxySpend, SpendStripe, SpendLog
]  # fmt: skip
