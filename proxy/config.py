"""Load and validate the LiteLLM-compatible ``config.yaml``.

Every string of the form ``os.environ/NAME`` is replaced by the environment
variable before validation, so a missing variable and a wrong type are both
reported with the key path that holds them. Unknown keys are ignored with a
warning: operators bring LiteLLM configs that carry many settings we do not
use.
"""

from __future__ import annotations

import datetime
import logging
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

log = logging.getLogger("comptroller.config")

ENV_PREFIX = "os.environ/"
DEFAULT_MASTER_KEY = "sk-1234"
DEFAULT_DATABASE_URL = "sqlite:///comptroller.db"


class ConfigError(Exception):
    """The config cannot be used; the message names the key path."""


def _not_a_bool(value: Any) -> Any:
    # pydantic's lax mode reads ``true`` as 1; a budget of ``true`` is a typo, not $1.
    # Strings stay lax because ``os.environ/NAME`` always resolves to a string.
    if isinstance(value, bool):
        raise ValueError("must be a number, not a boolean")
    return value


Number = Annotated[float, BeforeValidator(_not_a_bool)]
Count = Annotated[int, BeforeValidator(_not_a_bool)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class LitellmParams(_Section):
    model: str
    api_base: str | None = None
    api_key: str | None = None
    api_version: str | None = None
    input_cost_per_token: Number | None = Field(default=None, ge=0)
    output_cost_per_token: Number | None = Field(default=None, ge=0)
    # Prices of the other billed parts (USD per token), LiteLLM's names; each
    # overrides the bundled price data for this deployment.
    cache_read_input_token_cost: Number | None = Field(default=None, ge=0)
    cache_creation_input_token_cost: Number | None = Field(default=None, ge=0)
    input_cost_per_audio_token: Number | None = Field(default=None, ge=0)
    output_cost_per_audio_token: Number | None = Field(default=None, ge=0)
    input_cost_per_token_above_200k_tokens: Number | None = Field(default=None, ge=0)
    output_cost_per_token_above_200k_tokens: Number | None = Field(default=None, ge=0)
    timeout: Number = Field(default=600.0, gt=0)
    max_tokens: Count | None = Field(default=None, gt=0)
    # Answer with this text instead of calling the upstream (as the mock provider does).
    mock_response: str | None = None
    # Routing (LiteLLM's names): limits of this deployment, and its share of the traffic.
    rpm: Count | None = Field(default=None, ge=0)
    tpm: Count | None = Field(default=None, ge=0)
    weight: Number | None = Field(default=None, gt=0)

    @field_validator("api_version", mode="before")
    @classmethod
    def _unquoted_date(cls, value: Any) -> Any:
        # YAML reads an unquoted ``api_version: 2024-06-01`` as a date.
        return value.isoformat() if isinstance(value, datetime.date) else value

    @property
    def provider(self) -> str:
        return self.model.split("/", 1)[0] if "/" in self.model else "openai"

    @property
    def upstream_model(self) -> str:
        return self.model.split("/", 1)[1] if "/" in self.model else self.model


class ModelInfo(_Section):
    id: str | None = None  # the deployment's id; derived from its parameters when absent
    access_groups: list[str] = Field(default_factory=list)
    max_output_tokens: Count | None = Field(default=None, gt=0)
    mode: str | None = None
    base_model: str | None = None  # what an azure deployment runs, for its price


class ModelEntry(_Section):
    model_name: str
    litellm_params: LitellmParams
    model_info: ModelInfo = Field(default_factory=ModelInfo)
    # Older LiteLLM documents put a deployment's limits beside litellm_params.
    rpm: Count | None = Field(default=None, ge=0)
    tpm: Count | None = Field(default=None, ge=0)

    @property
    def rpm_limit(self) -> int | None:
        return self.litellm_params.rpm if self.litellm_params.rpm is not None else self.rpm

    @property
    def tpm_limit(self) -> int | None:
        return self.litellm_params.tpm if self.litellm_params.tpm is not None else self.tpm


class GeneralSettings(_Section):
    master_key: str | None = None
    database_url: str | None = None
    alerting: list[str] = Field(default_factory=list)
    budget_enforcement: Literal["check", "strict"] = "check"
    clamp_max_tokens: bool = False
    # Strict mode refuses calls to a model without a price (its worst case has no
    # bound) unless this is set.
    allow_unpriced_models: bool = False
    webhook_secret: str | None = None
    max_request_size_mb: Number = Field(default=10.0, gt=0)
    # Browser origins allowed to call (CORS), e.g. ["https://app.example.com"]; "*" is any.
    allowed_origins: list[str] = Field(default_factory=list)

    @field_validator("allowed_origins")
    @classmethod
    def _origins_are_origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and not re.fullmatch(r"https?://[^/\s]+/?", origin.strip()):
                raise ValueError(
                    f'{origin!r} is not an origin: use scheme://host[:port], or "*" for any'
                )
        return value

    # Where each host journals spend the database could not take (proxy.storage.journal).
    spend_journal_dir: str | None = None
    # Fail-open: calls go through on the last known state while the database is away
    # (the LiteLLM setting); default fail-closed (503 before the upstream is called).
    allow_requests_on_db_unavailable: bool = False
    # PostgreSQL connections per worker process (the LiteLLM setting's name).
    database_connection_pool_limit: int | None = Field(default=None, ge=1)


ROUTING_STRATEGIES = (
    "simple-shuffle",
    "least-busy",
    "usage-based-routing",
    "usage-based-routing-v2",
)
# LiteLLM strategies Comptroller does not implement: refused at start-up, by name.
UNSUPPORTED_STRATEGIES = ("latency-based-routing", "cost-based-routing")
FALLBACK_KINDS = ("fallbacks", "context_window_fallbacks", "content_policy_fallbacks")
# LiteLLM's defaults: 2 retries, a deployment out after more than 3 fails in a minute, for 5 s.
DEFAULT_NUM_RETRIES = 2
DEFAULT_ALLOWED_FAILS = 3
DEFAULT_COOLDOWN_TIME = 5.0

Fallbacks = list[dict[str, list[str]]]


def _fallback_list(value: Any) -> Any:
    """``[{"gpt-4": ["gpt-3.5"]}]`` as LiteLLM writes it; a bare name is a one-item list."""
    if value is None:
        return []
    if isinstance(value, dict):
        value = [value]
    if isinstance(value, list):
        out = []
        for item in value:
            if isinstance(item, dict):
                item = {k: [v] if isinstance(v, str) else v for k, v in item.items()}
            out.append(item)
        return out
    return value


FallbackList = Annotated[Fallbacks, BeforeValidator(_fallback_list)]


class LitellmSettings(_Section):
    # Router settings LiteLLM also reads here; router_settings wins where both set one.
    num_retries: Count | None = Field(default=None, ge=0)
    allowed_fails: Count | None = Field(default=None, ge=0)
    cooldown_time: Number | None = Field(default=None, ge=0)
    fallbacks: FallbackList | None = None
    context_window_fallbacks: FallbackList | None = None
    content_policy_fallbacks: FallbackList | None = None
    max_budget: Number | None = Field(default=None, ge=0)
    budget_duration: str | None = None
    max_user_budget: Number | None = Field(default=None, ge=0)
    max_end_user_budget_id: str | None = None

    @field_validator("budget_duration")
    @classmethod
    def _duration_is_valid(cls, value: str | None) -> str | None:
        from proxy.durations import parse_duration

        if value is not None:
            parse_duration(value)
        return value


class RouterSettings(_Section):
    """``router_settings`` (also read from ``litellm_settings``, where LiteLLM's
    proxy documents take ``num_retries``, ``fallbacks`` and the cooldown settings)."""

    routing_strategy: str = "simple-shuffle"
    num_retries: Count | None = Field(default=None, ge=0)
    allowed_fails: Count | None = Field(default=None, ge=0)
    cooldown_time: Number | None = Field(default=None, ge=0)
    fallbacks: FallbackList = Field(default_factory=list)
    context_window_fallbacks: FallbackList = Field(default_factory=list)
    content_policy_fallbacks: FallbackList = Field(default_factory=list)

    @field_validator("routing_strategy")
    @classmethod
    def _known_strategy(cls, value: str) -> str:
        if value in UNSUPPORTED_STRATEGIES:
            raise ValueError(
                f"{value} is not supported by Comptroller (use one of "
                f"{', '.join(ROUTING_STRATEGIES)})"
            )
        if value not in ROUTING_STRATEGIES:
            raise ValueError(f"unknown strategy {value!r} (one of {', '.join(ROUTING_STRATEGIES)})")
        return value

    @property
    def retries(self) -> int:
        return DEFAULT_NUM_RETRIES if self.num_retries is None else self.num_retries

    @property
    def fails_allowed(self) -> int:
        return DEFAULT_ALLOWED_FAILS if self.allowed_fails is None else self.allowed_fails

    @property
    def cooldown_seconds(self) -> float:
        return DEFAULT_COOLDOWN_TIME if self.cooldown_time is None else self.cooldown_time

    def fallbacks_for(self, kind: str, model: str) -> list[str]:
        """The model names ``model`` falls back to for ``kind`` (``"*"`` matches any)."""
        found: list[str] = []
        for mapping in getattr(self, kind):
            for name in (model, "*"):
                found += [m for m in mapping.get(name, []) if m not in found and m != model]
        return found


class PluginSettings(_Section):
    disable: list[str] = Field(default_factory=list)
    settings: dict[str, dict[str, Any]] = Field(default_factory=dict)


class Config(_Section):
    model_list: list[ModelEntry] = Field(default_factory=list)
    general_settings: GeneralSettings = Field(default_factory=GeneralSettings)
    litellm_settings: LitellmSettings = Field(default_factory=LitellmSettings)
    router_settings: RouterSettings = Field(default_factory=RouterSettings)
    plugins: PluginSettings = Field(default_factory=PluginSettings)
    # Not from the file: filled in by load_config so the app needs no env reads.
    source: str = "built-in defaults"

    @property
    def master_key(self) -> str:
        return self.general_settings.master_key or DEFAULT_MASTER_KEY

    @property
    def uses_trial_master_key(self) -> bool:
        """The seeds' ``sk-1234``: fine on a laptop, an open door anywhere else."""
        return self.master_key == DEFAULT_MASTER_KEY

    @property
    def database_url(self) -> str:
        return self.general_settings.database_url or DEFAULT_DATABASE_URL

    def plugin_settings(self, name: str) -> dict[str, Any]:
        return self.plugins.settings.get(name, {})


# What the built-in chat models answer: about as long as a real model's answer to a
# short question, so that a seed's budget of $0.0001 is spent in one call, as the
# LiteLLM documents show it.
DEFAULT_MOCK_REPLY = (
    "This is a mock response from Comptroller, the metered LLM gateway. No model was "
    "called: the built-in models answer every request with this text and report its "
    "usage the way a real model would, priced like the model they stand in for, so that "
    "budgets, rate limits, spend logs and alerts can be tried out before any upstream "
    "API key is configured."
)


def _mock_model(name: str, upstream: str, inp: float, out: float, groups: list[str]) -> dict:
    return {
        "model_name": name,
        "litellm_params": {
            "model": f"mock/{upstream}",
            "input_cost_per_token": inp,
            "output_cost_per_token": out,
            "mock_response": DEFAULT_MOCK_REPLY,
        },
        "model_info": {"access_groups": groups},
    }


def default_model_list() -> list[dict]:
    """Mock models under the names the seeds use, priced like the real ones."""
    return [
        _mock_model("gpt-3.5-turbo", "gpt-3.5-turbo", 0.0000015, 0.000002, []),
        _mock_model("azure-gpt-3.5", "gpt-3.5-turbo", 0.0000015, 0.000002, ["azure-models"]),
        _mock_model("mistral", "mistral-small", 0.000002, 0.000006, []),
        _mock_model("gpt-4o-mini", "gpt-4o-mini", 0.00000015, 0.0000006, []),
        # For /v1/messages (Claude Code, the Anthropic SDK) before an anthropic/ upstream is set.
        _mock_model("claude-sonnet-4-5", "claude-sonnet-4-5", 0.000003, 0.000015, []),
        _mock_model(
            "text-embedding-ada-002", "text-embedding-ada-002", 0.0000001, 0.0, ["beta-models"]
        ),
    ]


def resolve_env_refs(value: Any, path: str = "") -> Any:
    """Replace every ``os.environ/NAME`` string with the variable's value."""
    if isinstance(value, dict):
        return {k: resolve_env_refs(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_env_refs(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, str) and value.startswith(ENV_PREFIX):
        name = value[len(ENV_PREFIX) :]
        if name not in os.environ:
            raise ConfigError(f"{path}: environment variable {name} is not set")
        return os.environ[name]
    return value


def _warn_unknown_keys(model: BaseModel, path: str = "") -> None:
    for key in model.model_extra or {}:
        log.warning("config: unknown key %s ignored", f"{path}.{key}" if path else key)
    for name in type(model).model_fields:
        child = getattr(model, name)
        children = child if isinstance(child, list) else [child]
        for i, item in enumerate(children):
            if isinstance(item, BaseModel):
                where = f"{path}.{name}" if path else name
                _warn_unknown_keys(item, f"{where}[{i}]" if isinstance(child, list) else where)


def _format_validation_error(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ""
        for item in e["loc"]:
            loc += f"[{item}]" if isinstance(item, int) else (f".{item}" if loc else str(item))
        parts.append(f"{loc}: {e['msg']}")
    return "invalid config: " + "; ".join(parts)


def build_config(raw: dict | None, source: str = "built-in defaults") -> Config:
    """Validate a parsed config dict, apply environment overrides and defaults."""
    raw = resolve_env_refs(dict(raw or {}))
    if not isinstance(raw, dict):
        raise ConfigError("config: top level must be a mapping")
    for section in ("general_settings", "litellm_settings", "router_settings", "plugins"):
        if raw.get(section) is None:
            raw.pop(section, None)
    if not raw.get("model_list"):
        if source != "built-in defaults":
            log.info("config: no model_list in %s, serving the built-in mock models", source)
        raw["model_list"] = default_model_list()
    try:
        config = Config.model_validate({**raw, "source": source})
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err)) from None
    _warn_unknown_keys(config)
    general = config.general_settings
    env_master = os.environ.get("COMPTROLLER_MASTER_KEY") or os.environ.get("LITELLM_MASTER_KEY")
    if env_master and not general.master_key:
        general.master_key = env_master
    if not general.master_key:
        general.master_key = DEFAULT_MASTER_KEY
        log.warning(
            "no master key configured (COMPTROLLER_MASTER_KEY, LITELLM_MASTER_KEY or "
            "general_settings.master_key): using the trial key %s, for local use only",
            DEFAULT_MASTER_KEY,
        )
    if os.environ.get("DATABASE_URL"):
        general.database_url = os.environ["DATABASE_URL"]
    _merge_router_settings(config)
    return config


def _merge_router_settings(config: Config) -> None:
    """Take the router settings LiteLLM reads from ``litellm_settings`` too."""
    router, litellm = config.router_settings, config.litellm_settings
    given = router.model_fields_set
    for name in ("num_retries", "allowed_fails", "cooldown_time", *FALLBACK_KINDS):
        value = getattr(litellm, name)
        if name not in given and value is not None:
            setattr(router, name, value)


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read ``path`` (or ``$COMPTROLLER_CONFIG``, else ``config.yaml`` if present)."""
    explicit = path is not None or "COMPTROLLER_CONFIG" in os.environ
    candidate = Path(path or os.environ.get("COMPTROLLER_CONFIG", "config.yaml"))
    if not candidate.exists():
        if explicit:
            raise ConfigError(f"config file {candidate} does not exist")
        return build_config(None)
    try:
        raw = yaml.safe_load(candidate.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {candidate} is not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {candidate}: top level must be a mapping")
    return build_config(raw, source=str(candidate))
