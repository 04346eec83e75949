"""The admin UI's login session and the CSRF rule that lets it call the admin API.

Logging in with the master key stores a signed Flask session cookie holding
a random CSRF token. The signing key is derived from the master key with
HMAC, so every worker and every host signs and verifies alike with no extra
setting, and changing the master key logs every UI session out.

The cookie is HttpOnly, ``SameSite=Strict`` and ``Secure`` when the page was
served over https. On its own it never authorises anything: the admin API
accepts it only together with an ``X-CSRF-Token`` header equal to the token
inside it. Page scripts read the token from the page; a cross-site form or
script can send the cookie (in old browsers) but cannot read or set that
header, so it gets the same 401 as a call without a key.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta
from typing import Any

from flask import Flask, has_request_context, request, session
from flask.sessions import SecureCookieSessionInterface
from itsdangerous import URLSafeTimedSerializer

from proxy.call.auth import SESSION_CHECK
from proxy.errors import AuthError

COOKIE_NAME = "comptroller_ui"
CSRF_HEADER = "X-CSRF-Token"
SESSION_LIFETIME = timedelta(hours=12)
_SECRET_LABEL = b"comptroller admin UI session v1"
# The session stands for the master key on these blueprints only, never on LLM routes.
ADMIN_BLUEPRINTS = frozenset({"admin", "admin_reports"})


class UISessionInterface(SecureCookieSessionInterface):
    """Flask's signed cookie session with the UI's cookie flags."""

    def __init__(self) -> None:
        self._serializer: tuple[Any, URLSafeTimedSerializer | None] | None = None

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer | None:
        """Flask's serializer, built once per signing key: Flask builds a new one for
        every request (about 35 us of CPU, LLM calls included, which never have a
        session); it holds no per-request state."""
        keys = (app.secret_key, tuple(app.config["SECRET_KEY_FALLBACKS"] or ()))
        cached = self._serializer
        if cached is None or cached[0] != keys:
            cached = self._serializer = (keys, super().get_signing_serializer(app))
        return cached[1]

    def get_cookie_name(self, app: Flask) -> str:
        return COOKIE_NAME

    def get_cookie_httponly(self, app: Flask) -> bool:
        return True

    def get_cookie_samesite(self, app: Flask) -> str:
        return "Strict"

    def get_cookie_secure(self, app: Flask) -> bool:
        # Behind a TLS-terminating proxy the app sees http; trusting the
        # forwarded scheme here can only make the cookie stricter.
        return request.is_secure or request.headers.get("X-Forwarded-Proto", "") == "https"


def session_secret(master_key: str) -> bytes:
    return hmac.new(master_key.encode("utf-8"), _SECRET_LABEL, hashlib.sha256).digest()


def install(app: Flask, master_key: str) -> None:
    """Sign sessions with a key derived from ``master_key``; let a logged-in
    session (with its CSRF header) stand in for the master key on admin routes."""
    app.secret_key = session_secret(master_key)
    app.permanent_session_lifetime = SESSION_LIFETIME
    app.session_interface = UISessionInterface()
    app.extensions[SESSION_CHECK] = admin_session_allowed


def start_session() -> str:
    """Log the browser in (after the master key was checked); the new CSRF token."""
    session.clear()
    session.permanent = True
    session["admin"] = True
    session["csrf"] = secrets.token_urlsafe(32)
    return str(session["csrf"])


def end_session() -> None:
    session.clear()


def logged_in() -> bool:
    return session.get("admin") is True and isinstance(session.get("csrf"), str)


def csrf_token() -> str:
    return str(session.get("csrf", ""))


def csrf_matches(presented: Any) -> bool:
    return (
        logged_in()
        and isinstance(presented, str)
        and hmac.compare_digest(presented.encode(), csrf_token().encode())
    )


def admin_session_allowed(headers: Any) -> bool:
    """Whether this request to an admin route carries a UI session usable as the master key.

    Asked only when no key was presented. ``False`` off the admin routes or
    without a UI session (the caller then asks for a key as usual);
    :class:`AuthError` with a session whose CSRF header is missing or wrong.
    """
    if not has_request_context() or request.blueprint not in ADMIN_BLUEPRINTS:
        return False
    if not logged_in():
        return False
    if not csrf_matches(headers.get(CSRF_HEADER)):
        raise AuthError(
            "Authentication Error, the admin UI session must send its "
            f"{CSRF_HEADER} header; pass 'Authorization: Bearer <master key>' otherwise."
        )
    return True
