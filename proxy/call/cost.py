"""What a call costs: each deployment's price, resolved once, and the cost of a usage.

Prices come from the ``genai-prices`` data set, the snapshot bundled with the
pinned package version (never fetched at run time; an update is a reviewed
version bump), behind the deployment's ``litellm_params`` overrides. Each
deployment is resolved once at start-up (:func:`resolve_price`): a look-up in
the data set costs up to a millisecond, the per-call :func:`cost_of` is
arithmetic on the resolved :class:`Price`.

Pricing never breaks a call: a model neither the overrides nor the data set
price is charged 0, logged once per process and counted per model group in the
``unpriced_model`` table by the spend ledger (``Price.known`` is False), which
``/metrics`` exports across workers and hosts.
Strict budget enforcement refuses such a model (its worst case has no bound)
unless ``general_settings.allow_unpriced_models`` is set.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import threading
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from decimal import Decimal
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from proxy.call.usage import Usage

log = logging.getLogger("comptroller.pricing")

EMBEDDING_CALL_TYPES = frozenset({"embeddings", "embedding"})
PRICE_DATA = "genai-prices"

# Comptroller's provider prefixes that genai-prices names otherwise.
_PROVIDER_IDS = {
    "gemini": "google",
    "vertex_ai": "google",
    "vertex_ai_beta": "google",
    "xai": "x-ai",
    "together_ai": "together",
    "bedrock": "aws",
    "fireworks_ai": "fireworks",
    "mistralai": "mistral",
}

# Version suffixes that do not change a model's output cap: ISO dates
# (gpt-4o-2024-08-06), compact dates (claude-3-5-sonnet-20241022), OpenAI's
# MMDD snapshots (gpt-4-0613), Mistral's YYMM (mistral-large-2407) and aliases.
_VERSION_SUFFIX = re.compile(r"[-@](?:\d{4}-\d{2}-\d{2}|\d{8}|\d{4}|latest)$")


@dataclass(frozen=True)
class Rates:
    """USD per token of each billed part; a part without its own price costs ``input``
    (input parts) or ``output`` (output parts), as the providers bill it."""

    input: float = 0.0
    output: float = 0.0
    cache_read: float | None = None
    cache_write: float | None = None
    audio_input: float | None = None
    audio_output: float | None = None
    # The dearest of the model's other input / output prices in the data set (1-hour
    # cache writes, image tokens, ...): parts a usage does not name, but a bill may.
    other_input: float = 0.0
    other_output: float = 0.0

    @property
    def max_input(self) -> float:
        """What one prompt token may cost at most."""
        parts = (self.input, self.cache_read, self.cache_write, self.audio_input)
        return max(self.other_input, *(r for r in parts if r is not None))

    @property
    def max_output(self) -> float:
        """What one output token may cost at most."""
        return max(self.other_output, self.output, self.audio_output or 0.0)


@dataclass(frozen=True)
class Price:
    """One deployment's resolved price.

    ``tiers`` are (input-token threshold, rates) pairs, ascending: a call whose
    prompt has more tokens than a threshold pays that tier's rates for every
    token, as the providers' long-context prices work (Gemini, Claude).
    ``variants`` are prices that replace these from a date on or at some times
    of day (DeepSeek's off-peak hours), as (constraint, price), the one tried
    first first: the data set's conditional prices, chosen per call by its time.
    """

    rates: Rates
    tiers: tuple[tuple[int, Rates], ...] = ()
    max_output_tokens: int | None = None
    # False when neither an override nor the data set had the model: the call is unpriced.
    known: bool = False
    # The upstream model name, so that the unpriced count names it.
    model: str = ""
    # Where the prices came from: "genai-prices 0.2.3: openai/gpt-4o", "litellm_params", ...
    source: str = ""
    # The context window, when the data set knows it (an upper bound of any answer).
    context_window: int | None = None
    # The data set's name for the model (an Azure deployment's base model), else ``model``:
    # what per-model limits such as the largest image charge are looked up by.
    family: str = ""
    variants: tuple[tuple[Any, Price], ...] = ()

    @property
    def input_cost_per_token(self) -> float:
        return self.rates.input

    @property
    def output_cost_per_token(self) -> float:
        return self.rates.output

    def at(self, moment: float | None) -> Price:
        """The price in force at ``moment`` (epoch seconds; None: the base price)."""
        if not self.variants or moment is None:
            return self
        when = datetime.fromtimestamp(moment, tz=timezone.utc)
        for constraint, variant in self.variants:
            if constraint.active(when):
                return variant
        return self

    def rates_at(self, prompt_tokens: int) -> Rates:
        """The rates that apply to a call with ``prompt_tokens`` input tokens."""
        current = self.rates
        for threshold, rates in self.tiers:
            if prompt_tokens > threshold:
                current = rates
        return current

    def dearest_rates_up_to(self, prompt_tokens: int) -> tuple[float, float]:
        """(input, output): the highest price per token of any part, tier a prompt of
        at most ``prompt_tokens`` tokens can fall in, and variant: the worst case's."""
        dearest_input, dearest_output, tiers = self._dearest_steps
        for threshold, tier_input, tier_output in tiers:
            if prompt_tokens > threshold:
                dearest_input = max(dearest_input, tier_input)
                dearest_output = max(dearest_output, tier_output)
        return dearest_input, dearest_output

    @functools.cached_property
    def _dearest_steps(self) -> tuple[float, float, tuple[tuple[int, float, float], ...]]:
        """What :meth:`dearest_rates_up_to` reads on every call, worked out once per price:
        the dearest base rates of this price and its variants, and every tier of
        them as (threshold, its dearest input, its dearest output)."""
        prices = [self, *(variant for _, variant in self.variants)]
        tiers = tuple(
            (threshold, rates.max_input, rates.max_output)
            for price in prices
            for threshold, rates in price.tiers
        )
        return (
            max(price.rates.max_input for price in prices),
            max(price.rates.max_output for price in prices),
            tiers,
        )


@dataclass(frozen=True)
class PriceOverrides:
    """``litellm_params`` (or ``model_info``) prices in USD per token, LiteLLM's names."""

    input_cost_per_token: float | None = None
    output_cost_per_token: float | None = None
    cache_read_input_token_cost: float | None = None
    cache_creation_input_token_cost: float | None = None
    input_cost_per_audio_token: float | None = None
    output_cost_per_audio_token: float | None = None
    input_cost_per_token_above_200k_tokens: float | None = None
    output_cost_per_token_above_200k_tokens: float | None = None
    max_output_tokens: int | None = None

    def given(self) -> tuple[str, ...]:
        return tuple(
            name
            for name, value in vars(self).items()
            if value is not None and name != "max_output_tokens"
        )


_lock = threading.Lock()
_warned: set[str] = set()


# --- the data set -------------------------------------------------------------


@functools.cache  # the installed package's metadata, read once (a read is ~2 ms)
def price_data_version() -> str:
    from importlib.metadata import version

    return f"{PRICE_DATA} {version('genai-prices')}"


@functools.cache
def _max_output_table() -> dict[str, int]:
    """Published output caps (``proxy/data/max_output_tokens.json``): genai-prices
    has context windows only, and a cap far below the window keeps the worst case
    of a call without ``max_tokens`` near what it can really cost."""
    text = resources.files("proxy").joinpath("data/max_output_tokens.json").read_text("utf-8")
    return {k.lower(): int(v) for k, v in json.loads(text).items() if not k.startswith("_")}


def _strip_versions(name: str) -> list[str]:
    forms = [name]
    while True:
        shorter = _VERSION_SUFFIX.sub("", forms[-1])
        if shorter == forms[-1] or not shorter:
            return forms
        forms.append(shorter)


def published_max_output(model: str) -> int | None:
    """The model's published output cap, by name, then version-stripped name."""
    table = _max_output_table()
    name = model.strip().lower().rsplit("/", 1)[-1]
    for form in _strip_versions(name):
        if form in table:
            return table[form]
    return None


def _provider_id(provider: str) -> str | None:
    name = provider.strip().lower()
    if not name or name == "mock":
        return None
    return _PROVIDER_IDS.get(name, name)


def _find_model(model: str, provider: str, api_base: str | None) -> tuple[Any, Any] | None:
    """(provider, model info) in the bundled snapshot: by ``api_base`` when it names a
    known provider's host, else by the prefix, else by the model name alone."""
    from genai_prices import data_snapshot

    snapshot = data_snapshot.get_snapshot()
    ref = model.strip()
    attempts: list[tuple[str | None, str | None]] = []
    if api_base:
        attempts.append((None, api_base))
    provider_id = _provider_id(provider)
    if provider_id:
        attempts.append((provider_id, None))
    attempts.append((None, None))
    for pid, url in attempts:
        try:
            return snapshot.find_provider_model(ref, None, pid, url)
        except LookupError:
            continue
    return None


def _token_price_keys() -> dict[str, str]:
    """genai-prices price key -> direction ("input"/"output") of every token unit."""
    from genai_prices.data_units import unit_data

    return {
        unit["price_key"]: unit["dimensions"].get("direction", "")
        for unit in unit_data.values()
        if unit["dimensions"].get("family") == "tokens" and unit.get("per") == 1_000_000
    }


_NAMED_KEYS = {
    "input_mtok": "input",
    "output_mtok": "output",
    "cache_read_mtok": "cache_read",
    "cache_write_mtok": "cache_write",
    "input_audio_mtok": "audio_input",
    "output_audio_mtok": "audio_output",
}


def _rates_from(model_price: Any, above: int | None) -> tuple[Rates, set[int]]:
    """Rates of a genai-prices ``ModelPrice`` for a prompt of more than ``above`` input
    tokens (None: the base tier), and every tier threshold its prices have."""
    from genai_prices.types import TieredPrices

    thresholds: set[int] = set()
    named: dict[str, float] = {}
    other = {"input": 0.0, "output": 0.0}
    for key, direction in _token_price_keys().items():
        value = getattr(model_price, key, None)
        if value is None:
            continue
        if isinstance(value, TieredPrices):
            thresholds.update(t.start for t in value.tiers)
            chosen = value.base
            for tier in value.tiers:
                if above is not None and tier.start <= above:
                    chosen = tier.price
            value = chosen
        per_token = float(Decimal(value) / 1_000_000)  # exact, then one rounding
        if key in _NAMED_KEYS:
            named[_NAMED_KEYS[key]] = per_token
        elif direction in other:
            other[direction] = max(other[direction], per_token)
    rates = Rates(
        input=named.pop("input", 0.0),
        output=named.pop("output", 0.0),
        other_input=other["input"],
        other_output=other["output"],
        **named,
    )
    return rates, thresholds


def _price_of(model_price: Any) -> tuple[Rates, tuple[tuple[int, Rates], ...]]:
    base, thresholds = _rates_from(model_price, None)
    return base, tuple((t, _rates_from(model_price, t)[0]) for t in sorted(thresholds))


def _data_set_price(model: str, provider: str, api_base: str | None) -> Price | None:
    from genai_prices.types import ModelPrice, StartDateConstraint

    found = _find_model(model, provider, api_base)
    if found is None:
        return None
    data_provider, info = found
    source = f"{price_data_version()}: {data_provider.id}/{info.id}"
    common = {
        "known": True,
        "model": model,
        "source": source,
        "context_window": info.context_window,
        "family": info.id,
    }
    if isinstance(info.prices, ModelPrice):
        rates, tiers = _price_of(info.prices)
        return Price(rates=rates, tiers=tiers, **common)
    # Conditional prices: the last whose constraint holds wins, else the first. A
    # price from a date already past is the base (earlier ones never apply again);
    # one from a future date or for some times of day stays a variant.
    variants: list[tuple[Any, Price]] = []
    base: Price | None = None
    now = datetime.now(tz=timezone.utc)
    for conditional in reversed(info.prices):
        rates, tiers = _price_of(conditional.prices)
        price = Price(rates=rates, tiers=tiers, **common)
        constraint = conditional.constraint
        if constraint is None or (
            isinstance(constraint, StartDateConstraint) and constraint.active(now)
        ):
            base = price
            break
        variants.append((constraint, price))
    if base is None:
        rates, tiers = _price_of(info.prices[0].prices)
        base = Price(rates=rates, tiers=tiers, **common)
    return replace(base, variants=tuple(variants))


def has_price(model: str, provider: str, api_base: str | None = None) -> bool:
    """Whether the data set prices ``model`` (no warning when it does not)."""
    return _find_model(model, provider, api_base) is not None


# --- resolving one deployment ---------------------------------------------------


def _override_rates(rates: Rates, o: PriceOverrides) -> Rates:
    """An operator's input (output) price replaces every input (output) price of the
    data set: cache and audio parts then cost it too, unless given themselves."""
    if o.input_cost_per_token is not None:
        rates = replace(rates, cache_read=None, cache_write=None, audio_input=None, other_input=0.0)
    if o.output_cost_per_token is not None:
        rates = replace(rates, audio_output=None, other_output=0.0)
    return replace(
        rates,
        input=_pick(o.input_cost_per_token, rates.input),
        output=_pick(o.output_cost_per_token, rates.output),
        cache_read=_pick_optional(o.cache_read_input_token_cost, rates.cache_read),
        cache_write=_pick_optional(o.cache_creation_input_token_cost, rates.cache_write),
        audio_input=_pick_optional(o.input_cost_per_audio_token, rates.audio_input),
        audio_output=_pick_optional(o.output_cost_per_audio_token, rates.audio_output),
    )


def _overridden(price: Price, o: PriceOverrides) -> Price:
    """``price`` with the operator's prices. The data set's tiers and time variants
    go with an overridden input or output price (they vary the data set's, not the
    operator's); LiteLLM's ``*_above_200k_tokens`` make the one tier at 200k."""
    rates = _override_rates(price.rates, o)
    flat = o.input_cost_per_token is not None or o.output_cost_per_token is not None
    tiers = () if flat else tuple((t, _override_rates(r, o)) for t, r in price.tiers)
    variants = () if flat else tuple((c, _overridden(v, o)) for c, v in price.variants)
    above_in = o.input_cost_per_token_above_200k_tokens
    above_out = o.output_cost_per_token_above_200k_tokens
    if above_in is not None or above_out is not None:
        above = replace(
            rates, input=_pick(above_in, rates.input), output=_pick(above_out, rates.output)
        )
        tiers = ((200_000, above),)
    return replace(price, rates=rates, tiers=tiers, variants=variants)


def _pick(override: float | None, default: float) -> float:
    return float(override) if override is not None else default


def _pick_optional(override: float | None, default: float | None) -> float | None:
    return float(override) if override is not None else default


def resolve_price(
    model: str, provider: str, api_base: str | None, overrides: PriceOverrides | None = None
) -> Price:
    """The price of one deployment: the overrides, field by field, over the data set.

    Called once per deployment at start-up. Never raises: a model nothing prices
    costs 0 (for every part without an override), with one warning per process.
    """
    o = overrides or PriceOverrides()
    data = _data_set_price(model, provider, api_base)
    given = o.given()
    if data is None:
        data = Price(
            rates=Rates(),
            known=o.input_cost_per_token is not None and o.output_cost_per_token is not None,
            model=model,
            source="litellm_params" if given else "unpriced",
            family=model,
        )
    elif given:
        data = replace(data, source=f"litellm_params over {data.source}")
    price = _overridden(data, o) if given else data
    max_output = o.max_output_tokens or published_max_output(price.family or model)
    if max_output is None:
        max_output = published_max_output(model)
    price = replace(price, max_output_tokens=max_output)
    if not price.known:
        with _lock:
            first = model not in _warned
            _warned.add(model)
        if first:
            log.warning(
                "no price known for model %r (provider %s): %s priced at 0; set "
                "input_cost_per_token/output_cost_per_token in litellm_params",
                model,
                provider,
                "all tokens" if not o.given() else "the tokens without an override",
            )
    return price


# --- the cost of one call -----------------------------------------------------


def cost_of(price: Price, usage: Usage, call_type: str, at: float | None = None) -> float:
    """USD cost of ``usage``: each part at its own price, at the tier its prompt is in,
    in the price variant in force at ``at`` (the call's start, epoch seconds).

    Input: cache reads, cache writes and audio at their prices, the rest at the
    input price. Output (chat only; embeddings bill input alone): audio at its
    price, the rest (visible text and reasoning) at the output price.
    """
    r = price.at(at).rates_at(usage.prompt_tokens)
    cache_read = usage.cache_read_tokens
    cache_write = usage.cache_write_tokens
    audio_in = usage.audio_input_tokens
    text_in = max(0, usage.prompt_tokens - cache_read - cache_write - audio_in)
    cost = (
        text_in * r.input
        + cache_read * _or(r.cache_read, r.input)
        + cache_write * _or(r.cache_write, r.input)
        + audio_in * _or(r.audio_input, r.input)
    )
    if call_type not in EMBEDDING_CALL_TYPES:
        audio_out = usage.audio_output_tokens
        text_out = max(0, usage.completion_tokens - audio_out)
        cost += text_out * r.output + audio_out * _or(r.audio_output, r.output)
    return cost


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def _reset_for_tests() -> None:
    """Forget the warnings given (tests only)."""
    with _lock:
        _warned.clear()
