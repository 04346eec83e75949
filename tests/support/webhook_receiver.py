"""A real HTTP webhook receiver on 127.0.0.1 for the alerting tests and bench.

It records every POST (headers, raw body, parsed JSON) and can answer slowly
(``delay``) or with an error status (``status``, or 422 for the payloads
``refuse`` picks). Its port is chosen when it is
built, so a proxy can be configured with its URL while it is still down;
``stop()`` closes open connections too, so a stopped receiver really looks
dead, and ``start()`` again listens on the same port.
"""

from __future__ import annotations

import collections
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from tests.support.http_server import BackgroundHTTPServer, TrackedHandler
from tests.support.proxy_server import free_port


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    received_at: float

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def webhook_id(self) -> str | None:
        return self.headers.get("webhook-id")


class _Handler(TrackedHandler):
    @property
    def receiver(self) -> WebhookReceiver:
        return cast(WebhookReceiver, self.server.owner)

    def do_POST(self) -> None:
        receiver = self.receiver
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if receiver.delay:
            receiver._stopping.wait(receiver.delay)
        status = receiver.status
        refuse = receiver.refuse
        if refuse is not None and refuse(json.loads(body or b"{}")):
            status = 422
        if 200 <= status < 300:
            receiver._record(
                Delivery(
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                    received_at=time.time(),
                )
            )
        else:
            receiver._count_refusal()
        answer = b'{"ok": true}' if 200 <= status < 300 else b'{"ok": false}'
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)
        except OSError:
            # The sender gave up waiting (or was stopped): to it, this attempt
            # failed and will be retried, which is what the tests look for.
            self.close_connection = True


class WebhookReceiver(BackgroundHTTPServer):
    """Records the webhooks it accepts; ``url`` is valid before ``start()``."""

    handler_class = _Handler
    thread_name = "webhook-receiver"

    def __init__(self, port: int | None = None, path: str = "/hook") -> None:
        super().__init__(port=port or free_port())
        self.path = path
        self.delay = 0.0
        self.status = 200
        # Payloads for which this answers 422 (a receiver that rejects one alert).
        self.refuse: Callable[[dict[str, Any]], bool] | None = None
        self._arrived = threading.Condition(self._lock)
        self._deliveries: list[Delivery] = []
        self._refused = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    # --- records ------------------------------------------------------------

    def _record(self, delivery: Delivery) -> None:
        with self._arrived:
            self._deliveries.append(delivery)
            self._arrived.notify_all()

    def _count_refusal(self) -> None:
        with self._lock:
            self._refused += 1

    @property
    def deliveries(self) -> list[Delivery]:
        with self._lock:
            return list(self._deliveries)

    @property
    def refused(self) -> int:
        """POSTs answered with a non-2xx ``status`` (not recorded as deliveries)."""
        with self._lock:
            return self._refused

    def of_event(self, event: str) -> list[Delivery]:
        return [d for d in self.deliveries if d.json.get("event") == event]

    def id_counts(self) -> collections.Counter[str | None]:
        return collections.Counter(d.webhook_id for d in self.deliveries)

    def wait_for(
        self, count: int, timeout: float = 20.0, event: str | None = None
    ) -> list[Delivery]:
        """Wait until ``count`` deliveries (of ``event``, if given) have arrived."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while True:
                found = [
                    d for d in self._deliveries if event is None or d.json.get("event") == event
                ]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"{len(found)} of {count} webhooks arrived within {timeout}s"
                    )
                self._arrived.wait(left)

    def clear(self) -> None:
        with self._lock:
            self._deliveries.clear()
            self._refused = 0
