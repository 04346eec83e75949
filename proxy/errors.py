"""Domain errors and the OpenAI-shaped error body every route answers with."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify


class ProxyError(Exception):
    """An error a client should see: status plus OpenAI's error object."""

    status = 400
    type = "invalid_request_error"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if type is not None:
            self.type = type
        self.param = param
        self.code = code or str(self.status)
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param if self.param is not None else "None",
                "code": self.code,
            }
        }

    def anthropic_body(self) -> dict[str, Any]:
        """The error in Anthropic's shape (``/v1/messages``), the same message."""
        err_type = self.type if self.type in ANTHROPIC_ERROR_TYPES.values() else None
        if err_type is None:
            err_type = ANTHROPIC_ERROR_TYPES.get(self.status, "api_error")
        return {"type": "error", "error": {"type": err_type, "message": self.message}}

    def response(self, shape: str = "openai") -> Response:
        resp = jsonify(self.anthropic_body() if shape == "anthropic" else self.body())
        resp.status_code = self.status
        for name, value in self.headers.items():
            resp.headers[name] = value
        return resp


# Anthropic's error types by HTTP status (https://docs.anthropic.com/en/api/errors).
ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
# Routes that speak Anthropic's API, errors included (``/anthropic/...`` is for clients
# whose ANTHROPIC_BASE_URL ends in /anthropic, as LiteLLM's pass-through documents).
ANTHROPIC_ROUTE_PREFIXES = ("/v1/messages", "/anthropic/")


def error_shape(path: str) -> str:
    """``"anthropic"`` on Anthropic's routes, else ``"openai"``."""
    return "anthropic" if path.startswith(ANTHROPIC_ROUTE_PREFIXES) else "openai"


class BadRequest(ProxyError):
    status = 400
    type = "invalid_request_error"


class AuthError(ProxyError):
    status = 401
    type = "auth_error"


class Forbidden(ProxyError):
    status = 403
    type = "auth_error"


class NotFound(ProxyError):
    status = 404
    type = "not_found_error"


class Conflict(ProxyError):
    status = 409
    type = "invalid_request_error"


class RateLimited(ProxyError):
    status = 429
    type = "rate_limit_error"


class UpstreamError(ProxyError):
    """The upstream answered an error, could not be reached or timed out."""

    status = 502
    type = "api_error"


class ServiceUnavailable(ProxyError):
    status = 503
    type = "service_unavailable"
