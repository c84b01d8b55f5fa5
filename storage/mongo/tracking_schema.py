"""Collections and indexes of stolen-vehicle tracking on MongoDB (storage/mongo/tracking.py),
merged into storage/mongo/schema.py, and the indexes the alert incidents add to ``alerts``.

Uniqueness without partial indexes (which the test fake lacks): sparse unique indexes on a
field that exists only while the thing it guards does. ``open_key`` is set on an alert while
its incident is open and unset when it closes (one open alert per incident); ``open_vehicle``
is set on a theft case while it is open (one open case per vehicle).
"""

from __future__ import annotations

from pymongo import ASCENDING, IndexModel

from storage.mongo.command_schema import ALERTS, COMMAND_INDEXES

ALERT_RULES = "alert_rules"
TRACKING_POLICIES = "tracking_policies"  # _id: fleet_id
GUARD_STATES = "guard_states"  # _id: vehicle_id
THEFT_CASES = "theft_cases"
LEGAL_HOLDS = "legal_holds"  # _id: case_id

TRACKING_FLEET_COLLECTIONS = (
    ALERT_RULES,
    TRACKING_POLICIES,
    GUARD_STATES,
    THEFT_CASES,
    LEGAL_HOLDS,
)


def _index(*fields: str, unique: bool = False, sparse: bool = False, name: str) -> IndexModel:
    return IndexModel([(f, ASCENDING) for f in fields], unique=unique, sparse=sparse, name=name)


TRACKING_INDEXES: dict[str, list[IndexModel]] = {
    # The command alerts' indexes and the incidents' one (this dict is merged after theirs).
    ALERTS: [
        *COMMAND_INDEXES[ALERTS],
        _index("open_key", unique=True, sparse=True, name="open_incident"),
    ],
    ALERT_RULES: [_index("fleet_id", "created_ms", "_id", name="fleet_listing")],
    GUARD_STATES: [_index("fleet_id", "_id", name="fleet")],
    THEFT_CASES: [
        _index("fleet_id", "opened_ms", "_id", name="fleet_listing"),
        _index("open_vehicle", unique=True, sparse=True, name="open_case"),
    ],
    LEGAL_HOLDS: [_index("fleet_id", "vehicle_id", name="fleet_vehicle")],
}
