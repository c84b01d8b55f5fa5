"""The one table of (message, expected frame) cases that both encode and decode tests use.

Every message type appears, with ordinary values and with the extremes of each field's wire
range. Payloads are written out field by field in hex, in layout order (docs/protocol.md §4), and
framed by the independent reference implementation, never by the codec under test.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.gp8 import (
    Ack,
    Challenge,
    Command,
    CommandFailure,
    CommandResult,
    CommandStatus,
    CommandType,
    Event,
    EventCode,
    Heartbeat,
    Ident,
    Login,
    LoginResult,
    LoginStatus,
    Message,
    Model,
    Nack,
    NackReason,
    Position,
    PositionRecord,
    RecordFlags,
    WarningLight,
)
from tests.protocol.gp8.reference import frame, hexbytes


@dataclass(frozen=True)
class Case:
    id: str
    message: Message
    frame: bytes


# --- records --------------------------------------------------------------------------------

PARIS = PositionRecord(
    time_ms=1_736_929_800_000,  # 2025-01-15T08:30:00Z
    lat_e7=488_583_701,
    lon_e7=22_944_813,
    altitude_m=35,
    speed_dkmh=523,
    heading_ddeg=2715,
    satellites=9,
    hdop_d=11,
    flags=RecordFlags.FIX_VALID | RecordFlags.IGNITION | RecordFlags.EXTERNAL_POWER,
    odometer_m=123_456_789,
    ext_power_mv=12_600,
    battery_mv=4_100,
    gsm_signal=21,
    warnings=0,
    badge=0,
)
PARIS_HEX = hexbytes(
    "0000019469156f40",  # time_ms
    "1d1f3215",  # lat_e7
    "015e1c2d",  # lon_e7
    "0023",  # altitude_m
    "020b",  # speed_dkmh
    "0a9b",  # heading_ddeg
    "09",  # satellites
    "0b",  # hdop_d
    "0013",  # flags
    "075bcd15",  # odometer_m
    "3138",  # ext_power_mv
    "1004",  # battery_mv
    "15",  # gsm_signal
    "0000",  # warnings
    "0000000000000000",  # badge
)

# Southern and western hemispheres, below sea level, a buffered record with a badge and lights.
RIO = PositionRecord(
    time_ms=1_736_929_798_250,
    lat_e7=-229_519_000,
    lon_e7=-432_105_000,
    altitude_m=-28,
    speed_dkmh=0,
    heading_ddeg=0,
    satellites=4,
    hdop_d=35,
    flags=RecordFlags.FIX_VALID
    | RecordFlags.DOORS_LOCKED
    | RecordFlags.ENGINE_START_INHIBITED
    | RecordFlags.BUFFERED,
    odometer_m=987_654,
    ext_power_mv=0,
    battery_mv=3_650,
    gsm_signal=99,
    warnings=WarningLight.ENGINE | WarningLight.OIL_PRESSURE | WarningLight.EMISSIONS,
    badge=0x0123_4567_89AB_CDEF,
)
RIO_HEX = hexbytes(
    "000001946915686a",  # time_ms
    "f251d168",  # lat_e7
    "e63e99d8",  # lon_e7
    "ffe4",  # altitude_m
    "0000",  # speed_dkmh
    "0000",  # heading_ddeg
    "04",  # satellites
    "23",  # hdop_d
    "002d",  # flags
    "000f1206",  # odometer_m
    "0000",  # ext_power_mv
    "0e42",  # battery_mv
    "63",  # gsm_signal
    "0803",  # warnings
    "0123456789abcdef",  # badge
)

# The bottom and top of every field's wire range.
LOWEST = PositionRecord(0, -(2**31), -(2**31), -(2**15), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
LOWEST_HEX = hexbytes(
    "0000000000000000", "80000000", "80000000", "8000", "0000", "0000", "00", "00",
    "0000", "00000000", "0000", "0000", "00", "0000", "0000000000000000",
)  # fmt: skip
HIGHEST = PositionRecord(
    2**64 - 1, 2**31 - 1, 2**31 - 1, 2**15 - 1, 0xFFFF, 0xFFFF, 0xFF, 0xFF, 0xFFFF,
    2**32 - 1, 0xFFFF, 0xFFFF, 0xFF, 0xFFFF, 2**64 - 1,
)  # fmt: skip
HIGHEST_HEX = hexbytes(
    "ffffffffffffffff", "7fffffff", "7fffffff", "7fff", "ffff", "ffff", "ff", "ff",
    "ffff", "ffffffff", "ffff", "ffff", "ff", "ffff", "ffffffffffffffff",
)  # fmt: skip


def _paris_at(i: int) -> PositionRecord:
    return PARIS._replace(time_ms=PARIS.time_ms + i * 1000)


def _paris_hex_at(i: int) -> bytes:
    return (PARIS.time_ms + i * 1000).to_bytes(8, "big") + PARIS_HEX[8:]


IMEI = "356938035643809"
IMEI_HEX = "000144a21cd245a1"  # 356938035643809 as u64
PROOF = bytes(range(32))
NONCE = bytes(range(0xF0, 0x100))

# --- the table --------------------------------------------------------------------------------

CASES: list[Case] = [
    # box → server
    Case(
        "login",
        Login(1, IMEI, Model.GP8500, (2, 4, 1), PROOF),
        frame(0x01, 1, hexbytes(IMEI_HEX, "02", "02", "04", "01", PROOF.hex())),
    ),
    Case(
        "login_lowest",
        Login(0, "000000000000000", Model.GP8000, (0, 0, 0), b"\x00" * 32),
        frame(0x01, 0, hexbytes("0000000000000000", "01", "000000", "00" * 32)),
    ),
    Case(
        "login_highest",
        Login(0xFFFF_FFFF, "999999999999999", Model.GP8000, (255, 255, 255), b"\xff" * 32),
        frame(0x01, 0xFFFF_FFFF, hexbytes("00038d7ea4c67fff", "01", "ffffff", "ff" * 32)),
    ),
    Case("position_1", Position(2, (PARIS,)), frame(0x02, 2, b"\x01" + PARIS_HEX)),
    Case(
        "position_extremes",
        Position(7, (PARIS, RIO, LOWEST, HIGHEST)),
        frame(0x02, 7, b"\x04" + PARIS_HEX + RIO_HEX + LOWEST_HEX + HIGHEST_HEX),
    ),
    Case(
        "position_255",
        Position(9, tuple(_paris_at(i) for i in range(255))),
        frame(0x02, 9, b"\xff" + b"".join(_paris_hex_at(i) for i in range(255))),
    ),
    Case(
        "event",
        Event(3, EventCode.HARSH_BRAKING, 520, RIO),
        frame(0x03, 3, hexbytes("000a", "00000208") + RIO_HEX),
    ),
    Case(
        "event_highest",
        Event(0xFFFF_FFFF, EventCode.OVERSPEED, 0xFFFF_FFFF, HIGHEST),
        frame(0x03, 0xFFFF_FFFF, hexbytes("0011", "ffffffff") + HIGHEST_HEX),
    ),
    Case("heartbeat", Heartbeat(4), frame(0x04, 4, b"")),
    Case(
        "command_result",
        CommandResult(
            6,
            17,
            CommandStatus.DONE,
            CommandFailure.NONE,
            RecordFlags.DOORS_LOCKED | RecordFlags.EXTERNAL_POWER,
        ),
        frame(0x05, 6, hexbytes("00000011", "00", "00", "0014")),
    ),
    Case(
        "command_result_failed",
        CommandResult(7, 0xFFFF_FFFF, CommandStatus.FAILED, CommandFailure.NOT_WIRED, 0xFFFF),
        frame(0x05, 7, hexbytes("ffffffff", "01", "05", "ffff")),
    ),
    Case(
        "ident",
        Ident(8, IMEI, Model.GP8500, (2, 4, 1)),
        frame(0x06, 8, hexbytes(IMEI_HEX, "02", "02", "04", "01")),
    ),
    # server → box
    Case(
        "challenge",
        Challenge(0, NONCE, 1_736_929_800_000),
        frame(0x80, 0, hexbytes(NONCE.hex(), "0000019469156f40")),
    ),
    Case(
        "login_result",
        LoginResult(1, LoginStatus.OK, 1_736_929_800_250),
        frame(0x81, 1, hexbytes("00", "000001946915703a")),
    ),
    Case(
        "login_result_busy",
        LoginResult(1, LoginStatus.SERVER_BUSY, 2**64 - 1),
        frame(0x81, 1, hexbytes("06", "ffffffffffffffff")),
    ),
    Case(
        "command",
        Command(17, CommandType.SET_REPORT_INTERVAL, 30),
        frame(0x82, 17, hexbytes("06", "0000001e")),
    ),
    Case(
        "command_reboot",
        Command(0xFFFF_FFFF, CommandType.REBOOT, 0),
        frame(0x82, 0xFFFF_FFFF, hexbytes("07", "00000000")),
    ),
    # both ways
    Case("ack", Ack(2, 2), frame(0xA0, 2, hexbytes("00000002"))),
    Case("ack_wrapped", Ack(0, 0xFFFF_FFFF), frame(0xA0, 0, hexbytes("ffffffff"))),
    Case(
        "nack",
        Nack(3, 3, NackReason.SERVER_BUSY),
        frame(0xA1, 3, hexbytes("00000003", "08")),
    ),
    Case(
        "nack_imei_mismatch",
        Nack(0xFFFF_FFFF, 0, NackReason.IMEI_MISMATCH),
        frame(0xA1, 0xFFFF_FFFF, hexbytes("00000000", "09")),
    ),
]

CASE_IDS = [case.id for case in CASES]
CASES_BY_ID = {case.id: case for case in CASES}
