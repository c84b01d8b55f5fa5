"""MongoDB documents to models and back. Documents never leave storage/mongo/.

Field names are the model's, so a document reads like the API's JSON; a position's keys are
its fields' stored names in storage.fields (``mongo``), kept when an attribute is renamed, so
existing documents still read. Every document of a fleet carries ``fleet_id``, which is what
tenant filters, erasure and retention key on.
"""

from __future__ import annotations

from operator import attrgetter
from typing import Any

from storage.fields import POSITION_ATTRS, POSITION_FIELDS, REQUIRED
from storage.models import (
    AccessLogEntry,
    ApiKey,
    Device,
    DeviceConnection,
    DeviceModel,
    DeviceProtocol,
    DeviceStatus,
    Event,
    Fitting,
    Fleet,
    Position,
    Role,
    Transport,
    Vehicle,
)
from storage.mongo.db import Doc

# In the model's order, so a document maps back to Position(*values).
POSITION_KEYS: tuple[str, ...] = tuple(f.mongo_key for f in POSITION_FIELDS)
_position_values = attrgetter(*POSITION_ATTRS)


def position_id(device_id: str, time_ms: int) -> str:
    # The idempotency key as _id: the always-present unique _id index rejects resends.
    return f"{device_id}:{time_ms}"


def event_id(device_id: str, time_ms: int, code: str) -> str:
    return f"{device_id}:{time_ms}:{code}"


def position_fields(position: Position) -> Doc:
    return dict(zip(POSITION_KEYS, _position_values(position), strict=True))


def position_doc(position: Position) -> Doc:
    doc = position_fields(position)
    doc["_id"] = position_id(position.device_id, position.time_ms)
    return doc


# (key, default) of the fields an older gp8 did not write: absent from its documents.
_POSITION_DEFAULTS: tuple[tuple[str, object], ...] = tuple(
    (f.mongo_key, f.default) for f in POSITION_FIELDS if f.default is not REQUIRED
)
_REQUIRED_KEYS: tuple[str, ...] = tuple(
    f.mongo_key for f in POSITION_FIELDS if f.default is REQUIRED
)


def to_position(doc: Doc) -> Position:
    # Fields with defaults come last in model order (a NamedTuple requires it).
    return Position(
        *(doc[key] for key in _REQUIRED_KEYS),
        *(doc.get(key, default) for key, default in _POSITION_DEFAULTS),
    )


def event_doc(event: Event) -> Doc:
    return {
        "_id": event_id(event.device_id, event.time_ms, event.code),
        "fleet_id": event.fleet_id,
        "device_id": event.device_id,
        "vehicle_id": event.vehicle_id,
        "time_ms": event.time_ms,
        "received_ms": event.received_ms,
        "code": event.code,
        "detail": event.detail,
        "position": position_fields(event.position),
    }


def to_event(doc: Doc) -> Event:
    return Event(
        fleet_id=doc["fleet_id"],
        device_id=doc["device_id"],
        vehicle_id=doc["vehicle_id"],
        time_ms=doc["time_ms"],
        received_ms=doc["received_ms"],
        code=doc["code"],
        detail=doc["detail"],
        position=to_position(doc["position"]),
    )


def fleet_doc(fleet: Fleet) -> Doc:
    return {"_id": fleet.id, "name": fleet.name, "created_ms": fleet.created_ms}


def to_fleet(doc: Doc) -> Fleet:
    return Fleet(id=doc["_id"], name=doc["name"], created_ms=doc["created_ms"])


def key_doc(key: ApiKey) -> Doc:
    return {
        "_id": key.id,
        "fleet_id": key.fleet_id,  # None (stored as null) for operator keys
        "role": key.role.value,
        "name": key.name,
        "key_hash": key.key_hash,
        "prefix": key.prefix,
        "created_ms": key.created_ms,
        "expires_ms": key.expires_ms,
        "revoked_ms": key.revoked_ms,
        "email": key.email,
        "last_used_ms": key.last_used_ms,
    }


def to_key(doc: Doc) -> ApiKey:
    return ApiKey(
        id=doc["_id"],
        fleet_id=doc["fleet_id"],
        role=Role(doc["role"]),
        name=doc["name"],
        key_hash=doc["key_hash"],
        prefix=doc["prefix"],
        created_ms=doc["created_ms"],
        expires_ms=doc["expires_ms"],
        revoked_ms=doc["revoked_ms"],
        # Keys stored before owners and last use: "" is the unknown owner (docs/security.md).
        email=doc.get("email", ""),
        last_used_ms=doc.get("last_used_ms"),
    )


def vehicle_doc(vehicle: Vehicle) -> Doc:
    return {
        "_id": vehicle.id,
        "fleet_id": vehicle.fleet_id,
        "vin": vehicle.vin,
        "plate": vehicle.plate,
        "label": vehicle.label,
        "created_ms": vehicle.created_ms,
        "device_id": vehicle.device_id,
    }


def to_vehicle(doc: Doc) -> Vehicle:
    return Vehicle(
        id=doc["_id"],
        fleet_id=doc["fleet_id"],
        vin=doc["vin"],
        plate=doc["plate"],
        label=doc["label"],
        created_ms=doc["created_ms"],
        device_id=doc["device_id"],
    )


def device_doc(device: Device) -> Doc:
    return {
        "_id": device.id,
        "fleet_id": device.fleet_id,
        "imei": device.imei,
        "model": device.model.value,
        "secret": device.secret,
        "created_ms": device.created_ms,
        "status": device.status.value,
        "vehicle_id": device.vehicle_id,
        "protocol": device.protocol.value,
    }


def to_device(doc: Doc) -> Device:
    return Device(
        id=doc["_id"],
        fleet_id=doc["fleet_id"],
        imei=doc["imei"],
        model=DeviceModel(doc["model"]),
        secret=doc["secret"],
        created_ms=doc["created_ms"],
        status=DeviceStatus(doc["status"]),
        vehicle_id=doc["vehicle_id"],
        # Documents written before devices had a protocol are GP8 boxes.
        protocol=DeviceProtocol(doc.get("protocol", DeviceProtocol.GP8.value)),
    )


def fitting_doc(fitting_id: str, fitting: Fitting) -> Doc:
    return {
        "_id": fitting_id,
        "fleet_id": fitting.fleet_id,
        "device_id": fitting.device_id,
        "vehicle_id": fitting.vehicle_id,
        "from_ms": fitting.from_ms,
        "to_ms": fitting.to_ms,
    }


def to_fitting(doc: Doc) -> Fitting:
    return Fitting(
        fleet_id=doc["fleet_id"],
        device_id=doc["device_id"],
        vehicle_id=doc["vehicle_id"],
        from_ms=doc["from_ms"],
        to_ms=doc["to_ms"],
    )


def connection_fields(connection: DeviceConnection, fleet_id: str) -> Doc:
    return {
        "fleet_id": fleet_id,
        "online": connection.online,
        "transport": None if connection.transport is None else connection.transport.value,
        "gateway_id": connection.gateway_id,
        "since_ms": connection.since_ms,
        "remote": connection.remote,
        "version": connection.version,
        "seen_ms": connection.seen_ms,
    }


def to_connection(doc: Doc) -> DeviceConnection:
    transport: Any = doc["transport"]
    return DeviceConnection(
        device_id=doc["_id"],
        online=doc["online"],
        transport=None if transport is None else Transport(transport),
        gateway_id=doc["gateway_id"],
        since_ms=doc["since_ms"],
        remote=doc["remote"],
        # Absent from documents written before versions existed: unordered.
        version=doc.get("version", 0),
        seen_ms=doc.get("seen_ms"),
    )


def access_doc(entry: AccessLogEntry) -> Doc:
    return {
        "_id": entry.id,
        "time_ms": entry.time_ms,
        "key_id": entry.key_id,
        "fleet_id": entry.fleet_id,
        "action": entry.action,
        "resource": entry.resource,
        "resource_id": entry.resource_id,
        "detail": entry.detail,
        "seq": entry.seq,
        "prev_hash": entry.prev_hash,
        "hash": entry.hash,
    }


def to_access(doc: Doc) -> AccessLogEntry:
    return AccessLogEntry(
        id=doc["_id"],
        time_ms=doc["time_ms"],
        key_id=doc["key_id"],
        fleet_id=doc["fleet_id"],
        action=doc["action"],
        resource=doc["resource"],
        resource_id=doc["resource_id"],
        detail=doc["detail"],
        seq=doc.get("seq", 0),
        prev_hash=doc.get("prev_hash", ""),
        hash=doc.get("hash", ""),
    )
