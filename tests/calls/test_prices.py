"""Prices match the providers' published prices, every billed part included.

The expected numbers are the providers' list prices in USD per million tokens,
written here by hand from their price pages (not read from the data set the
code uses), so a wrong look-up or a stale data set fails these tests.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone

import pytest

from proxy.call import cost as pricing
from proxy.call.context import Usage
from proxy.call.cost import PriceOverrides, cost_of, resolve_price
from proxy.upstream.deployments import price_info

M = 1e-6  # a price per million tokens, per token


@pytest.fixture(autouse=True)
def _fresh_pricing_state():
    pricing._reset_for_tests()
    yield
    pricing._reset_for_tests()


def usd(provider: str, model: str, usage: Usage, call_type: str = "chat", **kw) -> float:
    return cost_of(resolve_price(model, provider, None, PriceOverrides(**kw)), usage, call_type)


# --- the models the issue names: list prices (input, output) per million ---------

PUBLISHED = [
    ("openai", "gpt-3.5-turbo", 0.50, 1.50),
    ("openai", "gpt-4o", 2.50, 10.00),
    ("openai", "gpt-4o-2024-05-13", 5.00, 15.00),
    ("openai", "gpt-4o-mini", 0.15, 0.60),
    ("openai", "gpt-5", 1.25, 10.00),
    ("openai", "gpt-5-mini", 0.25, 2.00),
    ("openai", "o3", 2.00, 8.00),
    ("openai", "o4-mini", 1.10, 4.40),
    ("anthropic", "claude-sonnet-4-5", 3.00, 15.00),
    ("anthropic", "claude-sonnet-4-20250514", 3.00, 15.00),
    ("anthropic", "claude-opus-4-1", 15.00, 75.00),
    ("mistral", "mistral-large-latest", 2.00, 6.00),
    ("mistral", "mistral-large-2512", 0.50, 1.50),
    ("mistral", "mistral-medium", 0.40, 2.00),
    ("gemini", "gemini-2.5-pro", 1.25, 10.00),
    ("gemini", "gemini-2.5-flash", 0.30, 2.50),
    ("xai", "grok-4", 3.00, 15.00),
]


@pytest.mark.parametrize(("provider", "model", "inp", "out"), PUBLISHED)
def test_list_prices_of_the_models_named_in_the_issue(provider, model, inp, out):
    price = resolve_price(model, provider, None)
    assert price.known
    assert price.input_cost_per_token == pytest.approx(inp * M)
    assert price.output_cost_per_token == pytest.approx(out * M)
    cost = cost_of(price, Usage(prompt_tokens=1000, completion_tokens=100), "chat")
    assert cost == pytest.approx((1000 * inp + 100 * out) * M)


def test_a_dated_snapshot_keeps_its_own_price_not_its_familys():
    assert resolve_price("gpt-4o-2024-05-13", "openai", None).rates.input == pytest.approx(5 * M)
    assert resolve_price("gpt-4o-2024-08-06", "openai", None).rates.input == pytest.approx(2.5 * M)


# --- each billed part ------------------------------------------------------------


def test_cached_input_tokens_are_billed_at_the_cached_price():
    # gpt-4o: $2.50 input, $1.25 cached input, $10 output per million.
    usage = Usage(prompt_tokens=10_000, completion_tokens=200, cache_read_tokens=8_000)
    assert usd("openai", "gpt-4o", usage) == pytest.approx(
        (2_000 * 2.50 + 8_000 * 1.25 + 200 * 10.0) * M
    )


def test_anthropic_cache_reads_and_writes_at_their_prices():
    # claude-sonnet-4: $3 input, $3.75 5-minute cache write, $0.30 cache read, $15 output.
    usage = Usage(
        prompt_tokens=20_000,
        completion_tokens=500,
        cache_read_tokens=18_000,
        cache_write_tokens=1_000,
    )
    expected = (1_000 * 3.0 + 18_000 * 0.30 + 1_000 * 3.75 + 500 * 15.0) * M
    assert usd("anthropic", "claude-sonnet-4-20250514", usage) == pytest.approx(expected)


def test_tiered_prices_apply_above_the_threshold_to_every_token():
    # gemini-2.5-pro: $1.25/$10 up to 200k prompt tokens, $2.50/$15 above.
    small = Usage(prompt_tokens=200_000, completion_tokens=1_000)
    large = Usage(prompt_tokens=200_001, completion_tokens=1_000)
    assert usd("gemini", "gemini-2.5-pro", small) == pytest.approx(
        (200_000 * 1.25 + 1_000 * 10) * M
    )
    assert usd("gemini", "gemini-2.5-pro", large) == pytest.approx(
        (200_001 * 2.50 + 1_000 * 15) * M
    )
    # claude-sonnet-4-5 above 200k: $6 input, $22.50 output, $0.60 cache read.
    usage = Usage(prompt_tokens=250_000, completion_tokens=100, cache_read_tokens=50_000)
    assert usd("anthropic", "claude-sonnet-4-5", usage) == pytest.approx(
        (200_000 * 6.0 + 50_000 * 0.60 + 100 * 22.50) * M
    )


def test_audio_tokens_at_the_audio_prices():
    # gpt-audio: text $2.50/$10, audio $32 in / $64 out per million.
    usage = Usage(
        prompt_tokens=1_000, completion_tokens=600, audio_input_tokens=400, audio_output_tokens=500
    )
    assert usd("openai", "gpt-audio", usage) == pytest.approx(
        (600 * 2.50 + 400 * 32.0 + 100 * 10.0 + 500 * 64.0) * M
    )


def test_reasoning_tokens_are_billed_as_output():
    usage = Usage(prompt_tokens=100, completion_tokens=1_000, reasoning_tokens=900)
    assert usd("openai", "o3", usage) == pytest.approx((100 * 2.0 + 1_000 * 8.0) * M)


def test_embeddings_bill_input_only():
    # text-embedding-3-small: $0.02 per million; text-embedding-3-large $0.13.
    usage = Usage(prompt_tokens=5_000, completion_tokens=7)
    assert usd("openai", "text-embedding-3-small", usage, "embeddings") == pytest.approx(
        5_000 * 0.02 * M
    )
    assert usd("openai", "text-embedding-3-large", usage, "embeddings") == pytest.approx(
        5_000 * 0.13 * M
    )


def test_time_of_day_prices_follow_the_calls_time():
    # deepseek-chat: $0.27/$1.10 from 00:30 to 16:30 UTC, half that off-peak.
    price = resolve_price("deepseek-chat", "deepseek", None)
    usage = Usage(prompt_tokens=1_000_000, completion_tokens=1_000_000)
    noon = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc).timestamp()
    night = datetime(2026, 1, 5, 20, 0, tzinfo=timezone.utc).timestamp()
    assert cost_of(price, usage, "chat", at=noon) == pytest.approx(0.27 + 1.10)
    assert cost_of(price, usage, "chat", at=night) == pytest.approx(0.135 + 0.55)
    # The worst case takes the dearer one, whatever the time at start-up.
    assert price.dearest_rates_up_to(10) == pytest.approx((0.27 * M, 1.10 * M))


def test_cost_agrees_with_the_data_sets_own_calculator():
    from genai_prices import Usage as DataUsage
    from genai_prices import calc_price

    moment = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)
    for provider, model in [
        ("openai", "gpt-4o"),
        ("openai", "gpt-5-mini"),
        ("anthropic", "claude-sonnet-4-5"),
        ("google", "gemini-2.5-pro"),
        ("deepseek", "deepseek-chat"),
        ("mistral", "mistral-large-2512"),
    ]:
        for prompt, read, write, out in [(1_000, 0, 0, 50), (300_000, 100_000, 2_000, 4_000)]:
            usage = Usage(prompt, out, cache_read_tokens=read, cache_write_tokens=write)
            theirs = calc_price(
                DataUsage(
                    input_tokens=prompt,
                    cache_read_tokens=read,
                    cache_write_tokens=write,
                    output_tokens=out,
                ),
                model,
                provider_id=provider,
                genai_request_timestamp=moment,
            ).total_price
            ours = cost_of(resolve_price(model, provider, None), usage, "chat", moment.timestamp())
            assert ours == pytest.approx(float(theirs), rel=1e-9), (model, prompt)


# --- where the price comes from ------------------------------------------------


def test_provider_from_api_base_when_the_prefix_is_generic():
    price = resolve_price("deepseek-chat", "openai", "https://api.deepseek.com/v1")
    assert price.source.endswith("deepseek/deepseek-chat")


def test_azure_deployment_priced_by_the_azure_provider():
    price = resolve_price("gpt-4o", "azure", "https://example.openai.azure.com")
    assert price.known and price.input_cost_per_token == pytest.approx(2.5 * M)


def test_litellm_params_override_each_part():
    price = resolve_price(
        "claude-sonnet-4-5",
        "anthropic",
        None,
        PriceOverrides(
            input_cost_per_token=1 * M,
            cache_read_input_token_cost=0.1 * M,
            cache_creation_input_token_cost=1.25 * M,
        ),
    )
    assert price.source.startswith("litellm_params over genai-prices")
    assert (price.rates.input, price.rates.cache_read, price.rates.cache_write) == (
        1 * M,
        0.1 * M,
        1.25 * M,
    )
    assert price.rates.output == pytest.approx(15 * M)  # not overridden: the data set's
    usage = Usage(prompt_tokens=3_000, completion_tokens=0, cache_read_tokens=1_000)
    assert cost_of(price, usage, "chat") == pytest.approx((2_000 * 1 + 1_000 * 0.1) * M)


def test_above_200k_overrides_make_a_tier():
    price = resolve_price(
        "my-model",
        "openai",
        None,
        PriceOverrides(
            input_cost_per_token=1 * M,
            output_cost_per_token=2 * M,
            input_cost_per_token_above_200k_tokens=3 * M,
            output_cost_per_token_above_200k_tokens=4 * M,
        ),
    )
    assert price.known and price.source == "litellm_params"
    assert cost_of(price, Usage(200_001, 10), "chat") == pytest.approx((200_001 * 3 + 40) * M)
    assert cost_of(price, Usage(100, 10), "chat") == pytest.approx((100 + 20) * M)


def test_unknown_model_is_free_and_warns_once(caplog):
    with caplog.at_level(logging.WARNING, logger="comptroller.pricing"):
        price = resolve_price("in-house-llm", "openai", "http://10.0.0.5/v1")
        resolve_price("in-house-llm", "openai", "http://10.0.0.5/v1")
    assert not price.known and price.source == "unpriced"
    assert sum("in-house-llm" in r.getMessage() for r in caplog.records) == 1
    assert cost_of(price, Usage(100, 100), "chat") == 0.0


def test_model_info_shows_prices_in_use_and_their_source():
    info = price_info(resolve_price("gpt-4o", "openai", None))
    assert info["input_cost_per_token"] == pytest.approx(2.5 * M)
    assert info["cache_read_input_token_cost"] == pytest.approx(1.25 * M)
    assert info["price_source"].startswith("genai-prices 0.2.3: openai/gpt-4o")
    assert info["priced"] is True and info["max_output_tokens"] == 16384
    tiers = price_info(resolve_price("gemini-2.5-pro", "gemini", None))["price_tiers"]
    assert tiers[0]["above_input_tokens"] == 200_000
    assert tiers[0]["input_cost_per_token"] == pytest.approx(2.5 * M)


def test_negative_or_nonsense_usage_costs_nothing():
    assert usd("openai", "gpt-4o", Usage(prompt_tokens=-5, completion_tokens=-1)) <= 0.0
