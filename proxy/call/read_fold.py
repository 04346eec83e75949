"""Plugins' statements run inside a metered call's one read (PostgreSQL).

A plugin that must write before the call goes upstream (the rate limiter's
admission) would cost the call a round trip of its own. Instead it may hand
the core a :class:`~proxy.call.context.ReadFragment` once per app
(``call_read_fragment``, proxy/hookspecs.py); the read of every metered call
then runs it too (proxy.storage.lookup composes one statement), and its rows
reach the plugin in ``ctx.read_results``.

The read runs while authenticating, before anything may refuse the call, so
whatever a fragment took must be given back when the call ends without the
plugin having taken its result: refused by authentication, a bad body, a
budget, or an earlier check. Until the call's context exists the pending
results wait on the request (``flask.g``: the app context every request has,
on Flask's path and on the LLM routes' fast path) and the request's teardown
gives them back; once it exists they are on ``ctx.read_results``, and
:func:`give_back` runs when the call ends, before ``call_finished``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pluggy
from flask import Flask, g, has_app_context

from proxy.request_hooks import without_request
from proxy.storage.db import database
from proxy.storage.lookup import CallRows, Fragment
from proxy.storage.plugin_access import features

if TYPE_CHECKING:
    from proxy.call.context import CallRead, ReadFragment
    from proxy.config import Config

log = logging.getLogger("comptroller.read_fold")

_PENDING = "comptroller_pending_read"


def collect(pm: pluggy.PluginManager, config: Config) -> dict[str, ReadFragment]:
    """Every plugin's fragment, by name (none on SQLite: it has no writable CTEs)."""
    if not features().writable_ctes:
        return {}
    found: dict[str, ReadFragment] = {}
    for fragment in pm.hook.call_read_fragment(config=config):
        if fragment is None:
            continue
        if fragment.name in found:
            raise RuntimeError(f"two plugins contribute a read fragment named {fragment.name!r}")
        found[fragment.name] = fragment
    return found


@dataclass
class FoldRequest:
    """The fragments to run in one call's read, and what they were told."""

    read: CallRead
    fragments: dict[str, ReadFragment]
    storage: list[Fragment]

    @classmethod
    def of(cls, read: CallRead, fragments: dict[str, ReadFragment]) -> FoldRequest | None:
        storage = []
        for fragment in fragments.values():
            params = fragment.params(read)
            if params is not None:
                storage.append(Fragment(fragment.name, fragment.ctes, fragment.result, params))
        return cls(read, fragments, storage) if storage else None

    def remember(self, rows: CallRows) -> None:
        """The read has run: its results wait on the request until a call claims them."""
        if rows.folded:
            setattr(g, _PENDING, Pending(self.read, self.fragments, rows.folded))


@dataclass
class Pending:
    read: CallRead
    fragments: dict[str, ReadFragment]
    results: dict[str, list[dict[str, Any]]]


def pending() -> Pending | None:
    """The results of this request's read that no call has claimed yet."""
    if not has_app_context():
        return None
    return getattr(g, _PENDING, None)


def claim() -> Pending | None:
    """Take this request's pending results (the call's context holds them from now on)."""
    if not has_app_context():
        return None
    return g.pop(_PENDING, None)


def give_back(
    read: CallRead | None,
    fragments: dict[str, ReadFragment],
    results: dict[str, list[dict[str, Any]]],
) -> None:
    """Each fragment's ``undo`` for results its plugin did not take. Never raises:
    a failing undo is logged (a parallel slot then comes back when its lease expires)."""
    if read is None:
        return
    for name, rows in list(results.items()):
        results.pop(name, None)
        fragment = fragments.get(name)
        if fragment is None:
            continue
        try:
            fragment.undo(read, rows)
        except Exception:
            log.exception("giving back read fragment %s of call %s failed", name, read.request_id)


def install(app: Flask) -> None:
    """Give back, when a request ends, results no call claimed (refused before its checks)."""

    @app.teardown_request
    @without_request
    def _give_back_unclaimed(exc: BaseException | None) -> None:
        left = g.pop(_PENDING, None)
        if left is None:
            return
        try:
            with database.connection_context():
                give_back(left.read, left.fragments, left.results)
        except Exception:
            log.exception("giving back the read fragments of call %s failed", left.read.request_id)
