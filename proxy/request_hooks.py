"""Flask hooks that run without Flask's request context.

The LLM routes are answered without building Flask's request context
(:mod:`proxy.api.fast_path`): per call it costs more CPU than the rest of
the web layer together. The ``before_request`` and ``teardown_request``
functions registered on the app still run for those calls, but only those
marked with :func:`without_request`, which promise not to read
``flask.request`` or ``flask.session`` (``flask.g``, ``current_app`` and
``app.extensions`` are there). While an unmarked one is registered, every
request goes through Flask's own path, so a plugin's hook that reads the
request keeps working, only slower.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

_MARK = "comptroller_without_request"


def without_request(hook: F) -> F:
    """Mark ``hook`` (a function, or a method in its class body) as one that does not
    read the request: it runs on the LLM routes' fast path as on Flask's."""
    setattr(hook, _MARK, True)
    return hook


def runs_without_request(hook: Callable[..., Any]) -> bool:
    """Whether ``hook`` is marked (a bound method reads its function's mark)."""
    return getattr(hook, _MARK, False) is True
