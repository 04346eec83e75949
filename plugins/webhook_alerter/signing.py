"""Webhook signatures, the Standard Webhooks scheme (standardwebhooks.com).

With ``general_settings.webhook_secret`` set, every POST carries:

* ``webhook-id``: the alert's id, the same on every retry (de-duplicate on it);
* ``webhook-timestamp``: integer Unix seconds of this attempt;
* ``webhook-signature``: ``v1,`` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")),
  where ``body`` is the exact request body.

The key is the secret's UTF-8 bytes; a secret written the Standard Webhooks
way, ``whsec_`` + base64, is base64-decoded first, so the Standard Webhooks
libraries verify our requests unchanged. A receiver should compare in
constant time and refuse timestamps more than a few minutes from its clock.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

SECRET_PREFIX = "whsec_"


def signing_key(secret: str) -> bytes:
    """The HMAC key for ``secret`` (``whsec_<base64>`` or any other string)."""
    if secret.startswith(SECRET_PREFIX):
        try:
            return base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
        except (binascii.Error, ValueError):
            pass
    return secret.encode("utf-8")


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for one attempt."""
    signed = msg_id.encode("utf-8") + b"." + str(timestamp).encode("ascii") + b"." + body
    digest = hmac.new(signing_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")
