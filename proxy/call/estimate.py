"""A quick token estimate (about 4 characters per token) for answers without usage.

An upstream that reports no usage is charged from this estimate, and the
built-in ``mock/`` provider reports it as its usage. It is not a bound (the
worst case that budgets reserve is :mod:`proxy.call.bound`), and no budget
test may take it for what a real upstream bills.
"""

from __future__ import annotations

import json
import math
from typing import Any

from proxy.call.cost import EMBEDDING_CALL_TYPES

# Rough token cost of things that are not plain text in a prompt.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_IMAGE = 85
CHARS_PER_TOKEN = 4


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
    per input string, or the length of a pre-tokenized input.
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
