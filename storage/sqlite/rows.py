"""SQLite rows to models and back. Rows never leave storage/sqlite/."""

from __future__ import annotations

import marshal
from collections.abc import Callable
from operator import attrgetter
from typing import Any

import orjson

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
from storage.sqlite.schema import POSITION_COLUMN_NAMES

Row = tuple[Any, ...]

FLEET_COLUMNS = "id, name, created_ms"
KEY_COLUMNS = (
    "id, fleet_id, role, name, key_hash, prefix, created_ms, expires_ms, revoked_ms, email,"
    " last_used_ms"
)
VEHICLE_COLUMNS = "id, fleet_id, vin, plate, label, created_ms, device_id"
DEVICE_COLUMNS = "id, fleet_id, imei, model, secret, created_ms, status, vehicle_id, protocol"
FITTING_COLUMNS = "fleet_id, device_id, vehicle_id, from_ms, to_ms"
CONNECTION_COLUMNS = "device_id, online, transport, gateway_id, since_ms, remote, version, seen_ms"
POSITION_COLUMNS = ", ".join(POSITION_COLUMN_NAMES)
EVENT_COLUMNS = "fleet_id, device_id, vehicle_id, time_ms, received_ms, code, detail, position"
ACCESS_COLUMNS = (
    "id, time_ms, key_id, fleet_id, action, resource, resource_id, detail, seq, prev_hash, hash"
)

# attrgetter with several names returns the tuple in C: the cheapest way to turn a Position into
# query parameters, which matters at tens of thousands of rows per second. Model order, which is
# the order of POSITION_COLUMNS.
_position_attrs: Callable[[Position], Row] = attrgetter(*POSITION_ATTRS)
# The one column that is not a scalar: a JSON object, stored as its text. Last in model order.
_IO = POSITION_ATTRS.index("io")


def position_values(position: Position) -> Row:
    values = _position_attrs(position)
    if position.io is None:  # all GP8 boxes' fixes: the tuple as attrgetter made it
        return values
    return (*values[:_IO], orjson.dumps(position.io).decode(), *values[_IO + 1 :])


def position_json(position: Position) -> bytes:
    """An event's copy of its position: keyed by column name, as a positions row would be."""
    return orjson.dumps(dict(zip(POSITION_COLUMN_NAMES, _position_attrs(position), strict=True)))


# (column, default) of the fields an older gp8 did not write: absent from its events' copies.
_POSITION_JSON_KEYS: tuple[tuple[str, object], ...] = tuple(
    (f.sqlite_column, f.default) for f in POSITION_FIELDS
)


def from_position_json(blob: bytes) -> Position:
    stored = orjson.loads(blob)
    return Position(
        *(
            stored[name] if default is REQUIRED else stored.get(name, default)
            for name, default in _POSITION_JSON_KEYS
        )
    )


def event_values(event: Event) -> Row:
    return (
        event.fleet_id,
        event.device_id,
        event.vehicle_id,
        event.time_ms,
        event.received_ms,
        event.code,
        event.detail,
        position_json(event.position),
    )


_new_tuple = tuple.__new__


def to_position(row: Row) -> Position:
    # Written out, as a history reads thousands of rows: a loop over the flags on a copy of the
    # row, then Position._make, cost about half as much again. The flags are stored as 0/1; the
    # unpacking fails for a row of another width, and tests/storage/test_fields.py checks each
    # value's type against the field table.
    (
        fleet_id,
        device_id,
        vehicle_id,
        time_ms,
        received_ms,
        lat,
        lon,
        altitude_m,
        speed_kmh,
        heading_deg,
        satellites,
        hdop,
        fix_valid,
        ignition,
        doors_locked,
        engine_start_inhibited,
        external_power,
        odometer_m,
        external_power_mv,
        battery_mv,
        gsm_signal,
        warnings,
        driver_badge,
        buffered,
        io,
    ) = row
    # tuple.__new__ is what Position._make does, without its Python frame.
    return _new_tuple(
        Position,
        (
            fleet_id,
            device_id,
            vehicle_id,
            time_ms,
            received_ms,
            lat,
            lon,
            altitude_m,
            speed_kmh,
            heading_deg,
            satellites,
            hdop,
            bool(fix_valid),
            bool(ignition),
            bool(doors_locked),
            bool(engine_start_inhibited),
            bool(external_power),
            odometer_m,
            external_power_mv,
            battery_mv,
            gsm_signal,
            warnings,
            driver_badge,
            bool(buffered),
            None if io is None else orjson.loads(io),
        ),
    )


class PositionList(list[Position]):
    """Positions handed to a write. For the writer process (storage/sqlite/writer_process.py)
    they pickle as one marshal of plain tuples: ~0.8 µs a position there and back, against
    ~3.4 as NamedTuples (a Python call each way) or ~1.3 as pickled tuples; they arrive as a
    plain list of Positions. (marshal: both ends are the same interpreter.)"""

    def __reduce__(self) -> tuple[Callable[[bytes], list[Position]], tuple[bytes]]:
        return _positions, (marshal.dumps([*map(tuple, self)]),)


def _positions(data: bytes) -> list[Position]:
    return [_new_tuple(Position, v) for v in marshal.loads(data)]


def to_event(row: Row) -> Event:
    fleet_id, device_id, vehicle_id, time_ms, received_ms, code, detail, position = row
    return Event(
        fleet_id=fleet_id,
        device_id=device_id,
        vehicle_id=vehicle_id,
        time_ms=time_ms,
        received_ms=received_ms,
        code=code,
        detail=detail,
        position=from_position_json(position),
    )


def to_fleet(row: Row) -> Fleet:
    return Fleet(*row)


def to_key(row: Row) -> ApiKey:
    (
        key_id,
        fleet_id,
        role,
        name,
        key_hash,
        prefix,
        created_ms,
        expires_ms,
        revoked_ms,
        email,
        last_used_ms,
    ) = row
    return ApiKey(
        id=key_id,
        fleet_id=fleet_id,
        role=Role(role),
        name=name,
        key_hash=key_hash,
        prefix=prefix,
        created_ms=created_ms,
        expires_ms=expires_ms,
        revoked_ms=revoked_ms,
        email=email,
        last_used_ms=last_used_ms,
    )


def key_values(key: ApiKey) -> Row:
    return (
        key.id,
        key.fleet_id,
        key.role.value,
        key.name,
        key.key_hash,
        key.prefix,
        key.created_ms,
        key.expires_ms,
        key.revoked_ms,
        key.email,
        key.last_used_ms,
    )


def to_vehicle(row: Row) -> Vehicle:
    return Vehicle(*row)


def to_device(row: Row) -> Device:
    device_id, fleet_id, imei, model, secret, created_ms, status, vehicle_id, protocol = row
    return Device(
        id=device_id,
        fleet_id=fleet_id,
        imei=imei,
        model=DeviceModel(model),
        secret=secret,
        created_ms=created_ms,
        status=DeviceStatus(status),
        vehicle_id=vehicle_id,
        protocol=DeviceProtocol(protocol),
    )


def to_fitting(row: Row) -> Fitting:
    return Fitting(*row)


def to_connection(row: Row) -> DeviceConnection:
    device_id, online, transport, gateway_id, since_ms, remote, version, seen_ms = row
    return DeviceConnection(
        device_id=device_id,
        online=bool(online),
        transport=None if transport is None else Transport(transport),
        gateway_id=gateway_id,
        since_ms=since_ms,
        remote=remote,
        version=version,
        seen_ms=seen_ms,
    )


def to_access(row: Row) -> AccessLogEntry:
    return AccessLogEntry(*row)
