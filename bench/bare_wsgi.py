"""The smallest WSGI app gunicorn can serve the benchmark's calls with: it reads the
body and answers a short JSON document. What a call costs gunicorn itself
(``python -m bench.instructions --gunicorn`` subtracts it)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

_BODY = b'{"id": "bare", "object": "chat.completion", "choices": []}'
_HEADERS = [("Content-Type", "application/json"), ("Content-Length", str(len(_BODY)))]


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    environ["wsgi.input"].read()
    start_response("200 OK", list(_HEADERS))
    return [_BODY]
