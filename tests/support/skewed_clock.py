"""A gunicorn config for tests: each worker's wall clock off by a number of seconds.

``gunicorn -c tests/support/skewed_clock.py ...`` with
``COMPTROLLER_TEST_CLOCK_OFFSET=30`` runs a proxy whose ``time.time()`` (and
everything built on it, such as the ``Date`` header) is 30 s ahead; ``-30``
behind.
It stands in for a host whose clock is wrong. Only the workers are skewed:
the arbiter keeps the real time. For tests only.
"""

import os
import time


def post_fork(server, worker):  # type: ignore[no-untyped-def]
    offset = float(os.environ.get("COMPTROLLER_TEST_CLOCK_OFFSET", "0"))
    real_time = time.time

    def skewed_time() -> float:
        return real_time() + offset

    time.time = skewed_time
