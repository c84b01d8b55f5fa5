"""Typed models that cross the storage boundary, in and out.

Raw MongoDB documents and SQLite rows never leave `storage/`: the engines map them to and from
these frozen dataclasses. Times are integer milliseconds since the Unix epoch, UTC, everywhere
in the storage layer (the wire's unit); the API formats them.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

T = TypeVar("T")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def new_id(prefix: str) -> str:
    """A time-ordered, unguessable id such as ``veh_0192f3a4b5c6d7e8f9a0b1c2``.

    The first 12 hex digits are the creation time in ms, so ids sort by creation and serve as
    pagination cursors on both engines; the 12 random hex digits make them unguessable.
    """
    return f"{prefix}_{now_ms():012x}{secrets.token_hex(6)}"


class Role(StrEnum):
    OPERATOR = "operator"  # platform operator: manages fleets and keys, reads no fleet data
    ADMIN = "admin"
    MANAGER = "manager"
    VIEWER = "viewer"


class DeviceModel(StrEnum):
    GP8000 = "GP8000"
    GP8500 = "GP8500"


class DeviceStatus(StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"


class Transport(StrEnum):
    TCP = "tcp"
    MQTT = "mqtt"


@dataclass(frozen=True, slots=True)
class Fleet:
    id: str
    name: str
    created_ms: int


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key; the secret itself is never stored, only its SHA-256 (``key_hash``)."""

    id: str
    fleet_id: str | None  # None for operator keys
    role: Role
    name: str
    key_hash: str
    prefix: str  # first characters of the key, shown in listings so people can tell keys apart
    created_ms: int
    expires_ms: int | None = None
    revoked_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Vehicle:
    id: str
    fleet_id: str
    vin: str
    plate: str
    label: str
    created_ms: int
    device_id: str | None = None  # the box fitted now


@dataclass(frozen=True, slots=True)
class Device:
    id: str
    fleet_id: str
    imei: str
    model: DeviceModel
    # The per-box LOGIN secret. The server must hold it to check an HMAC proof, so it cannot be
    # stored as a hash; docs/security.md says how to protect the database that holds it.
    secret: str
    created_ms: int
    status: DeviceStatus = DeviceStatus.ACTIVE
    vehicle_id: str | None = None  # the vehicle it is fitted to now


@dataclass(frozen=True, slots=True)
class Fitting:
    """A box fitted to a vehicle from ``from_ms`` until ``to_ms`` (None: still fitted)."""

    fleet_id: str
    device_id: str
    vehicle_id: str
    from_ms: int
    to_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Position:
    """One stored fix. Idempotency key: (device_id, time_ms)."""

    fleet_id: str
    device_id: str
    vehicle_id: str | None
    time_ms: int
    received_ms: int
    lat: float
    lon: float
    altitude_m: int
    speed_kmh: float
    heading_deg: float
    satellites: int
    hdop: float
    fix_valid: bool
    ignition: bool
    doors_locked: bool
    engine_start_inhibited: bool
    external_power: bool
    odometer_m: int
    ext_power_mv: int
    battery_mv: int
    gsm_signal: int
    warnings: int  # protocol.WarningLight bitmask
    driver_badge: int | None = None
    buffered: bool = False  # the box kept it offline and sent it late


@dataclass(frozen=True, slots=True)
class Event:
    """An alarm or event. Idempotency key: (device_id, time_ms, code)."""

    fleet_id: str
    device_id: str
    vehicle_id: str | None
    time_ms: int
    received_ms: int
    code: str  # protocol.EventCode name, lower case: "sos", "power_cut", ...
    detail: int
    position: Position


@dataclass(frozen=True, slots=True)
class StoreResult:
    """What one ingest batch did; duplicates are resends that were already stored."""

    positions_inserted: int
    positions_duplicate: int
    events_inserted: int
    events_duplicate: int


@dataclass(frozen=True, slots=True)
class DeviceConnection:
    device_id: str
    online: bool
    transport: Transport | None
    gateway_id: str | None
    since_ms: int  # connected since (online) or disconnected since (offline)
    remote: str | None = None


@dataclass(frozen=True, slots=True)
class AccessLogEntry:
    """Who did or read what, when (GDPR accountability)."""

    id: str
    time_ms: int
    key_id: str | None
    fleet_id: str | None
    action: str  # e.g. "read", "create", "update", "delete"
    resource: str  # e.g. "vehicle", "positions"
    resource_id: str | None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a listing; ``next_cursor`` is None on the last page."""

    items: list[T]
    next_cursor: str | None
