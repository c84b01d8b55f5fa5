"""Collections and indexes of the webhooks (storage/mongo/webhooks.py)."""

from __future__ import annotations

from pymongo import ASCENDING, DESCENDING, IndexModel

WEBHOOKS = "webhooks"
WEBHOOK_DELIVERIES = "webhook_deliveries"  # _id: the delivery id (the webhook-id header)
# Endpoints first: an erasure interrupted between the two leaves no endpoint that a delivery
# service could still queue new deliveries for (storage/mongo/webhooks.py `enqueue`).
WEBHOOK_FLEET_COLLECTIONS = (WEBHOOKS, WEBHOOK_DELIVERIES)
WEBHOOK_INDEXES: dict[str, list[IndexModel]] = {
    WEBHOOKS: [
        IndexModel([("fleet_id", ASCENDING), ("_id", ASCENDING)], name="fleet_listing"),
    ],
    WEBHOOK_DELIVERIES: [
        # Queueing is idempotent on it; the listing walks it newest first.
        IndexModel(
            [("webhook_id", ASCENDING), ("cursor", DESCENDING)],
            unique=True,
            name="webhook_cursor",
        ),
        # Due deliveries of one endpoint.
        IndexModel(
            [("webhook_id", ASCENDING), ("status", ASCENDING), ("next_attempt_ms", ASCENDING)],
            name="due",
        ),
        # Retention of finished deliveries, and erasure.
        IndexModel([("status", ASCENDING), ("updated_ms", ASCENDING)], name="finished"),
        IndexModel([("fleet_id", ASCENDING)], name="fleet"),
    ],
}
