"""The API documentation and liveness answer while the database is down; data routes say 503."""

from __future__ import annotations

from typing import Any

import peewee
import pytest
from flask import Flask

from proxy.storage.db import database
from tests.conftest import MASTER


@pytest.fixture
def database_down(app: Flask, monkeypatch: pytest.MonkeyPatch) -> Flask:
    """Every new connection fails, as when the database server is unreachable."""
    if not database.is_closed():
        database.close()

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise peewee.OperationalError("connection refused")

    monkeypatch.setattr(database.obj, "connect", refuse)
    return app


@pytest.mark.parametrize(
    "path",
    [
        "/docs",
        "/openapi.json",
        "/docs/assets/swagger-ui/swagger-ui.css",
        "/health/liveliness",
        "/ui/static/ui.js",
    ],
)
def test_answers_without_the_database(database_down: Flask, path: str) -> None:
    response = database_down.test_client().get(path)
    assert response.status_code == 200, response.get_data(as_text=True)[:300]


def test_a_data_route_reports_the_outage(database_down: Flask) -> None:
    response = database_down.test_client().get("/key/list", headers=MASTER)
    assert response.status_code == 503
    assert "database" in response.get_json()["error"]["message"].lower()
