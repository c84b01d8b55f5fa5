"""Collections of retention, exports and offboarding on MongoDB (storage/mongo/retention.py)."""

from __future__ import annotations

from pymongo import ASCENDING, IndexModel

RETENTION = "retention"  # _id: fleet_id
EXPORTS = "exports"
# _id: fleet_id. Not erased with the fleet: it is the deletion report that outlives it
# (counts per collection, no personal data).
OFFBOARDINGS = "offboardings"
RETENTION_FLEET_COLLECTIONS = (RETENTION, EXPORTS)
# Collections with fleet data keys that erasure leaves on purpose (tests/storage/test_mongo.py).
KEPT_AFTER_ERASURE = (OFFBOARDINGS,)
RETENTION_INDEXES: dict[str, list[IndexModel]] = {
    EXPORTS: [
        # The workers' claim (oldest pending first) and the stale-lease sweep.
        IndexModel([("status", ASCENDING), ("created_ms", ASCENDING)], name="status_age"),
        # Retention of a fleet's exports.
        IndexModel([("fleet_id", ASCENDING), ("created_ms", ASCENDING)], name="fleet_age"),
    ],
    OFFBOARDINGS: [IndexModel([("erased_ms", ASCENDING), ("ends_ms", ASCENDING)], name="due")],
}
