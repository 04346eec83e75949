"""The router in-process: choosing, retrying, cooling down and falling back.

Several deployments of one model point at the same mock upstream under
different api_keys, so which one answered shows in the request's header.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pluggy
import pytest
from flask import Flask

from proxy.call.router import Router, fallback_kind
from proxy.config import build_config
from proxy.errors import ProxyError
from proxy.storage.cooldowns import DeploymentHealth, cooled_down, record_failure
from proxy.storage.db import database
from proxy.storage.models import SpendLog
from proxy.upstream.deployments import ModelTable
from tests.conftest import MASTER, base_config
from tests.support.mock_openai import MockOpenAI

MESSAGES = [{"role": "user", "content": "hello router"}]


def dep(name: str, upstream: MockOpenAI, key: str, **params: Any) -> dict[str, Any]:
    return {
        "model_name": name,
        "litellm_params": {
            "model": "openai/gpt-4o-mini",
            "api_base": upstream.base_url,
            "api_key": key,
            "timeout": 5,
            "input_cost_per_token": 0.000001,
            "output_cost_per_token": 0.000002,
            **params,
        },
        "model_info": {"id": key},
    }


def keys_seen(upstream: MockOpenAI) -> list[str]:
    return [r.headers["authorization"].removeprefix("Bearer ") for r in upstream.requests]


def chat(app: Flask, model: str = "m", **body: Any) -> Any:
    return app.test_client().post(
        "/chat/completions", json={"model": model, "messages": MESSAGES, **body}, headers=MASTER
    )


def table(*models: dict[str, Any], **router: Any) -> ModelTable:
    return ModelTable(build_config({"model_list": list(models), "router_settings": router}))


def test_simple_shuffle_follows_the_weights_over_a_few_calls(upstream: MockOpenAI) -> None:
    models = table(dep("m", upstream, "a", weight=2), dep("m", upstream, "b", weight=1))
    router = Router(models, build_config({}).router_settings, pluggy.PluginManager("x"))
    picks = Counter(router.pick(models.group("m")).id for _ in range(30))
    assert picks == {"a": 20, "b": 10}


def test_rpm_weighs_when_no_weight_is_given(upstream: MockOpenAI) -> None:
    models = table(dep("m", upstream, "a", rpm=900), dep("m", upstream, "b", rpm=300))
    assert [d.share for d in models.group("m")] == [900.0, 300.0]


def test_least_busy_picks_the_deployment_with_fewest_calls_in_flight(
    upstream: MockOpenAI,
) -> None:
    models = table(dep("m", upstream, "a"), dep("m", upstream, "b"))
    settings = build_config({"router_settings": {"routing_strategy": "least-busy"}})
    router = Router(models, settings.router_settings, pluggy.PluginManager("x"))
    router._in_flight["a"] = 2
    assert {router.pick(models.group("m")).id for _ in range(10)} == {"b"}


@pytest.mark.parametrize(
    ("status", "message", "kind"),
    [
        (400, "This model's maximum context length is 8192 tokens", "context_window_fallbacks"),
        (400, "context_length_exceeded", "context_window_fallbacks"),
        (400, "The response was filtered: content_filter", "content_policy_fallbacks"),
        (429, "Rate limit reached", "fallbacks"),
        (500, "boom", "fallbacks"),
        (502, "connection refused", "fallbacks"),
        (504, "timed out", "fallbacks"),
        (401, "Incorrect API key provided", "fallbacks"),
        (400, "'messages' must be a non-empty array", None),
        (422, "bad", None),
    ],
)
def test_which_errors_fall_back(status: int, message: str, kind: str | None) -> None:
    assert fallback_kind(ProxyError(message, status=status)) == kind


def test_reachable_includes_every_fallback_group(upstream: MockOpenAI) -> None:
    config = build_config(
        {
            "model_list": [
                dep("m", upstream, "a"),
                dep("big", upstream, "b"),
                dep("safe", upstream, "c"),
                dep("other", upstream, "d"),
            ],
            "router_settings": {
                "fallbacks": [{"m": ["other"]}],
                "context_window_fallbacks": [{"m": ["big"]}],
                "content_policy_fallbacks": [{"*": ["safe"]}],
            },
        }
    )
    router = Router(ModelTable(config), config.router_settings, pluggy.PluginManager("x"))
    assert [d.id for d in router.reachable("m")] == ["a", "b", "c", "d"]
    assert [d.id for d in router.reachable("other")] == ["d", "c"]  # "*" applies to all


def test_a_failed_attempt_is_retried_on_the_other_deployment(
    make_app: Any, db_url: str, upstream: MockOpenAI
) -> None:
    models = [dep("m", upstream, "a"), dep("m", upstream, "b")]
    app = make_app(base_config(db_url, model_list=models, router_settings={"num_retries": 1}))
    upstream.fail_next(1, status=503)
    resp = chat(app)
    assert resp.status_code == 200
    first, second = keys_seen(upstream)
    assert first != second  # the retry went to the deployment not yet tried
    with database.connection_context():
        [log] = SpendLog.select()
    assert log.metadata["model_id"] == second


def test_a_client_error_is_not_retried(make_app: Any, db_url: str, upstream: MockOpenAI) -> None:
    models = [dep("m", upstream, "a"), dep("m", upstream, "b")]
    app = make_app(base_config(db_url, model_list=models))
    upstream.fail_status = 400
    resp = chat(app)
    assert resp.status_code == 400
    assert len(upstream.requests) == 1


def test_more_than_allowed_fails_cools_a_deployment_down(
    make_app: Any, db_url: str, upstream: MockOpenAI
) -> None:
    models = [dep("m", upstream, "a"), dep("m", upstream, "b")]
    settings = {"num_retries": 0, "allowed_fails": 1, "cooldown_time": 60}
    app = make_app(base_config(db_url, model_list=models, router_settings=settings))
    upstream.fail_status = 500
    for _ in range(4):
        assert chat(app).status_code == 500
    # Each deployment failed twice (more than allowed_fails=1): both cool down.
    with database.connection_context():
        cooling = cooled_down(["a", "b"], time.time())
    assert set(cooling) == {"a", "b"}
    upstream.reset()
    resp = chat(app)
    assert resp.status_code == 429
    assert "cooling down" in resp.get_json()["error"]["message"]
    assert upstream.requests == []


def test_a_groups_only_deployment_is_never_cooled_down(
    make_app: Any, db_url: str, upstream: MockOpenAI
) -> None:
    settings = {"num_retries": 0, "allowed_fails": 0}
    app = make_app(
        base_config(db_url, model_list=[dep("m", upstream, "a")], router_settings=settings)
    )
    upstream.fail_next(1, status=429)
    assert chat(app).status_code == 429
    assert chat(app).status_code == 200
    with database.connection_context():
        assert DeploymentHealth.select().count() == 0


def test_failures_count_in_one_minute_window(db_url: str, make_app: Any) -> None:
    make_app()  # migrated database
    now = 1_000_000.0
    with database.connection_context():
        assert record_failure("d", now, 2, 30, immediate=False, error="500") < now
        assert record_failure("d", now + 1, 2, 30, immediate=False, error="500") < now
        # A minute later the count starts again.
        assert record_failure("d", now + 61, 2, 30, immediate=False, error="500") < now + 61
        assert record_failure("d", now + 62, 2, 30, immediate=False, error="500") < now + 62
        assert record_failure("d", now + 63, 2, 30, immediate=False, error="500") == now + 93
        assert cooled_down(["d", "e"], now + 64) == {"d": now + 93}
        # A rate limit cools down at once.
        assert record_failure("e", now, 5, 10, immediate=True, error="429") == now + 10


def test_a_context_window_error_moves_to_the_larger_model(
    make_app: Any, db_url: str, upstream: MockOpenAI
) -> None:
    models = [dep("m", upstream, "small"), dep("big", upstream, "large", **DEAR)]
    settings = {"context_window_fallbacks": [{"m": ["big"]}]}
    app = make_app(base_config(db_url, model_list=models, router_settings=settings))
    upstream.fail_next(1, 400, "This model's maximum context length is 8192 tokens")
    resp = chat(app)
    assert resp.status_code == 200
    assert keys_seen(upstream) == ["small", "large"]
    usage = resp.get_json()["usage"]
    with database.connection_context():
        [log] = SpendLog.select()
    assert (log.model_group, log.metadata["model_name"]) == ("m", "big")
    assert log.spend == pytest.approx(
        usage["prompt_tokens"] * 0.00001 + usage["completion_tokens"] * 0.00003
    )


DEAR = {"input_cost_per_token": 0.00001, "output_cost_per_token": 0.00003}


def test_a_strict_budget_bounds_the_call_by_its_dearest_fallback(
    make_app: Any, db_url: str, upstream: MockOpenAI
) -> None:
    """Room for the cheap model's worst case but not the fallback's: refused up front."""
    models = [dep("m", upstream, "cheap"), dep("dear", upstream, "dear", **DEAR)]
    cfg = base_config(
        db_url,
        model_list=models,
        router_settings={"fallbacks": [{"m": ["dear"]}]},
        general_settings={
            **base_config(db_url)["general_settings"],
            "budget_enforcement": "strict",
        },
    )
    app = make_app(cfg)
    made = app.test_client().post("/key/generate", json={"max_budget": 0.001}, headers=MASTER)
    key = {"Authorization": f"Bearer {made.get_json()['key']}"}
    body = {"model": "m", "messages": MESSAGES, "max_tokens": 100}
    # Cheap worst case: ~100 * 0.000002 = $0.0002 fits; dear: 100 * 0.00003 = $0.003 does not.
    resp = app.test_client().post("/chat/completions", json=body, headers=key)
    assert resp.status_code == 401, resp.get_json()  # the budget refusal
    assert upstream.requests == []
    body["max_tokens"] = 20  # 20 * 0.00003 + prompt fits in $0.001
    assert app.test_client().post("/chat/completions", json=body, headers=key).status_code == 200


def test_leases_and_reservations_outlive_every_attempt(upstream: MockOpenAI) -> None:
    """Each of the 3 attempts on the model and on its fallback may time out."""
    config = build_config(
        {
            "model_list": [
                dep("m", upstream, "a", timeout=5),
                dep("m", upstream, "b", timeout=7),
                dep("f", upstream, "c", timeout=10),
            ],
            "router_settings": {"num_retries": 2, "fallbacks": [{"m": ["f"]}]},
        }
    )
    router = Router(ModelTable(config), config.router_settings, pluggy.PluginManager("x"))
    assert router.max_seconds("m") == 3 * 7 + 3 * 10
    assert router.max_seconds("f") == 3 * 10


def test_usage_based_routing_sends_each_call_to_the_least_used_deployment(
    make_app: Any, db_url: str, upstream: MockOpenAI
) -> None:
    models = [dep("m", upstream, "a"), dep("m", upstream, "b")]
    settings = {"routing_strategy": "usage-based-routing"}
    app = make_app(base_config(db_url, model_list=models, router_settings=settings))
    for _ in range(10):
        assert chat(app).status_code == 200
    # Every call costs the same tokens, so the counts take turns: an exact split.
    assert Counter(keys_seen(upstream)) == {"a": 5, "b": 5}
    seen = keys_seen(upstream)
    assert all(x != y for x, y in zip(seen[::2], seen[1::2], strict=True))


def test_a_deployment_at_its_tpm_is_skipped_for_the_rest_of_its_minute(
    make_app: Any, db_url: str, upstream: MockOpenAI
) -> None:
    models = [dep("m", upstream, "a", tpm=1), dep("m", upstream, "b", weight=1)]
    app = make_app(base_config(db_url, model_list=models))
    for _ in range(4):
        assert chat(app).status_code == 200
    # Its first call's tokens fill a's minute: every later call goes to b.
    assert Counter(keys_seen(upstream)) == {"a": 1, "b": 3}
