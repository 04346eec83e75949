"""Who is calling: the master key or a virtual key (with its user).

Virtual keys are ``sk-`` plus 32 url-safe bytes (256 bits); only their
SHA-256 is stored. A lookup hashes the presented key and reads the key row
and its user row in one query.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from flask import current_app, has_app_context

from proxy.errors import AuthError, Forbidden
from proxy.storage import clock
from proxy.storage.lookup import CallRows, Fragment, load_call_rows
from proxy.storage.models import Key, User

KEY_PREFIX = "sk-"

# Where a front end registers a login session that stands in for the master key:
# ``app.extensions[SESSION_CHECK] = check``, ``check(headers) -> bool``, asked only
# when a request presents no key (it may raise AuthError). The admin UI registers
# one (proxy.ui.session.install): the core never imports the UI.
SESSION_CHECK = "comptroller.session_check"


def _session_stands_in(headers: object) -> bool:
    check = current_app.extensions.get(SESSION_CHECK) if has_app_context() else None
    return bool(check is not None and check(headers))


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(plain: str) -> str:
    return hashlib.sha256(plain.encode("utf-8")).hexdigest()


def display_name(plain: str) -> str:
    return f"sk-...{plain[-4:]}"


@dataclass
class Caller:
    is_master: bool
    key: Key | None = None
    user: User | None = None
    # For LLM calls: every row the checks read, loaded with the key (one query).
    rows: CallRows | None = None
    # Fail-open: the database is away and this is the caller as this worker last
    # saw it (proxy.call.last_known); the checks that need the database are skipped.
    last_known: bool = False


def presented_key(headers: Any) -> str | None:
    """The key from ``Authorization: Bearer <key>`` or Azure's ``api-key``."""
    get = headers.get
    auth = get("Authorization") or ""
    if auth:
        scheme, _, value = auth.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        if not value and scheme.startswith(KEY_PREFIX):
            return scheme
    api_key = get("api-key") or get("x-api-key")
    return api_key.strip() if api_key else None


def is_master_key(presented: str, master_key: str) -> bool:
    return hmac.compare_digest(presented.encode(), master_key.encode())


def authenticate(
    headers: object,
    master_key: str,
    end_user_id: str | None = None,
    default_budget_id: str | None = None,
    prefetch: bool = False,
    fragments: Sequence[Fragment] = (),
    on_read: Callable[[CallRows], None] | None = None,
) -> Caller:
    """The caller, or 401. With ``prefetch`` (LLM calls) the query that reads the key
    also reads ``end_user_id``'s rows, the default end-user budget and the proxy
    counter, into ``Caller.rows``; for metered calls it also runs the plugins'
    read ``fragments`` (proxy.call.read_fold) and hands the rows to ``on_read``
    at once, whatever this then answers."""
    presented = presented_key(headers)
    if not presented:
        if _session_stands_in(headers):
            # The admin UI's login session, with its CSRF header, on an admin route.
            return Caller(is_master=True)
        raise AuthError(
            "Authentication Error, No api key passed in. Pass it as 'Authorization: Bearer <key>'."
        )
    if is_master_key(presented, master_key):
        if not prefetch:
            return Caller(is_master=True)
        rows = load_call_rows(None, end_user_id, default_budget_id, fragments)
        if on_read is not None:
            on_read(rows)
        return Caller(is_master=True, rows=rows)
    rows = load_call_rows(hash_key(presented), end_user_id, default_budget_id, fragments)
    if on_read is not None:
        on_read(rows)
    key = rows.key
    if key is None:
        raise AuthError("Authentication Error, Invalid proxy server token passed.")
    if key.expires is not None and key.expires <= clock.now():
        raise AuthError("Authentication Error - Expired Key")
    if key.blocked:
        raise AuthError(
            "Authentication Error, Key is blocked. Update via `/key/unblock` if you're an admin."
        )
    if rows.user is not None and rows.user.blocked:
        raise AuthError(
            f"Authentication Error, User={rows.user.user_id} is blocked. "
            "Update via `/user/update` if you're an admin."
        )
    return Caller(is_master=False, key=key, user=rows.user, rows=rows if prefetch else None)


def require_master(headers: object, master_key: str) -> None:
    """Admin routes: the master key only; a virtual key is 403, none is 401."""
    caller = authenticate(headers, master_key)
    if not caller.is_master:
        raise Forbidden(
            "Authentication Error, only the master key may call this route.", type="auth_error"
        )
