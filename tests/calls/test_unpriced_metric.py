"""Calls to a model with no price: charged 0, counted per model group in the
spend transaction (``unpriced_model``), and exported by ``/metrics`` (master key)."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

import migrations.m0001_core_tables as m0001
from proxy.call import cost as pricing
from proxy.storage.counters import proxy_total
from proxy.storage.db import database, init_database
from proxy.storage.migrate import AppliedMigration, migrate, run_migration
from proxy.storage.models import SpendLog, UnpricedModel
from tests.conftest import MASTER, base_config, openai_model
from tests.support.assertions import assert_error
from tests.support.databases import create_pg_database, drop_pg_database, truncate_pg_tables
from tests.support.mock_openai import MockOpenAI
from tests.support.proxy_server import ProxyServer
from tests.support.rate_limits import chat, make_key
from tests.support.statements import spy_on_cursors, statement_sql

UNPRICED = "house-llm"  # neither in the price table nor given a price
PRICED = "gpt-4o-mini"  # in the shipped price table
PROMETHEUS = "text/plain; version=0.0.4"


@pytest.fixture(autouse=True)
def _fresh_pricing_state() -> Any:
    pricing._reset_for_tests()
    yield
    pricing._reset_for_tests()


def _config(db_url: str, upstream: MockOpenAI, *names: str) -> dict[str, Any]:
    return base_config(db_url, model_list=[openai_model(n, upstream.base_url) for n in names])


def samples(text: str) -> dict[str, float]:
    """The samples of a Prometheus text answer: ``{'name{labels}': value}``."""
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            found[series] = float(value)
    return found


def series(name: str, model: str) -> str:
    """The series of ``model`` (a plain name, upstream under the same name)."""
    return f'{name}{{model="{model}",upstream_model="{model}"}}'


def _unpriced_rows() -> dict[str, UnpricedModel]:
    with database.connection_context():
        return {row.model_group: row for row in UnpricedModel.select()}


def test_unpriced_calls_are_free_and_counted_with_their_tokens(make_app, db_url, upstream):
    client = make_app(_config(db_url, upstream, UNPRICED)).test_client()
    tokens = 0
    for words in (1, 5, 40):
        content = " ".join(["word"] * words)
        resp = chat(client, None, model=UNPRICED, messages=[{"role": "user", "content": content}])
        assert resp.status_code == 200, resp.get_data(as_text=True)
        tokens += resp.get_json()["usage"]["total_tokens"]

    with database.connection_context():
        assert [log.spend for log in SpendLog.select()] == [0.0, 0.0, 0.0]
        assert proxy_total() == 0.0
    row = _unpriced_rows()[UNPRICED]
    assert (row.upstream_model, row.calls, row.tokens) == (UNPRICED, 3, tokens)
    assert row.first_seen <= row.last_seen

    resp = client.get("/metrics", headers=MASTER)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith(PROMETHEUS)
    text = resp.get_data(as_text=True)
    assert "# TYPE comptroller_unpriced_calls_total counter" in text.splitlines()
    assert "# TYPE comptroller_proxy_spend_usd gauge" in text.splitlines()
    assert samples(text) == {
        series("comptroller_unpriced_calls_total", UNPRICED): 3,
        series("comptroller_unpriced_tokens_total", UNPRICED): tokens,
        "comptroller_cost_overrun_calls_total": 0,
        "comptroller_cost_overrun_usd_total": 0.0,
        "comptroller_proxy_spend_usd": 0.0,
    }

    as_json = client.get("/metrics", headers={**MASTER, "Accept": "application/json"})
    assert as_json.status_code == 200 and as_json.mimetype == "application/json"
    [entry] = as_json.get_json()["unpriced_models"]
    assert (entry["model"], entry["calls"], entry["tokens"]) == (UNPRICED, 3, tokens)
    assert as_json.get_json()["proxy_spend"] == 0.0


def test_a_priced_call_leaves_no_row_and_an_unpriced_model_shows_zero(make_app, db_url, upstream):
    client = make_app(_config(db_url, upstream, PRICED, UNPRICED)).test_client()
    assert chat(client, None, model=PRICED).status_code == 200
    assert _unpriced_rows() == {}
    with database.connection_context():
        spend = SpendLog.get().spend
    assert spend > 0

    found = samples(client.get("/metrics", headers=MASTER).get_data(as_text=True))
    # Configured without a price but not called yet: a zero series, no row.
    assert found == {
        series("comptroller_unpriced_calls_total", UNPRICED): 0,
        series("comptroller_unpriced_tokens_total", UNPRICED): 0,
        "comptroller_cost_overrun_calls_total": 0,
        "comptroller_cost_overrun_usd_total": 0.0,
        "comptroller_proxy_spend_usd": pytest.approx(spend),
    }


def test_on_postgres_the_count_travels_with_the_commit(make_app, db_url, upstream, monkeypatch):
    if not db_url.startswith("postgres"):
        pytest.skip("the batched spend transaction is PostgreSQL's")
    config = _config(db_url, upstream, UNPRICED)
    config["plugins"] = {"disable": ["rate_limiter", "webhook_alerter"]}
    client = make_app(config).test_client()
    assert chat(client, None, model=UNPRICED).status_code == 200  # prepares the statements
    sent: list[Any] = []
    monkeypatch.setattr(database.obj, "cursor", spy_on_cursors(database.obj.cursor, sent.append))
    assert chat(client, None, model=UNPRICED).status_code == 200
    texts = [sql.decode() if isinstance(sql, bytes) else str(sql) for sql in sent]
    # The read; BEGIN with the ledger statement; the count with the COMMIT: no extra trip.
    assert len(texts) == 3, texts
    count, _, commit = texts[2].rpartition("; ")
    assert commit == "COMMIT"
    assert statement_sql(count).startswith("INSERT INTO unpriced_model")
    assert _unpriced_rows()[UNPRICED].calls == 2


def test_the_price_warning_is_logged_once_per_model(make_app, db_url, upstream, caplog):
    with caplog.at_level(logging.WARNING, logger="comptroller.pricing"):
        client = make_app(_config(db_url, upstream, UNPRICED)).test_client()
        for _ in range(3):
            assert chat(client, None, model=UNPRICED).status_code == 200
        make_app(_config(db_url, upstream, UNPRICED))  # another app in the same process
    warnings = [r for r in caplog.records if UNPRICED in r.getMessage()]
    assert len(warnings) == 1
    assert _unpriced_rows()[UNPRICED].calls == 3


def test_metrics_needs_the_master_key(make_app, db_url, upstream):
    client = make_app(_config(db_url, upstream, UNPRICED)).test_client()
    assert_error(client.get("/metrics"), 401, err_type="auth_error")
    wrong = {"Authorization": "Bearer sk-not-a-key"}
    assert_error(client.get("/metrics", headers=wrong), 401, err_type="auth_error")
    virtual = {"Authorization": f"Bearer {make_key()}"}
    error = assert_error(client.get("/metrics", headers=virtual), 403, err_type="auth_error")
    assert "only the master key" in error["message"]


def test_label_values_are_escaped(make_app, db_url, upstream):
    odd = 'say "hi"\\now\nplease'
    client = make_app(_config(db_url, upstream, odd)).test_client()
    assert chat(client, None, model=odd).status_code == 200
    text = client.get("/metrics", headers=MASTER).get_data(as_text=True)
    escaped = 'say \\"hi\\"\\\\now\\nplease'
    line = f'comptroller_unpriced_calls_total{{model="{escaped}",upstream_model="{escaped}"}} 1'
    assert line in text.splitlines()
    # One line per sample: the newline in the name did not break the line.
    assert [n for n in text.splitlines() if n.startswith("comptroller_unpriced_calls_total")] == [
        line
    ]


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_a_database_at_m0001_gets_the_table(backend, tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}" if backend == "sqlite" else create_pg_database()
    try:
        init_database(url)
        with database.connection_context():
            database.create_tables([AppliedMigration])
            run_migration(m0001)
            AppliedMigration.create(name="m0001_core_tables")
            assert "unpriced_model" not in database.get_tables()
        applied = migrate()
        assert applied[0] == "m0002_unpriced_model"
        assert "m0001_core_tables" not in applied
        assert migrate() == []
        with database.connection_context():
            UnpricedModel.create(model_group="m", upstream_model="m", calls=1, tokens=2**40)
            assert UnpricedModel.get_by_id("m").tokens == 2**40
    finally:
        close_all = getattr(database.obj, "close_all", None)
        if not database.is_closed():
            database.close()
        if close_all is not None:
            close_all()
        if backend == "postgres":
            drop_pg_database(url)


@pytest.mark.slow
@pytest.mark.postgres
def test_concurrent_unpriced_calls_on_two_workers_are_all_counted(
    pg_database: str, upstream: MockOpenAI, tmp_path: Path
):
    truncate_pg_tables(pg_database)
    config = _config(pg_database, upstream, UNPRICED)
    calls = 20

    def call(_: int) -> tuple[int, int]:
        resp = requests.post(
            f"{server.url}/chat/completions",
            headers=MASTER,
            json={"model": UNPRICED, "messages": [{"role": "user", "content": "count me"}]},
            timeout=30,
        )
        return resp.status_code, resp.json().get("usage", {}).get("total_tokens", 0)

    with ProxyServer(config, tmp_path, workers=2, threads=8) as server:
        with ThreadPoolExecutor(max_workers=calls) as pool:
            answers = list(pool.map(call, range(calls)))
        assert [status for status, _ in answers] == [200] * calls
        metrics = requests.get(f"{server.url}/metrics", headers=MASTER, timeout=10)
    tokens = sum(used for _, used in answers)

    init_database(pg_database)
    try:
        row = _unpriced_rows()[UNPRICED]
    finally:
        database.close_all()  # type: ignore[attr-defined]
    assert (row.calls, row.tokens) == (calls, tokens)
    assert samples(metrics.text)[series("comptroller_unpriced_calls_total", UNPRICED)] == calls
