import logging
import math

import pytest

from proxy.call import pricing
from proxy.call.pricing import (
    Price,
    compute_cost,
    estimate_prompt_tokens,
    load_price_table,
    price_for,
    unpriced_models_seen,
)


@pytest.fixture(autouse=True)
def _fresh_pricing_state():
    pricing._reset_for_tests()
    yield
    pricing._reset_for_tests()


def test_table_ships_the_common_models_with_sane_entries():
    table = load_price_table()
    expected = [
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4.1",
        "gpt-4.1-mini",
        "gpt-4.1-nano",
        "gpt-4-turbo",
        "gpt-4",
        "gpt-3.5-turbo",
        "gpt-3.5-turbo-0125",
        "o1",
        "o1-mini",
        "o3-mini",
        "text-embedding-3-small",
        "text-embedding-3-large",
        "text-embedding-ada-002",
        "gpt-35-turbo",
        "claude-3-5-sonnet",
        "claude-3-5-haiku",
        "claude-3-opus",
        "claude-3-haiku",
        "claude-sonnet-4",
        "claude-opus-4",
        "mistral-small",
        "mistral-medium",
        "mistral-large",
        "open-mistral-7b",
        "open-mixtral-8x7b",
    ]
    for name in expected:
        entry = table[name]
        assert entry["mode"] in ("chat", "embedding"), name
        assert 0 < entry["input_cost_per_token"] < 1e-3, name
        assert 0 <= entry["output_cost_per_token"] < 1e-3, name
        if entry["mode"] == "chat":
            assert entry["max_output_tokens"] > 0, name
    assert not any(key.startswith("_") for key in table)
    assert load_price_table() is table  # read once


def test_exact_lookup():
    price = price_for("gpt-4o", "openai", None, None, None)
    assert price == Price(2.5e-6, 1e-5, 16384, True, "gpt-4o")


@pytest.mark.parametrize(
    ("model", "family"),
    [
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("claude-3-5-sonnet-20241022", "claude-3-5-sonnet"),
        ("claude-3-5-sonnet-latest", "claude-3-5-sonnet"),
        ("gpt-4-0613", "gpt-4"),
        ("mistral-large-2407", "mistral-large"),
        ("mistral-small-latest", "mistral-small"),
        ("GPT-4o", "gpt-4o"),
    ],
)
def test_version_suffix_is_stripped(model, family):
    entry = load_price_table()[family]
    price = price_for(model, "openai", None, None, None)
    assert price.known
    assert price.input_cost_per_token == entry["input_cost_per_token"]
    assert price.output_cost_per_token == entry["output_cost_per_token"]


def test_exact_snapshot_entry_wins_over_family():
    assert price_for("gpt-3.5-turbo-0125", "openai", None, None, None).input_cost_per_token == (
        0.5e-6
    )
    assert price_for("gpt-3.5-turbo", "openai", None, None, None).input_cost_per_token == 1.5e-6


def test_provider_prefixed_names(monkeypatch):
    table = {"azure/special": {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}}
    monkeypatch.setattr(pricing, "load_price_table", lambda: table)
    price = price_for("special-2024-01-01", "azure", None, None, None)
    assert (price.input_cost_per_token, price.output_cost_per_token, price.known) == (
        1e-6,
        2e-6,
        True,
    )
    assert not price_for("special", "openai", None, None, None).known


def test_model_given_with_a_provider_prefix():
    price = price_for("anthropic/claude-3-haiku-20240307", "openai", None, None, None)
    assert (price.input_cost_per_token, price.output_cost_per_token) == (0.25e-6, 1.25e-6)


def test_azure_spelling():
    price = price_for("gpt-35-turbo", "azure", None, None, None)
    assert price.known and price.output_cost_per_token == 2e-6


def test_overrides_win_per_field():
    price = price_for("gpt-4o", "openai", 1e-6, None, None)
    assert (price.input_cost_per_token, price.output_cost_per_token) == (1e-6, 1e-5)
    price = price_for("gpt-4o", "openai", None, 0.0, 100)
    assert (price.input_cost_per_token, price.output_cost_per_token) == (2.5e-6, 0.0)
    assert price.max_output_tokens == 100


def test_overrides_price_an_unknown_model(caplog):
    with caplog.at_level(logging.WARNING, logger="comptroller.pricing"):
        price = price_for("my-finetune", "openai", 1e-6, 3e-6, 500)
    assert price == Price(1e-6, 3e-6, 500, True, "my-finetune")
    assert caplog.records == []
    assert compute_cost(price, 10, 10, "chat") == pytest.approx(4e-5)
    assert unpriced_models_seen() == {}


def test_chat_cost():
    price = price_for("gpt-4o-mini", "openai", None, None, None)
    assert compute_cost(price, 1000, 500, "chat") == pytest.approx(1000 * 0.15e-6 + 500 * 0.6e-6)


def test_embeddings_cost_counts_prompt_tokens_only():
    price = price_for("text-embedding-3-small", "openai", None, None, None)
    assert price.max_output_tokens is None
    assert compute_cost(price, 1000, 0, "embeddings") == pytest.approx(2e-5)
    odd = Price(1e-6, 1.0, None, True)
    assert compute_cost(odd, 10, 99, "embeddings") == pytest.approx(1e-5)


def test_unknown_model_is_free_warns_once_and_is_counted(caplog):
    with caplog.at_level(logging.WARNING, logger="comptroller.pricing"):
        price = price_for("mystery-model", "openai", None, None, None)
        again = price_for("mystery-model", "azure", None, None, None)
    assert price == Price(0.0, 0.0, None, False, "mystery-model")
    assert again == price
    warnings = [r for r in caplog.records if "mystery-model" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert unpriced_models_seen() == {"mystery-model": 0}
    assert compute_cost(price, 100, 100, "chat") == 0.0
    assert compute_cost(price, 5, 0, "chat") == 0.0
    assert unpriced_models_seen() == {"mystery-model": 2}


def test_unknown_model_with_one_override_warns_but_is_known(caplog):
    with caplog.at_level(logging.WARNING, logger="comptroller.pricing"):
        price = price_for("half-priced", "openai", 1e-6, None, None)
    assert price.known and price.output_cost_per_token == 0.0
    assert any("half-priced" in r.getMessage() for r in caplog.records)
    assert unpriced_models_seen() == {}


def test_negative_tokens_never_produce_negative_cost():
    price = price_for("gpt-4o", "openai", None, None, None)
    assert compute_cost(price, -5, -5, "chat") == 0.0


def test_estimate_chat_messages():
    body = {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "x" * 10},
            {"role": "user", "content": [{"type": "text", "text": "y" * 7}]},
        ],
    }
    assert estimate_prompt_tokens(body, "chat") == math.ceil(17 / 4) + 2 * 3


def test_estimate_counts_images_and_tools():
    body = {
        "messages": [
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": "data:..."}}],
            }
        ],
        "tools": [{"type": "function", "function": {"name": "f" * 40}}],
    }
    assert estimate_prompt_tokens(body, "chat") >= 3 + 85 + 10


def test_estimate_embeddings_inputs():
    assert estimate_prompt_tokens({"input": "abcdefgh"}, "embeddings") == 2
    assert estimate_prompt_tokens({"input": ["abcd", "abcde"]}, "embeddings") == 1 + 2
    assert estimate_prompt_tokens({"input": [1, 2, 3]}, "embeddings") == 3
    assert estimate_prompt_tokens({"input": [[1, 2], [3, 4, 5]]}, "embeddings") == 5


def test_estimate_is_at_least_one_and_tolerates_junk():
    assert estimate_prompt_tokens({}, "chat") == 1
    assert estimate_prompt_tokens({"messages": "nope"}, "chat") == 1
    assert estimate_prompt_tokens({"input": None}, "embeddings") == 1
    assert estimate_prompt_tokens({"messages": [None, {"content": None}]}, "chat") == 6
