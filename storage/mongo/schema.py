"""Collections and indexes of the MongoDB engine.

Idempotency costs no extra index: a position's ``_id`` is ``"<device_id>:<time_ms>"`` and an
event's ``"<device_id>:<time_ms>:<code>"``, so the unique ``_id`` index every collection has
rejects resends. Every other index exists for a query in this package.
"""

from __future__ import annotations

from pymongo import ASCENDING, IndexModel

from storage.mongo.command_schema import COMMAND_FLEET_COLLECTIONS, COMMAND_INDEXES
from storage.mongo.privacy_schema import PRIVACY_FLEET_COLLECTIONS, PRIVACY_INDEXES
from storage.mongo.retention_schema import RETENTION_FLEET_COLLECTIONS, RETENTION_INDEXES
from storage.mongo.stream_schema import STREAM_FLEET_COLLECTIONS, STREAM_INDEXES
from storage.mongo.tracking_schema import TRACKING_FLEET_COLLECTIONS, TRACKING_INDEXES
from storage.mongo.webhook_schema import WEBHOOK_FLEET_COLLECTIONS, WEBHOOK_INDEXES

FLEETS = "fleets"
KEYS = "api_keys"
VEHICLES = "vehicles"
DEVICES = "devices"
FITTINGS = "fittings"
CONNECTIONS = "connections"
COUNTERS = "counters"  # _id: the counter's name (storage/mongo/counters.py)
POSITIONS = "positions"
EVENTS = "events"
LAST_POSITIONS = "last_positions"  # _id: "v:<vehicle_id>" or "d:<device_id>"
ACCESS_LOG = "access_log"
# Geofences (storage/mongo/geofences.py).
GEOFENCES = "geofences"
GEOFENCE_STATES = "geofence_states"  # _id: "<vehicle_id>:<geofence_id>"
GEOFENCE_EVENTS = "geofence_events"

# Every collection holding records of a fleet, by fleet_id: what a GDPR erasure deletes
# (tests check that nothing of an erased fleet is left in any of them).
FLEET_COLLECTIONS = (
    KEYS,
    VEHICLES,
    DEVICES,
    FITTINGS,
    CONNECTIONS,
    COUNTERS,
    POSITIONS,
    EVENTS,
    LAST_POSITIONS,
    ACCESS_LOG,
    *COMMAND_FLEET_COLLECTIONS,
    *STREAM_FLEET_COLLECTIONS,
    *WEBHOOK_FLEET_COLLECTIONS,
    GEOFENCES,
    GEOFENCE_STATES,
    GEOFENCE_EVENTS,
    *TRACKING_FLEET_COLLECTIONS,
    *RETENTION_FLEET_COLLECTIONS,
    *PRIVACY_FLEET_COLLECTIONS,
)


def _index(*fields: str, unique: bool = False, name: str) -> IndexModel:
    return IndexModel([(f, ASCENDING) for f in fields], unique=unique, name=name)


INDEXES: dict[str, list[IndexModel]] = {
    KEYS: [
        _index("key_hash", unique=True, name="key_hash_unique"),
        _index("fleet_id", "_id", name="fleet_listing"),
    ],
    VEHICLES: [
        _index("fleet_id", "vin", unique=True, name="fleet_vin_unique"),
        _index("fleet_id", "_id", name="fleet_listing"),
    ],
    DEVICES: [
        _index("imei", unique=True, name="imei_unique"),
        _index("fleet_id", "_id", name="fleet_listing"),
    ],
    FITTINGS: [
        _index("device_id", "from_ms", name="device_history"),
        _index("vehicle_id", "to_ms", name="vehicle_current"),
        _index("fleet_id", name="fleet"),
    ],
    CONNECTIONS: [_index("fleet_id", name="fleet")],
    COUNTERS: [_index("fleet_id", name="fleet")],  # erasure
    # The vehicle track query; its fleet_id prefix also serves retention purges and erasure.
    POSITIONS: [_index("fleet_id", "vehicle_id", "time_ms", "device_id", name="vehicle_track")],
    EVENTS: [_index("fleet_id", "time_ms", "device_id", "code", name="fleet_time")],
    LAST_POSITIONS: [
        _index("fleet_id", "vehicle_id", name="fleet"),  # the map of a whole fleet, in order
        # The map's bbox: a range of latitudes within the fleet, the longitude tested in the
        # index entry (a city's viewport fetches its few hundred documents, not the fleet's).
        _index("fleet_id", "lat", "lon", name="fleet_area"),
    ],
    ACCESS_LOG: [
        _index("fleet_id", "time_ms", "_id", name="fleet_time"),
        # The hash chain's order, and its compare-and-set (storage/mongo/audit_chain.py).
        _index("fleet_id", "seq", unique=True, name="chain"),
    ],
    **COMMAND_INDEXES,
    **STREAM_INDEXES,
    **WEBHOOK_INDEXES,
    # After COMMAND_INDEXES: it adds the incidents' index to those of alerts.
    **TRACKING_INDEXES,
    **RETENTION_INDEXES,
    **PRIVACY_INDEXES,
    GEOFENCES: [_index("fleet_id", "_id", name="fleet_listing")],
    GEOFENCE_STATES: [
        _index("fleet_id", "vehicle_id", name="vehicle"),  # the handler loads a vehicle's
        _index("geofence_id", "vehicle_id", name="fence"),  # a fence's, when it changes
    ],
    GEOFENCE_EVENTS: [
        # A batch processed again after a restart stores its crossing once.
        _index("geofence_id", "vehicle_id", "time_ms", "kind", unique=True, name="crossing"),
        _index("fleet_id", "time_ms", "_id", name="fleet_time"),
        _index("fleet_id", "vehicle_id", "time_ms", "_id", name="vehicle_time"),
        _index("fleet_id", "geofence_id", "time_ms", "_id", name="fence_time"),
    ],
}
