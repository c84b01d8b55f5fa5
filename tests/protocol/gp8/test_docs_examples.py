"""docs/protocol.md against the code, so the specification cannot go stale.

Checked: every hex example decodes to the message the text describes and is exactly what the
encoder produces; the LOGIN example's proof is the documented HMAC; every enumeration table
matches its enum in both directions; the layout tables agree with the wire sizes; and the limits
quoted in the text are the code's.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from enum import Enum, IntFlag, StrEnum
from pathlib import Path

import pytest

from protocol.gp8 import (
    MAX_FRAME_SIZE,
    RECORD_SIZE,
    Ack,
    Challenge,
    Command,
    CommandFailure,
    CommandResult,
    CommandStatus,
    CommandType,
    Event,
    EventCode,
    FrameDecoder,
    Heartbeat,
    Ident,
    Login,
    LoginResult,
    LoginStatus,
    Message,
    MessageType,
    Model,
    Nack,
    NackReason,
    Position,
    PositionRecord,
    RecordFlags,
    RecordRejection,
    WarningLight,
    crc16,
    encode,
    login_proof,
)
from protocol.gp8.codec import HEADER_SIZE, RECORD
from protocol.gp8.validation import MAX_CLOCK_SKEW_MS, MIN_TIME_MS
from tests.protocol.gp8.cases import CASES

DOC_PATH = Path(__file__).resolve().parents[3] / "docs" / "protocol.md"
DOC = DOC_PATH.read_text(encoding="utf-8")

# --- what the examples describe (Appendix A) ---------------------------------------------------

SECRET = "gp8-example-secret"
NONCE = bytes.fromhex("5b1e7c0a9d3f6e2184c7a0f3d25e9b61")
IMEI = "356938035643809"
T0 = 1_736_929_800_000  # 2025-01-15T08:30:00Z
ON_THE_ROAD = RecordFlags.FIX_VALID | RecordFlags.IGNITION | RecordFlags.EXTERNAL_POWER

EIFFEL = PositionRecord(
    time_ms=T0,
    lat_e7=488_583_701,
    lon_e7=22_944_813,
    altitude_m=35,
    speed_dkmh=523,
    heading_ddeg=2715,
    satellites=9,
    hdop_d=11,
    flags=ON_THE_ROAD,
    odometer_m=123_456_789,
    ext_power_mv=12_600,
    battery_mv=4_100,
    gsm_signal=21,
    warnings=0,
    badge=0,
)
BRAKING = PositionRecord(
    time_ms=T0 + 72_500,  # 08:31:12.500
    lat_e7=488_612_334,
    lon_e7=22_887_019,
    altitude_m=41,
    speed_dkmh=187,
    heading_ddeg=2698,
    satellites=11,
    hdop_d=8,
    flags=ON_THE_ROAD,
    odometer_m=123_457_702,
    ext_power_mv=12_450,
    battery_mv=4_100,
    gsm_signal=24,
    warnings=0,
    badge=4_023_117,
)

EXPECTED: dict[str, Message] = {
    "heartbeat": Heartbeat(4),
    "challenge": Challenge(0, NONCE, T0),
    "login": Login(
        1, IMEI, Model.GP8500, (2, 4, 1), login_proof(SECRET, NONCE, IMEI, Model.GP8500)
    ),
    "login_result": LoginResult(1, LoginStatus.OK, T0 + 180),
    "position": Position(2, (EIFFEL,)),
    "ack": Ack(2, 2),
    "event": Event(3, EventCode.HARSH_BRAKING, 520, BRAKING),
    "nack": Nack(3, 3, NackReason.SERVER_BUSY),
    "command": Command(17, CommandType.SET_REPORT_INTERVAL, 30),
    "command_ack": Ack(5, 17),
    "command_result": CommandResult(6, 17, CommandStatus.DONE, CommandFailure.NONE, ON_THE_ROAD),
}
NOT_FRAMES = {"login-hmac-message"}

# --- parsing the document ------------------------------------------------------------------------

_BLOCK = re.compile(r"<!-- example: ([\w-]+) -->\n```text\n(.*?)```", re.S)
_TABLE = re.compile(r"<!-- (table|bits|layout): (\w+) -->\n((?:\|.*\n)+)")


def _hex_block(body: str) -> bytes:
    """The bytes of an annotated dump: on each line, the hex before the ``#`` comment."""
    return bytes.fromhex("".join(line.split("#", 1)[0] for line in body.splitlines()))


def examples() -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for name, body in _BLOCK.findall(DOC):
        assert name not in found, f"example {name!r} appears twice"
        found[name] = _hex_block(body)
    return found


def tables() -> dict[tuple[str, str], list[list[str]]]:
    """Marked tables as rows of cells, without the header and separator rows."""
    found: dict[tuple[str, str], list[list[str]]] = {}
    for kind, name, body in _TABLE.findall(DOC):
        rows = [
            [cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in body.splitlines()
        ]
        found[(kind, name)] = rows[2:]
    return found


def _code(cell: str) -> str | None:
    """``NAME`` from a cell holding exactly `NAME`, else None (reserved rows, prose)."""
    match = re.fullmatch(r"`(\w+)`", cell)
    return match.group(1) if match else None


EXAMPLES = examples()
TABLES = tables()

# --- examples -------------------------------------------------------------------------------------


def test_every_example_is_checked() -> None:
    assert set(EXAMPLES) == set(EXPECTED) | NOT_FRAMES


def test_the_examples_cover_every_tcp_message_type() -> None:
    # IDENT only travels over MQTT; its example belongs to §7.
    assert {type(m) for m in EXPECTED.values()} == {type(c.message) for c in CASES} - {Ident}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_decodes_to_the_documented_message(name: str) -> None:
    data = EXAMPLES[name]
    decoder = FrameDecoder()
    decoder.feed(data)
    assert decoder.next_frame() == EXPECTED[name]
    assert decoder.next_frame() is None and decoder.buffered == 0
    # And it is byte for byte what the encoder writes, CRC included.
    assert encode(EXPECTED[name]) == data


def test_login_example_proof_is_the_documented_hmac() -> None:
    message = EXAMPLES["login-hmac-message"]
    assert message == b"GP8v1-LOGIN" + NONCE + int(IMEI).to_bytes(8, "big") + bytes((Model.GP8500,))
    assert len(message) == 36  # as the text says
    login = EXPECTED["login"]
    assert isinstance(login, Login)
    assert hmac.new(SECRET.encode(), message, hashlib.sha256).digest() == login.proof
    # The proof in the dump is at frame offset HEADER_SIZE + 12 (§4.5).
    assert EXAMPLES["login"][HEADER_SIZE + 12 : HEADER_SIZE + 44] == login.proof


def test_inline_crc_example() -> None:
    match = re.search(r"computed over the 8 bytes\s+`([0-9a-f ]+)`\s+and is 0x([0-9A-F]{4})", DOC)
    assert match, "the §2.3 sentence giving the CRC input and value"
    data, crc = bytes.fromhex(match.group(1)), int(match.group(2), 16)
    assert crc16(data) == crc
    assert EXAMPLES["heartbeat"] == b"G8" + data + crc.to_bytes(2, "big")


def test_inline_heartbeat_in_appendix() -> None:
    match = re.search(r"\*\*A\.8 HEARTBEAT\*\*.*?`([0-9a-f ]+)`", DOC)
    assert match
    assert bytes.fromhex(match.group(1)) == EXAMPLES["heartbeat"]


# --- enumeration tables --------------------------------------------------------------------------

ENUM_TABLES: list[tuple[str, type[Enum]]] = [
    ("table", MessageType),
    ("table", Model),
    ("bits", RecordFlags),
    ("bits", WarningLight),
    ("table", EventCode),
    ("table", RecordRejection),
    ("table", LoginStatus),
    ("table", CommandType),
    ("table", CommandStatus),
    ("table", CommandFailure),
    ("table", NackReason),
]


def test_every_marked_table_is_checked() -> None:
    checked = {(kind, enum.__name__) for kind, enum in ENUM_TABLES}
    checked |= {key for key in TABLES if key[0] == "layout"}
    assert set(TABLES) == checked


@pytest.mark.parametrize(("kind", "enum"), ENUM_TABLES, ids=[e.__name__ for _, e in ENUM_TABLES])
def test_enum_table_matches_code(kind: str, enum: type[Enum]) -> None:
    documented: dict[str, object] = {}
    for cells in TABLES[(kind, enum.__name__)]:
        name = _code(cells[1])
        if name is None:
            continue  # a reserved range
        if kind == "bits":
            value: object = 1 << int(cells[0])
        elif issubclass(enum, StrEnum):
            value = cells[0]
        else:
            value = int(cells[0], 0)
        assert name not in documented, f"{name} documented twice"
        documented[name] = value
    actual = {member.name: member.value for member in enum}
    assert documented == actual
    if issubclass(enum, IntFlag):
        assert all(v & (v - 1) == 0 for v in actual.values())  # one bit each


def test_message_type_payload_sizes() -> None:
    sizes = {MessageType(case.frame[5]).name: len(case.frame) - 12 for case in CASES}
    checked = 0
    for cells in TABLES[("table", "MessageType")]:
        name, size = _code(cells[1]), cells[3]
        if size.isdigit():
            assert int(size) == sizes[str(name)], name
            checked += 1
    assert checked == len(MessageType) - 1  # every type but POSITION has a fixed size
    assert f"1 + 45 \N{MULTIPLICATION SIGN} count (46 … {1 + 255 * RECORD_SIZE:,})" in DOC


# --- layout tables -------------------------------------------------------------------------------

_TYPE_SIZES = {"u8": 1, "u16": 2, "u32": 4, "u64": 8, "i16": 2, "i32": 4, "record": RECORD_SIZE}
_STRUCT_CODES = {"u8": "B", "u16": "H", "u32": "I", "u64": "Q", "i16": "h", "i32": "i"}


def _layout(name: str) -> list[tuple[int, int, str, str]]:
    """(offset, size, type, field) rows, checked to be contiguous from offset 0."""
    rows: list[tuple[int, int, str, str]] = []
    expected_offset = 0
    for cells in TABLES[("layout", name)]:
        offset, size, type_, field = cells[0], cells[1], cells[2], _code(cells[3])
        assert field is not None, cells
        if not size.isdigit():  # the frame's payload: "n"
            return rows
        assert int(offset) == expected_offset, f"{name}.{field} at {offset}"
        bytes_match = re.fullmatch(r"bytes\[(\d+)\]", type_)
        type_size = int(bytes_match.group(1)) if bytes_match else _TYPE_SIZES[type_]
        assert type_size == int(size), f"{name}.{field}: {type_} is not {size} bytes"
        rows.append((int(offset), int(size), type_, field))
        expected_offset += int(size)
    return rows


def test_record_layout_is_the_codec_record() -> None:
    rows = _layout("PositionRecord")
    assert [field for *_, field in rows] == list(PositionRecord._fields)
    assert sum(size for _, size, _, _ in rows) == RECORD_SIZE == 45
    assert ">" + "".join(_STRUCT_CODES[type_] for _, _, type_, _ in rows) == RECORD.format


def test_frame_layout() -> None:
    rows = _layout("frame")
    assert [field for *_, field in rows] == ["magic", "length", "version", "type", "seq"]
    assert sum(size for _, size, _, _ in rows) == HEADER_SIZE


@pytest.mark.parametrize(
    "name",
    [
        "LOGIN",
        "EVENT",
        "COMMAND_RESULT",
        "IDENT",
        "CHALLENGE",
        "LOGIN_RESULT",
        "COMMAND",
        "ACK",
        "NACK",
    ],
)
def test_payload_layout_sizes(name: str) -> None:
    total = sum(size for _, size, _, _ in _layout(name))
    frames = [case.frame for case in CASES if case.frame[5] == MessageType[name]]
    assert frames
    assert all(len(frame) - 12 == total for frame in frames)
    # The section heading repeats type byte and size: "### 4.5 LOGIN (0x01), box → server, 44 bytes"
    heading = rf"^### 4\.\d+ {name} \(0x{MessageType[name]:02X}\), [^,]+, {total} bytes$"
    assert re.search(heading, DOC, re.M), heading


# --- limits quoted in the text -----------------------------------------------------------------


def test_quoted_limits_are_the_code_limits() -> None:
    largest = HEADER_SIZE + 1 + 255 * RECORD_SIZE + 2
    for quoted in [
        f"{MAX_FRAME_SIZE:,} bytes",
        f"{largest:,} bytes",
        f"`length` ≤ {MAX_FRAME_SIZE - 4:,}",
        f"({MIN_TIME_MS:,})",
        f"({MAX_CLOCK_SKEW_MS:,} ms)",
        "check (CRC of the ASCII bytes `123456789`) | **0x29B1**",
    ]:
        assert quoted in DOC, quoted
    assert crc16(b"123456789") == 0x29B1
