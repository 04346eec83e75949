"""A database written by release 1d85003 upgrades to today's schema and keeps serving.

The release's database is the checked-in dump in ``release_1d85003/`` (how it
was made: ``make_dumps.py`` there, which runs the release's own code). A dump,
rather than checking the release out at test time: the test needs no git
history (a shallow clone or an sdist has none), does not depend on old code
still running under today's dependencies, and the SQLite half runs in the
fast tier. Loaded into a fresh database, it is migrated by today's code;
then the schema must equal a fresh install's, and the rows the release wrote
must read and take calls as before.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from flask import Flask

from proxy.app import create_app
from proxy.config import build_config
from proxy.storage.db import database
from proxy.storage.migrate import AppliedMigration
from tests.conftest import MASTER, base_config
from tests.support.databases import create_pg_database, drop_pg_database

DUMPS = Path(__file__).parent / "release_1d85003"
RELEASE_KEY = "sk-release-1d85003"
RELEASE_CALL_COST = 0.00008  # each of the release's two calls (7 + 10 tokens of mock/mistral-small)


def _sqlite_path(url: str) -> str:
    return url.removeprefix("sqlite:///")


def load_release(url: str) -> None:
    dump = (DUMPS / ("postgres.sql" if url.startswith("postgresql") else "sqlite.sql")).read_text()
    if url.startswith("postgresql"):
        conn = psycopg2.connect(url)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(dump)
        finally:
            conn.close()
    else:
        conn3 = sqlite3.connect(_sqlite_path(url))
        try:
            conn3.executescript(dump)
        finally:
            conn3.close()


def schema_of(url: str) -> dict[str, Any]:
    """Every table's columns (name, type, nullability) and every index, as the database says."""
    if url.startswith("postgresql"):
        conn = psycopg2.connect(url)
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT table_name, column_name, data_type, is_nullable, "
                    "character_maximum_length FROM information_schema.columns "
                    "WHERE table_schema = 'public' ORDER BY table_name, column_name"
                )
                columns = cur.fetchall()
                cur.execute(
                    "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' "
                    "ORDER BY indexname"
                )
                indexes = cur.fetchall()
        finally:
            conn.close()
        return {"columns": columns, "indexes": indexes}
    conn3 = sqlite3.connect(_sqlite_path(url))
    try:
        tables = [
            row[0]
            for row in conn3.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
        columns = {
            table: sorted(
                (name, kind, notnull, pk)
                for _, name, kind, notnull, _, pk in conn3.execute(f'PRAGMA table_info("{table}")')
            )
            for table in tables
        }
        indexes = conn3.execute(
            "SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'index' ORDER BY name"
        ).fetchall()
    finally:
        conn3.close()
    return {"columns": columns, "indexes": indexes}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def fresh_url(backend: str, tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """Fresh empty databases of this test's backend, dropped after it."""
    made: list[str] = []

    def make(name: str) -> str:
        if backend == "sqlite":
            url = f"sqlite:///{tmp_path / f'{name}.db'}"
        else:
            url = create_pg_database(f"comptroller_{name}")
        made.append(url)
        return url

    yield make
    _close()
    for url in made:
        if url.startswith("postgresql"):
            drop_pg_database(url)


def _close() -> None:
    if database.obj is None:
        return
    if not database.is_closed():
        database.close()
    close_all = getattr(database.obj, "close_all", None)
    if close_all is not None:
        close_all()


def make_app(raw: dict[str, Any]) -> Flask:
    """Today's app on ``raw``'s database: start-up applies the pending migrations."""
    app = create_app(build_config(raw))
    app.testing = True
    return app


def _config(url: str) -> dict[str, Any]:
    mistral = {
        "model_name": "mistral",
        "litellm_params": {
            "model": "mock/mistral-small",
            "input_cost_per_token": 0.000002,
            "output_cost_per_token": 0.000006,
        },
    }
    return base_config(
        url,
        model_list=[mistral],
        general_settings={"budget_enforcement": "strict"},
        litellm_settings={"max_budget": 100, "budget_duration": "30d"},
    )


def _applied_names(url: str) -> list[str]:
    if url.startswith("postgresql"):
        conn = psycopg2.connect(url)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT name FROM comptroller_migration")
                return [row[0] for row in cur.fetchall()]
        finally:
            conn.close()
    conn3 = sqlite3.connect(_sqlite_path(url))
    try:
        return [row[0] for row in conn3.execute("SELECT name FROM comptroller_migration")]
    finally:
        conn3.close()


def _after_resets(spend: float, reset_at: float) -> float:
    """What a counter the release left at ``spend`` reads now: 0 once its period has ended."""
    return 0.0 if reset_at <= time.time() else spend


def test_the_release_database_upgrades_to_todays_schema(
    fresh_url: Callable[[str], str],
) -> None:
    release, fresh = fresh_url("release"), fresh_url("fresh")
    load_release(release)
    make_app(_config(fresh))
    _close()
    make_app(_config(release))
    _close()

    assert schema_of(release) == schema_of(fresh)
    with database.connection_context():
        applied = {row.name: row.applied_at for row in AppliedMigration.select()}
    # The plugins' first migrations adopt the tables the release made without migrations.
    assert {"budgets:m0001_tables", "rate_limiter:m0001_tables"} <= set(applied)
    assert "webhook_alerter:m0001_tables" in applied
    # The release's own records are kept as it wrote them (not applied again).
    assert applied["m0001_core_tables"] == pytest.approx(1796602916.683463)
    assert set(applied) == set(_applied_names(fresh))


def test_the_release_rows_are_read_and_keep_taking_calls(
    fresh_url: Callable[[str], str],
) -> None:
    release = fresh_url("release")
    load_release(release)
    client = make_app(_config(release)).test_client()

    info = client.get(f"/key/info?key={RELEASE_KEY}", headers=MASTER)
    assert info.status_code == 200, info.get_data(as_text=True)
    key = info.get_json()["info"]
    assert (key["key_alias"], key["max_budget"], key["models"]) == ("alice-key", 1.0, ["mistral"])
    assert key["spend"] == pytest.approx(
        _after_resets(2 * RELEASE_CALL_COST, 1797207717.35380434991)
    )
    user = client.get("/user/info?user_id=alice", headers=MASTER).get_json()
    assert [k["key_alias"] for k in user["keys"]] == [None, "alice-key"]
    tier = client.get("/customer/info?end_user_id=ishaan3", headers=MASTER).get_json()
    assert tier["litellm_budget_table"]["budget_id"] == "tier-1"
    own = client.get("/customer/info?end_user_id=own-budget", headers=MASTER).get_json()
    assert own["litellm_budget_table"]["budget_id"].startswith("customer-budget-")
    assert own["litellm_budget_table"]["max_budget"] == 2.0
    logs = client.get("/spend/logs", headers=MASTER).get_json()
    assert sorted(log["end_user"] for log in logs) == ["ishaan3", "own-budget"]

    body = {"model": "mistral", "user": "ishaan3", "messages": [{"role": "user", "content": "hi"}]}
    call = client.post(
        "/chat/completions", json=body, headers={"Authorization": f"Bearer {RELEASE_KEY}"}
    )
    assert call.status_code == 200, call.get_data(as_text=True)
    logs = client.get("/spend/logs", headers=MASTER).get_json()
    assert len(logs) == 3
    after = client.get(f"/key/info?key={RELEASE_KEY}", headers=MASTER).get_json()["info"]
    assert after["spend"] == pytest.approx(key["spend"] + logs[-1]["spend"])
    assert logs[-1]["spend"] > 0
