"""Calls to the admin API with the master key, for the tests that set data up through it."""

from __future__ import annotations

from typing import Any

from tests.conftest import MASTER


def post(client: Any, path: str, body: Any) -> Any:
    """POST ``body`` as JSON with the master key; the response, whatever its status."""
    return client.post(path, json=body, headers=MASTER)


def post_ok(client: Any, path: str, body: Any) -> Any:
    """POST with the master key, which must succeed; the answer's JSON."""
    resp = post(client, path, body)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.get_json()
