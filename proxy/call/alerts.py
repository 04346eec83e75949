"""Alert events and the payload shape that webhooks receive."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(kw_only=True)
class Alert:
    """One event. :meth:`payload` is the JSON body a webhook receives.

    Fields are declared in the order the webhook payload lists them.
    """

    spend: float | None = None
    max_budget: float | None = None
    token: str | None = None
    customer_id: str | None = None
    user_id: str | None = None
    team_id: str | None = None
    user_email: str | None = None
    key_alias: str | None = None
    projected_exceeded_date: str | None = None
    projected_spend: float | None = None
    event: str
    event_group: str
    event_message: str
    alert_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def payload(self) -> dict[str, Any]:
        # Every field is a str, a float or None: no copy needed (``asdict`` deep-copies
        # each value, a cost on every call that raises an alert).
        return {name: getattr(self, name) for name in _PAYLOAD_FIELDS}


# The webhook payload's keys, in declaration order (``alert_id`` is the outbox row's id).
_PAYLOAD_FIELDS = tuple(f.name for f in fields(Alert) if f.name != "alert_id")
