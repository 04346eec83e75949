"""Which rate limits govern a call, and for how long a parallel slot is leased.

A call is limited by its key, the key's user, its team and its end user (through the
end user's budget row, which may be the ``max_end_user_budget_id`` default).
Each of them with at least one of ``rpm_limit``, ``tpm_limit`` or
``max_parallel_requests`` set is a :class:`Scope` with its own counters;
a call must fit in every one of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from proxy.plugin_api import Config, ConfigError

if TYPE_CHECKING:
    from proxy.plugin_api import CallContext, CallRead, Deployment

PLUGIN_NAME = "rate_limiter"

# Length of the rate window, in seconds: the limits are per minute.
WINDOW_SECONDS = 60

# Added to the deployment's timeout to make the default lease: a call that
# cannot outlive its upstream timeout never loses its slot while it runs.
LEASE_MARGIN_SECONDS = 60.0

# Kinds in the order a refusal names them when several are exceeded.
KIND_ORDER = ("key", "user", "team", "end_user")
# A deployment's own rpm/tpm (the router's): counted per attempt, never refused to a client.
DEPLOYMENT_KIND = "deployment"


class Scope(NamedTuple):
    """One entity whose limits apply to the call (a named tuple: several are built
    per call, and a frozen dataclass costs a ``setattr`` per field to build)."""

    kind: str  # "key", "user", "team", "end_user" or "deployment"
    entity: str  # the window row's id: key hash, user id, team id, end-user id or deployment id
    label: str  # how a refusal names it: key alias or display name, never the secret
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    max_parallel_requests: int | None = None

    @property
    def row_id(self) -> tuple[str, str]:
        return (self.kind, self.entity)


def _limit(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    if type(value) is int:  # what the rows hold: no conversion to try
        return value if value > 0 else 0
    try:
        return max(int(value), 0)
    except (TypeError, ValueError):
        return None


def _scope(kind: str, entity: str, label: str, row: Any) -> Scope | None:
    rpm = _limit(getattr(row, "rpm_limit", None))
    tpm = _limit(getattr(row, "tpm_limit", None))
    parallel = _limit(getattr(row, "max_parallel_requests", None))
    if rpm is None and tpm is None and parallel is None:
        return None
    return Scope(kind, entity, label, rpm, tpm, parallel)


def key_label(key: Any) -> str:
    """A key as refusals name it: its alias, else its display name (``sk-...abcd``)."""
    return key.key_alias or key.key_name or f"{key.token[:12]}..."


def scopes_for(ctx: CallContext) -> list[Scope]:
    """Every scope with a limit that governs ``ctx``, in :data:`KIND_ORDER`."""
    found: list[Scope | None] = []
    if ctx.key is not None:
        found.append(_scope("key", ctx.key.token, key_label(ctx.key), ctx.key))
    if ctx.user is not None:
        found.append(_scope("user", ctx.user.user_id, ctx.user.user_id, ctx.user))
    if ctx.team is not None:
        found.append(_scope("team", ctx.team.team_id, ctx.team.team_id, ctx.team))
    if ctx.end_user_id and ctx.end_user_budget is not None:
        found.append(_scope("end_user", ctx.end_user_id, ctx.end_user_id, ctx.end_user_budget))
    return [scope for scope in found if scope is not None]


def deployment_scope(deployment: Deployment) -> Scope | None:
    """The window of a deployment with ``rpm``/``tpm`` limits, or ranked by its counts
    (``usage-based-routing``), keyed by its id."""
    if not deployment.counted:
        return None
    return Scope(
        DEPLOYMENT_KIND, deployment.id, deployment.model_name, deployment.rpm, deployment.tpm
    )


def configured_lease_seconds(config: Config) -> float | None:
    """``plugins.settings.rate_limiter.lease_seconds``, validated; None if unset."""
    value = config.plugin_settings(PLUGIN_NAME).get("lease_seconds")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(
            f"plugins.settings.{PLUGIN_NAME}.lease_seconds: must be a positive number of seconds"
        )
    return float(value)


def lease_seconds(ctx: CallContext | CallRead) -> float:
    """How long a parallel slot taken for ``ctx`` stays held if nobody gives it back.

    The setting if given, else the longest the upstream part may take (every
    attempt, retries and fallbacks included, timing out) plus
    :data:`LEASE_MARGIN_SECONDS`: a worker killed mid-call frees its slot at
    most that long after the call began, and a live non-streaming call can
    never lose its slot, because it ends (or times out) before the lease does.
    """
    configured = configured_lease_seconds(ctx.config)
    if configured is not None:
        return configured
    return ctx.max_upstream_seconds + LEASE_MARGIN_SECONDS
