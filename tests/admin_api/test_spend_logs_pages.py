"""/spend/logs answers one page at a time: bounded, with a link to the next page."""

from __future__ import annotations

import tracemalloc
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from proxy.api.admin.schemas import SPEND_LOGS_PAGE_SIZE
from proxy.storage.db import database, is_postgres
from tests.admin_api.test_admin_spend import add_log
from tests.conftest import MASTER
from tests.support.assertions import assert_error


def _next_link(resp: Any) -> str | None:
    link = resp.headers.get("Link")
    if link is None:
        return None
    assert link.endswith('>; rel="next"'), link
    return link[1 : link.index(">")]


def _add_logs(count: int, **fields: Any) -> None:
    for index in range(count):
        add_log(f"r{index:03d}", f"2024-01-01T10:{index // 60:02d}:{index % 60:02d}", **fields)


def test_pages_follow_the_next_link_with_the_filters_kept(client) -> None:
    _add_logs(7, end_user="e1")
    add_log("other", "2024-01-01T10:00:03", end_user="e2")
    url: str | None = "/spend/logs?end_user=e1&page_size=3"
    seen: list[str] = []
    pages = 0
    while url is not None:
        resp = client.get(url, headers=MASTER)
        assert resp.status_code == 200, resp.get_data(as_text=True)
        rows = resp.get_json()
        assert isinstance(rows, list) and len(rows) <= 3
        assert {row["end_user"] for row in rows} == {"e1"}
        seen += [row["request_id"] for row in rows]
        pages += 1
        url = _next_link(resp)
        if url is not None:
            query = parse_qs(urlsplit(url).query)
            assert query["end_user"] == ["e1"] and query["page_size"] == ["3"]
    assert pages == 3
    assert seen == [f"r{index:03d}" for index in range(7)]


def test_the_last_page_has_no_next_link_and_a_page_past_the_end_is_empty(client) -> None:
    _add_logs(3)
    last = client.get("/spend/logs?page_size=3", headers=MASTER)
    assert len(last.get_json()) == 3 and "Link" not in last.headers
    past = client.get("/spend/logs?page=2&page_size=3", headers=MASTER)
    assert past.status_code == 200 and past.get_json() == []


def test_a_client_that_reads_one_page_gets_the_default_page_size(client) -> None:
    _add_logs(5)
    resp = client.get("/spend/logs", headers=MASTER)
    assert len(resp.get_json()) == 5 and "Link" not in resp.headers


@pytest.mark.parametrize(
    ("query", "param"),
    [
        (f"page_size={SPEND_LOGS_PAGE_SIZE + 1}", "page_size"),
        ("page_size=0", "page_size"),
        ("page=0", "page"),
        ("page=x", "page"),
    ],
)
def test_a_page_outside_the_bounds_is_400(client, query: str, param: str) -> None:
    assert_error(client.get(f"/spend/logs?{query}", headers=MASTER), 400, param=param)


@pytest.mark.postgres
def test_a_worker_holds_one_page_whatever_the_table_size(client) -> None:
    """100k rows (written by the server itself): the default page is 1000 rows, and
    the memory a request allocates is that of one page, not of the table."""
    if not is_postgres():
        pytest.skip("the large table is made with generate_series")
    with database.connection_context():
        database.execute_sql(
            "INSERT INTO spend_log (request_id, call_type, model, model_group, prompt_tokens, "
            "completion_tokens, total_tokens, spend, start_time, end_time, status, metadata, "
            "overrun) SELECT 'bulk-' || i, 'chat', 'm', 'm', 1, 1, 2, 0.001, 1700000000 + i, "
            "1700000000 + i, 'success', '{}', 0 FROM generate_series(1, 100000) AS i"
        )
    tracemalloc.start()
    try:
        resp = client.get("/spend/logs", headers=MASTER)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert resp.status_code == 200
    assert len(resp.get_json()) == SPEND_LOGS_PAGE_SIZE
    assert _next_link(resp) is not None
    # One page of 1000 rows is a few MB at most; the whole table would be ~100x that.
    assert peak < 20 * 1024 * 1024, peak
