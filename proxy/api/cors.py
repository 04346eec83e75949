"""CORS for browser applications on other origins (``general_settings.allowed_origins``).

Off unless origins are listed. A listed origin (or any, with ``"*"``) gets
``Access-Control-Allow-Origin`` on every answer, errors included, and its
preflight ``OPTIONS`` is answered before authentication and before any
database work (browsers send preflights without credentials). Credentials
are never allowed across origins: the admin UI's session cookie stays
same-site, and a page elsewhere must send a key in ``Authorization``.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, request

ALLOWED_METHODS = "GET, POST, OPTIONS"
# Headers a browser client may read: rate limits, the call id, Retry-After.
EXPOSED_HEADERS = (
    "x-comptroller-call-id, x-comptroller-max-tokens-clamped, retry-after, retry-after-ms, "
    "x-ratelimit-limit-requests, x-ratelimit-remaining-requests, x-ratelimit-reset-requests, "
    "x-ratelimit-limit-tokens, x-ratelimit-remaining-tokens, x-ratelimit-reset-tokens"
)
PREFLIGHT_MAX_AGE = "600"


def normalize_origin(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


# Where install puts the app's CorsPolicy (the LLM routes' fast path answers with it too).
EXTENSION = "comptroller.cors"


class CorsPolicy:
    """The allowed origins, and the hooks install registers on the app."""

    def __init__(self, allowed: set[str]) -> None:
        self.allowed = allowed
        self.any_origin = "*" in allowed

    def allow_origin(self, headers: Any) -> str | None:
        """What ``Access-Control-Allow-Origin`` answers the request with ``headers``."""
        origin = headers.get("Origin")
        if not origin:
            return None
        if self.any_origin:
            return "*"
        return origin if normalize_origin(origin) in self.allowed else None

    def preflight(self) -> Response | None:
        """``before_request``: a preflight is answered here (never a POST)."""
        if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
            return None
        resp = Response(status=204)
        origin = self.allow_origin(request.headers)
        if origin is not None:
            resp.headers["Access-Control-Allow-Origin"] = origin
            resp.headers["Access-Control-Allow-Methods"] = ALLOWED_METHODS
            requested = request.headers.get("Access-Control-Request-Headers")
            if requested:
                resp.headers["Access-Control-Allow-Headers"] = requested
            resp.headers["Access-Control-Max-Age"] = PREFLIGHT_MAX_AGE
        resp.headers["Vary"] = "Origin"
        return resp

    def after(self, resp: Response) -> Response:
        """``after_request``: every answer, errors included."""
        return self.allow(resp, request.headers)

    def allow(self, resp: Response, headers: Any) -> Response:
        """``resp`` with the CORS headers for the request that had ``headers``."""
        origin = self.allow_origin(headers)
        if origin is not None and "Access-Control-Allow-Origin" not in resp.headers:
            resp.headers["Access-Control-Allow-Origin"] = origin
            resp.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
        resp.vary.add("Origin")
        return resp


def install(app: Flask, allowed_origins: list[str]) -> None:
    """Answer CORS for ``allowed_origins``; nothing at all when the list is empty.

    Call it before any other ``before_request`` hook: a preflight is answered
    by the first one.
    """
    allowed = {normalize_origin(origin) for origin in allowed_origins}
    if not allowed:
        return
    policy = CorsPolicy(allowed)
    app.extensions[EXTENSION] = policy
    app.before_request(policy.preflight)
    app.after_request(policy.after)
