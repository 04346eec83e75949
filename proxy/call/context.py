"""The per-call object that the core fills and every hook reads (and ``Usage``,
re-exported from :mod:`proxy.call.usage`)."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from proxy.call.auth import hash_key
from proxy.call.usage import Usage
from proxy.storage import clock

__all__ = ["CallContext", "CallRead", "ReadFragment", "Refusal", "Usage"]

if TYPE_CHECKING:
    from proxy.call.alerts import Alert
    from proxy.call.bound import WorstCase
    from proxy.config import Config
    from proxy.storage.models import Budget, Customer, Key, ProxySpend, Team, User
    from proxy.upstream.deployments import Deployment


@functools.lru_cache(maxsize=4)
def _master_key_hash(master_key: str) -> str:
    return hash_key(master_key)


@dataclass
class Refusal:
    """A plugin's answer that the call may not go upstream."""

    status: int
    message: str
    type: str = "auth_error"
    code: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


def new_request_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


@dataclass(frozen=True)
class CallRead:
    """What is known of a metered call when its one read is sent: before
    authentication has finished and before any check (no :class:`CallContext` yet).

    ``request_id`` becomes the call's ``ctx.request_id``; ``model_group`` is
    the model the client asked for (it exists), ``max_upstream_seconds`` what
    ``ctx.max_upstream_seconds`` will be.
    """

    request_id: str
    config: Config
    model_group: str
    max_upstream_seconds: float
    end_user_id: str | None


@dataclass(frozen=True)
class ReadFragment:
    """A plugin's statement, run inside the call's one read (PostgreSQL only;
    see ``call_read_fragment`` in :mod:`proxy.hookspecs` for the contract).

    ``ctes``: ``name AS (...)`` clauses (comma-separated, writes allowed) that
    read the one-row CTE ``call_read``; name them after the plugin, they share
    one ``WITH`` with other plugins'. ``result``: the CTE whose rows come back,
    as a list of dicts, in ``ctx.read_results[name]``. The SQL is fixed per
    app (prepared once per connection); ``params(read)`` gives each call's
    values for its ``%s`` placeholders, or ``None`` to leave the fragment out
    of this call's read. ``undo(read, rows)``: give back what the fragment
    took, for a call whose result the plugin never took from
    ``ctx.read_results`` (refused before its check ran, or by authentication).
    """

    name: str
    ctes: str
    result: str
    params: Callable[[CallRead], Sequence[Any] | None]
    undo: Callable[[CallRead, list[dict[str, Any]]], None]


@dataclass
class CallContext:
    """Everything known about one LLM call, loaded before any plugin runs.

    ``key``/``user`` are ``None`` for calls made with the master key; ``team``
    is the row of ``team_id`` (the key's team, else its user's), if it exists.
    ``customer`` is ``None`` when no end user was named or the end user is
    new (it is upserted when spend is recorded). ``end_user_budget`` is the
    budget row that governs the end user: its own, else the
    ``max_end_user_budget_id`` row (``end_user_budget_is_default`` says which).
    """

    config: Config
    call_type: str  # "chat" or "embeddings"
    deployment: Deployment
    body: dict[str, Any]
    stream: bool = False
    is_master: bool = False
    key: Key | None = None
    user: User | None = None
    team_id: str | None = None
    team: Team | None = None
    end_user_id: str | None = None
    customer: Customer | None = None
    end_user_budget: Budget | None = None
    end_user_budget_is_default: bool = False
    proxy_spend: ProxySpend | None = None
    request_id: str = field(default_factory=new_request_id)
    # The database's clock (proxy.storage.clock), as every time that several hosts compare.
    start_time: float = field(default_factory=clock.now)
    # The call's worst case (proxy.call.bound) and its dollars: what strict mode reserves.
    worst_case: WorstCase | None = None
    estimated_cost: float = 0.0
    # Input the upstream adds from stored state (a Responses ``previous_response_id``'s
    # conversation): billed as input, so part of the call's worst case.
    carried_input_tokens: int = 0
    usage: Usage | None = None
    cost: float = 0.0
    # New spend totals after this call's increments ("key", "user", "team",
    # "customer", "proxy"), read back in the spend transaction.
    spend_after: dict[str, float | None] = field(default_factory=dict)
    response_headers: dict[str, str] = field(default_factory=dict)
    alerts: list[Alert] = field(default_factory=list)
    # Scratch space for plugins, keyed by plugin name (what they took, etc.).
    plugin_state: dict[str, Any] = field(default_factory=dict)
    # Rows of the plugins' fragments run in the call's one read, by fragment name
    # (proxy.hookspecs.call_read_fragment): a plugin takes (pops) its own; what is
    # left when the call ends is given back by the fragment's ``undo``.
    read_results: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # What the read that ran the fragments knew of the call (None: no fragment ran).
    read: CallRead | None = None
    # The model name the client asked for; ``deployment`` is the one answering
    # (another model's after a fallback), and ``reachable`` every deployment the
    # router may send this call to, fallbacks included.
    model_group: str = ""
    reachable: list[Deployment] = field(default_factory=list)
    # How long the upstream part may take, retries and fallbacks included (each
    # attempt timing out): what leases and reservations must outlive.
    max_upstream_seconds: float = 0.0

    def __post_init__(self) -> None:
        if not self.model_group:
            self.model_group = self.deployment.model_name
        if not self.reachable:
            self.reachable = [self.deployment]
        if not self.max_upstream_seconds:
            self.max_upstream_seconds = float(self.deployment.timeout)

    @property
    def model(self) -> str:
        return self.model_group

    def now(self) -> float:
        """The time now by the database's clock, the one clock every host shares: for
        plugins deciding windows, expiries and periods (no round trip of its own)."""
        return clock.now()

    @property
    def key_hash(self) -> str | None:
        """The hashed key the call was made with, the master key's included
        (spend logs and alerts name it, as the LiteLLM proxy does)."""
        if self.key is not None:
            return self.key.token
        if self.is_master:
            return _master_key_hash(self.config.master_key)
        return None

    @property
    def user_id(self) -> str | None:
        if self.key is not None:
            return self.key.user_id
        return None
