"""Model prices: the shipped table, per-deployment overrides, and token estimates.

Prices are resolved once per deployment at start-up (``price_for``) and applied per
call (``compute_cost``). Pricing must never break a call: a model missing from the
table is priced at 0 and logged once per process. Its calls are counted per model
group in the ``unpriced_model`` table by the spend ledger (``Price.known`` is False),
which ``/metrics`` exports across workers and hosts, so that an operator can spot
free traffic and add an override; ``unpriced_models_seen`` is this process's count.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
import threading
from dataclasses import dataclass
from importlib import resources
from typing import Any

log = logging.getLogger("comptroller.pricing")

EMBEDDING_CALL_TYPES = frozenset({"embeddings", "embedding"})

# Rough token cost of things that are not plain text in a prompt.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_IMAGE = 85
CHARS_PER_TOKEN = 4

# Version suffixes that do not change the price family: ISO dates
# (gpt-4o-2024-08-06), compact dates (claude-3-5-sonnet-20241022), OpenAI's
# MMDD snapshots (gpt-4-0613), Mistral's YYMM (mistral-large-2407) and aliases.
_VERSION_SUFFIX = re.compile(r"[-@](?:\d{4}-\d{2}-\d{2}|\d{8}|\d{4}|latest)$")


@dataclass(frozen=True)
class Price:
    input_cost_per_token: float
    output_cost_per_token: float
    max_output_tokens: int | None
    # False when neither an override nor the table had the model: the call is unpriced.
    known: bool
    # The upstream model name, so that compute_cost can count unpriced calls per model.
    model: str = ""


_lock = threading.Lock()
_warned: set[str] = set()
_unpriced_calls: dict[str, int] = {}


@functools.cache
def load_price_table() -> dict[str, dict]:
    """The shipped table (``proxy/data/prices.json``), keyed by lower-case model name.

    Read once per process; keys starting with ``_`` are comments. The returned dict
    is shared, so callers must not mutate it.
    """
    text = resources.files("proxy").joinpath("data/prices.json").read_text(encoding="utf-8")
    raw = json.loads(text)
    table: dict[str, dict] = {}
    for name, entry in raw.items():
        if name.startswith("_") or not isinstance(entry, dict):
            continue
        table[name.lower()] = entry
    return table


def _strip_versions(name: str) -> list[str]:
    """``name`` followed by each shorter form with one more version suffix removed."""
    forms = [name]
    while True:
        shorter = _VERSION_SUFFIX.sub("", forms[-1])
        if shorter == forms[-1] or not shorter:
            return forms
        forms.append(shorter)


def _candidates(upstream_model: str, provider: str) -> list[str]:
    """Table keys to try, best first: exact, version-stripped, provider-prefixed."""
    name = upstream_model.strip().lower()
    names = _strip_versions(name)
    if "/" in name:
        # "anthropic/claude-3-5-sonnet" or "mistral/mistral-small-latest".
        names += _strip_versions(name.rsplit("/", 1)[1])
    prefix = provider.strip().lower()
    prefixed = [f"{prefix}/{n}" for n in names if prefix and "/" not in n]
    seen: dict[str, None] = dict.fromkeys(names + prefixed)
    return list(seen)


def _lookup(upstream_model: str, provider: str) -> dict | None:
    table = load_price_table()
    for key in _candidates(upstream_model, provider):
        entry = table.get(key)
        if entry is not None:
            return entry
    return None


def has_price(model: str, provider: str) -> bool:
    """Whether the shipped table knows ``model`` (no warning when it does not)."""
    return _lookup(model, provider) is not None


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def price_for(
    upstream_model: str,
    provider: str,
    input_override: float | None,
    output_override: float | None,
    max_output_override: int | None,
) -> Price:
    """Resolve the price of one deployment; each override wins over the table per field.

    Never raises: a model the table does not know is priced at 0 for every field
    without an override, with one warning per model per process.
    """
    entry = _lookup(upstream_model, provider)
    has_override = input_override is not None or output_override is not None
    if entry is None and (input_override is None or output_override is None):
        with _lock:
            first = upstream_model not in _warned
            _warned.add(upstream_model)
            if not has_override:
                _unpriced_calls.setdefault(upstream_model, 0)
        if first:
            log.warning(
                "no price known for model %r (provider %s): %s priced at 0; set "
                "input_cost_per_token/output_cost_per_token in litellm_params",
                upstream_model,
                provider,
                "all tokens" if not has_override else "the tokens without an override",
            )
    table = entry or {}
    max_output = max_output_override
    if max_output is None and table.get("max_output_tokens") is not None:
        max_output = int(table["max_output_tokens"])
    return Price(
        input_cost_per_token=(
            float(input_override)
            if input_override is not None
            else _as_float(table.get("input_cost_per_token", 0.0))
        ),
        output_cost_per_token=(
            float(output_override)
            if output_override is not None
            else _as_float(table.get("output_cost_per_token", 0.0))
        ),
        max_output_tokens=max_output,
        known=entry is not None or has_override,
        model=upstream_model,
    )


def compute_cost(price: Price, prompt_tokens: int, completion_tokens: int, call_type: str) -> float:
    """USD cost of one call; embeddings are charged for prompt tokens only."""
    if not price.known:
        with _lock:
            _unpriced_calls[price.model] = _unpriced_calls.get(price.model, 0) + 1
    prompt = max(0, int(prompt_tokens))
    cost = prompt * price.input_cost_per_token
    if call_type not in EMBEDDING_CALL_TYPES:
        cost += max(0, int(completion_tokens)) * price.output_cost_per_token
    return cost


def unpriced_models_seen() -> dict[str, int]:
    """Per unpriced model, how many calls were charged 0 (0 until its first call)."""
    with _lock:
        return dict(_unpriced_calls)


def _reset_for_tests() -> None:
    """Forget warnings and counters (tests only)."""
    with _lock:
        _warned.clear()
        _unpriced_calls.clear()


def _content_size(content: Any) -> tuple[int, int]:
    """(characters, extra tokens) of a message ``content``: a string or a list of parts."""
    if isinstance(content, str):
        return len(content), 0
    chars = extra = 0
    if isinstance(content, list):
        for part in content:
            if isinstance(part, str):
                chars += len(part)
            elif isinstance(part, dict):
                text = part.get("text")
                if isinstance(text, str):
                    chars += len(text)
                elif part.get("type") in ("image_url", "input_image", "image"):
                    extra += TOKENS_PER_IMAGE
    return chars, extra


def _message_chars(message: dict) -> tuple[int, int]:
    chars, extra = _content_size(message.get("content"))
    name = message.get("name")
    if isinstance(name, str):
        chars += len(name)
    tool_calls = message.get("tool_calls")
    if isinstance(tool_calls, list):
        # Earlier assistant tool calls are replayed to the model as prompt text.
        chars += len(json.dumps(tool_calls, separators=(",", ":")))
    return chars, extra


def _tokens(chars: int) -> int:
    return math.ceil(chars / CHARS_PER_TOKEN)


def _embedding_input_tokens(value: Any) -> int:
    if isinstance(value, str):
        return _tokens(len(value))
    if isinstance(value, list):
        if value and all(isinstance(v, int) for v in value):
            return len(value)  # one pre-tokenized input
        return sum(_embedding_input_tokens(v) for v in value)
    return 0


def estimate_prompt_tokens(body: dict, call_type: str) -> int:
    """A cheap, tokenizer-free prompt size (about 4 characters per token), at least 1.

    For chat: ceil(characters of all message contents / 4) + 3 per message, plus the
    JSON of any tool definitions and 85 per image part. For embeddings: ceil(chars / 4)
    per input string, or the length of a pre-tokenized input. Used for worst-case
    budget reservations and when an upstream answer carries no usage.
    """
    if not isinstance(body, dict):
        return 1
    if call_type in EMBEDDING_CALL_TYPES:
        return max(1, _embedding_input_tokens(body.get("input")))
    chars = extra = 0
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict):
                c, e = _message_chars(message)
                chars += c
                extra += e
            extra += TOKENS_PER_MESSAGE
    elif "prompt" in body:
        # Legacy completions: a string or a list of strings.
        c, e = _content_size(body.get("prompt"))
        chars += c
        extra += e
    for key in ("tools", "functions"):
        if body.get(key):
            chars += len(json.dumps(body[key], separators=(",", ":"), default=str))
    return max(1, _tokens(chars) + extra)
