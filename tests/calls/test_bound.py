"""The worst case is an upper bound of the bill, for every request the route accepts.

The bills come from the test upstreams' own counting (tests/support/billing.py),
never from the proxy's: the adversarial one bills the most the documented bound
allows, so a reservation below its bill is a bound that does not hold.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.call.bound import DEFAULT_OUTPUT_CAP, worst_case
from proxy.call.context import Usage
from proxy.call.cost import Price, PriceOverrides, Rates, cost_of, resolve_price
from tests.support.billing import AdversarialBilling, TokenizerLikeBilling

M = 1e-6
GPT_4O = resolve_price("gpt-4o", "openai", None)
ADVERSARY = AdversarialBilling()  # gpt-4o: 1445 tokens per image, 16384 output tokens


def bill(billing: Any, body: dict[str, Any], call_type: str = "chat") -> float:
    if call_type == "embeddings":
        usage = billing.embedding_usage(body)
    else:
        usage = billing.chat_usage(body, answer_words=1)
    return cost_of(GPT_4O, Usage.from_openai(usage) or Usage(), call_type)


def reserved(body: dict[str, Any], call_type: str = "chat") -> float:
    return worst_case(GPT_4O, body, call_type).cost


# --- the cases of the issue ---------------------------------------------------

CHINESE = "预算控制必须在任何情况下都成立，不能因为分词方式不同而被突破。" * 13


def test_a_dense_chinese_prompt_is_bounded_by_its_utf8_bytes():
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": CHINESE}], "max_tokens": 50}
    bound = worst_case(GPT_4O, body, "chat")
    assert bound.prompt_tokens >= len(CHINESE.encode())  # 3 bytes a character
    assert reserved(body) >= bill(TokenizerLikeBilling(), body)
    assert reserved(body) >= bill(ADVERSARY, body)


def test_n_multiplies_the_output():
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20}
    one = worst_case(GPT_4O, body, "chat")
    four = worst_case(GPT_4O, {**body, "n": 4}, "chat")
    assert (one.completion_tokens, four.completion_tokens) == (20, 80)
    assert four.cost - one.cost == pytest.approx(60 * 10 * M)
    assert reserved({**body, "n": 4}) >= bill(ADVERSARY, {**body, "n": 4})


def test_hi_is_reserved_above_what_real_upstreams_report():
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    # OpenAI reports 8 prompt tokens, a careless estimate 10: the bound is above both.
    assert worst_case(GPT_4O, body, "chat").prompt_tokens >= 10


def test_without_max_tokens_the_models_output_cap_is_reserved():
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    assert worst_case(GPT_4O, body, "chat").output_tokens == 16384  # gpt-4o's published cap
    unknown = resolve_price("in-house", "openai", None, PriceOverrides(1 * M, 2 * M))
    bound = worst_case(unknown, body, "chat")
    assert bound.output_tokens == DEFAULT_OUTPUT_CAP and bound.default_output_cap


def test_the_largest_limit_given_counts():
    body = {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 10,
        "max_completion_tokens": 300,
    }
    assert worst_case(GPT_4O, body, "chat").output_tokens == 300


def test_images_count_the_models_largest_charge_whatever_their_detail():
    part = {"type": "image_url", "image_url": {"url": "https://x.test/a.png", "detail": "low"}}
    body = {"model": "m", "messages": [{"role": "user", "content": [part]}], "max_tokens": 1}
    assert worst_case(GPT_4O, body, "chat").prompt_tokens >= 1445
    mini = resolve_price("gpt-4o-mini", "openai", None)
    assert worst_case(mini, body, "chat").prompt_tokens >= 2833 + 8 * 5667


def test_tools_and_schemas_are_counted():
    tools = [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "description": "查找订单" * 50,
                "parameters": {"type": "object", "properties": {"id": {"type": "string"}}},
            },
        }
    ]
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 1}
    plain = worst_case(GPT_4O, body, "chat").prompt_tokens
    with_tools = worst_case(GPT_4O, {**body, "tools": tools}, "chat").prompt_tokens
    assert with_tools - plain >= len(json.dumps(tools, ensure_ascii=False).encode()) // 2 + 600
    schema = {"type": "json_schema", "json_schema": {"name": "a" * 500, "schema": {}}}
    assert (
        worst_case(GPT_4O, {**body, "response_format": schema}, "chat").prompt_tokens > plain + 500
    )


def test_embeddings_inputs():
    for value in ["héllo wörld", ["a", "bb", "日本語"], [1, 2, 3], [[1, 2], [3]]]:
        body = {"model": "e", "input": value}
        assert reserved(body, "embeddings") >= bill(ADVERSARY, body, "embeddings")
    assert worst_case(GPT_4O, {"input": [[1, 2], [3]]}, "embeddings").prompt_tokens == 3


def test_a_file_part_has_no_bound():
    part = {"type": "file", "file": {"file_id": "file-abc"}}
    body = {"model": "m", "messages": [{"role": "user", "content": [part]}], "max_tokens": 1}
    assert worst_case(GPT_4O, body, "chat").unbounded is not None


def test_prompt_tokens_are_priced_at_the_dearest_input_part_and_tier():
    # claude-sonnet-4-5: 1-hour cache writes cost $6/M; above 200k tokens $12/M.
    claude = resolve_price("claude-sonnet-4-5", "anthropic", None)
    small = {"model": "c", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    assert worst_case(claude, small, "chat").input_rate == pytest.approx(6 * M)
    large = {**small, "messages": [{"role": "user", "content": "x" * 250_000}]}
    assert worst_case(claude, large, "chat").input_rate == pytest.approx(12 * M)


def test_the_clamp_recomputes_the_same_expression():
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 999}
    bound = worst_case(GPT_4O, body, "chat")
    again = worst_case(GPT_4O, {**body, "max_tokens": 7}, "chat")
    assert bound.with_output(7).cost == again.cost


# --- generated requests ----------------------------------------------------------

TEXT = st.lists(
    st.one_of(
        st.characters(codec="utf-8", exclude_categories=("Cs",)),
        st.sampled_from(list("的一是不了人我在有他这为之大来以个中上们到说国和地也子")),
        st.sampled_from(["😀", "👩‍👩‍👧‍👦", "🇯🇵", "🏳️‍🌈", "é", "ß", "ж", "ع", "ह", "ก"]),
        st.sampled_from(["def f(x):\n    return x ** 2\n", '{"k": [1, 2]}', "\t", "  ", "\\u"]),
    ),
    max_size=120,
).map("".join)
IMAGE = st.builds(
    lambda url, detail: {"type": "image_url", "image_url": {"url": url, "detail": detail}},
    st.sampled_from(["https://x.test/cat.png", "data:image/png;base64," + "A" * 200]),
    st.sampled_from(["low", "high", "auto"]),
)
AUDIO = st.builds(
    lambda data: {"type": "input_audio", "input_audio": {"data": data, "format": "wav"}},
    st.text(alphabet="ABCDEFGHabcdefgh0123456789+/", min_size=4, max_size=400),
)
PART = st.one_of(st.builds(lambda t: {"type": "text", "text": t}, TEXT), IMAGE, AUDIO)
CONTENT = st.one_of(TEXT, st.lists(PART, min_size=1, max_size=4))
TOOL_CALL = st.builds(
    lambda i, name, args: {
        "id": f"call_{i}",
        "type": "function",
        "function": {"name": name, "arguments": json.dumps({"q": args}, ensure_ascii=False)},
    },
    st.integers(0, 999),
    st.sampled_from(["lookup", "search", "查询"]),
    TEXT,
)
MESSAGE = st.one_of(
    st.builds(lambda c: {"role": "system", "content": c}, TEXT),
    st.builds(lambda c: {"role": "developer", "content": c}, TEXT),
    st.builds(lambda c, n: {"role": "user", "content": c, "name": n}, CONTENT, TEXT),
    st.builds(lambda c: {"role": "user", "content": c}, CONTENT),
    st.builds(lambda c: {"role": "assistant", "content": c}, TEXT),
    st.builds(
        lambda calls: {"role": "assistant", "content": None, "tool_calls": calls},
        st.lists(TOOL_CALL, min_size=1, max_size=3),
    ),
    st.builds(lambda c: {"role": "tool", "tool_call_id": "call_1", "content": c}, TEXT),
)
TOOL = st.builds(
    lambda name, desc, prop: {
        "type": "function",
        "function": {
            "name": name,
            "description": desc,
            "parameters": {
                "type": "object",
                "properties": {prop or "p": {"type": "string", "description": desc}},
            },
        },
    },
    st.sampled_from(["lookup", "search", "天气"]),
    TEXT,
    TEXT,
)
LIMIT = st.one_of(st.none(), st.integers(1, 5000))


@st.composite
def chat_bodies(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "gpt-4o",
        "messages": draw(st.lists(MESSAGE, min_size=1, max_size=6)),
    }
    for name in ("max_tokens", "max_completion_tokens"):
        limit = draw(LIMIT)
        if limit is not None:
            body[name] = limit
    n = draw(st.one_of(st.none(), st.integers(1, 8)))
    if n is not None:
        body["n"] = n
    if draw(st.booleans()):
        body["tools"] = draw(st.lists(TOOL, min_size=1, max_size=3))
        body["tool_choice"] = draw(st.sampled_from(["auto", "required", "none"]))
    if draw(st.booleans()):
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": {"description": draw(TEXT)}},
        }
    if draw(st.booleans()):
        body["temperature"] = draw(st.floats(0, 2))
    if draw(st.booleans()):
        body["prediction"] = {"type": "content", "content": draw(TEXT)}
    return body


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chat_bodies())
def test_reservation_covers_the_adversarial_bill_of_any_chat_request(body):
    assert reserved(body) >= bill(ADVERSARY, body)
    assert reserved(body) >= bill(TokenizerLikeBilling(), body)


@settings(max_examples=100, deadline=None)
@given(
    st.one_of(
        TEXT.filter(bool),
        st.lists(TEXT.filter(bool), min_size=1, max_size=5),
        st.lists(st.integers(0, 100_000), min_size=1, max_size=50),
        st.lists(
            st.lists(st.integers(0, 100_000), min_size=1, max_size=20), min_size=1, max_size=5
        ),
    )
)
def test_reservation_covers_the_adversarial_bill_of_any_embedding_request(value):
    body = {"model": "text-embedding-3-small", "input": value}
    assert reserved(body, "embeddings") >= bill(ADVERSARY, body, "embeddings")


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chat_bodies())
def test_the_adversarial_upstream_bills_exactly_the_bound(body):
    """What the concurrency test relies on: against this upstream a call costs its
    reservation, so 'as many calls as fit' is exact."""
    usage = ADVERSARY.chat_usage(body, answer_words=1)
    bound = worst_case(GPT_4O, body, "chat")
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (
        bound.prompt_tokens,
        bound.completion_tokens,
    )


def _dearest_by_every_candidate(price: Price, prompt_tokens: int) -> tuple[float, float]:
    """The dearest rates spelled out: every base and reached tier of every variant."""
    candidates = [
        rates
        for p in [price, *(variant for _, variant in price.variants)]
        for rates in [p.rates, *(r for t, r in p.tiers if prompt_tokens > t)]
    ]
    return max(r.max_input for r in candidates), max(r.max_output for r in candidates)


def test_the_dearest_rates_are_those_of_every_tier_and_variant_the_prompt_reaches() -> None:
    tiered = Price(
        rates=Rates(input=1.0, output=2.0, cache_write=1.5),
        tiers=((100, Rates(input=3.0, output=1.0)), (1_000, Rates(input=2.0, output=9.0))),
    )
    variant = Price(
        rates=Rates(input=0.5, output=4.0, audio_input=2.5),
        tiers=((500, Rates(input=5.0, output=0.1, other_output=6.0)),),
    )
    price = Price(rates=tiered.rates, tiers=tiered.tiers, variants=((None, variant),))
    for p in (tiered, variant, price, Price(rates=Rates(input=1.0, output=2.0))):
        for prompt in (0, 1, 100, 101, 500, 501, 1_000, 1_001, 10**9):
            assert p.dearest_rates_up_to(prompt) == _dearest_by_every_candidate(p, prompt)
    assert price.dearest_rates_up_to(501) == (5.0, 6.0)
