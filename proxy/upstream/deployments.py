"""The model table: public model names resolved to upstream deployments."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from proxy.call.cost import Price, PriceOverrides, has_price, resolve_price
from proxy.config import Config, ModelEntry

PROVIDERS = ("openai", "azure", "anthropic", "mock")
REDACTED = "***"


def redact_url(url: str | None) -> str | None:
    """``url`` without credentials: user:password and query values are masked.

    Some operators put a token in ``api_base`` (``https://user:tok@host`` or
    ``?key=...``); ``/model/info`` must not show it.
    """
    if not url:
        return url
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rsplit('@', 1)[1]}"
    query = parts.query
    if query:
        query = urlencode([(name, REDACTED) for name, _ in parse_qsl(query, True)], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


@dataclass(frozen=True)
class Deployment:
    model_name: str
    provider: str
    upstream_model: str
    api_base: str | None
    api_key: str | None
    api_version: str | None
    timeout: float
    access_groups: tuple[str, ...]
    price: Price
    created: int
    mode: str | None = None
    # The price-table name the price came from (base_model, upstream or public name).
    priced_as: str | None = None
    # ``litellm_params.mock_response``: answered by Comptroller, the upstream is not called.
    mock_response: str | None = None

    @property
    def answers_itself(self) -> bool:
        return self.provider == "mock" or self.mock_response is not None

    @property
    def owned_by(self) -> str:
        return {"azure": "azure", "anthropic": "anthropic", "mock": "comptroller"}.get(
            self.provider, "openai"
        )

    def public_info(self) -> dict:
        """What ``/model/info`` may show: an allow-list of fields, never the api_key."""
        return {
            "model_name": self.model_name,
            "litellm_params": {
                "model": f"{self.provider}/{self.upstream_model}",
                "api_base": redact_url(self.api_base),
                "api_version": self.api_version,
                "timeout": self.timeout,
            },
            "model_info": {
                "access_groups": list(self.access_groups),
                "mode": self.mode,
                "priced_as": self.priced_as,
                **price_info(self.price),
            },
        }


def price_info(price: Price) -> dict:
    """The prices in use, in LiteLLM's field names, and where they came from."""
    rates = price.rates
    return {
        "input_cost_per_token": rates.input,
        "output_cost_per_token": rates.output,
        "cache_read_input_token_cost": rates.cache_read,
        "cache_creation_input_token_cost": rates.cache_write,
        "input_cost_per_audio_token": rates.audio_input,
        "output_cost_per_audio_token": rates.audio_output,
        "price_tiers": [
            {
                "above_input_tokens": threshold,
                "input_cost_per_token": tier.input,
                "output_cost_per_token": tier.output,
                "cache_read_input_token_cost": tier.cache_read,
                "cache_creation_input_token_cost": tier.cache_write,
            }
            for threshold, tier in price.tiers
        ],
        "max_output_tokens": price.max_output_tokens,
        "context_window": price.context_window,
        "priced": price.known,
        "price_source": price.source,
    }


def _overrides(entry: ModelEntry) -> PriceOverrides:
    """The prices the operator set in ``litellm_params``."""
    params, info = entry.litellm_params, entry.model_info

    def number(name: str) -> float | None:
        value = getattr(params, name)
        return None if value is None else float(value)

    return PriceOverrides(
        input_cost_per_token=number("input_cost_per_token"),
        output_cost_per_token=number("output_cost_per_token"),
        cache_read_input_token_cost=number("cache_read_input_token_cost"),
        cache_creation_input_token_cost=number("cache_creation_input_token_cost"),
        input_cost_per_audio_token=number("input_cost_per_audio_token"),
        output_cost_per_audio_token=number("output_cost_per_audio_token"),
        input_cost_per_token_above_200k_tokens=number("input_cost_per_token_above_200k_tokens"),
        output_cost_per_token_above_200k_tokens=number("output_cost_per_token_above_200k_tokens"),
        max_output_tokens=params.max_tokens or info.max_output_tokens,
    )


def _priced_name(entry: ModelEntry, provider: str) -> str | None:
    """The name to look up in the price table, or ``None`` when none is known.

    Azure deployment names are chosen by the operator (``azure/azure-embedding-
    model``), so ``model_info.base_model`` comes first, then the upstream name,
    then the public name (the seeds name Azure deployments after the model).
    """
    candidates = (
        entry.model_info.base_model,
        entry.litellm_params.upstream_model,
        entry.model_name,
    )
    for name in candidates:
        if name and has_price(name, provider, entry.litellm_params.api_base):
            return name
    return None


def _deployment(entry: ModelEntry, created: int) -> Deployment:
    params = entry.litellm_params
    provider = params.provider
    # Prices by the prefix as written (anthropic/, mistral/, ...): the data set knows it.
    priced_as = _priced_name(entry, provider)
    price = resolve_price(
        priced_as or params.upstream_model, provider, params.api_base, _overrides(entry)
    )
    if provider not in PROVIDERS:
        # Any other prefix is treated as an OpenAI-compatible endpoint.
        provider = "openai"
    return Deployment(
        model_name=entry.model_name,
        provider=provider,
        upstream_model=params.upstream_model,
        api_base=params.api_base,
        api_key=params.api_key,
        api_version=params.api_version,
        timeout=params.timeout,
        access_groups=tuple(entry.model_info.access_groups),
        price=price,
        created=created,
        mode=entry.model_info.mode,
        priced_as=priced_as,
        mock_response=params.mock_response,
    )


class ModelTable:
    """Built once at start-up; lookups are dict reads.

    Several entries may share a ``model_name``; the first one answers calls,
    but every entry's access groups count and ``/model/info`` lists them all.
    """

    def __init__(self, config: Config, created: int = 1700000000) -> None:
        self.deployments: list[Deployment] = [
            _deployment(entry, created) for entry in config.model_list
        ]
        self.by_name: dict[str, Deployment] = {}
        self.groups: dict[str, set[str]] = {}
        for dep in self.deployments:
            self.by_name.setdefault(dep.model_name, dep)
            for group in dep.access_groups:
                self.groups.setdefault(group, set()).add(dep.model_name)

    def get(self, name: str) -> Deployment | None:
        return self.by_name.get(name)

    def names(self) -> list[str]:
        return list(self.by_name)

    def models_in_group(self, group: str) -> set[str]:
        return self.groups.get(group, set())
