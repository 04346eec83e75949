"""Where each provider prefix (``groq/``, ``azure/``, ...) sends its calls.

A deployment's ``litellm_params.model`` is ``<provider>/<model>``. The
provider decides the endpoint when ``api_base`` is absent, the wire format
(OpenAI's, Azure's, Anthropic's or none for ``mock/``) and the environment
variable an absent ``api_key`` is read from, as LiteLLM documents them.

Never a default host for a provider that has none: a ``groq/`` deployment
without ``api_base`` goes to Groq, and a prefix this table does not know is
refused at start-up unless the deployment names its ``api_base`` (it is then
an OpenAI-compatible endpoint), so that no key is ever sent to another
company's host.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from proxy.config import ConfigError, ModelEntry

# Wire formats the HTTP client speaks (anthropic: proxy.upstream.anthropic).
SUPPORTED_WIRES = frozenset({"openai", "azure", "anthropic", "mock"})


@dataclass(frozen=True)
class Provider:
    name: str
    wire: str  # "openai" (OpenAI-compatible), "azure", "anthropic" or "mock"
    base_url: str | None  # None: the deployment must give api_base
    key_env: str | None = None  # where an absent api_key is read from
    base_env: str | None = None  # where an absent api_base is read from
    # Appended to an api_base that lacks it (Ollama serves its OpenAI API under /v1).
    path_suffix: str = ""


def _p(name: str, base_url: str | None, key_env: str | None = None, **kw: str) -> Provider:
    return Provider(name, kw.pop("wire", "openai"), base_url, key_env, **kw)


PROVIDERS: dict[str, Provider] = {
    p.name: p
    for p in (
        _p("openai", "https://api.openai.com/v1", "OPENAI_API_KEY", base_env="OPENAI_API_BASE"),
        _p(
            "azure",
            None,
            "AZURE_API_KEY",
            wire="azure",
            base_env="AZURE_API_BASE",
        ),
        _p("anthropic", "https://api.anthropic.com", "ANTHROPIC_API_KEY", wire="anthropic"),
        _p("groq", "https://api.groq.com/openai/v1", "GROQ_API_KEY"),
        _p("openrouter", "https://openrouter.ai/api/v1", "OPENROUTER_API_KEY"),
        _p("mistral", "https://api.mistral.ai/v1", "MISTRAL_API_KEY"),
        _p("deepseek", "https://api.deepseek.com/v1", "DEEPSEEK_API_KEY"),
        _p("together_ai", "https://api.together.xyz/v1", "TOGETHERAI_API_KEY"),
        _p("fireworks_ai", "https://api.fireworks.ai/inference/v1", "FIREWORKS_AI_API_KEY"),
        _p("xai", "https://api.x.ai/v1", "XAI_API_KEY"),
        _p("perplexity", "https://api.perplexity.ai", "PERPLEXITYAI_API_KEY"),
        _p("cerebras", "https://api.cerebras.ai/v1", "CEREBRAS_API_KEY"),
        _p("deepinfra", "https://api.deepinfra.com/v1/openai", "DEEPINFRA_API_KEY"),
        # Self-hosted servers: no host is theirs by default.
        _p("hosted_vllm", None, "HOSTED_VLLM_API_KEY", base_env="HOSTED_VLLM_API_BASE"),
        _p("lm_studio", None, "LM_STUDIO_API_KEY", base_env="LM_STUDIO_API_BASE"),
        _p("ollama", None, None, base_env="OLLAMA_API_BASE", path_suffix="/v1"),
        _p("ollama_chat", None, None, base_env="OLLAMA_API_BASE", path_suffix="/v1"),
        _p("mock", None, None, wire="mock"),
    )
}

# Prefixes LiteLLM knows whose APIs are not OpenAI's: refused even with an api_base.
NOT_OPENAI_COMPATIBLE = frozenset(
    {
        "bedrock",
        "sagemaker",
        "vertex_ai",
        "vertex_ai_beta",
        "gemini",
        "palm",
        "cohere",
        "cohere_chat",
        "replicate",
        "huggingface",
        "ai21",
        "watsonx",
        "cloudflare",
        "petals",
        "baseten",
        "aleph_alpha",
        "nlp_cloud",
        "predibase",
        "triton",
    }
)


@dataclass(frozen=True)
class Endpoint:
    """Where one deployment's calls go, resolved once at start-up."""

    provider: str
    wire: str
    api_base: str | None
    api_key: str | None
    api_version: str | None


def _where(index: int, entry: ModelEntry) -> str:
    return f"model_list[{index}] ({entry.model_name}, {entry.litellm_params.model})"


def _with_suffix(base: str, suffix: str) -> str:
    base = base.rstrip("/")
    return base if not suffix or base.endswith(suffix) else base + suffix


def resolve_endpoint(index: int, entry: ModelEntry) -> Endpoint:
    """The endpoint of ``model_list[index]``, or :class:`ConfigError` naming it."""
    params = entry.litellm_params
    prefix = params.provider
    where = _where(index, entry)
    if params.mock_response is not None:
        # Answered by Comptroller itself: no endpoint is ever called.
        return Endpoint(prefix, "mock", params.api_base, params.api_key, params.api_version)
    if prefix in NOT_OPENAI_COMPATIBLE:
        raise ConfigError(
            f"{where}: provider {prefix}/ is not supported by Comptroller "
            "(supported: " + ", ".join(f"{name}/" for name in PROVIDERS) + ", or any prefix "
            "with an api_base that speaks the OpenAI API)"
        )
    provider = PROVIDERS.get(prefix)
    if provider is None:
        if not params.api_base:
            raise ConfigError(
                f"{where}: unknown provider {prefix}/ and no api_base: set "
                "litellm_params.api_base to its OpenAI-compatible endpoint, or use one of "
                + ", ".join(f"{name}/" for name in PROVIDERS)
            )
        return Endpoint(prefix, "openai", params.api_base, params.api_key, params.api_version)
    if provider.wire not in SUPPORTED_WIRES:
        raise ConfigError(f"{where}: provider {prefix}/ is not supported by Comptroller yet")
    api_key = params.api_key or (os.environ.get(provider.key_env) if provider.key_env else None)
    api_base = params.api_base or (os.environ.get(provider.base_env) if provider.base_env else None)
    api_base = api_base or provider.base_url
    if provider.wire == "mock":
        return Endpoint(prefix, provider.wire, api_base, api_key, params.api_version)
    if not api_base:
        raise ConfigError(
            f"{where}: provider {prefix}/ has no default endpoint: set litellm_params.api_base"
        )
    version = params.api_version
    if provider.wire == "azure" and not version:
        version = os.environ.get("AZURE_API_VERSION") or None
    return Endpoint(
        prefix, provider.wire, _with_suffix(api_base, provider.path_suffix), api_key, version
    )
