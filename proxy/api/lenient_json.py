"""Read the almost-JSON that documentation curls send.

The seed documents annotate request bodies inline (``"user": "ishaan3", #
👈 CUSTOMER ID``), leave trailing commas and write ``"budget_duration":
10s``. Strict JSON is always tried first; only a body that fails it is
cleaned: ``#`` comments outside strings are dropped, trailing commas
removed and bare words quoted. A body that still fails is reported with the
strict parser's error.
"""

from __future__ import annotations

import json
import re
from typing import Any

_BARE_WORD = re.compile(r"[A-Za-z0-9_.+\-]+")
# Left bare so that they fail: quoting NaN would turn a number into a string.
_LITERALS = {"true", "false", "null", "NaN", "Infinity", "-Infinity"}
_NUMBER = re.compile(r"-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?$")


def _clean(text: str) -> str:
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == '"':
            end = i + 1
            while end < n and text[end] != '"':
                end += 2 if text[end] == "\\" else 1
            out.append(text[i : end + 1])
            i = end + 1
        elif ch == "#":
            while i < n and text[i] != "\n":
                i += 1
        elif ch in "}]":
            # Drop a trailing comma (and the whitespace after it) before a closer.
            j = len(out) - 1
            while j >= 0 and out[j].isspace():
                j -= 1
            if j >= 0 and out[j] == ",":
                del out[j]
            out.append(ch)
            i += 1
        else:
            match = _BARE_WORD.match(text, i)
            if match:
                word = match.group(0)
                if word in _LITERALS or _NUMBER.match(word):
                    out.append(word)
                else:
                    out.append(json.dumps(word))
                i = match.end()
            else:
                out.append(ch)
                i += 1
    return "".join(out)


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN and Infinity; JSON (and every upstream) does not.
    raise ValueError(f"{name} is not valid JSON")


def _strict(text: str) -> Any:
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def loads(raw: bytes | str) -> Any:
    """``json.loads``, falling back to the cleaned text; raises ``ValueError``."""
    text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    try:
        return _strict(text)
    except ValueError as strict_error:
        try:
            return _strict(_clean(text))
        except ValueError:
            raise strict_error from None
