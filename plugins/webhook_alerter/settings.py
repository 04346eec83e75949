"""Webhook alerting settings: on/off, where to POST, and how to retry.

Alerting is on when ``general_settings.alerting`` lists ``"webhook"``. The URL
is ``plugins.settings.webhook_alerter.url`` if set, else the ``WEBHOOK_URL``
environment variable (the LiteLLM way). Asking for webhook alerts without a
URL is a start-up error: alerts that nobody can receive would be lost
silently otherwise.
"""

from __future__ import annotations

import logging
import math
import os
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from proxy.plugin_api import Config, ConfigError

log = logging.getLogger("comptroller.webhooks")

PLUGIN_NAME = "webhook_alerter"
URL_ENV = "WEBHOOK_URL"


class WebhookSettings(BaseModel):
    """``plugins.settings.webhook_alerter``; every field has a working default."""

    model_config = ConfigDict(extra="allow")

    url: str | None = None
    # Seconds to wait for the receiver's answer; a slower answer is a failure.
    timeout: float = Field(default=15.0, gt=0)
    # Seconds between outbox polls when nothing wakes the sender.
    poll_interval: float = Field(default=0.5, gt=0)
    # Alerts one sender thread claims at a time.
    batch_size: int = Field(default=8, ge=1, le=1000)
    # Sender threads per process (each claims and POSTs on its own).
    concurrency: int = Field(default=2, ge=1, le=64)
    # Retry delay after the n-th failure: backoff_base * 2**(n-1), at most max_backoff.
    backoff_base: float = Field(default=1.0, gt=0)
    max_backoff: float = Field(default=10.0, gt=0)
    # Sent alerts are deleted after this many days (0 keeps them forever).
    retention_days: float = Field(default=7.0, ge=0)
    # Not from the plugin section: general_settings.webhook_secret.
    secret: str | None = None

    @property
    def claim_seconds(self) -> float:
        """How long a claimed batch stays reserved: long enough to POST all of it."""
        return self.batch_size * (self.timeout + 1.0) + 30.0

    def backoff(self, failures: int) -> float:
        """Seconds to wait after ``failures`` consecutive failures (no jitter)."""
        exponent = min(max(failures, 1) - 1, 30)
        return min(self.max_backoff, self.backoff_base * math.pow(2, exponent))


def _format_errors(err: ValidationError) -> str:
    where = f"plugins.settings.{PLUGIN_NAME}"
    parts = [f"{where}.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()]
    return "invalid config: " + "; ".join(parts)


def load_settings(config: Config) -> WebhookSettings | None:
    """The settings if webhook alerting is on, ``None`` if it is off."""
    if "webhook" not in config.general_settings.alerting:
        return None
    raw = dict(config.plugin_settings(PLUGIN_NAME))
    try:
        settings = WebhookSettings.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_errors(err)) from None
    for key in settings.model_extra or {}:
        log.warning("config: unknown key plugins.settings.%s.%s ignored", PLUGIN_NAME, key)
    settings.url = settings.url or os.environ.get(URL_ENV) or None
    if not settings.url:
        raise ConfigError(
            f"general_settings.alerting lists 'webhook' but the environment variable {URL_ENV} "
            f"is not set (or set plugins.settings.{PLUGIN_NAME}.url)"
        )
    parsed = urlparse(settings.url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigError(
            f"{URL_ENV} (or plugins.settings.{PLUGIN_NAME}.url) must be an http(s) URL, "
            f"got {settings.url!r}"
        )
    settings.secret = config.general_settings.webhook_secret or None
    return settings
