"""How many gunicorn workers share this host: the arbiter tells its workers.

Each worker checks its database connection pool against the server's limit
(``proxy.storage.db.connection_budget_warning``) and needs the count for it.
"""

from __future__ import annotations

import os

# Set by the arbiter before it forks, so that each worker inherits it.
WORKERS_ENV = "COMPTROLLER_WORKERS"


def workers_per_host() -> int:
    """The gunicorn workers of this host (1 when not run by gunicorn's arbiter)."""
    try:
        return max(1, int(os.environ.get(WORKERS_ENV, "1")))
    except ValueError:
        return 1


def announce_workers(count: int) -> None:
    """In the arbiter, before the workers are forked: tell them how many they are."""
    os.environ[WORKERS_ENV] = str(count)
