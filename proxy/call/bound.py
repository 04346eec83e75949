"""The worst case of one call: an upper bound of what the upstream can bill for it.

Strict budgets reserve it before the call and ``clamp_max_tokens`` computes its
room from it, through the one function :func:`worst_case`, so both are the
same bound. Why it holds, part by part (README, "The worst case"):

* **Text is at most one token per UTF-8 byte.** The tokenizers of the
  supported providers are byte-level BPE (OpenAI, Anthropic, Llama 3,
  Mistral's Tekken) or SentencePiece with byte fallback: every token stands
  for at least one byte of its text, so a text of ``b`` bytes is at most
  ``b`` tokens. Every billed field is counted as the bytes of its compact
  JSON, which is at least the bytes of each string in it plus one per
  key, value and separator.
* **Every field that may reach the prompt is counted**: all messages
  (system, developer, user, assistant, tool; contents, names, tool calls
  and results) and every other body field except those known to be
  parameters (``temperature``, ``max_tokens``, ``n``, ...): ``tools``,
  ``functions``, ``tool_choice``, ``response_format`` schemas,
  ``prediction``, and any field Comptroller does not know.
* **Framing**: each message costs at most :data:`MESSAGE_OVERHEAD` tokens
  of special tokens around it, the reply is primed with at most
  :data:`REPLY_PRIMING`, and a call with tools pays :data:`TOOLS_OVERHEAD`
  for the provider's tool-use preamble (Anthropic publishes at most 530
  tokens for it; OpenAI's namespace wrapper is far less).
* **Media**: an image part counts the model's largest per-image charge
  (:data:`IMAGE_TOKENS`, whatever its ``detail``), an audio part one token
  per 3 bytes of its base64 data (audio models bill tens of tokens per
  second; a second of the smallest accepted encoding is kilobytes).
  A ``file`` part (a PDF can hold any number of pages) has no bound: strict
  mode refuses it.
* **Output** is at most ``n`` (or ``best_of``) times the token limit
  (``max_completion_tokens``/``max_tokens``/``max_output_tokens``, the
  largest given), else times the model's output cap. Reasoning and audio
  output are inside it. A predicted output (``prediction``) may be billed
  as rejected completion tokens besides: its bytes are added per choice.
* **Prices**: prompt tokens at the dearest input price the model has (cache
  writes cost more than plain input), output at the dearest output price,
  both at the highest tier the prompt bound reaches.

Embeddings: one token per byte of each input string plus one (a leading
token), the length of each pre-tokenized input.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from proxy.call import api_bounds
from proxy.call.cost import EMBEDDING_CALL_TYPES, Price

if TYPE_CHECKING:
    from proxy.upstream.deployments import Deployment


class Call(Protocol):
    """What :func:`call_worst_case` reads of a call (a ``CallContext``)."""

    deployment: Deployment
    # Every deployment the router may send the call to (fallbacks included).
    reachable: list[Deployment]
    body: dict[str, Any]
    call_type: str
    carried_input_tokens: int


MESSAGE_OVERHEAD = 8
PART_OVERHEAD = 1
AUDIO_PART_OVERHEAD = 16
REPLY_PRIMING = 8
TOOLS_OVERHEAD = 600
# When neither the call nor the model says how long an answer may be.
DEFAULT_OUTPUT_CAP = 4096

# The largest per-image charge, by model family (first match; a dated version
# matches its family). OpenAI: at most 8 high-detail 512 px tiles (an image is
# fit into 2048x2048, then its short side into 768), base + 8 x tile; the
# patch-billed models at most 1536 patches x their multiplier. Anthropic: at
# most ~1,600 tokens (images beyond 1.15 megapixels are scaled down).
IMAGE_TOKENS: tuple[tuple[str, int], ...] = (
    ("gpt-4o-mini", 2833 + 8 * 5667),
    ("gpt-4.1-mini", math.ceil(1536 * 1.62)),
    ("gpt-4.1-nano", math.ceil(1536 * 2.46)),
    ("gpt-5-mini", math.ceil(1536 * 1.62)),
    ("gpt-5-nano", math.ceil(1536 * 2.46)),
    ("o4-mini", math.ceil(1536 * 1.72)),
    ("gpt-5", 70 + 8 * 140),
    ("o1", 75 + 8 * 150),
    ("o3", 75 + 8 * 150),
    ("gpt-4", 85 + 8 * 170),
    ("claude", 1600),
)
# Any other model: above every published per-image charge but gpt-4o-mini's.
DEFAULT_IMAGE_TOKENS = 8192

IMAGE_PART_TYPES = frozenset({"image_url", "input_image", "image"})
AUDIO_PART_TYPES = frozenset({"input_audio"})
UNBOUNDED_PART_TYPES = frozenset({"file", "input_file", "document"})
TEXT_PART_TYPES = frozenset({"text", "input_text", "output_text", "refusal"})
_TEXT_KEY = {"refusal": "refusal"}
# A message's fields that are plain text in the prompt (other fields count as JSON).
MESSAGE_TEXT_FIELDS = frozenset({"role", "content", "name", "tool_call_id", "refusal"})

# Body fields that are parameters, never prompt text.
PARAMETERS = frozenset(
    {
        "model",
        "messages",
        "input",
        "max_tokens",
        "max_completion_tokens",
        "max_output_tokens",
        "n",
        "best_of",
        "temperature",
        "top_p",
        "top_k",
        "stream",
        "stream_options",
        "user",
        "metadata",
        "seed",
        "logprobs",
        "top_logprobs",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "parallel_tool_calls",
        "store",
        "service_tier",
        "reasoning_effort",
        "modalities",
        "mock_response",
        "encoding_format",
        "dimensions",
        "prediction",
    }
)
LIMIT_FIELDS = ("max_completion_tokens", "max_tokens", "max_output_tokens")


@dataclass(frozen=True)
class WorstCase:
    """The bound of one call: its parts in tokens, and in dollars."""

    prompt_tokens: int
    choices: int
    # Per choice: the answer's token limit and the predicted output's tokens.
    output_tokens: int
    predicted_tokens: int
    cost: float
    # Why the call has no bound (strict mode refuses it), or None.
    unbounded: str | None = None
    # True when the output limit is Comptroller's default, not the call's or the model's.
    default_output_cap: bool = False
    # USD per prompt token and per output token in this worst case.
    input_rate: float = 0.0
    output_rate: float = 0.0

    @property
    def completion_tokens(self) -> int:
        return self.choices * (self.output_tokens + self.predicted_tokens)

    def with_output(self, tokens: int) -> WorstCase:
        """The same call with its per-answer limit set to ``tokens`` (the clamp)."""
        return replace(
            self,
            output_tokens=tokens,
            default_output_cap=False,
            cost=_cost(
                self.prompt_tokens,
                self.input_rate,
                self.choices,
                tokens,
                self.predicted_tokens,
                self.output_rate,
            ),
        )


def _cost(
    prompt: int, input_rate: float, n: int, limit: int, predicted: int, output_rate: float
) -> float:
    # The one expression of the worst case's dollars, so equal inputs give equal floats.
    return prompt * input_rate + n * (limit + predicted) * output_rate


def image_tokens(model: str) -> int:
    name = model.lower().rsplit("/", 1)[-1]
    for prefix, tokens in IMAGE_TOKENS:
        if name.startswith(prefix):
            return tokens
    return DEFAULT_IMAGE_TOKENS


def _json_bytes(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str).encode())


class _PromptCounter:
    """Counts the billed fields of a body: message text as UTF-8 bytes, media by
    their bound, everything else as the bytes of its compact JSON."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.tokens = 0
        self.unbounded: str | None = None

    def json(self, value: Any) -> None:
        self.tokens += _json_bytes(value)

    def message(self, message: Any) -> None:
        """One message: framing, the text of its strings (role, name, content,
        tool_call_id, refusal), its content parts, and any other field (tool calls,
        function calls) as ``"key":value`` JSON."""
        self.tokens += MESSAGE_OVERHEAD
        if not isinstance(message, dict):
            self.json(message)
            return
        if isinstance(message.get("audio"), dict):
            # An earlier audio answer replayed by id: its length is not in the request.
            self.unbounded = (
                "an assistant message's 'audio' is replayed by id: its cost has no bound"
            )
        for key, item in message.items():
            if isinstance(item, str) and key in MESSAGE_TEXT_FIELDS:
                self.tokens += len(item.encode())
            elif key == "content" and isinstance(item, list):
                for part in item:
                    self.part(part)
            else:
                self.tokens += _json_bytes(str(key)) + 1 + _json_bytes(item)

    def part(self, part: Any) -> None:
        """One content part: its text, its media bound, or its JSON."""
        self.tokens += PART_OVERHEAD
        kind = part.get("type") if isinstance(part, dict) else None
        if not isinstance(part, dict) or not isinstance(kind, str):
            self.json(part)
        elif kind in TEXT_PART_TYPES and isinstance(part.get(_TEXT_KEY.get(kind, "text")), str):
            self.tokens += len(part[_TEXT_KEY.get(kind, "text")].encode())
        elif kind in IMAGE_PART_TYPES:
            self.tokens += image_tokens(self.model)
        elif kind in AUDIO_PART_TYPES:
            audio = part.get("input_audio")
            data = audio.get("data") if isinstance(audio, dict) else None
            size = len(data) if isinstance(data, str) else _json_bytes(audio)
            self.tokens += math.ceil(size / 4) + AUDIO_PART_OVERHEAD
        elif kind in UNBOUNDED_PART_TYPES:
            self.unbounded = (
                f"a '{kind}' content part can be any number of pages: its cost has no bound"
            )
        else:
            self.json(part)


def _count(value: Any) -> int | None:
    """A positive int field, else None (booleans are not counts)."""
    if value is None:  # most fields a call could give, it does not
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return None
    return value


def _embedding_tokens(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode()) + 1
    if isinstance(value, list):
        if value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return len(value)
        return sum(_embedding_tokens(v) for v in value)
    return _json_bytes(value)


def prompt_bound(body: dict[str, Any], call_type: str, model: str) -> tuple[int, str | None]:
    """(at most how many tokens the upstream bills as input, why unbounded or None)."""
    if call_type in EMBEDDING_CALL_TYPES:
        return max(1, _embedding_tokens(body.get("input"))), None
    counter = _PromptCounter(model)
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            counter.message(message)
    elif messages is not None:
        counter.json(messages)
    if isinstance(body.get("input"), list):  # the Responses API's prompt: items like messages
        for item in body["input"]:
            counter.message(item)
    elif "input" in body:
        counter.json(body["input"])
    for name, value in body.items():
        if name not in PARAMETERS:
            counter.json(value)
    if body.get("tools") or body.get("functions"):
        counter.tokens += TOOLS_OVERHEAD
    return counter.tokens + REPLY_PRIMING, counter.unbounded


def _predicted_tokens(body: dict[str, Any]) -> int:
    prediction = body.get("prediction")
    return 0 if prediction is None else _json_bytes(prediction)


def output_limit(body: dict[str, Any], price: Price) -> tuple[int, bool]:
    """(tokens one answer may have, True when that is Comptroller's default cap)."""
    largest: int | None = None
    for name in LIMIT_FIELDS:
        limit = _count(body.get(name))
        if limit is not None and (largest is None or limit > largest):
            largest = limit
    if largest is not None:
        return largest, False
    if price.max_output_tokens:
        return price.max_output_tokens, False
    if price.context_window:
        return price.context_window, False
    return DEFAULT_OUTPUT_CAP, True


def choices(body: dict[str, Any]) -> int:
    """How many answers are billed: ``n``, or ``best_of`` when larger."""
    return max(_count(body.get("n")) or 1, _count(body.get("best_of")) or 1)


def worst_case(
    price: Price,
    body: dict[str, Any],
    call_type: str,
    model: str = "",
    output_tokens: int | None = None,
    *,
    carried_input_tokens: int = 0,
) -> WorstCase:
    """The call's worst case; ``output_tokens`` replaces its per-answer limit (the clamp).

    Chat and embeddings bodies are counted here; the Responses, completions and
    Messages wire formats by :mod:`proxy.call.api_bounds` (plus the stored
    conversation a Responses continuation carries). Tokens are priced at the
    dearest rate of any part, of every tier the prompt bound reaches, and of
    every time-of-day or dated variant (:meth:`Price.dearest_rates_up_to`).
    """
    limit: int | None
    if call_type in api_bounds.BOUNDED_CALL_TYPES:
        images = image_tokens(model or price.family)
        prompt = api_bounds.input_bound(body, call_type, images) + carried_input_tokens
        unbounded = None  # refused before, by api_bounds.unbounded_part
        n = api_bounds.completions_count(body, call_type)
        limit, predicted = api_bounds.output_limit(body, call_type), 0
    else:
        prompt, unbounded = prompt_bound(body, call_type, model or price.family)
        n, limit, predicted = choices(body), None, _predicted_tokens(body)
    input_rate, output_rate = price.dearest_rates_up_to(prompt)
    if call_type in EMBEDDING_CALL_TYPES:
        cost = _cost(prompt, input_rate, 0, 0, 0, 0.0)
        return WorstCase(prompt, 0, 0, 0, cost, unbounded, input_rate=input_rate)
    default_cap = False
    if output_tokens is not None:
        limit = output_tokens
    elif limit is None:
        limit, default_cap = output_limit(body, price)
    cost = _cost(prompt, input_rate, n, limit, predicted, output_rate)
    return WorstCase(
        prompt, n, limit, predicted, cost, unbounded, default_cap, input_rate, output_rate
    )


def call_worst_case(ctx: Call) -> WorstCase:
    """:func:`worst_case` of one call: what strict mode reserves and the clamp lowers.

    Over every deployment the router may send the call to (its model's and its
    fallbacks'), each part at its largest: the bound holds on whichever answers,
    and so does any clamp of it (:meth:`WorstCase.with_output` keeps the rates).
    """
    cases = []
    seen: list[Price] = []
    for dep in ctx.reachable or [ctx.deployment]:
        if dep.price in seen:
            continue  # deployments at one price bound alike
        seen.append(dep.price)
        cases.append(
            worst_case(
                dep.price,
                ctx.body,
                ctx.call_type,
                carried_input_tokens=ctx.carried_input_tokens,
            )
        )
    return cases[0] if len(cases) == 1 else dearest(cases)


def dearest(cases: list[WorstCase]) -> WorstCase:
    """One worst case at least as dear as each of ``cases``, clamped or not."""
    prompt = max(c.prompt_tokens for c in cases)
    n = max(c.choices for c in cases)
    limit = max(c.output_tokens for c in cases)
    predicted = max(c.predicted_tokens for c in cases)
    input_rate = max(c.input_rate for c in cases)
    output_rate = max(c.output_rate for c in cases)
    return WorstCase(
        prompt,
        n,
        limit,
        predicted,
        _cost(prompt, input_rate, n, limit, predicted, output_rate),
        next((c.unbounded for c in cases if c.unbounded), None),
        any(c.default_output_cap for c in cases),
        input_rate,
        output_rate,
    )
