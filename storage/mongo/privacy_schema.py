"""Collections of privacy mode and pseudonymised drivers on MongoDB (storage/mongo/privacy.py)."""

from __future__ import annotations

from pymongo import ASCENDING, IndexModel

# _id: "<vehicle_id>:<effective_ms>"; a vehicle's schedule history.
PRIVACY_SCHEDULES = "privacy_schedules"
# _id: "<vehicle_id>:<time_ms>"; presentations of the privacy badge (idempotent by _id).
PRIVACY_TOGGLES = "privacy_toggles"
PRIVACY_BADGES = "privacy_badges"  # _id: fleet_id
DRIVERS = "drivers"
PRIVACY_FLEET_COLLECTIONS = (PRIVACY_SCHEDULES, PRIVACY_TOGGLES, PRIVACY_BADGES, DRIVERS)
PRIVACY_INDEXES: dict[str, list[IndexModel]] = {
    PRIVACY_SCHEDULES: [
        IndexModel(
            [("fleet_id", ASCENDING), ("vehicle_id", ASCENDING), ("effective_ms", ASCENDING)],
            name="fleet_vehicle_time",
        )
    ],
    PRIVACY_TOGGLES: [
        IndexModel(
            [("fleet_id", ASCENDING), ("vehicle_id", ASCENDING), ("time_ms", ASCENDING)],
            name="fleet_vehicle_time",
        )
    ],
    DRIVERS: [
        # One name per badge in a fleet (a POST with a known badge is a 409).
        IndexModel([("fleet_id", ASCENDING), ("badge", ASCENDING)], unique=True, name="badge"),
    ],
}
