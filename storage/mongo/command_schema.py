"""Collections and indexes of remote commands on MongoDB (merged into storage/mongo/schema.py).

Uniqueness that needs no partial index (which the test fake lacks): the idempotency key of a
command is the ``_id`` of a document of its own collection, ``"<fleet_id>:<key>"``.
"""

from __future__ import annotations

from pymongo import ASCENDING, IndexModel

COMMANDS = "commands"
COMMAND_SEQS = "command_seqs"  # _id: IMEI; outlives erasures (see storage/sqlite/command_schema)
COMMAND_IDEMPOTENCY = "command_idempotency"  # _id: "<fleet_id>:<key>"
COMMAND_AUDIT = "command_audit"
COMMAND_POLICIES = "command_policies"  # _id: fleet_id
PLATFORM_SWITCHES = "platform_switches"  # _id: switch name
ALERTS = "alerts"
VEHICLE_LOCK_STATES = "vehicle_lock_states"  # _id: vehicle_id

COMMAND_FLEET_COLLECTIONS = (
    COMMANDS,
    COMMAND_IDEMPOTENCY,
    COMMAND_AUDIT,
    COMMAND_POLICIES,
    ALERTS,
    VEHICLE_LOCK_STATES,
)


def _index(*fields: str, unique: bool = False, name: str) -> IndexModel:
    return IndexModel([(f, ASCENDING) for f in fields], unique=unique, name=name)


COMMAND_INDEXES: dict[str, list[IndexModel]] = {
    COMMANDS: [
        # A command number is never given twice to one box: correlation of COMMAND_RESULTs.
        _index("imei", "seq", unique=True, name="box_seq_unique"),
        _index("fleet_id", "created_ms", "_id", name="fleet_listing"),
        _index("fleet_id", "vehicle_id", "created_ms", "_id", name="vehicle_listing"),
        # The gateway's polls (queued since, sent before) and the expiry sweep.
        _index("status", "updated_ms", name="status_updated"),
        _index("status", "expires_ms", name="status_expiry"),
    ],
    COMMAND_IDEMPOTENCY: [_index("fleet_id", name="fleet")],
    COMMAND_AUDIT: [
        _index("fleet_id", "time_ms", "_id", name="fleet_time"),
        _index("fleet_id", "vehicle_id", "time_ms", "_id", name="vehicle_time"),
        _index("command_id", name="command"),
        # The hash chain's order, and its compare-and-set (storage/mongo/audit_chain.py).
        _index("fleet_id", "seq", unique=True, name="chain"),
    ],
    ALERTS: [
        _index("fleet_id", "raised_ms", "_id", name="fleet_listing"),
        _index("device_id", "cleared_ms", name="device_open"),
        _index("vehicle_id", "cleared_ms", name="vehicle_open"),
    ],
    VEHICLE_LOCK_STATES: [_index("fleet_id", name="fleet")],
}
