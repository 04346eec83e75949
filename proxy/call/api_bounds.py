"""Worst-case tokens of a Responses, legacy completions or Messages call.

Strict budgets reserve an upper bound of what a call can be billed before
it is made, so the bound must hold for any request these routes accept:

- **input**: every field the provider bills as input, serialised as JSON,
  counted in UTF-8 bytes. A byte-level BPE tokenizer (OpenAI's, and
  Anthropic's with its byte fallback) never makes more tokens than bytes,
  and the JSON holds every character of the text plus quotes, keys and
  brackets, which also covers the per-message framing. On top: each image
  at the largest per-image charge (an image is billed by its size in
  pixels, not its bytes), the tool-use system prompt providers add when
  tools are given, and the reply priming. Token-id prompts count one token
  per id. A Responses continuation (``previous_response_id``) adds the
  stored conversation it carries, recorded when that response was billed.
- **output**: the request's limit (``max_output_tokens``, ``max_tokens``),
  else the model's output cap, times every completion generated (``n``,
  ``best_of``, per prompt). Reasoning and thinking tokens are inside it.

What no request field bounds (a hosted tool's retrieved content, a file or
document fetched by id or URL, a stored conversation) is refused in strict
mode by :func:`unbounded_part` rather than guessed.
"""

from __future__ import annotations

import json
import math
from typing import Any

# The system prompt a provider adds for tool use (Anthropic documents 346 tokens plus up
# to ~700 per built-in client tool; OpenAI does not publish its own but it is smaller).
TOOLS_OVERHEAD_TOKENS = 2_000
# Reply priming and per-request framing beyond what the JSON already counts.
FORMAT_OVERHEAD_TOKENS = 32

BOUNDED_CALL_TYPES = frozenset({"responses", "completions", "messages"})
# Fields that are parameters, never prompt text; every other field is counted as input,
# so a field Comptroller does not know yet can only make the bound larger.
_PARAMETERS = {
    "responses": frozenset(
        {
            "model",
            "max_output_tokens",
            "stream",
            "stream_options",
            "temperature",
            "top_p",
            "top_logprobs",
            "store",
            "user",
            "metadata",
            "previous_response_id",
            "parallel_tool_calls",
            "reasoning",
            "truncation",
            "service_tier",
            "include",
            "background",
            "safety_identifier",
            "prompt_cache_key",
            "max_tool_calls",
            "mock_response",
        }
    ),
    "messages": frozenset(
        {
            "model",
            "max_tokens",
            "stream",
            "temperature",
            "top_p",
            "top_k",
            "metadata",
            "thinking",
            "service_tier",
            "stop_sequences",
            "mock_response",
        }
    ),
}


def _billed(body: dict[str, Any], call_type: str) -> dict[str, Any]:
    skip = _PARAMETERS[call_type]
    return {name: value for name, value in body.items() if name not in skip and value is not None}


_IMAGE_TYPES = frozenset({"image", "image_url", "input_image"})
# Hosted tools whose retrieved content or per-call fees no request field bounds.
_HOSTED_TOOL_PREFIXES = (
    "web_search",
    "web_fetch",
    "file_search",
    "code_interpreter",
    "code_execution",
    "mcp",
    "image_generation",
    "local_shell",
)


def _json_bytes(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


def _count_images(value: Any) -> int:
    if isinstance(value, dict):
        own = 1 if value.get("type") in _IMAGE_TYPES else 0
        return own + sum(_count_images(v) for v in value.values())
    if isinstance(value, list):
        return sum(_count_images(v) for v in value)
    return 0


def _prompt_list(prompt: Any) -> list[Any]:
    """A completions ``prompt`` as its list of prompts (each a string or token ids)."""
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        return [prompt]
    return list(prompt) if isinstance(prompt, list) else []


def input_bound(body: dict[str, Any], call_type: str, image_tokens: int) -> int:
    """An upper bound of the input tokens ``body`` can be billed for; ``image_tokens``
    is the model's largest per-image charge (:func:`proxy.call.bound.image_tokens`)."""
    if call_type == "completions":
        total = 0
        for prompt in _prompt_list(body.get("prompt")):
            if isinstance(prompt, str):
                total += len(prompt.encode("utf-8")) + FORMAT_OVERHEAD_TOKENS
            elif isinstance(prompt, list):
                total += len(prompt) + FORMAT_OVERHEAD_TOKENS
        if isinstance(body.get("suffix"), str):
            total += len(body["suffix"].encode("utf-8"))
        return max(1, total)
    billed = _billed(body, call_type)
    total = _json_bytes(billed) + FORMAT_OVERHEAD_TOKENS
    total += _count_images(billed) * image_tokens
    if body.get("tools"):
        total += TOOLS_OVERHEAD_TOKENS
    return total


def input_estimate(body: dict[str, Any], call_type: str) -> int:
    """About 4 characters a token over the billed fields' text: what a call whose
    upstream reported no usage (a stream left mid-way) is charged as input."""
    if call_type == "completions":
        prompts = _prompt_list(body.get("prompt"))
        return max(
            1, sum(len(p) if isinstance(p, list) else math.ceil(len(p) / 4) for p in prompts)
        )
    billed = [body.get(name) for name in ("system", "messages", "input", "instructions")]
    return max(1, math.ceil(sum(len(text) for text in _texts(billed)) / 4))


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _texts(v)]
    if isinstance(value, list):
        return [t for v in value for t in _texts(v)]
    return []


def completions_count(body: dict[str, Any], call_type: str) -> int:
    """How many answers the call generates (and is billed for)."""
    if call_type != "completions":
        return 1
    n, best_of = body.get("n"), body.get("best_of")
    per_prompt = max(
        n if isinstance(n, int) else 1,
        best_of if isinstance(best_of, int) else 1,
        1,
    )
    return per_prompt * max(1, len(_prompt_list(body.get("prompt"))))


def output_limit(body: dict[str, Any], call_type: str) -> int | None:
    """The request's own output limit per answer, if it sets one."""
    name = "max_output_tokens" if call_type == "responses" else "max_tokens"
    limit = body.get(name)
    return limit if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 else None


def unbounded_part(body: dict[str, Any], call_type: str) -> tuple[str, str] | None:
    """(field, why) of a part whose billed size no request field bounds, else None."""
    for tool in body.get("tools") or []:
        kind = tool.get("type") if isinstance(tool, dict) else None
        if isinstance(kind, str) and kind.startswith(_HOSTED_TOOL_PREFIXES):
            return "tools", f"hosted tool {kind!r} adds input or fees the request does not bound"
    # A Responses ``prompt`` is a stored template (by id); on completions it is the prompt.
    stored = ("conversation", "mcp_servers", "container")
    for name in stored + (("prompt",) if call_type == "responses" else ()):
        if body.get(name):
            return name, f"'{name}' adds stored input the request does not bound"
    if _references_file(body.get("input" if call_type == "responses" else "messages")):
        return "input" if call_type == "responses" else "messages", (
            "a file or PDF document is billed per page (its text and an image of each "
            "page), which the request does not bound; send its text instead"
        )
    return None


def _references_file(value: Any) -> bool:
    if isinstance(value, dict):
        if value.get("type") in ("input_file", "document", "file"):
            source = value.get("source")
            inline_text = isinstance(source, dict) and source.get("type") in ("text", "content")
            if not inline_text:
                return True
        return any(_references_file(v) for v in value.values())
    if isinstance(value, list):
        return any(_references_file(v) for v in value)
    return False
