"""Assertions shared across test files."""

from __future__ import annotations

from typing import Any


def assert_error(
    resp: Any, status: int, param: str | None = None, *, err_type: str | None = None
) -> dict[str, Any]:
    """An OpenAI-shaped JSON error answer with ``status`` (and ``param``, ``err_type``
    when given), without a traceback; returns the error object."""
    text = resp.get_data(as_text=True)
    assert resp.status_code == status, text
    assert resp.mimetype == "application/json"
    body = resp.get_json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == str(status)
    assert isinstance(error["message"], str) and error["message"]
    if err_type is not None:
        assert error["type"] == err_type
    if param is not None:
        assert error["param"] == param
    assert "Traceback" not in text
    return error
