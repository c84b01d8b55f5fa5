"""Per-fleet webhooks: the delivery service, signatures, retry schedule, target checks
(docs/alerts.md, "Webhooks"; docs/security.md, "Webhooks and SSRF")."""

from __future__ import annotations

from api.webhooks.delivery import WebhookService, payload_of
from api.webhooks.schedule import MAX_ATTEMPTS, RETRY_DELAYS_S, retry_delay_ms
from api.webhooks.signing import new_secret, signature_headers
from api.webhooks.targets import MAX_URL_LENGTH, TargetRefused, check_url

__all__ = [
    "MAX_ATTEMPTS",
    "MAX_URL_LENGTH",
    "RETRY_DELAYS_S",
    "TargetRefused",
    "WebhookService",
    "check_url",
    "new_secret",
    "payload_of",
    "retry_delay_ms",
    "signature_headers",
]
