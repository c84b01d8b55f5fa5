"""Typed models that cross the storage boundary, in and out.

Raw MongoDB documents and SQLite rows never leave `storage/`: the engines map them to and from
these immutable value types (frozen dataclasses; NamedTuple for the hot-path Position). Times
are integer milliseconds since the Unix epoch, UTC, everywhere in the storage layer (the wire's
unit); the API formats them.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, NamedTuple, TypedDict, TypeVar

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


class Position(NamedTuple):
    """One stored fix. Idempotency key: (device_id, time_ms).

    A NamedTuple rather than a frozen dataclass, like protocol.PositionRecord: it is built once
    per ingested record, and a 24-field frozen dataclass costs about ten times as much to
    construct (each field goes through object.__setattr__), a fifth of a core at 20,000
    positions/s. It is just as immutable and compares by value.

    The fields, their order, types and defaults are storage.fields.POSITION_FIELDS, where each
    also has its unit, meaning, API name and stored names; tests/storage/test_fields.py checks
    this class against it (a class built from the table would be invisible to mypy).
    """

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
    external_power_mv: int  # stored as ext_power_mv (storage.fields)
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
    position: Position  # stored with the same field list as positions (storage.fields)


@dataclass(frozen=True, slots=True)
class StoreResult:
    """What one ingest batch did; duplicates are resends that were already stored."""

    positions_inserted: int
    positions_duplicate: int
    events_inserted: int
    events_duplicate: int
    # Which records were resends, so that what runs after the store (processing/stage.py)
    # sees each stored record once: (device_id, time_ms) of positions and
    # (device_id, time_ms, code) of events. Empty when there were none.
    duplicate_positions: frozenset[tuple[str, int]] = frozenset()
    duplicate_events: frozenset[tuple[str, int, str]] = frozenset()


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


# --- remote commands (docs/commands.md) -----------------------------------------------------

# The box's command number is a u32 (docs/protocol.md §5.5), unique per box and never reused.
MAX_COMMAND_SEQ = 0xFFFF_FFFF


def first_command_seq(now_ms: int) -> int:
    """The first command number of a box gp8 has never numbered commands for.

    The box refuses to execute a number it remembers (its last 32 at least), so a number must
    never come back, even after the database was restored or the box re-provisioned. Starting
    at the current Unix time in seconds, rather than at 1, keeps a fresh counter above every
    number an older one could have handed out, unless that one averaged more than a command
    per second since 1970.
    """
    return max(1, (now_ms // 1000) & MAX_COMMAND_SEQ)


class CommandKind(StrEnum):
    """What an operator may ask of a box; each maps to one protocol.CommandType."""

    LOCK = "lock"
    UNLOCK = "unlock"
    DISABLE_ENGINE_START = "disable_engine_start"
    ENABLE_ENGINE_START = "enable_engine_start"
    LOCATE = "locate"
    SET_REPORT_INTERVAL = "set_report_interval"
    REBOOT = "reboot"


class CommandState(StrEnum):
    """A command's lifecycle; the last four are final."""

    PENDING_APPROVAL = "pending_approval"  # four-eyes: waits for a second admin
    QUEUED = "queued"  # stored, not on the wire yet
    SENT = "sent"  # written to the box at least once, no COMMAND_RESULT yet
    ACKNOWLEDGED = "acknowledged"  # the box says done
    FAILED = "failed"  # the box says it could not (or it could not be sent at all)
    EXPIRED = "expired"  # the TTL passed before delivery or before the box answered
    CANCELLED = "cancelled"


LIVE_COMMAND_STATES = frozenset(
    {CommandState.PENDING_APPROVAL, CommandState.QUEUED, CommandState.SENT}
)


@dataclass(frozen=True, slots=True)
class CommandRecord:
    """One order to one box, from the request to its outcome."""

    id: str
    fleet_id: str
    vehicle_id: str
    device_id: str  # the box fitted when it was requested; it is only ever sent to that box
    imei: str
    kind: CommandKind
    param: int  # the wire parameter (seconds for set_report_interval, else 0)
    seq: int  # the command number on the wire, allocated by CommandRepo.create
    status: CommandState
    created_ms: int
    updated_ms: int  # last transition
    expires_ms: int
    ttl_s: int
    requested_by: str | None  # API key id
    reason: str = ""
    theft_case_id: str | None = None
    idempotency_key: str | None = None
    approved_by: str | None = None
    approved_ms: int | None = None
    sent_ms: int | None = None  # first written to the box
    delivered_ms: int | None = None  # the box ACKed the COMMAND frame
    completed_ms: int | None = None  # reached a final state
    attempts: int = 0  # times written to the box
    failure: str | None = None  # why it failed: "door_open", "box_offline", ...
    result_state: int | None = None  # protocol.RecordFlags the box reported after executing
    gateway_id: str | None = None  # the gateway that last sent it
    cancelled_by: str | None = None


class CommandChanges(TypedDict, total=False):
    """Fields a status transition may set (CommandRepo.transition)."""

    sent_ms: int
    delivered_ms: int
    completed_ms: int
    approved_by: str
    approved_ms: int
    cancelled_by: str
    failure: str
    result_state: int
    gateway_id: str


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One line of the command audit log: who asked what, when, why, and what came of it."""

    id: str
    time_ms: int
    fleet_id: str | None  # None for platform-wide entries (the kill switch)
    action: str  # "command.requested", "command.sent", "alert.raised", "kill_switch.set", ...
    actor: str  # "key:<id>", "gateway:<id>", "box:<imei>" or "system"
    key_id: str | None = None  # the API key that asked (for the command's entries: its requester)
    vehicle_id: str | None = None
    command_id: str | None = None
    status: str | None = None  # the command's status after this step
    reason: str = ""
    theft_case_id: str | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class CommandPolicy:
    """A fleet's extra rules for commands; everything off by default."""

    fleet_id: str
    four_eyes: bool = False  # disable_engine_start and unlock need a second admin's approval
    engine_start_cap_per_hour: int | None = None  # engine-start commands the fleet may issue
    updated_ms: int = 0
    updated_by: str | None = None


@dataclass(frozen=True, slots=True)
class KillSwitch:
    """Platform-wide: while engaged, no immobilization is accepted or delivered."""

    engaged: bool = False
    reason: str = ""
    changed_ms: int = 0
    changed_by: str | None = None


class AlertKind(StrEnum):
    DUPLICATE_BOX = "duplicate_box"  # a second live connection claimed an online IMEI
    ENGINE_START_CAP = "engine_start_cap"  # the fleet hit its hourly engine-start cap


@dataclass(frozen=True, slots=True)
class Alert:
    id: str
    fleet_id: str
    kind: AlertKind
    raised_ms: int
    device_id: str | None = None
    vehicle_id: str | None = None
    detail: str = ""
    freezes_commands: bool = False  # no command reaches the box until an admin clears it
    cleared_ms: int | None = None
    cleared_by: str | None = None


@dataclass(frozen=True, slots=True)
class VehicleLockState:
    """Doors and engine-start inhibit as the box reported them in its last COMMAND_RESULT."""

    fleet_id: str
    vehicle_id: str
    device_id: str
    doors_locked: bool
    engine_start_inhibited: bool
    updated_ms: int
    command_id: str | None = None
