"""Which deployment answers a call: load sharing, retries, fallbacks and cooldowns.

A model name is a model group: every ``model_list`` entry with that name is
one of its deployments. For each attempt the routing strategy picks one of
the group's deployments that is not cooling down and fits its ``rpm``/``tpm``
(counted by the ``deployment_admit`` hook, across workers and hosts):

- ``simple-shuffle`` (default): in proportion to ``weight``, else ``rpm``,
  else ``tpm``, else equally (a weighted rotation from a random start);
- ``least-busy``: the fewest calls in flight in this process;
- ``usage-based-routing`` (``-v2``): the fewest tokens (then requests) this
  minute, from the shared counters (``deployment_usage`` hook).

A failed attempt is retried up to ``num_retries`` times, on deployments not
yet tried first, when the upstream is at fault: 429, 408, 5xx, a timeout or
a refused connection; a 401/403/404 (the deployment's key or name is wrong)
moves to another deployment but is not retried on the same one. An error
the client caused (any other 4xx) is relayed at once. Each failure counts
against the deployment; more than ``allowed_fails`` in a minute, or one 429,
takes it out of rotation for ``cooldown_time`` seconds on every worker and
host (the ``deployment_health`` table) unless it is its group's only one.
When the group is exhausted, the call moves to the model names of
``fallbacks`` (``context_window_fallbacks`` / ``content_policy_fallbacks``
for those errors first), each with its own retries; fallbacks do not chain.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from typing import TypeVar

import peewee
import pluggy

from proxy.config import ConfigError, RouterSettings
from proxy.errors import ProxyError
from proxy.storage import clock, cooldowns
from proxy.storage.db import database
from proxy.upstream.deployments import Deployment, ModelTable

log = logging.getLogger("comptroller.router")

T = TypeVar("T")

# Upstream statuses that say "this deployment, not this request": try another one.
_DEPLOYMENT_FAULTS = frozenset({401, 403, 404})
_CONTEXT_WINDOW_MARKS = (
    "context_length_exceeded",
    "context length",
    "context window",
    "maximum context",
    "too many tokens",
    "prompt is too long",
)
_CONTENT_POLICY_MARKS = ("content_policy", "content_filter", "content management policy")


def _on_connection(run: Callable[[], T]) -> T:
    """Run a hook that reads or writes shared counters; no connection is left open
    while the upstream answers (the gateway closed it for that reason)."""
    opened = database.connect(reuse_if_open=True)
    try:
        return run()
    finally:
        if opened:
            database.close()


class NoDeploymentAvailable(ProxyError):
    """Every deployment of a group is cooling down or at its rpm/tpm limit."""

    status = 429
    type = "rate_limit_error"


def is_transient(err: ProxyError) -> bool:
    """An upstream failure worth trying again: rate limit, timeout, 5xx, no connection."""
    return err.status in (408, 429) or err.status >= 500


def _text(err: ProxyError) -> str:
    return f"{err.code or ''} {err.type or ''} {err.message}".lower()


def fallback_kind(err: ProxyError) -> str | None:
    """Which fallback list applies after ``err`` (``None``: the client caused it)."""
    text = _text(err)
    if err.status in (400, 413) and any(mark in text for mark in _CONTEXT_WINDOW_MARKS):
        return "context_window_fallbacks"
    if err.status == 400 and any(mark in text for mark in _CONTENT_POLICY_MARKS):
        return "content_policy_fallbacks"
    if is_transient(err) or err.status in _DEPLOYMENT_FAULTS:
        return "fallbacks"
    return None


class Router:
    """One per process; its only state is the in-flight counts for ``least-busy`` and
    the rotation's credits (what each model reaches is worked out once, from the config)."""

    def __init__(self, table: ModelTable, settings: RouterSettings, pm: pluggy.PluginManager):
        self.table = table
        self.settings = settings
        self.pm = pm
        self._lock = threading.Lock()
        self._in_flight: dict[str, int] = {}
        self._credit: dict[str, float] = {}
        limited = [dep for dep in table.deployments if dep.has_limits]
        if limited and not pm.hook.deployment_admit.get_hookimpls():
            raise ConfigError(
                f"model {limited[0].model_name} (deployment {limited[0].id}) sets rpm/tpm, "
                "which needs a plugin that keeps deployment limits (the builtin rate_limiter "
                "is disabled)"
            )
        # What a call to each model may reach, and for how long: fixed by the config,
        # and asked on every call (the read, the context), so worked out once.
        self._reach = {
            name: (tuple(self._reachable(name)), self._max_seconds(name)) for name in table.by_group
        }

    # --- what a call may reach ------------------------------------------------

    def fallback_models(self, model: str, kind: str | None = None) -> list[str]:
        """The model names ``model`` may fall back to, in order (one kind, or every kind)."""
        kinds = [kind] if kind else ["context_window_fallbacks", "content_policy_fallbacks"]
        names: list[str] = []
        for k in [*kinds, "fallbacks"]:
            names += [n for n in self.settings.fallbacks_for(k, model) if n not in names]
        return names

    def reachable(self, model: str) -> list[Deployment]:
        """Every deployment a call to ``model`` may be answered by, fallbacks included:
        budgets and strict reservations bound the call by the dearest of them."""
        known = self._reach.get(model)
        return list(known[0]) if known is not None else self._reachable(model)

    def max_seconds(self, model: str) -> float:
        """The longest the upstream part of a call to ``model`` may take: every attempt
        on it and on its fallbacks timing out (reservations and slots must outlive it)."""
        known = self._reach.get(model)
        return known[1] if known is not None else self._max_seconds(model)

    def _reachable(self, model: str) -> list[Deployment]:
        found = list(self.table.group(model))
        for name in self.fallback_models(model):
            found += self.table.group(name)
        return found

    def _max_seconds(self, model: str) -> float:
        total = 0.0
        for name in [model, *self.fallback_models(model)]:
            group = self.table.group(name)
            if group:
                total += (self.settings.retries + 1) * max(d.timeout for d in group)
        return total

    # --- choosing ---------------------------------------------------------------

    def _usage(self, deployments: list[Deployment]) -> dict[str, tuple[int, int]]:
        try:
            usage = _on_connection(
                lambda: self.pm.hook.deployment_usage(deployments=deployments, now=clock.now())
            )
            return usage or {}
        except peewee.DatabaseError:
            log.warning("deployment usage unreadable; routing without it", exc_info=True)
            return {}

    def pick(self, candidates: list[Deployment]) -> Deployment:
        """One deployment of ``candidates`` by the routing strategy."""
        if len(candidates) == 1:
            return candidates[0]
        strategy = self.settings.routing_strategy
        if strategy == "least-busy":
            with self._lock:
                counts = [self._in_flight.get(d.id, 0) for d in candidates]
            fewest = min(counts)
            return random.choice(
                [d for d, n in zip(candidates, counts, strict=True) if n == fewest]
            )
        if strategy.startswith("usage-based-routing"):
            usage = self._usage(candidates)
            ranked = [(usage.get(d.id, (0, 0))[::-1], d) for d in candidates]
            lowest = min(rank for rank, _ in ranked)
            return random.choice([d for rank, d in ranked if rank == lowest])
        return self._rotate(candidates)

    def _rotate(self, candidates: list[Deployment]) -> Deployment:
        """``simple-shuffle``: each deployment gets its share of the calls in proportion
        to its weight. A smooth weighted rotation (each pick adds every weight to its
        deployment's credit and takes the total from the one with the most credit),
        from a random start per process, so the shares hold over a handful of calls
        instead of only on average."""
        total = sum(d.share for d in candidates)
        with self._lock:
            credit = self._credit
            for dep in candidates:
                if dep.id not in credit:
                    credit[dep.id] = random.uniform(0, total)
                credit[dep.id] += dep.share
            chosen = max(candidates, key=lambda d: credit[d.id])
            credit[chosen.id] -= total
        return chosen

    def _cooled(self, deployments: list[Deployment], now: float) -> dict[str, float]:
        if len(deployments) < 2:
            return {}  # a group's only deployment is never taken out of rotation
        try:
            return cooldowns.cooled_down([d.id for d in deployments], now)
        except peewee.DatabaseError:
            log.warning("cooldowns unreadable; routing to every deployment", exc_info=True)
            return {}

    def _admitted(self, dep: Deployment, request_id: str) -> bool:
        if not dep.counted:
            return True
        admitted = _on_connection(
            lambda: self.pm.hook.deployment_admit(
                deployment=dep, request_id=request_id, now=clock.now()
            )
        )
        return admitted is not False

    def _failed(self, dep: Deployment, group_size: int, err: ProxyError) -> None:
        if group_size < 2:
            return
        try:
            until = cooldowns.record_failure(
                dep.id,
                clock.now(),
                self.settings.fails_allowed,
                self.settings.cooldown_seconds,
                immediate=err.status == 429,
                error=f"{err.status} {err.message}",
            )
        except peewee.DatabaseError:
            log.warning("failure of deployment %s not recorded", dep.id, exc_info=True)
            return
        if until > clock.now():
            log.warning(
                "deployment %s of %s cooling down for %gs after %s",
                dep.id,
                dep.model_name,
                until - clock.now(),
                err.status,
            )

    # --- running ----------------------------------------------------------------

    def _run_group(
        self, model: str, request_id: str, send: Callable[[Deployment], T]
    ) -> tuple[T | None, ProxyError | None]:
        group = self.table.group(model)
        now = clock.now()
        cooled = self._cooled(group, now)
        available = [d for d in group if d.id not in cooled]
        if not available:
            until = min(cooled.values())
            return None, NoDeploymentAvailable(
                f"No deployment of model {model} is available: every one is cooling down "
                f"after failures (the first is back in {max(until - now, 0):.1f}s)"
            )
        tried: set[str] = set()
        last: ProxyError | None = None
        attempts = 0
        while attempts <= self.settings.retries and available:
            fresh = [d for d in available if d.id not in tried]
            dep = self.pick(fresh or available)
            if not self._admitted(dep, request_id):
                available.remove(dep)
                last = NoDeploymentAvailable(
                    f"Every deployment of model {model} is at its rpm/tpm limit this minute"
                )
                continue
            attempts += 1
            tried.add(dep.id)
            with self._lock:
                self._in_flight[dep.id] = self._in_flight.get(dep.id, 0) + 1
            try:
                return send(dep), None
            except ProxyError as err:
                last = err
                if not is_transient(err) and err.status not in _DEPLOYMENT_FAULTS:
                    return None, err  # the client's error: another deployment says the same
                self._failed(dep, len(group), err)
                if not is_transient(err):
                    available.remove(dep)  # its key or name is wrong: not again on this one
            finally:
                with self._lock:
                    self._in_flight[dep.id] -= 1
        return None, last

    def route(self, model: str, request_id: str, send: Callable[[Deployment], T]) -> T:
        """``send(deployment)`` on the deployments of ``model`` and then its fallbacks,
        until one answers; raises the last error when none does.

        ``send`` raises :class:`ProxyError` for a failed attempt; anything it
        returns is the answer (for a stream: once its first event arrived).
        """
        result, err = self._run_group(model, request_id, send)
        if err is None:
            return result  # type: ignore[return-value]
        kind = fallback_kind(err)
        if kind is not None:
            for name in self.fallback_models(model, kind):
                log.info(
                    "call %s to %s falls back to %s after %s", request_id, model, name, err.status
                )
                result, next_err = self._run_group(name, request_id, send)
                if next_err is None:
                    return result  # type: ignore[return-value]
                err = next_err
        raise err
