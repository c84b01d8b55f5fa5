"""Standard Webhooks secrets and signatures (the ``standardwebhooks`` package signs).

The signed content is ``{webhook-id}.{webhook-timestamp}.{body}`` (HMAC-SHA256, ``v1,``
signatures); ``webhook-id`` is the delivery's id, the same on every attempt, and
``webhook-timestamp`` the attempt's time, so a receiver can refuse a replayed request.
"""

from __future__ import annotations

import base64
import secrets
from datetime import UTC, datetime

from standardwebhooks import Webhook

SECRET_PREFIX = "whsec_"
# The specification asks for 24 to 64 random bytes.
SECRET_BYTES = 32


def new_secret() -> str:
    """A fresh signing secret, ``whsec_`` and the base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def signature_headers(secret: str, msg_id: str, at_ms: int, body: str) -> dict[str, str]:
    """The three ``webhook-*`` headers of one attempt made at ``at_ms``."""
    seconds = at_ms // 1000
    signature = Webhook(secret).sign(msg_id, datetime.fromtimestamp(seconds, tz=UTC), body)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(seconds),
        "webhook-signature": signature,
    }
