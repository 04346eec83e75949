"""The gunicorn worker Comptroller runs with (proxy.serving)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

from proxy.serving import WORKER_CLASS, GthreadWorker, gunicorn_settings


def _quit_while_submit_holds_the_pool_lock(worker_class: type[Any]) -> BaseException | None:
    """What a quick-shutdown signal does when it lands inside ``submit()``: the
    handler runs on the same thread, with the pool's lock already held."""
    worker = object.__new__(worker_class)
    worker.tpool = ThreadPoolExecutor(max_workers=1)
    worker.cfg = SimpleNamespace(worker_int=lambda w: None)
    worker.alive = True
    outcome: list[BaseException | None] = []

    def signal_lands_in_submit() -> None:
        with worker.tpool._shutdown_lock:
            try:
                worker.handle_quit(3, None)
                outcome.append(None)
            except BaseException as exc:  # sys.exit(0) is the way out
                outcome.append(exc)

    thread = threading.Thread(target=signal_lands_in_submit, daemon=True)
    thread.start()
    thread.join(timeout=3)
    if thread.is_alive():
        return TimeoutError("handle_quit hung on the pool's lock")
    return outcome[0]


def test_quick_shutdown_inside_submit_exits_instead_of_hanging() -> None:
    # gunicorn's own ThreadWorker hangs here (checked with gunicorn 27.0.1).
    outcome = _quit_while_submit_holds_the_pool_lock(GthreadWorker)
    assert isinstance(outcome, SystemExit) and outcome.code == 0


def test_both_ways_of_starting_use_the_worker() -> None:
    assert gunicorn_settings("127.0.0.1:4000", 2, 16)["worker_class"] == WORKER_CLASS
    module, name = WORKER_CLASS.rsplit(".", 1)
    assert getattr(__import__(module, fromlist=[name]), name) is GthreadWorker
