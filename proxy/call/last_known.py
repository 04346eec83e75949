"""Fail-open (``general_settings.allow_requests_on_db_unavailable: true``): while the
database is away, a call goes through on the last known state of its key.

Each worker remembers the callers it authenticated (the key and user rows as
they were then). With the database unreachable, a key this worker has seen is
checked against those rows (blocked, expired, key and user budgets spent) and
the call goes upstream without the checks that need the database (rate
limits, strict reservations, end-user budgets); its spend is journaled and
replayed when the database is back. A key this worker has not seen cannot be
told from a made-up one: it is refused with a 503, as in fail-closed mode.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any

from proxy.call.auth import Caller, hash_key, is_master_key, presented_key
from proxy.errors import AuthError, ServiceUnavailable

# Callers remembered per worker, least recently used forgotten first.
REMEMBERED_CALLERS = 10_000


def _exceeded(spend: float | None, max_budget: float | None) -> bool:
    return max_budget is not None and (spend or 0.0) >= max_budget


class LastKnownCallers:
    def __init__(self, size: int = REMEMBERED_CALLERS) -> None:
        self._size = size
        self._callers: OrderedDict[str, Caller] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, caller: Caller) -> None:
        if caller.key is None:
            return
        seen = Caller(is_master=False, key=caller.key, user=caller.user, last_known=True)
        with self._lock:
            self._callers[caller.key.token] = seen
            self._callers.move_to_end(caller.key.token)
            while len(self._callers) > self._size:
                self._callers.popitem(last=False)

    def recall(self, headers: Any, master_key: str) -> Caller:
        """The caller of a request as this worker last saw it, checked against that state."""
        presented = presented_key(headers)
        if not presented:
            raise AuthError(
                "Authentication Error, No api key passed in. "
                "Pass it as 'Authorization: Bearer <key>'."
            )
        if is_master_key(presented, master_key):
            return Caller(is_master=True, last_known=True)
        with self._lock:
            caller = self._callers.get(hash_key(presented))
        if caller is None or caller.key is None:
            raise ServiceUnavailable(
                "The database is unavailable and this key has not been seen by this worker "
                "since it started, so it cannot be checked: the call was not sent to the "
                "model and nothing was charged."
            )
        key, user = caller.key, caller.user
        if key.blocked or (key.expires is not None and key.expires <= time.time()):
            raise AuthError("Authentication Error, Key is blocked or expired.")
        if _exceeded(key.spend, key.max_budget):
            raise AuthError(
                f"ExceededTokenBudget: Current spend for token: {key.spend}; "
                f"Max Budget for Token: {key.max_budget}"
            )
        if user is not None and (user.blocked or _exceeded(user.spend, user.max_budget)):
            raise AuthError(
                f"ExceededBudget: User {user.user_id} has exceeded their budget or is blocked."
            )
        return caller
