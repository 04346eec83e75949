"""Routing through real gunicorn on PostgreSQL, with several mock upstreams.

Load sharing, per-deployment rpm across two instances, retries past a failing
upstream and its cooldown on every worker, fallbacks billed at the answering
model's price, and streams that fail over only before their first byte.
The mocks count usage their own way (tests/support/mock_openai.py).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from proxy.storage.cooldowns import DeploymentHealth
from proxy.storage.db import database, init_database
from proxy.storage.migrate import migrate
from proxy.storage.models import SpendLog
from tests.support.databases import create_pg_database, drop_pg_database
from tests.support.mock_openai import MockOpenAI
from tests.support.proxy_server import ProxyServer, free_port

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

MASTER_KEY = "sk-master-routing"
AUTH = {"Authorization": f"Bearer {MASTER_KEY}"}
MESSAGES = [{"role": "user", "content": "route me"}]
CHEAP = {"input_cost_per_token": 0.000001, "output_cost_per_token": 0.000002}
DEAR = {"input_cost_per_token": 0.00003, "output_cost_per_token": 0.00006}


@pytest.fixture
def pg_url() -> Iterator[str]:
    url = create_pg_database("comptroller_routing")
    init_database(url)
    migrate()
    try:
        yield url
    finally:
        database.close_all()  # type: ignore[attr-defined]
        drop_pg_database(url)


@pytest.fixture
def mocks() -> Iterator[list[MockOpenAI]]:
    servers = [MockOpenAI().start() for _ in range(3)]
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()


def deployment(name: str, base_url: str, **params: Any) -> dict[str, Any]:
    return {
        "model_name": name,
        "litellm_params": {
            "model": "openai/gpt-4o-mini",
            "api_base": base_url,
            "api_key": "sk-up",
            "timeout": 10,
            **CHEAP,
            **params,
        },
    }


def config(url: str, models: list[dict[str, Any]], **router: Any) -> dict[str, Any]:
    return {
        "model_list": models,
        "general_settings": {"master_key": MASTER_KEY, "database_url": url},
        "router_settings": router,
    }


def chat(url: str, model: str = "gpt-4o-mini", **body: Any) -> requests.Response:
    return requests.post(
        f"{url}/chat/completions",
        headers=AUTH,
        json={"model": model, "messages": MESSAGES, **body},
        timeout=60,
    )


def fire(urls: list[str], count: int, threads: int = 8, **body: Any) -> list[requests.Response]:
    """``count`` calls at once, alternating between ``urls``."""
    local = threading.local()

    def send(i: int) -> requests.Response:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        return local.session.post(
            f"{urls[i % len(urls)]}/chat/completions",
            headers=AUTH,
            json={"model": "gpt-4o-mini", "messages": MESSAGES, **body},
            timeout=60,
        )

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(send, range(count)))


def spend_logs() -> list[SpendLog]:
    with database.connection_context():
        return list(SpendLog.select())


def test_equal_weights_share_the_load_within_a_quarter(pg_url, mocks, tmp_path: Path) -> None:
    models = [deployment("gpt-4o-mini", m.base_url) for m in mocks]
    with ProxyServer(config(pg_url, models), tmp_path, workers=2, threads=4) as proxy:
        responses = fire([proxy.url], 240)
    assert Counter(r.status_code for r in responses) == {200: 240}
    counts = [len(m.requests) for m in mocks]
    assert sum(counts) == 240
    for count in counts:
        assert abs(count - 80) <= 20, counts  # within 25% of an equal share
    assert len(spend_logs()) == 240


def test_weights_share_the_load_in_proportion(pg_url, mocks, tmp_path: Path) -> None:
    models = [
        deployment("gpt-4o-mini", mocks[0].base_url, weight=3),
        deployment("gpt-4o-mini", mocks[1].base_url, weight=1),
    ]
    with ProxyServer(config(pg_url, models), tmp_path, workers=2, threads=4) as proxy:
        responses = fire([proxy.url], 120)
    assert Counter(r.status_code for r in responses) == {200: 120}
    assert abs(len(mocks[0].requests) - 90) <= 15
    assert len(mocks[2].requests) == 0


def test_a_deployments_rpm_is_never_exceeded_across_two_instances(
    pg_url, mocks, tmp_path: Path
) -> None:
    models = [
        deployment("gpt-4o-mini", mocks[0].base_url, rpm=5),
        deployment("gpt-4o-mini", mocks[1].base_url, rpm=3),
    ]
    cfg = config(pg_url, models)
    hosts = [ProxyServer(cfg, tmp_path, workers=2, threads=4, name=f"host{i}") for i in (1, 2)]
    for host in hosts:
        host.start()
    try:
        responses = fire([h.url for h in hosts], 30, threads=10)
    finally:
        for host in hosts:
            host.stop()
    assert (len(mocks[0].requests), len(mocks[1].requests)) == (5, 3)
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {200: 8, 429: 22}
    refused = next(r for r in responses if r.status_code == 429).json()["error"]
    assert refused["type"] == "rate_limit_error"
    assert "rpm/tpm limit" in refused["message"]
    assert len(spend_logs()) == 8  # refused calls charge nothing


def _break(mock: MockOpenAI, how: str) -> str:
    """Make ``mock`` fail as ``how`` says; the api_base to configure for it."""
    if how == "refused":
        mock.stop()
        return f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    mock.fail_status = int(how)
    return mock.base_url


@pytest.mark.parametrize("how", ["500", "429", "refused"])
def test_a_failing_upstream_is_routed_around_and_cooled_down_on_every_worker(
    pg_url, mocks, tmp_path: Path, how: str
) -> None:
    bad_base = _break(mocks[2], how)
    models = [
        deployment("gpt-4o-mini", mocks[0].base_url),
        deployment("gpt-4o-mini", mocks[1].base_url),
        {**deployment("gpt-4o-mini", bad_base), "model_info": {"id": "the-bad-one"}},
    ]
    cfg = config(pg_url, models, num_retries=2, allowed_fails=1, cooldown_time=120)
    hosts = [ProxyServer(cfg, tmp_path, workers=2, threads=4, name=f"host{i}") for i in (1, 2)]
    for host in hosts:
        host.start()
    try:
        first = fire([h.url for h in hosts], 40, threads=6)
        # Every call succeeded through the others.
        assert Counter(r.status_code for r in first) == {200: 40}
        with database.connection_context():
            health = DeploymentHealth.get_by_id("the-bad-one")
        assert health.cooldown_until > health.updated_at + 100
        failed_attempts = len(mocks[2].requests)
        # Cooled down for every worker of both hosts: not one more attempt reaches it.
        second = fire([h.url for h in hosts], 40, threads=6)
        assert Counter(r.status_code for r in second) == {200: 40}
        assert len(mocks[2].requests) == failed_attempts
        info = requests.get(f"{hosts[1].url}/model/info", headers=AUTH, timeout=10).json()
    finally:
        for host in hosts:
            host.stop()
    if how != "refused":
        # Tripped after allowed_fails + 1 failures (a 429: after one), give or take
        # the calls already on their way when it tripped.
        assert 1 <= failed_attempts <= 2 + 6
    assert len(mocks[0].requests) + len(mocks[1].requests) == 80
    bad = next(d for d in info["data"] if d["model_info"]["id"] == "the-bad-one")
    assert bad["model_info"]["health"]["status"] == "cooldown"
    assert bad["model_info"]["health"]["cooldown_until"] > 0
    good = [d for d in info["data"] if d["model_info"]["id"] != "the-bad-one"]
    assert {d["model_info"]["health"]["status"] for d in good} == {"healthy"}
    assert len(spend_logs()) == 80  # billed once each


def test_a_fallback_is_billed_at_the_answering_models_price(pg_url, mocks, tmp_path: Path) -> None:
    mocks[0].fail_status = 500
    models = [
        deployment("cheap", mocks[0].base_url),
        deployment("dear", mocks[1].base_url, **DEAR),
    ]
    cfg = config(pg_url, models, num_retries=1, fallbacks=[{"cheap": ["dear"]}])
    with ProxyServer(cfg, tmp_path, workers=2, threads=4) as proxy:
        resp = chat(proxy.url, "cheap")
        info = requests.get(f"{proxy.url}/model/info", headers=AUTH, timeout=10).json()
    assert resp.status_code == 200, resp.text
    assert (len(mocks[0].requests), len(mocks[1].requests)) == (2, 1)  # the call + 1 retry
    usage = resp.json()["usage"]
    [log] = spend_logs()
    assert log.model_group == "cheap"  # what was asked for
    assert log.metadata["model_name"] == "dear"  # what answered
    expected = usage["prompt_tokens"] * 0.00003 + usage["completion_tokens"] * 0.00006
    assert log.spend == pytest.approx(expected, rel=1e-9)
    assert log.prompt_tokens == usage["prompt_tokens"]
    prices = {d["model_name"]: d["model_info"]["input_cost_per_token"] for d in info["data"]}
    assert prices == {"cheap": 0.000001, "dear": 0.00003}


def test_a_stream_fails_over_before_its_first_byte(pg_url, mocks, tmp_path: Path) -> None:
    mocks[0].stream_break_after = 0  # a 200, then the connection drops before any event
    models = [deployment("first", mocks[0].base_url), deployment("second", mocks[1].base_url)]
    cfg = config(pg_url, models, num_retries=1, fallbacks=[{"first": ["second"]}])
    with ProxyServer(cfg, tmp_path, workers=2, threads=4) as proxy:
        resp = chat(proxy.url, "first", stream=True)
        text = resp.text
    assert resp.status_code == 200
    assert text.rstrip().endswith("data: [DONE]")
    assert '"error"' not in text
    assert (len(mocks[0].requests), len(mocks[1].requests)) == (2, 1)
    [log] = spend_logs()
    assert (log.status, log.model_group, log.metadata["model_name"]) == (
        "success",
        "first",
        "second",
    )
    assert log.spend > 0


def test_a_stream_does_not_fail_over_after_its_first_byte(pg_url, mocks, tmp_path: Path) -> None:
    mocks[0].stream_break_after = 3  # the role chunk and two words, then the connection drops
    models = [deployment("first", mocks[0].base_url), deployment("second", mocks[1].base_url)]
    cfg = config(pg_url, models, num_retries=1, fallbacks=[{"first": ["second"]}])
    with ProxyServer(cfg, tmp_path, workers=2, threads=4) as proxy:
        resp = chat(proxy.url, "first", stream=True)
        text = resp.text
    assert resp.status_code == 200
    assert '"error"' in text and "[DONE]" not in text  # the error is relayed
    assert (len(mocks[0].requests), len(mocks[1].requests)) == (1, 0)
    [log] = spend_logs()
    assert log.status == "failed"
    assert log.completion_tokens > 0 and log.spend > 0  # the partial answer is billed


def test_health_calls_every_deployment_on_demand(pg_url, mocks, tmp_path: Path) -> None:
    mocks[1].fail_status = 401
    models = [
        deployment("gpt-4o-mini", mocks[0].base_url),
        deployment("gpt-4o-mini", mocks[1].base_url, api_key="sk-secret-upstream"),
    ]
    with ProxyServer(config(pg_url, models), tmp_path, workers=1, threads=4) as proxy:
        refused = requests.get(f"{proxy.url}/health", timeout=30)
        resp = requests.get(f"{proxy.url}/health", headers=AUTH, timeout=30)
        unknown = requests.get(f"{proxy.url}/health?model=nope", headers=AUTH, timeout=30)
    assert refused.status_code == 401
    assert unknown.status_code == 404
    body = resp.json()
    assert (body["healthy_count"], body["unhealthy_count"]) == (1, 1)
    assert body["healthy_endpoints"][0]["api_base"] == mocks[0].base_url
    assert "401" in body["unhealthy_endpoints"][0]["error"]
    assert "sk-secret-upstream" not in resp.text
    assert spend_logs() == []  # health checks are not metered
