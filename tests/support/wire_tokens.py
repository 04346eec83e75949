"""How the mock upstreams count tokens: their own rule, never the proxy's estimator.

ASCII words count one token per 4 letters or digits (rounded up), every other
visible ASCII character one token, and every non-ASCII character one token
per UTF-8 byte (as a byte-level BPE does for rare scripts). Never more tokens
than UTF-8 bytes, so an honest upstream stays inside a sound bound, but not
the proxy's ~4-characters-per-token estimate either.
"""

from __future__ import annotations

import math
import re
from typing import Any

_PIECES = re.compile(r"[A-Za-z0-9]+|[^\sA-Za-z0-9]")


def count_tokens(text: str) -> int:
    total = 0
    for piece in _PIECES.findall(text):
        if piece.isascii() and piece[0].isalnum():
            total += math.ceil(len(piece) / 4)
        else:
            total += len(piece.encode("utf-8"))
    return total


def texts(value: Any) -> list[str]:
    """Every string value inside a JSON value (keys left out), depth first."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in texts(v)]
    if isinstance(value, list):
        return [t for v in value for t in texts(v)]
    return []


def count_value(value: Any) -> int:
    return sum(count_tokens(t) for t in texts(value))
