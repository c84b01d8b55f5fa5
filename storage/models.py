"""Typed models that cross the storage boundary, in and out.

Raw MongoDB documents and SQLite rows never leave `storage/`: the engines map them to and from
these immutable value types (frozen dataclasses; NamedTuple for the hot-path Position). Times
are integer milliseconds since the Unix epoch, UTC, everywhere in the storage layer (the wire's
unit); the API formats them.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable, Sequence, Set
from dataclasses import dataclass, field
from enum import StrEnum
from operator import attrgetter
from typing import Any, Generic, NamedTuple, TypedDict, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class _RandomHex:
    """Hex digits of `os.urandom`, read 4 KiB at a time and each handed out once.

    Every API write and command makes several ids; one urandom call each is a syscall on the
    event loop (~1 µs idle, far more on a loaded machine). The digits are as unguessable as
    the kernel's; the lock keeps two threads from taking the same ones, and a forked child
    drops what its parent read, so two processes never share digits.
    """

    _CHUNK = 4096  # bytes per read: ~680 ids of 6 random bytes

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._lock = threading.Lock()  # new in a child: the parent's may be held by a thread
        self._digits = ""
        self._at = 0

    def take(self, nbytes: int) -> str:
        """``2 * nbytes`` random hex digits, as `secrets.token_hex(nbytes)`."""
        n = 2 * nbytes
        with self._lock:
            at = self._at
            if at + n > len(self._digits):
                self._digits = os.urandom(max(self._CHUNK, nbytes)).hex()
                at = 0
            self._at = at + n
            return self._digits[at : at + n]


random_hex = _RandomHex().take


def new_id(prefix: str) -> str:
    """A time-ordered, unguessable id such as ``veh_0192f3a4b5c6d7e8f9a0b1c2``.

    The first 12 hex digits are the creation time in ms, so ids sort by creation and serve as
    pagination cursors on both engines; the 12 random hex digits make them unguessable.
    """
    return f"{prefix}_{now_ms():012x}{random_hex(6)}"


class Role(StrEnum):
    OPERATOR = "operator"  # platform operator: manages fleets and keys, reads no fleet data
    ADMIN = "admin"
    MANAGER = "manager"
    VIEWER = "viewer"


class DeviceModel(StrEnum):
    # Teltonika trackers (protocol "teltonika", docs/teltonika.md): each picks a device profile.
    FMB920 = "FMB920"
    FMB120 = "FMB120"
    FMB130 = "FMB130"
    FMB140 = "FMB140"
    FMC130 = "FMC130"
    FMM130 = "FMM130"
    # GP8 boxes (protocol "gp8").
    GP8000 = "GP8000"
    GP8500 = "GP8500"

    @property
    def protocol(self) -> DeviceProtocol:
        """The protocol this model speaks."""
        return DeviceProtocol.GP8 if self.value.startswith("GP8") else DeviceProtocol.TELTONIKA


class DeviceProtocol(StrEnum):
    """What a box speaks, and so which listener may log it in."""

    GP8 = "gp8"
    TELTONIKA = "teltonika"


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
    # The person the key belongs to is ``name``; their address (keys older than owners were
    # migrated with "": unknown, docs/security.md).
    email: str = ""
    last_used_ms: int | None = None  # kept to the minute (api/security.py, LAST_USE_EVERY_MS)


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
    # A teltonika box logs in with its IMEI alone and has no secret ("").
    protocol: DeviceProtocol = DeviceProtocol.GP8


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
    # Raw IO elements without a field (storage.fields); JSON-ready: str keys, int or hex values.
    io: dict[str, int | str] | None = None


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
    # Which records had been stored by an earlier batch (resends), so that what runs after the
    # store (processing/stage.py, the live stream) sees each stored record once:
    # (device_id, time_ms) of positions and (device_id, time_ms, code) of events. A second
    # copy within the batch is counted as a duplicate but is not named here.
    duplicate_positions: frozenset[tuple[str, int]] = frozenset()
    duplicate_events: frozenset[tuple[str, int, str]] = frozenset()

    def new_positions(self, positions: Sequence[Position]) -> Sequence[Position]:
        """The positions of the batch this stored: first copies, resends left out."""
        if not self.positions_duplicate:
            return positions
        return first_copies(positions, self.duplicate_positions, _POSITION_KEY)

    def new_events(self, events: Sequence[Event]) -> Sequence[Event]:
        if not self.events_duplicate:
            return events
        return first_copies(events, self.duplicate_events, _EVENT_KEY)


_POSITION_KEY = attrgetter("device_id", "time_ms")
_EVENT_KEY = attrgetter("device_id", "time_ms", "code")


def first_copies(records: Sequence[R], resent: Set[Any], key: Callable[[R], Any]) -> list[R]:
    """``records`` without the ``resent`` keys, each key's first copy only."""
    out, seen = [], set(resent)
    for record in records:
        k = key(record)
        if k not in seen:
            seen.add(k)
            out.append(record)
    return out


@dataclass(frozen=True, slots=True)
class DeviceConnection:
    device_id: str
    online: bool
    transport: Transport | None
    gateway_id: str | None
    since_ms: int  # connected since (online) or disconnected since (offline)
    remote: str | None = None
    # The observation's order (`connection_version`): a write applies only when its version is
    # at least the stored one, so a late "offline" of an ended session never hides a newer
    # "online" written by another process. 0: unordered (applies over any 0).
    version: int = 0
    # When the holding gateway last heard from the box (refreshed in batches, `touch`): how
    # another process tells a live session from a half-open one (docs/scaling.md).
    seen_ms: int | None = None


def connection_version(at_ms: int, *, online: bool) -> int:
    """The version of an observation dated ``at_ms`` (wall-clock milliseconds).

    What the date is depends on who observes: a TCP session's login time (its "offline" is
    dated at its start too, so any later session outranks it), the time an MQTT message was
    heard (an "offline" then says "not heard since"). At the same date "offline" outranks
    "online". Two processes agree on the order up to their clock skew.
    """
    return 2 * at_ms + (0 if online else 1)


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
    # Its link in the fleet's hash chain, filled by storage on append (storage/audit_chain.py);
    # not part of equality: an entry read back is the entry appended.
    seq: int = field(default=0, compare=False)
    prev_hash: str = field(default="", compare=False)
    hash: str = field(default="", compare=False)


def naming_box(entry: AccessLogEntry, fitting: Fitting) -> AccessLogEntry:
    """The access-log entry of a fit or unfit (DeviceRepo): its detail is the box's id, known
    once the write has found the box."""
    return dataclasses.replace(entry, detail=fitting.device_id)


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
    """Fields a status transition may set (CommandRepo.transitions)."""

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
    # Its link in the fleet's hash chain, filled by storage on append (storage/audit_chain.py);
    # not part of equality: an entry read back is the entry appended.
    seq: int = field(default=0, compare=False)
    prev_hash: str = field(default="", compare=False)
    hash: str = field(default="", compare=False)


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


class Severity(StrEnum):
    """How urgent an alert is (set by the alert rule that raised it; docs/alerts.md)."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}


class AlertKind(StrEnum):
    """An alert's ``type`` in the API."""

    DUPLICATE_BOX = "duplicate_box"  # a second live connection claimed an online IMEI
    ENGINE_START_CAP = "engine_start_cap"  # the fleet hit its hourly engine-start cap
    # Raised by the alert rules and the parked guard (tracking/, docs/alerts.md "Alerts").
    SUSPECTED_THEFT = "suspected_theft"
    SOS = "sos"
    POWER_CUT = "power_cut"
    TAMPER = "tamper"
    GPS_JAMMING = "gps_jamming"
    GSM_JAMMING = "gsm_jamming"
    TOWING = "towing"
    CRASH = "crash"
    DASHBOARD_WARNING = "dashboard_warning"
    GEOFENCE_ENTER = "geofence_enter"
    GEOFENCE_EXIT = "geofence_exit"
    OVERSPEED = "overspeed"
    BOX_OFFLINE = "box_offline"
    IGNITION_OFF_MOVEMENT = "ignition_off_movement"
    OUTSIDE_HOURS = "outside_hours"
    NO_BADGE = "no_badge"


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
    cleared_ms: int | None = None  # closed: by a key (cleared_by), or "system" when it cleared
    cleared_by: str | None = None
    # --- incidents of the alert rules (docs/alerts.md, "Alerts"); the defaults are what the
    # command alerts and rows stored before these fields existed read as.
    severity: Severity = Severity.WARNING
    rule_id: str | None = None  # the alert rule that raised it
    # What the incident is about besides the vehicle: a fence id, ... One open alert per
    # (fleet, vehicle or box, kind, ref): repeated triggers update it (AlertRepo.trigger).
    ref: str | None = None
    count: int = 1  # records that triggered it
    first_ms: int | None = None  # device time of the first record that triggered it
    last_ms: int | None = None  # device time of the latest one
    lat: float | None = None  # where the latest one was
    lon: float | None = None
    speed_kmh: float | None = None
    updated_ms: int | None = None  # last change (server time)
    acked_ms: int | None = None  # acknowledged by a user (POST /v1/alerts/{id}/ack)
    acked_by: str | None = None
    ack_note: str = ""
    close_reason: str = ""  # why it was closed by gp8 ("fence re-entered", ...)
    theft_case_id: str | None = None  # the theft case opened from it


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


# In the audit lines of `CommandRepo.create_then`'s steps, stands for the number the new
# command gets in that same write ("command.sent" names it).
NUMBER_TOKEN = "{number}"


@dataclass(frozen=True, slots=True)
class CommandStep:
    """One status change of a command as a value, so several can be stored in one write
    (`CommandRepo.transitions`, `CommandRepo.create_then`, which say what a step does)."""

    status: CommandState
    expected: frozenset[CommandState]
    at_ms: int
    audit: AuditEntry | None = None
    changes: CommandChanges = field(default_factory=lambda: CommandChanges())
    attempts_delta: int = 0
    vehicle_state: VehicleLockState | None = None
    # A command sent at once: stored only when every other live command of its box (queued or
    # sent, not expired at ``at_ms``) is numbered in it (written already on the box's
    # session), so it never overtakes one waiting before it; else neither this step nor the
    # ones after it are stored. None: no such condition.
    overtakes: frozenset[int] | None = None

    def numbered(self, seq: int) -> CommandStep:
        """This step with `NUMBER_TOKEN` in its audit line's detail replaced by ``seq``."""
        audit = self.audit
        if audit is None or NUMBER_TOKEN not in audit.detail:
            return self
        detail = audit.detail.replace(NUMBER_TOKEN, str(seq))
        return dataclasses.replace(self, audit=dataclasses.replace(audit, detail=detail))


class StreamKind(StrEnum):
    """What a live-stream entry carries (GET /v1/stream's ``kind``)."""

    POSITION = "position"
    EVENT = "event"
    ALERT = "alert"
    COMMAND = "command"
    THEFT_CASE = "theft_case"


@dataclass(frozen=True, slots=True)
class StreamEntry:
    """One change of a fleet's data, in the order it was stored (storage/stream.py).

    ``cursor`` increases by one per entry within a fleet: a consumer resumes after the last
    cursor it saw. ``item`` is the stored resource itself (a Position, Event, Alert,
    CommandRecord, ...), as its repository would return it.
    """

    fleet_id: str
    cursor: int
    kind: StreamKind
    vehicle_id: str | None
    created_ms: int
    item: object


@dataclass(frozen=True, slots=True)
class StreamPage:
    """What ``stream.after`` found: the entries, and the cursor to ask after next (past
    entries that the filters left out, so a filtered consumer does not scan them again)."""

    entries: list[StreamEntry]
    cursor: int


# --- geofences (docs/alerts.md, "Geofences") --------------------------------------------------

# Hysteresis defaults (tracking/geofence_logic.py): GPS fixes of a parked box wander by 5-15 m,
# a bad one by 30 m and more, so a vehicle counts as inside once 25 m in, outside once 25 m out,
# and only after staying there for 30 s of device time (a couple of fixes at fast reporting).
GEOFENCE_DEFAULT_MARGIN_M = 25.0
GEOFENCE_DEFAULT_DWELL_S = 30


class FenceSide(StrEnum):
    """Where a vehicle is for a geofence, as its hysteresis decided."""

    INSIDE = "inside"
    OUTSIDE = "outside"


class GeofenceEventKind(StrEnum):
    ENTER = "enter"
    EXIT = "exit"


@dataclass(frozen=True, slots=True)
class GeofenceSchedule:
    """Allowed hours: on ``days`` (ISO weekdays, 1 = Monday) from ``start`` to ``end``
    ("HH:MM", local time in ``timezone``, an IANA zone name; ``end`` before ``start`` runs past
    midnight, ``end`` "24:00" is the end of the day). The alert rules use it for "movement
    outside allowed hours" (tracking.within_schedule)."""

    timezone: str
    days: tuple[int, ...]
    start: str
    end: str


@dataclass(frozen=True, slots=True)
class Geofence:
    """A zone of a fleet, applied to all its vehicles (``vehicle_ids`` None) or to some."""

    id: str
    fleet_id: str
    name: str
    # GeoJSON geometry, positions [longitude, latitude]: a Polygon or a MultiPolygon, or a
    # Point with ``radius_m`` (a circle). Validated by the API (api/services/geofences.py).
    geometry: dict[str, object]
    created_ms: int
    updated_ms: int
    radius_m: float | None = None
    vehicle_ids: tuple[str, ...] | None = None
    schedule: GeofenceSchedule | None = None
    margin_m: float = GEOFENCE_DEFAULT_MARGIN_M
    dwell_s: int = GEOFENCE_DEFAULT_DWELL_S
    speed_limit_kmh: float | None = None  # for the overspeed rule inside this fence


@dataclass(frozen=True, slots=True)
class GeofenceState:
    """One vehicle's hysteresis state for one fence (tracking/geofence_logic.py).

    No stored state means OUTSIDE and settled: states exist only for the fences a vehicle came
    near. Written when ``side`` or the candidate changes, so ``checked_ms`` read back from
    storage is a floor of the newest fix decided on, not that fix's time.
    """

    fleet_id: str
    vehicle_id: str
    geofence_id: str
    side: FenceSide = FenceSide.OUTSIDE
    since_ms: int = 0  # device time ``side`` was committed
    candidate: FenceSide | None = None  # the other side, seen beyond the margin, not dwell_s yet
    candidate_ms: int | None = None  # device time the candidate was first seen
    checked_ms: int = 0  # device time of the newest fix decided on


@dataclass(frozen=True, slots=True)
class GeofenceEvent:
    """A committed crossing. Idempotency key: (geofence_id, vehicle_id, time_ms, kind)."""

    id: str
    fleet_id: str
    vehicle_id: str
    device_id: str
    geofence_id: str
    kind: GeofenceEventKind
    time_ms: int  # device time of the fix that confirmed the crossing
    lat: float
    lon: float


# --- webhooks (docs/alerts.md, "Webhooks") ---------------------------------------------------


class DeliveryStatus(StrEnum):
    """A webhook delivery's state; the last two are final."""

    PENDING = "pending"  # waiting for its next attempt, or being attempted
    DELIVERED = "delivered"  # the receiver answered 2xx
    FAILED = "failed"  # retries exhausted, or the receiver answered 410 Gone


@dataclass(frozen=True, slots=True)
class StreamGap:
    """Stream entries a webhook never got: its cursor was older than the stream's retention
    (the delivery service was down longer than that), so the entries after ``after_cursor``
    up to ``resumed_cursor`` were pruned before they could be queued."""

    after_cursor: int
    resumed_cursor: int
    detected_ms: int


@dataclass(frozen=True, slots=True)
class WebhookEndpoint:
    """A fleet's webhook: where to POST which kinds of its stream, and how far it got."""

    id: str
    fleet_id: str
    url: str
    kinds: tuple[StreamKind, ...]
    # The Standard Webhooks signing secret (``whsec_<base64>``). Held in clear because gp8
    # signs with it, like a box's LOGIN secret (docs/security.md); the API shows it once.
    secret: str
    created_ms: int
    updated_ms: int
    enabled: bool = True
    # The fleet's last stream cursor already turned into deliveries (or skipped): where the
    # delivery service goes on from, after a restart too.
    cursor: int = 0
    disabled_reason: str | None = None  # why gp8 disabled it (a receiver's 410 Gone)
    gap: StreamGap | None = None  # the last data gap, if any


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    """One stream entry for one webhook, its payload frozen when queued, sent until the
    receiver answers 2xx. ``id`` is the ``webhook-id`` header, the same on every attempt.
    Unique per (webhook_id, cursor): queueing the same entry twice keeps one delivery."""

    id: str
    fleet_id: str
    webhook_id: str
    cursor: int  # the stream entry's cursor
    kind: StreamKind
    payload: str  # the JSON body, exactly as signed and sent
    created_ms: int
    updated_ms: int
    # When it is (next) due; while an attempt runs, when it is due again should that attempt
    # never report (its process died). None once final.
    next_attempt_ms: int | None
    status: DeliveryStatus = DeliveryStatus.PENDING
    attempts: int = 0
    last_attempt_ms: int | None = None
    last_status_code: int | None = None
    last_error: str | None = None
    delivered_ms: int | None = None


# --- alert rules, the parked guard, theft cases (docs/alerts.md "Alerts", docs/theft.md) ----


class AlertState(StrEnum):
    """Where an alert is, as GET /v1/alerts filters it (derived from its fields)."""

    OPEN = "open"  # not acknowledged, not closed
    ACKNOWLEDGED = "acknowledged"  # a user acknowledged it; its condition still holds
    CLOSED = "closed"  # its condition cleared, or a user closed it


def alert_state(alert: Alert) -> AlertState:
    if alert.cleared_ms is not None:
        return AlertState.CLOSED
    return AlertState.OPEN if alert.acked_ms is None else AlertState.ACKNOWLEDGED


class AlertRuleType(StrEnum):
    BOX_ALARM = "box_alarm"  # alarms the box reports (events), dashboard warning lights
    GEOFENCE_ENTER = "geofence_enter"
    GEOFENCE_EXIT = "geofence_exit"
    OVERSPEED = "overspeed"
    BOX_OFFLINE = "box_offline"
    IGNITION_OFF_MOVEMENT = "ignition_off_movement"
    OUTSIDE_HOURS = "outside_hours"
    NO_BADGE = "no_badge"
    PARKED_GUARD = "parked_guard"  # raises suspected_theft


@dataclass(frozen=True, slots=True)
class AlertRule:
    """One rule of a fleet (GET /v1/alert-rules). Parameters not used by its type stay None;
    None also means "the type's default" (tracking/rules_logic.py names them)."""

    id: str
    fleet_id: str
    type: AlertRuleType
    name: str
    created_ms: int
    updated_ms: int
    enabled: bool = True
    severity: Severity = Severity.WARNING
    muted_vehicle_ids: tuple[str, ...] = ()  # vehicles this rule raises nothing for
    default: bool = False  # one of the rules a fleet starts with
    updated_by: str | None = None
    codes: tuple[str, ...] | None = None  # box_alarm: which alarms (event codes)
    geofence_ids: tuple[str, ...] | None = None  # fence rules: which fences (None: all)
    speed_limit_kmh: float | None = None  # overspeed: the fleet's limit (a fence's wins in it)
    min_duration_s: int | None = None  # overspeed, movement rules: how long before raising
    min_speed_kmh: float | None = None  # movement rules: what counts as moving
    offline_minutes: int | None = None  # box_offline
    schedule: GeofenceSchedule | None = None  # outside_hours: allowed hours (else the fences')
    radius_m: float | None = None  # parked_guard: movement beyond this from where it parked
    park_minutes: int | None = None  # parked_guard: stopped this long with ignition off: armed


@dataclass(frozen=True, slots=True)
class TrackingPolicy:
    """A fleet's driver badges (GET /v1/badge-policy) and whether its default rules exist."""

    fleet_id: str
    require_badge: bool = False  # a start without a recognised badge is suspect when parked
    badges: tuple[int, ...] = ()  # the recognised driver badges (empty: any badge counts)
    defaults_ms: int | None = None  # when the default rules were created (None: not yet)
    updated_ms: int = 0
    updated_by: str | None = None


class GuardStatus(StrEnum):
    DISARMED = "disarmed"
    ARMED = "armed"  # parked: watching for movement, alarms, a start without a badge
    TRIGGERED = "triggered"  # a suspected_theft alert is open


@dataclass(frozen=True, slots=True)
class GuardState:
    """A vehicle's parked guard (tracking/guard_logic.py). Saved compare-and-set on
    ``revision``, so the handler and a manager's disarm never overwrite each other."""

    fleet_id: str
    vehicle_id: str
    status: GuardStatus = GuardStatus.DISARMED
    since_ms: int = 0  # when ``status`` began (device time; server time for a manager's change)
    device_id: str | None = None
    lat: float | None = None  # armed: where it parked (the anchor); parked: where it stopped
    lon: float | None = None
    parked_ms: int | None = None  # device time it stopped with the ignition off
    held: bool = False  # disarmed by a manager: not armed again before the next start
    checked_ms: int = 0  # device time of the newest fix decided on
    alert_id: str | None = None  # the suspected_theft alert while triggered
    reason: str = ""  # why it is in ``status``
    revision: int = 0
    updated_ms: int = 0
    updated_by: str | None = None  # "system" or the key that changed it


class TheftCaseStatus(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


class TheftOutcome(StrEnum):
    RECOVERED = "recovered"
    NOT_RECOVERED = "not_recovered"
    FALSE_ALARM = "false_alarm"


@dataclass(frozen=True, slots=True)
class TheftCase:
    """A stolen vehicle being followed (docs/theft.md). Flat, so it travels on the stream."""

    id: str
    fleet_id: str
    vehicle_id: str
    opened_ms: int
    reported_ms: int  # when the theft was reported (the request's reported_at)
    started_ms: int  # the first suspicious record (the alert's), else reported_ms: the timeline
    status: TheftCaseStatus = TheftCaseStatus.OPEN
    device_id: str | None = None
    note: str = ""
    opened_by: str | None = None  # key id
    alert_id: str | None = None  # the suspected-theft alert it was opened from
    fast_interval_s: int = 10
    previous_interval_s: int | None = None  # restored on close
    interval_command_id: str | None = None
    immobilise_command_id: str | None = None
    restore_command_id: str | None = None
    outcome: TheftOutcome | None = None
    closed_ms: int | None = None
    closed_by: str | None = None
    close_note: str = ""
    hold_until_ms: int | None = None  # the legal hold ends then (None while open)
    updated_ms: int = 0


@dataclass(frozen=True, slots=True)
class LegalHold:
    """A vehicle's data kept beyond retention (telemetry.purge_before skips it) from
    ``from_ms`` until ``until_ms`` (None: until its theft case is closed, plus the hold)."""

    case_id: str
    fleet_id: str
    vehicle_id: str
    from_ms: int
    until_ms: int | None = None
