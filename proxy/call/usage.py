"""The billed tokens of one call, as an upstream reported them."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

# No model reads or writes this many tokens in one call: a count above it is
# recorded, flagged on the spend-log row and logged.
ABSURD_TOKENS = 100_000_000
# Counts are recorded up to this: the 64-bit columns must also hold sums of many calls.
MAX_RECORDED_TOKENS = 10**12


def _count(value: Any) -> int:
    """A token count from a usage field: a non-negative int, else 0 (absent, null, bad),
    at most :data:`MAX_RECORDED_TOKENS`."""
    if isinstance(value, bool) or not isinstance(value, int):
        return 0
    return min(max(0, value), MAX_RECORDED_TOKENS)


def _absurd(**counts: int) -> str | None:
    """Why counts an upstream reported were not taken as they came, or None."""
    odd = [f"{name}={value}" for name, value in counts.items() if not 0 <= value <= ABSURD_TOKENS]
    return f"absurd usage reported: {', '.join(odd)}" if odd else None


@dataclass
class Usage:
    """The billed tokens of one call, in OpenAI's convention: each part is
    counted inside its total, never beside it.

    ``prompt_tokens`` is every input token (text, cached, cache-written,
    audio, image) and ``completion_tokens`` every output token (visible text,
    reasoning, audio). The parts say which of them are billed at another
    price: ``cache_read_tokens`` (OpenAI ``prompt_tokens_details.cached_tokens``,
    Anthropic ``cache_read_input_tokens``), ``cache_write_tokens`` (Anthropic
    ``cache_creation_input_tokens``), ``audio_input_tokens`` /
    ``audio_output_tokens`` (``*_tokens_details.audio_tokens``). Reasoning is
    billed as output and is recorded for the spend log only. A parser for a
    wire format whose totals exclude its parts (Anthropic's ``input_tokens``)
    adds them in before building a Usage.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    audio_input_tokens: int = 0
    audio_output_tokens: int = 0
    reasoning_tokens: int = 0
    # Why the upstream's numbers were not taken as they came (absurd or negative counts).
    flag: str | None = None

    def __post_init__(self) -> None:
        # A part can never exceed its total: an upstream that says otherwise is
        # billed for the larger figure (charging in full is the safe reading).
        self.prompt_tokens = max(
            self.prompt_tokens,
            self.cache_read_tokens + self.cache_write_tokens,
            self.audio_input_tokens,
        )
        self.completion_tokens = max(
            self.completion_tokens, self.reasoning_tokens, self.audio_output_tokens
        )

    def as_dict(self) -> dict[str, Any]:
        """The fields by name (``Usage(**usage.as_dict())`` is an equal Usage); its values
        are ints and a str, so unlike ``dataclasses.asdict`` it copies nothing."""
        return {name: getattr(self, name) for name in _USAGE_FIELDS}

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @classmethod
    def from_openai(cls, usage: dict[str, Any] | None) -> Usage | None:
        """The usage object of an OpenAI-shaped answer, or None when there is none.

        Also reads the cache fields that OpenAI-compatible servers in front of
        other providers add at the top level (``cache_read_input_tokens``,
        ``cache_creation_input_tokens``, DeepSeek's ``prompt_cache_hit_tokens``);
        those are counted inside ``prompt_tokens`` there too.
        """
        if not isinstance(usage, dict):
            return None
        prompt = usage.get("prompt_tokens") or 0
        completion = usage.get("completion_tokens") or 0
        if isinstance(prompt, bool) or not isinstance(prompt, int):
            return None
        if isinstance(completion, bool) or not isinstance(completion, int):
            return None
        prompt_details = usage.get("prompt_tokens_details")
        if not isinstance(prompt_details, dict):
            prompt_details = {}
        completion_details = usage.get("completion_tokens_details")
        if not isinstance(completion_details, dict):
            completion_details = {}
        cache_read = max(
            _count(prompt_details.get("cached_tokens")),
            _count(usage.get("cache_read_input_tokens")),
            _count(usage.get("prompt_cache_hit_tokens")),
        )
        return cls(
            prompt_tokens=_count(prompt),
            completion_tokens=_count(completion),
            cache_read_tokens=cache_read,
            cache_write_tokens=_count(usage.get("cache_creation_input_tokens")),
            audio_input_tokens=_count(prompt_details.get("audio_tokens")),
            audio_output_tokens=_count(completion_details.get("audio_tokens")),
            reasoning_tokens=_count(completion_details.get("reasoning_tokens")),
            flag=_absurd(prompt_tokens=prompt, completion_tokens=completion),
        )

    @classmethod
    def from_responses(cls, usage: dict[str, Any] | None) -> Usage | None:
        """The Responses API's usage: ``input_tokens`` (cached ones included, as
        ``input_tokens_details.cached_tokens`` says), ``output_tokens`` (reasoning
        included, ``output_tokens_details.reasoning_tokens``)."""
        if not isinstance(usage, dict):
            return None
        if not isinstance(usage.get("input_tokens"), int) and not isinstance(
            usage.get("output_tokens"), int
        ):
            return None
        input_details = usage.get("input_tokens_details")
        output_details = usage.get("output_tokens_details")
        return cls(
            prompt_tokens=_count(usage.get("input_tokens")),
            completion_tokens=_count(usage.get("output_tokens")),
            cache_read_tokens=_count(
                input_details.get("cached_tokens") if isinstance(input_details, dict) else 0
            ),
            reasoning_tokens=_count(
                output_details.get("reasoning_tokens") if isinstance(output_details, dict) else 0
            ),
        )

    @classmethod
    def from_anthropic(cls, usage: dict[str, Any] | None) -> Usage | None:
        """Anthropic's usage, whose ``input_tokens`` leaves out the cache: the prompt
        is ``input_tokens + cache_creation_input_tokens + cache_read_input_tokens``."""
        if not isinstance(usage, dict):
            return None
        if not isinstance(usage.get("input_tokens"), int) and not isinstance(
            usage.get("output_tokens"), int
        ):
            return None
        cache_read = _count(usage.get("cache_read_input_tokens"))
        cache_write = _count(usage.get("cache_creation_input_tokens"))
        return cls(
            prompt_tokens=_count(usage.get("input_tokens")) + cache_read + cache_write,
            completion_tokens=_count(usage.get("output_tokens")),
            cache_read_tokens=cache_read,
            cache_write_tokens=cache_write,
        )


_USAGE_FIELDS = tuple(f.name for f in fields(Usage))
