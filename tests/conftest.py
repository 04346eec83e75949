"""Shared fixtures: databases (SQLite and PostgreSQL), the app, the mock upstream."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from proxy.app import create_app
from proxy.config import build_config
from proxy.storage.db import database
from tests.support.databases import (
    create_pg_database,
    drop_pg_database,
    postgres_available,
    truncate_pg_tables,
)
from tests.support.mock_openai import MockOpenAI

MASTER_KEY = "sk-1234"
MASTER = {"Authorization": f"Bearer {MASTER_KEY}"}


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """One PostgreSQL database for the session, random name, dropped after."""
    if not postgres_available():
        pytest.fail("PostgreSQL is not reachable on 127.0.0.1:5432 (see .ci/run)")
    url = create_pg_database()
    yield url
    drop_pg_database(url)


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each storage test runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'comptroller.db'}"
    else:
        url = request.getfixturevalue("pg_database")
        truncate_pg_tables(url)
        yield url
    _close_database()


def _close_database() -> None:
    obj = database.obj
    if obj is None:
        return
    if not obj.is_closed():
        obj.close()
    close_all = getattr(obj, "close_all", None)
    if close_all is not None:
        close_all()


@pytest.fixture(scope="session")
def mock_openai() -> Iterator[MockOpenAI]:
    server = MockOpenAI()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def upstream(mock_openai: MockOpenAI) -> MockOpenAI:
    """The mock OpenAI server, with its records and behaviour reset.

    A call of an earlier test may still be in the mock (a handler finishes just
    after its client read the answer; a stalled stream sleeps out its chunk
    delay): it would count in ``in_flight``, ``max_in_flight`` and
    ``aborted_streams`` of this test. The reset wakes hanging calls; the fixture
    waits for every call to end, then starts the counters from zero."""
    mock_openai.reset()
    mock_openai.wait_in_flight(0, timeout=15)
    mock_openai.reset()
    return mock_openai


def openai_model(name: str, base_url: str, **params: Any) -> dict[str, Any]:
    """A ``model_list`` entry pointing at an OpenAI-compatible upstream."""
    return {
        "model_name": name,
        "litellm_params": {
            "model": f"openai/{name}",
            "api_base": base_url,
            "api_key": "sk-up",
            **params,
        },
    }


def base_config(db_url: str, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "general_settings": {"master_key": MASTER_KEY, "database_url": db_url},
    }
    for section, values in overrides.items():
        if isinstance(values, dict) and isinstance(config.get(section), dict):
            config[section] = {**config[section], **values}
        else:
            config[section] = values
    return config


@pytest.fixture
def make_app(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Flask]:
    """Build an app on this test's database: ``make_app(config_dict, plugins=[...])``."""
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("COMPTROLLER_MASTER_KEY", raising=False)
    monkeypatch.delenv("LITELLM_MASTER_KEY", raising=False)

    def factory(
        config: dict[str, Any] | None = None, plugins: list[tuple[str, Any]] | None = None
    ) -> Flask:
        raw = copy.deepcopy(config) if config is not None else base_config(db_url)
        raw.setdefault("general_settings", {}).setdefault("database_url", db_url)
        raw["general_settings"].setdefault("master_key", MASTER_KEY)
        app = create_app(build_config(raw), extra_plugins=plugins)
        app.testing = True
        return app

    return factory


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()
