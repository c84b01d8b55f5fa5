"""Tables of the webhooks (storage/sqlite/webhooks.py). Every index serves a query there."""

from __future__ import annotations

WEBHOOK_DDL = """
-- Few rows (a handful per fleet), read whole by the delivery service at every pass: no index
-- for its "every enabled endpoint" scan.
CREATE TABLE IF NOT EXISTS webhooks (
    id TEXT PRIMARY KEY,
    fleet_id TEXT NOT NULL,
    url TEXT NOT NULL,
    kinds TEXT NOT NULL,  -- a JSON array of StreamKind values
    secret TEXT NOT NULL,  -- whsec_<base64>, in clear: gp8 signs with it (docs/security.md)
    enabled INTEGER NOT NULL,
    cursor INTEGER NOT NULL,  -- the fleet's last stream cursor turned into deliveries
    disabled_reason TEXT,
    gap_after INTEGER,  -- the last data gap (StreamGap), NULL when there was none
    gap_resumed INTEGER,
    gap_ms INTEGER,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS webhooks_by_fleet ON webhooks (fleet_id, id);

-- The key (webhook_id, cursor) is the idempotency of queueing (INSERT OR IGNORE) and the
-- order of the listing (newest first). A rowid table: payloads run to kilobytes.
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    webhook_id TEXT NOT NULL,
    cursor INTEGER NOT NULL,
    id TEXT NOT NULL UNIQUE,  -- the webhook-id header; claim and record go by it
    fleet_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_attempt_ms INTEGER,
    last_attempt_ms INTEGER,
    last_status_code INTEGER,
    last_error TEXT,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    delivered_ms INTEGER,
    PRIMARY KEY (webhook_id, cursor)
);
-- "Due deliveries" of one endpoint: only pending rows, so finished ones cost it nothing.
CREATE INDEX IF NOT EXISTS webhook_deliveries_due
    ON webhook_deliveries (webhook_id, next_attempt_ms) WHERE status = 'pending';
-- Retention of finished deliveries (prune).
CREATE INDEX IF NOT EXISTS webhook_deliveries_finished
    ON webhook_deliveries (updated_ms) WHERE status <> 'pending';
CREATE INDEX IF NOT EXISTS webhook_deliveries_by_fleet ON webhook_deliveries (fleet_id);
"""
WEBHOOK_FLEET_TABLES = ("webhooks", "webhook_deliveries")
