"""Token counts of any size an upstream may report: recorded (flagged when absurd), never a 500."""

from __future__ import annotations

from typing import Any

import pytest

from migrations import m0001_core_tables as m0001
from migrations import m0002_unpriced_model as m0002
from proxy.call.usage import MAX_RECORDED_TOKENS
from proxy.storage.db import database, init_database
from proxy.storage.migrate import AppliedMigration, migrate, run_migration
from proxy.storage.models import Key, SpendLog
from tests.conftest import MASTER, base_config, openai_model
from tests.support.databases import create_pg_database, drop_pg_database
from tests.support.mock_openai import MockOpenAI

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def call(make_app: Any, upstream: MockOpenAI, db_url: str) -> Any:
    app = make_app(base_config(db_url, model_list=[openai_model("gpt-4o-mini", upstream.base_url)]))
    client = app.test_client()
    key = client.post("/key/generate", json={}, headers=MASTER).get_json()["key"]

    def make(usage: dict[str, Any], stream: bool = False) -> Any:
        upstream.reported_usage = usage
        resp = client.post(
            "/chat/completions",
            json={**CHAT, "stream": stream},
            headers={"Authorization": f"Bearer {key}"},
        )
        resp.get_data()  # a stream settles when it has been read
        return resp

    return make


def _only_log() -> SpendLog:
    with database.connection_context():
        return SpendLog.get()


def test_usage_above_32_bits_is_recorded_exactly_and_flagged(call: Any) -> None:
    resp = call({"prompt_tokens": 3_000_000_000, "completion_tokens": 2**31})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    row = _only_log()
    assert (row.prompt_tokens, row.completion_tokens) == (3_000_000_000, 2**31)
    assert row.total_tokens == 3_000_000_000 + 2**31
    assert "prompt_tokens=3000000000" in row.metadata["usage_flag"]
    with database.connection_context():
        assert Key.get().spend == pytest.approx(row.spend)
        assert row.spend > 0


@pytest.mark.parametrize("stream", [False, True])
def test_usage_beyond_any_column_is_capped_and_flagged_never_a_500(call: Any, stream: bool) -> None:
    resp = call({"prompt_tokens": 10**30, "completion_tokens": -5}, stream=stream)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    row = _only_log()
    assert (row.prompt_tokens, row.completion_tokens) == (MAX_RECORDED_TOKENS, 0)
    assert f"prompt_tokens={10**30}" in row.metadata["usage_flag"]
    assert "completion_tokens=-5" in row.metadata["usage_flag"]


def test_ordinary_usage_is_not_flagged(call: Any) -> None:
    assert call({"prompt_tokens": 12, "completion_tokens": 3}).status_code == 200
    assert "usage_flag" not in _only_log().metadata


@pytest.mark.postgres
def test_a_database_with_32_bit_token_columns_is_migrated_to_64_bits() -> None:
    url = create_pg_database()
    try:
        init_database(url)
        with database.connection_context():
            database.create_tables([AppliedMigration])
            run_migration(m0001)
            run_migration(m0002)
            database.execute_sql(
                "ALTER TABLE spend_log ALTER COLUMN prompt_tokens TYPE INTEGER, "
                "ALTER COLUMN completion_tokens TYPE INTEGER, "
                "ALTER COLUMN total_tokens TYPE INTEGER"
            )
            for name in ("m0001_core_tables", "m0002_unpriced_model"):
                AppliedMigration.create(name=name)
        assert "m0005_bigint_token_counts" in migrate()
        with database.connection_context():
            types = database.execute_sql(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_name = 'spend_log' AND column_name LIKE '%%tokens'"
            ).fetchall()
        assert dict(types) == {
            "prompt_tokens": "bigint",
            "completion_tokens": "bigint",
            "total_tokens": "bigint",
        }
    finally:
        close_all = getattr(database.obj, "close_all", None)
        if close_all is not None:
            close_all()
        drop_pg_database(url)
