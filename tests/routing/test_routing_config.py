"""Configs written the way LiteLLM's documents show them: each deployment goes to its
own provider's endpoint, or start-up names what it cannot serve."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from proxy.config import ConfigError, build_config
from proxy.upstream.deployments import ModelTable
from proxy.upstream.providers import PROVIDERS

# LiteLLM's load-balancing example: one model name over Azure regions and keys,
# plus OpenAI; limits in litellm_params; router settings.
LOAD_BALANCING = """
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: azure/gpt-4o-eastus
      api_base: https://my-endpoint-eastus.openai.azure.com/
      api_key: os.environ/AZURE_API_KEY_EU
      api_version: "2024-06-01"
      rpm: 6
  - model_name: gpt-4o
    litellm_params:
      model: azure/gpt-4o-canada
      api_base: https://my-endpoint-canada.openai.azure.com/
      api_key: os.environ/AZURE_API_KEY_CA
      rpm: 600
  - model_name: gpt-4o
    litellm_params:
      model: azure/gpt-4o-canada
      api_base: https://my-endpoint-canada.openai.azure.com/
      api_key: os.environ/AZURE_API_KEY_CA_2
    tpm: 100000
    rpm: 900
  - model_name: gpt-4o
    litellm_params:
      model: gpt-4o
      api_key: os.environ/OPENAI_API_KEY
      weight: 2
router_settings:
  routing_strategy: usage-based-routing-v2
  num_retries: 3
  allowed_fails: 1
  cooldown_time: 30
  fallbacks: [{"gpt-4o": ["groq-llama"]}]
  context_window_fallbacks: [{"gpt-4o": ["openrouter-claude"]}]
"""

# The providers LiteLLM documents without api_base (oai_misc_config.yaml style).
NO_API_BASE = """
model_list:
  - model_name: groq-llama
    litellm_params:
      model: groq/llama3-8b-8192
      api_key: os.environ/GROQ_API_KEY
  - model_name: openrouter-claude
    litellm_params:
      model: openrouter/anthropic/claude-3.5-sonnet
      api_key: os.environ/OPENROUTER_API_KEY
  - model_name: mistral-small
    litellm_params:
      model: mistral/mistral-small-latest
      api_key: os.environ/MISTRAL_API_KEY
  - model_name: together-llama
    litellm_params:
      model: together_ai/meta-llama/Llama-3-70b-chat-hf
      api_key: os.environ/TOGETHERAI_API_KEY
  - model_name: deepseek-chat
    litellm_params: {model: deepseek/deepseek-chat, api_key: os.environ/DEEPSEEK_API_KEY}
  - model_name: fireworks
    litellm_params: {model: fireworks_ai/accounts/fireworks/models/llama-v3-70b-instruct}
  - model_name: grok
    litellm_params: {model: xai/grok-2}
  - model_name: sonar
    litellm_params: {model: perplexity/sonar}
  - model_name: cerebras
    litellm_params: {model: cerebras/llama3.1-8b}
  - model_name: deepinfra
    litellm_params: {model: deepinfra/meta-llama/Meta-Llama-3-8B-Instruct}
litellm_settings:
  num_retries: 2
  fallbacks: [{"groq-llama": ["mistral-small"]}]
"""

ENV = {
    "AZURE_API_KEY_EU": "az-eu",
    "AZURE_API_KEY_CA": "az-ca",
    "AZURE_API_KEY_CA_2": "az-ca-2",
    "OPENAI_API_KEY": "sk-openai",
    "GROQ_API_KEY": "gsk-groq",
    "OPENROUTER_API_KEY": "sk-or",
    "MISTRAL_API_KEY": "mistral-key",
    "TOGETHERAI_API_KEY": "together-key",
    "DEEPSEEK_API_KEY": "deepseek-key",
}


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    for name in ("AZURE_API_BASE", "OPENAI_API_BASE", "FIREWORKS_AI_API_KEY"):
        monkeypatch.delenv(name, raising=False)


def table(*documents: str) -> ModelTable:
    raw: dict[str, Any] = {"model_list": []}
    for doc in documents:
        part = yaml.safe_load(doc)
        raw["model_list"] += part.pop("model_list")
        raw.update(part)
    return ModelTable(build_config(raw, source="test.yaml"))


def test_each_documented_provider_goes_to_its_own_endpoint_without_api_base() -> None:
    deps = {d.model_name: d for d in table(NO_API_BASE).deployments}
    assert {name: (d.provider, d.api_base) for name, d in deps.items()} == {
        "groq-llama": ("groq", "https://api.groq.com/openai/v1"),
        "openrouter-claude": ("openrouter", "https://openrouter.ai/api/v1"),
        "mistral-small": ("mistral", "https://api.mistral.ai/v1"),
        "together-llama": ("together_ai", "https://api.together.xyz/v1"),
        "deepseek-chat": ("deepseek", "https://api.deepseek.com/v1"),
        "fireworks": ("fireworks_ai", "https://api.fireworks.ai/inference/v1"),
        "grok": ("xai", "https://api.x.ai/v1"),
        "sonar": ("perplexity", "https://api.perplexity.ai"),
        "cerebras": ("cerebras", "https://api.cerebras.ai/v1"),
        "deepinfra": ("deepinfra", "https://api.deepinfra.com/v1/openai"),
    }
    # Each key goes with its own provider: the Groq key never to OpenAI.
    assert deps["groq-llama"].api_key == "gsk-groq"
    assert deps["groq-llama"].upstream_model == "llama3-8b-8192"
    assert deps["openrouter-claude"].upstream_model == "anthropic/claude-3.5-sonnet"
    assert all("openai.com" not in (d.api_base or "") for d in deps.values())


def test_an_absent_api_key_is_read_from_the_providers_own_variable() -> None:
    deps = table("model_list: [{model_name: g, litellm_params: {model: groq/llama3-8b-8192}}]")
    assert deps.deployments[0].api_key == "gsk-groq"


def test_load_balancing_across_azure_regions_and_keys_loads_as_one_group() -> None:
    models = table(LOAD_BALANCING, NO_API_BASE)
    group = models.group("gpt-4o")
    assert [(d.provider, d.api_base, d.api_key) for d in group] == [
        ("azure", "https://my-endpoint-eastus.openai.azure.com", "az-eu"),
        ("azure", "https://my-endpoint-canada.openai.azure.com", "az-ca"),
        ("azure", "https://my-endpoint-canada.openai.azure.com", "az-ca-2"),
        ("openai", "https://api.openai.com/v1", "sk-openai"),
    ]
    assert [(d.rpm, d.tpm, d.weight) for d in group] == [
        (6, None, None),
        (600, None, None),
        (900, 100000, None),
        (None, None, 2.0),
    ]
    assert len({d.id for d in group}) == 4  # the same region with two keys: two deployments
    assert group[0].api_version == "2024-06-01"


def test_router_settings_load_from_router_settings_and_litellm_settings() -> None:
    config = build_config(yaml.safe_load(LOAD_BALANCING) | {"model_list": []}, "t.yaml")
    router = config.router_settings
    assert (router.routing_strategy, router.retries, router.fails_allowed) == (
        "usage-based-routing-v2",
        3,
        1,
    )
    assert router.cooldown_seconds == 30
    assert router.fallbacks_for("fallbacks", "gpt-4o") == ["groq-llama"]
    assert router.fallbacks_for("context_window_fallbacks", "gpt-4o") == ["openrouter-claude"]
    other = build_config(yaml.safe_load(NO_API_BASE), "t.yaml").router_settings
    assert other.retries == 2 and other.fallbacks_for("fallbacks", "groq-llama") == [
        "mistral-small"
    ]


def test_defaults_are_litellms() -> None:
    router = build_config({}).router_settings
    assert router.routing_strategy == "simple-shuffle"
    assert (router.retries, router.fails_allowed, router.cooldown_seconds) == (2, 3, 5.0)


@pytest.mark.parametrize(
    ("entry", "named"),
    [
        ({"model": "acme/some-model"}, "unknown provider acme/"),
        ({"model": "hosted_vllm/llama"}, "hosted_vllm/ has no default endpoint"),
        ({"model": "ollama/llama3"}, "ollama/ has no default endpoint"),
        ({"model": "lm_studio/qwen"}, "lm_studio/ has no default endpoint"),
        ({"model": "azure/gpt-4o"}, "azure/ has no default endpoint"),
        ({"model": "bedrock/anthropic.claude-v2"}, "bedrock/ is not supported"),
        ({"model": "gemini/gemini-pro", "api_base": "https://x"}, "gemini/ is not supported"),
    ],
)
def test_what_cannot_be_served_is_refused_at_start_up_naming_the_deployment(
    entry: dict[str, Any], named: str
) -> None:
    raw = {"model_list": [{"model_name": "ok", "litellm_params": {"model": "mock/x"}}]}
    raw["model_list"].append({"model_name": "mine", "litellm_params": entry})
    with pytest.raises(ConfigError) as err:
        ModelTable(build_config(raw, "t.yaml"))
    assert f"model_list[1] (mine, {entry['model']})" in str(err.value)
    assert named in str(err.value)


def test_self_hosted_servers_take_their_api_base() -> None:
    raw = {
        "model_list": [
            {"model_name": "v", "litellm_params": {"model": "hosted_vllm/m", "api_base": "http://h:8000/v1"}},
            {"model_name": "o", "litellm_params": {"model": "ollama/llama3", "api_base": "http://h:11434"}},
            {"model_name": "l", "litellm_params": {"model": "lm_studio/q", "api_base": "http://h:1234/v1"}},
            {"model_name": "c", "litellm_params": {"model": "acme/m", "api_base": "http://h:9/v1"}},
        ]
    }  # fmt: skip
    bases = [(d.provider, d.api_base) for d in ModelTable(build_config(raw, "t")).deployments]
    assert bases == [
        ("hosted_vllm", "http://h:8000/v1"),
        ("ollama", "http://h:11434/v1"),  # Ollama's OpenAI API is under /v1
        ("lm_studio", "http://h:1234/v1"),
        ("acme", "http://h:9/v1"),  # an unknown prefix with an api_base: OpenAI-compatible
    ]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"routing_strategy": "latency-based-routing"}, "latency-based-routing is not supported"),
        ({"routing_strategy": "cost-based-routing"}, "cost-based-routing is not supported"),
        ({"routing_strategy": "fastest"}, "unknown strategy 'fastest'"),
        ({"num_retries": -1}, "router_settings.num_retries"),
        ({"cooldown_time": "soon"}, "router_settings.cooldown_time"),
    ],
)
def test_bad_router_settings_stop_start_up(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_config({"router_settings": settings})
    assert message in str(err.value)


def test_a_fallback_to_a_model_not_in_the_list_is_refused_at_start_up() -> None:
    raw = {
        "model_list": [{"model_name": "a", "litellm_params": {"model": "mock/a"}}],
        "router_settings": {"fallbacks": [{"a": ["missing"]}]},
    }
    with pytest.raises(ConfigError, match=r"router_settings.fallbacks\[0\]: model 'missing'"):
        ModelTable(build_config(raw))


def test_every_provider_with_a_default_endpoint_uses_https() -> None:
    for provider in PROVIDERS.values():
        assert provider.base_url is None or provider.base_url.startswith("https://")
