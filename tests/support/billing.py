"""How a test upstream bills: usage computed its own way, never with the proxy's code.

Set one on a mock server (``mock.billing = AdversarialBilling(...)``) and it
reports that usage for every call:

* :class:`TokenizerLikeBilling`: what a byte-level BPE tokenizer roughly
  counts: a token per 4 ASCII characters, a token per UTF-8 byte of any other
  character (dense scripts, emoji), the chat format's 3 tokens per message and
  3 for the reply, 765 per image (a 1024 px high-detail image on gpt-4o).
* :class:`AdversarialBilling`: the most the worst case written in the README
  ("The worst case") allows, written from that text: every UTF-8 byte of the
  messages' text a token, 8 per message and 8 for the reply, the model's
  largest image charge, every other billed field's JSON a token per byte, 600
  for a tool preamble, and ``n`` full answers of the token limit. A proxy
  whose reservation is below this bill has a bound that does not hold.
* :class:`OverBilling`: the adversarial bill plus more: beyond any bound.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

# Request fields that never reach the prompt (an upstream reads them as settings).
SETTINGS = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "n",
        "best_of",
        "temperature",
        "top_p",
        "stream",
        "stream_options",
        "user",
        "metadata",
        "seed",
        "mock_response",
        "prediction",
        "input",
        "encoding_format",
        "dimensions",
    }
)


# A message's fields whose string is prompt text as it stands.
MESSAGE_TEXT = ("role", "content", "name", "tool_call_id", "refusal")


def utf8(text: str) -> int:
    return len(text.encode("utf-8"))


def compact_json(value: Any) -> int:
    return utf8(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _answers(body: dict[str, Any]) -> int:
    counts = [body.get("n"), body.get("best_of")]
    return max([1, *(c for c in counts if isinstance(c, int) and not isinstance(c, bool))])


@dataclass
class TokenizerLikeBilling:
    """Roughly what a real byte-level BPE tokenizer bills."""

    image_tokens: int = 765

    def text_tokens(self, text: str) -> int:
        ascii_chars = sum(1 for ch in text if ord(ch) < 128)
        other_bytes = utf8(text) - ascii_chars
        return math.ceil(ascii_chars / 4) + other_bytes

    def _content(self, content: Any) -> int:
        if isinstance(content, str):
            return self.text_tokens(content)
        total = 0
        if isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") == "image_url":
                    total += self.image_tokens
                elif isinstance(part, dict) and isinstance(part.get("text"), str):
                    total += self.text_tokens(part["text"])
        return total

    def chat_usage(self, body: dict[str, Any], answer_words: int) -> dict[str, int]:
        prompt = 3
        for message in body.get("messages") or []:
            prompt += 3 + self._content(message.get("content"))
            if message.get("tool_calls"):
                prompt += self.text_tokens(json.dumps(message["tool_calls"]))
        for name in ("tools", "functions", "response_format"):
            if body.get(name):
                prompt += self.text_tokens(json.dumps(body[name]))
        return _usage(prompt, _answers(body) * answer_words)

    def embedding_usage(self, body: dict[str, Any]) -> dict[str, int]:
        value = body.get("input")
        items = (
            value
            if isinstance(value, list) and value and not isinstance(value[0], int)
            else [value]
        )
        tokens = sum(self.text_tokens(i) if isinstance(i, str) else len(i) for i in items)
        return _usage(max(1, tokens), 0)


@dataclass
class AdversarialBilling:
    """The largest bill the documented worst case allows.

    ``image_tokens`` and ``max_output_tokens`` are the model's published
    largest image charge and output cap (the test passes them for its model).
    """

    image_tokens: int = 85 + 8 * 170  # gpt-4o: 8 high-detail tiles
    max_output_tokens: int = 16384  # gpt-4o
    message_framing: int = 8
    reply_priming: int = 8
    tool_preamble: int = 600

    def _part(self, part: Any) -> int:
        if not isinstance(part, dict):
            return compact_json(part)
        kind = part.get("type")
        if kind == "image_url":
            return self.image_tokens
        if kind == "input_audio":
            return math.ceil(len(part["input_audio"]["data"]) / 4) + 16
        if kind == "text" and isinstance(part.get("text"), str):
            return utf8(part["text"])
        return compact_json(part)

    def _message(self, message: dict[str, Any]) -> int:
        tokens = self.message_framing
        for key, value in message.items():
            if key == "content" and isinstance(value, list):
                tokens += sum(1 + self._part(part) for part in value)
            elif isinstance(value, str) and key in MESSAGE_TEXT:
                tokens += utf8(value)
            else:  # "key":value, as JSON
                tokens += compact_json(key) + 1 + compact_json(value)
        return tokens

    def prompt_tokens(self, body: dict[str, Any]) -> int:
        tokens = self.reply_priming
        tokens += sum(self._message(m) for m in body.get("messages") or [])
        for key, value in body.items():
            if key not in SETTINGS:
                tokens += compact_json(value)
        if body.get("tools") or body.get("functions"):
            tokens += self.tool_preamble
        return tokens

    def completion_tokens(self, body: dict[str, Any]) -> int:
        limits = [
            body[k]
            for k in ("max_tokens", "max_completion_tokens")
            if isinstance(body.get(k), int) and not isinstance(body.get(k), bool)
        ]
        limit = max(limits) if limits else self.max_output_tokens
        predicted = compact_json(body["prediction"]) if "prediction" in body else 0
        return _answers(body) * (limit + predicted)

    def chat_usage(self, body: dict[str, Any], answer_words: int) -> dict[str, int]:
        return _usage(self.prompt_tokens(body), self.completion_tokens(body))

    def embedding_usage(self, body: dict[str, Any]) -> dict[str, int]:
        value = body.get("input")
        if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
            return _usage(len(value), 0)
        items = value if isinstance(value, list) else [value]
        return _usage(sum(utf8(i) + 1 if isinstance(i, str) else len(i) for i in items), 0)


@dataclass
class OverBilling(AdversarialBilling):
    """More than any sound reservation: the adversarial bill, then ``extra`` more tokens."""

    extra: int = 1000

    def chat_usage(self, body: dict[str, Any], answer_words: int) -> dict[str, int]:
        usage = super().chat_usage(body, answer_words)
        return _usage(usage["prompt_tokens"] + self.extra, usage["completion_tokens"])
