"""Request helpers shared by the blueprints."""

from __future__ import annotations

from typing import Any, Protocol

from flask import current_app, request

from proxy.api import lenient_json
from proxy.errors import BadRequest, ProxyError


class BodyRequest(Protocol):
    """What reading a request's body needs: Flask's ``request``, or the LLM routes'
    :class:`proxy.api.fast_path.LeanRequest` (no Flask request context)."""

    @property
    def headers(self) -> Any: ...

    @property
    def content_length(self) -> int | None: ...

    @property
    def max_content_length(self) -> int | None: ...

    def get_data(self, cache: bool = True) -> Any: ...


def services() -> Any:
    return current_app.extensions["comptroller"]


def json_body(required: bool = True, req: BodyRequest | None = None) -> dict[str, Any]:
    """The JSON object of ``req`` (default: Flask's request); 400 naming the problem otherwise."""
    if req is None:
        req = request
    raw = req.get_data(cache=True)
    limit = req.max_content_length
    if req.content_length is None and limit is not None and len(raw) >= limit:
        # A chunked body is cut at the limit by Werkzeug without an error: refuse, not truncate.
        raise PayloadTooLarge(f"Request body too large: the limit is {limit} bytes.")
    if not raw.strip():
        if required:
            raise BadRequest("Request body is empty: send a JSON object.", param="body")
        return {}
    try:
        body = lenient_json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise BadRequest(f"Request body is not valid JSON: {err}", param="body") from None
    if not isinstance(body, dict):
        raise BadRequest("Request body must be a JSON object.", param="body")
    return body


class PayloadTooLarge(ProxyError):
    status = 413
    type = "invalid_request_error"
