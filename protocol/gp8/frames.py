"""GP8 v1 messages as value objects (docs/protocol.md §3 to §5).

Every message is a frozen dataclass carrying the frame's sequence number, so tests read
``assert decoded == expected``. Position records are a NamedTuple instead: a box batch holds up
to 255 of them and a NamedTuple is built straight from ``struct.iter_unpack``'s tuples (in C, by
tuple.__new__) about six times faster than a frozen dataclass, which is what lets decoding reach
2,000,000 records/s on one core (bench/bench_decode.py). Fields keep the wire's integer units
(named in the field) so a round trip is exact; the properties give the physical values.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, IntFlag
from typing import NamedTuple


class MessageType(IntEnum):
    """The frame's type byte (docs/protocol.md §3)."""

    LOGIN = 0x01
    POSITION = 0x02
    EVENT = 0x03
    HEARTBEAT = 0x04
    COMMAND_RESULT = 0x05
    IDENT = 0x06
    CHALLENGE = 0x80
    LOGIN_RESULT = 0x81
    COMMAND = 0x82
    ACK = 0xA0
    NACK = 0xA1


class Model(IntEnum):
    GP8000 = 1
    GP8500 = 2


class RecordFlags(IntFlag):
    """Bit field of a position record's state (docs/protocol.md §4.1)."""

    FIX_VALID = 1 << 0
    IGNITION = 1 << 1
    DOORS_LOCKED = 1 << 2
    ENGINE_START_INHIBITED = 1 << 3
    EXTERNAL_POWER = 1 << 4
    # Set by the box on records it kept while offline and sends late.
    BUFFERED = 1 << 5


class WarningLight(IntFlag):
    """Dashboard warning lights read from the vehicle (docs/protocol.md §4.2)."""

    ENGINE = 1 << 0
    OIL_PRESSURE = 1 << 1
    BRAKE = 1 << 2
    BATTERY = 1 << 3
    COOLANT = 1 << 4
    TYRE_PRESSURE = 1 << 5
    ABS = 1 << 6
    AIRBAG = 1 << 7
    FUEL_LOW = 1 << 8
    SERVICE_DUE = 1 << 9
    ESP = 1 << 10
    EMISSIONS = 1 << 11


class EventCode(IntEnum):
    """Alarm and event codes (docs/protocol.md §4.3)."""

    SOS = 1
    POWER_CUT = 2
    POWER_RESTORED = 3
    BATTERY_LOW = 4
    TAMPER = 5
    GPS_JAMMING = 6
    GSM_JAMMING = 7
    TOWING = 8
    CRASH = 9
    HARSH_BRAKING = 10
    HARSH_ACCELERATION = 11
    HARSH_CORNERING = 12
    DASHBOARD_WARNING = 13
    IGNITION_ON = 14
    IGNITION_OFF = 15
    DRIVER_BADGE = 16
    OVERSPEED = 17


class LoginStatus(IntEnum):
    OK = 0
    UNKNOWN_DEVICE = 1
    BAD_PROOF = 2
    # The challenge was already used or has expired: a replayed LOGIN.
    REPLAY = 3
    UNSUPPORTED_VERSION = 4
    DEVICE_DISABLED = 5
    SERVER_BUSY = 6


class NackReason(IntEnum):
    BAD_CRC = 1
    MALFORMED = 2
    UNKNOWN_TYPE = 3
    NOT_AUTHENTICATED = 4
    INVALID_DATA = 5
    TOO_LARGE = 6
    UNSUPPORTED_VERSION = 7
    # Storage is unavailable: nothing was stored, resend later.
    SERVER_BUSY = 8
    IMEI_MISMATCH = 9


class CommandType(IntEnum):
    LOCK = 1
    UNLOCK = 2
    DISABLE_ENGINE_START = 3
    ENABLE_ENGINE_START = 4
    LOCATE = 5
    SET_REPORT_INTERVAL = 6
    REBOOT = 7


class CommandStatus(IntEnum):
    DONE = 0
    FAILED = 1
    UNSUPPORTED = 2


class CommandFailure(IntEnum):
    NONE = 0
    BUSY = 1
    INVALID_PARAMETER = 2
    HARDWARE_FAULT = 3
    DOOR_OPEN = 4
    NOT_WIRED = 5


class PositionRecord(NamedTuple):
    """One fix with the vehicle's state at that moment (docs/protocol.md §4.1)."""

    time_ms: int
    lat_e7: int
    lon_e7: int
    altitude_m: int
    speed_dkmh: int  # 0.1 km/h
    heading_ddeg: int  # 0.1 degree, 0..3599
    satellites: int
    hdop_d: int  # 0.1 unit
    flags: int  # RecordFlags
    odometer_m: int
    ext_power_mv: int
    battery_mv: int
    gsm_signal: int  # 3GPP CSQ 0..31, 99 unknown
    warnings: int  # WarningLight
    badge: int  # driver badge id, 0 = none presented

    @property
    def latitude(self) -> float:
        return self.lat_e7 / 1e7

    @property
    def longitude(self) -> float:
        return self.lon_e7 / 1e7

    @property
    def speed_kmh(self) -> float:
        return self.speed_dkmh / 10

    @property
    def heading_deg(self) -> float:
        return self.heading_ddeg / 10

    @property
    def hdop(self) -> float:
        return self.hdop_d / 10

    @property
    def fix_valid(self) -> bool:
        return bool(self.flags & RecordFlags.FIX_VALID)

    @property
    def ignition(self) -> bool:
        return bool(self.flags & RecordFlags.IGNITION)

    @property
    def doors_locked(self) -> bool:
        return bool(self.flags & RecordFlags.DOORS_LOCKED)

    @property
    def engine_start_inhibited(self) -> bool:
        return bool(self.flags & RecordFlags.ENGINE_START_INHIBITED)

    @property
    def driver_badge(self) -> int | None:
        return self.badge or None


# --- box → server -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Login:
    """First frame of a TCP session: who the box is and the proof it holds the secret."""

    seq: int
    imei: str  # 15 decimal digits
    model: Model
    firmware: tuple[int, int, int]
    proof: bytes  # HMAC-SHA256, see protocol/auth.py

    @property
    def firmware_version(self) -> str:
        return ".".join(map(str, self.firmware))


@dataclass(frozen=True, slots=True)
class Ident:
    """Who the box is, at the head of every MQTT uplink message (docs/protocol.md §7).

    LOGIN without the proof: over MQTT the broker has authenticated the box, and the gateway
    checks that this IMEI is the one in the topic.
    """

    seq: int
    imei: str  # 15 decimal digits
    model: Model
    firmware: tuple[int, int, int]

    @property
    def firmware_version(self) -> str:
        return ".".join(map(str, self.firmware))


@dataclass(frozen=True, slots=True)
class Position:
    """A batch of 1..255 position records, acknowledged as one."""

    seq: int
    records: tuple[PositionRecord, ...]


@dataclass(frozen=True, slots=True)
class Event:
    """An alarm or event with the position where it happened."""

    seq: int
    code: EventCode
    detail: int  # code-specific value, docs/protocol.md §4.3
    record: PositionRecord


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Keeps NAT mappings open and tells the server the link is alive."""

    seq: int


@dataclass(frozen=True, slots=True)
class CommandResult:
    """The box's answer to a COMMAND, correlated by the command's sequence number."""

    seq: int
    command_seq: int
    status: CommandStatus
    failure: CommandFailure
    state: int  # RecordFlags after execution (doors, engine-start inhibit)


# --- server → box -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Challenge:
    """Sent by the server on connect: the nonce the LOGIN proof must cover."""

    seq: int
    nonce: bytes  # 16 bytes
    server_time_ms: int


@dataclass(frozen=True, slots=True)
class LoginResult:
    seq: int
    status: LoginStatus
    server_time_ms: int


@dataclass(frozen=True, slots=True)
class Command:
    """An order to the box; ``seq`` is the command's own number, which the box dedupes on."""

    seq: int
    command: CommandType
    param: int


# --- both ways ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ack:
    seq: int
    acked_seq: int


@dataclass(frozen=True, slots=True)
class Nack:
    seq: int
    nacked_seq: int
    reason: NackReason


Message = (
    Login
    | Ident
    | Position
    | Event
    | Heartbeat
    | CommandResult
    | Challenge
    | LoginResult
    | Command
    | Ack
    | Nack
)
