"""The model table: public model names (model groups) and their deployments.

Each ``model_list`` entry is one deployment; entries sharing a ``model_name``
form a model group that the router (:mod:`proxy.call.router`) shares the
load across. Endpoints, keys and prices are resolved here once, at start-up.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from proxy.call.cost import Price, PriceOverrides, has_price, resolve_price
from proxy.config import FALLBACK_KINDS, Config, ConfigError, ModelEntry
from proxy.upstream.providers import Endpoint, resolve_endpoint

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
    # The prefix of litellm_params.model (groq, azure, ...) and how its API is spoken.
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
    # Stable across workers and hosts: the key of its shared cooldown and rate windows.
    id: str = ""
    wire: str = "openai"
    rpm: int | None = None
    tpm: int | None = None
    weight: float | None = None
    # Counted in the shared per-minute windows: it has rpm/tpm limits, or the
    # strategy (usage-based-routing) ranks deployments by their counts.
    counted: bool = False

    @property
    def answers_itself(self) -> bool:
        return self.wire == "mock" or self.mock_response is not None

    @property
    def owned_by(self) -> str:
        return {"azure": "azure", "anthropic": "anthropic", "mock": "comptroller"}.get(
            self.provider, "openai"
        )

    @property
    def has_limits(self) -> bool:
        return self.rpm is not None or self.tpm is not None

    @property
    def share(self) -> float:
        """Its weight in ``simple-shuffle``: ``weight``, else ``rpm``, else ``tpm``, else 1."""
        for value in (self.weight, self.rpm, self.tpm):
            if value is not None:
                return float(value)
        return 1.0

    def public_info(self) -> dict:
        """What ``/model/info`` may show: an allow-list of fields, never the api_key."""
        return {
            "model_name": self.model_name,
            "litellm_params": {
                "model": f"{self.provider}/{self.upstream_model}",
                "api_base": redact_url(self.api_base),
                "api_version": self.api_version,
                "timeout": self.timeout,
                "rpm": self.rpm,
                "tpm": self.tpm,
                "weight": self.weight,
            },
            "model_info": {
                "id": self.id,
                "provider": self.provider,
                "endpoint": None if self.answers_itself else redact_url(self.api_base),
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


def deployment_id(entry: ModelEntry, endpoint: Endpoint) -> str:
    """``model_info.id``, else a digest of what makes the deployment distinct (the
    same on every worker and host; the key enters only as part of the digest)."""
    if entry.model_info.id:
        return entry.model_info.id
    parts = (
        entry.model_name,
        entry.litellm_params.model,
        endpoint.api_base or "",
        endpoint.api_key or "",
        endpoint.api_version or "",
    )
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]


def _deployment(index: int, entry: ModelEntry, created: int) -> Deployment:
    params = entry.litellm_params
    endpoint = resolve_endpoint(index, entry)
    provider = endpoint.provider
    # Prices by the prefix as written (anthropic/, mistral/, ...): the data set knows it.
    priced_as = _priced_name(entry, provider)
    price = resolve_price(
        priced_as or params.upstream_model, provider, params.api_base, _overrides(entry)
    )
    return Deployment(
        model_name=entry.model_name,
        provider=provider,
        upstream_model=params.upstream_model,
        api_base=endpoint.api_base,
        api_key=endpoint.api_key,
        api_version=endpoint.api_version,
        timeout=params.timeout,
        access_groups=tuple(entry.model_info.access_groups),
        price=price,
        created=created,
        mode=entry.model_info.mode,
        priced_as=priced_as,
        mock_response=params.mock_response,
        id=deployment_id(entry, endpoint),
        wire=endpoint.wire,
        rpm=entry.rpm_limit,
        tpm=entry.tpm_limit,
        weight=params.weight,
    )


class ModelTable:
    """Built once at start-up; lookups are dict reads.

    Entries sharing a ``model_name`` are one model group: the router shares
    its calls across them. ``by_name`` holds each group's first deployment
    (what ``/v1/models`` lists); ``group`` all of them.
    """

    def __init__(self, config: Config, created: int = 1700000000) -> None:
        by_usage = config.router_settings.routing_strategy.startswith("usage-based-routing")
        self.deployments: list[Deployment] = []
        for i, entry in enumerate(config.model_list):
            dep = _deployment(i, entry, created)
            self.deployments.append(replace(dep, counted=by_usage or dep.has_limits))
        self.by_name: dict[str, Deployment] = {}
        self.by_group: dict[str, list[Deployment]] = {}
        self.by_id: dict[str, Deployment] = {}
        self.groups: dict[str, set[str]] = {}
        for i, dep in enumerate(self.deployments):
            if dep.id in self.by_id:
                if config.model_list[i].model_info.id:
                    raise ConfigError(f"model_list[{i}]: model_info.id {dep.id!r} is used twice")
                # The same endpoint listed twice is two deployments (LiteLLM's "several
                # copies of one deployment" to weigh it): each keeps its own counters.
                dep = self.deployments[i] = replace(dep, id=f"{dep.id}-{i}")
            self.by_id[dep.id] = dep
            self.by_name.setdefault(dep.model_name, dep)
            self.by_group.setdefault(dep.model_name, []).append(dep)
            for group in dep.access_groups:
                self.groups.setdefault(group, set()).add(dep.model_name)
        self._check_fallbacks(config)

    def _check_fallbacks(self, config: Config) -> None:
        """Every model a fallback names must be in the model list (start-up, not mid-call)."""
        for kind in FALLBACK_KINDS:
            for i, mapping in enumerate(getattr(config.router_settings, kind)):
                for source, targets in mapping.items():
                    for name in [source, *targets]:
                        if name != "*" and name not in self.by_group:
                            raise ConfigError(
                                f"router_settings.{kind}[{i}]: model {name!r} is not in model_list"
                            )

    def get(self, name: str) -> Deployment | None:
        return self.by_name.get(name)

    def group(self, name: str) -> list[Deployment]:
        return self.by_group.get(name, [])

    def names(self) -> list[str]:
        return list(self.by_name)

    def models_in_group(self, group: str) -> set[str]:
        return self.groups.get(group, set())
