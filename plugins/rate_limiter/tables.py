"""The rate limiter's own tables (made by its migrations, plugins/rate_limiter/migrations)."""

from __future__ import annotations

import peewee

from proxy.plugin_api import PluginModel


class RateLimitWindow(PluginModel):
    """One limited key, user or end user: its minute window and its open slots.

    ``kind`` is ``key``, ``user`` or ``end_user``; ``entity`` the key's hash,
    the user id or the end-user id. The limits in force at the last check are
    kept on the row so that one statement can compare every scope of a call
    against its own limits. ``admitted`` is the outcome of the last check
    (1 or 0), read back with ``RETURNING``.
    """

    kind = peewee.CharField(max_length=16)
    entity = peewee.CharField(max_length=255)
    window_start = peewee.DoubleField()
    requests = peewee.BigIntegerField(default=0)
    tokens = peewee.BigIntegerField(default=0)
    in_flight = peewee.IntegerField(default=0)
    rpm_limit = peewee.BigIntegerField(null=True)
    tpm_limit = peewee.BigIntegerField(null=True)
    parallel_limit = peewee.IntegerField(null=True)
    admitted = peewee.IntegerField(default=0)

    class Meta:
        table_name = "rate_limit_window"
        primary_key = peewee.CompositeKey("kind", "entity")


class RateLimitLease(PluginModel):
    """One parallel-request slot held by one call, until it ends or expires.

    The row is what lets a slot come back when the worker that held it was
    killed: ``in_flight`` on the window row counts the leases, and expired
    leases are swept (and their slots given back) when a call would
    otherwise be refused for want of a slot.
    """

    request_id = peewee.CharField(max_length=64)
    kind = peewee.CharField(max_length=16)
    entity = peewee.CharField(max_length=255)
    expires_at = peewee.DoubleField(index=True)

    class Meta:
        table_name = "rate_limit_lease"
        primary_key = peewee.CompositeKey("request_id", "kind")


class RateLimitSettled(PluginModel):
    """What one finished call gives back to one scope, until a check folds it in.

    ``tokens`` the call used, ``released`` the parallel slots it gave back
    (its lease rows, deleted in the same statement). On PostgreSQL a settle
    writes these instead of the window row, so settles never queue on a busy
    key's row lock; the scope's next check deletes them and adds them to its
    window (``plugins.rate_limiter.store``). SQLite has one writer at a time
    anyway: there a settle writes the window row itself.
    """

    request_id = peewee.CharField(max_length=64)
    kind = peewee.CharField(max_length=16)
    entity = peewee.CharField(max_length=255)
    settled_at = peewee.DoubleField()
    tokens = peewee.BigIntegerField()
    released = peewee.IntegerField()

    class Meta:
        table_name = "rate_limit_settled"
        primary_key = False  # found by (kind, entity) only: no other index to maintain
        indexes = ((("kind", "entity"), False),)


TABLES: list[type[PluginModel]] = [RateLimitWindow, RateLimitLease, RateLimitSettled]
