"""The model table: public model names resolved to upstream deployments."""

from __future__ import annotations

from dataclasses import dataclass

from proxy.config import Config, ModelEntry
from proxy.pricing import Price, price_for

PROVIDERS = ("openai", "azure", "mock")


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

    @property
    def owned_by(self) -> str:
        return {"azure": "azure", "mock": "comptroller"}.get(self.provider, "openai")

    def public_info(self) -> dict:
        """What ``/model/info`` may show: never the api_key."""
        return {
            "model_name": self.model_name,
            "litellm_params": {
                "model": f"{self.provider}/{self.upstream_model}",
                "api_base": self.api_base,
                "api_version": self.api_version,
                "timeout": self.timeout,
            },
            "model_info": {
                "access_groups": list(self.access_groups),
                "input_cost_per_token": self.price.input_cost_per_token,
                "output_cost_per_token": self.price.output_cost_per_token,
                "max_output_tokens": self.price.max_output_tokens,
            },
        }


def _deployment(entry: ModelEntry, created: int) -> Deployment:
    params = entry.litellm_params
    provider = params.provider
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
        price=price_for(
            params.upstream_model,
            provider,
            params.input_cost_per_token,
            params.output_cost_per_token,
            params.max_tokens or entry.model_info.max_output_tokens,
        ),
        created=created,
    )


class ModelTable:
    """Built once at start-up; lookups are dict reads."""

    def __init__(self, config: Config, created: int = 1700000000) -> None:
        self.by_name: dict[str, Deployment] = {}
        for entry in config.model_list:
            self.by_name.setdefault(entry.model_name, _deployment(entry, created))
        self.groups: dict[str, set[str]] = {}
        for dep in self.by_name.values():
            for group in dep.access_groups:
                self.groups.setdefault(group, set()).add(dep.model_name)

    def get(self, name: str) -> Deployment | None:
        return self.by_name.get(name)

    def names(self) -> list[str]:
        return list(self.by_name)
