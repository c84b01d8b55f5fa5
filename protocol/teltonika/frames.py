"""Teltonika frames as value objects (docs/teltonika.md; Teltonika's "Data Sending Protocols").

Box → server: the opening `Imei`, `AvlPacket`s of records (Codec 8, 8 Extended, 16) and Codec 12
`Response`s. Server → box: `ImeiReply` (accept or refuse the box), `RecordsAck` (how many records
of the last packet were accepted) and Codec 12 `Command`s. Codec 12 frames can go either way on
the wire; which one a side accepts is the session's business, not the codec's.

Records are NamedTuples, like GP8's, for the same reason (a packet holds dozens, built straight
from ``struct`` tuples). IO elements are kept as the wire groups them, by value size, so that a
packet re-encodes to the same bytes: ``io1``/``io2``/``io4``/``io8`` are ``(id, value)`` pairs of
unsigned integers, ``iox`` Codec 8 Extended's variable-size ``(id, bytes)`` pairs. Whether a value
is signed, scaled or an enumeration depends on the device and the id: that is the device
profile's job (gateway/adapters/teltonika.py), not the codec's.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple


class Codec(IntEnum):
    """The codec id byte after the data length."""

    CODEC_8 = 0x08
    CODEC_8E = 0x8E  # Codec 8 Extended: 2-byte ids and counts, variable-size (NX) elements
    CODEC_16 = 0x10  # 2-byte ids, 1-byte counts, a generation type per record
    CODEC_12 = 0x0C  # text commands and responses (GPRS commands)


class Priority(IntEnum):
    LOW = 0
    HIGH = 1
    PANIC = 2


class Generation(IntEnum):
    """Codec 16: why the record was generated."""

    ON_EXIT = 0
    ON_ENTRANCE = 1
    ON_BOTH = 2
    RESERVED = 3
    HYSTERESIS = 4
    ON_CHANGE = 5
    EVENTUAL = 6
    PERIODICAL = 7


class MessageType(IntEnum):
    """Codec 12: the type byte."""

    COMMAND = 0x05  # server → box
    RESPONSE = 0x06  # box → server


IoPairs = tuple[tuple[int, int], ...]
IoVariable = tuple[tuple[int, bytes], ...]


class AvlRecord(NamedTuple):
    """One record: a fix and the IO elements of that moment. Longitude comes first on the wire."""

    time_ms: int  # milliseconds since 1970-01-01T00:00:00Z, UTC
    priority: int  # Priority; kept as sent (a value outside the table is not our business)
    lon_e7: int  # 1e-7 degree, east positive (signed, two's complement)
    lat_e7: int  # 1e-7 degree, north positive
    altitude_m: int  # metres above sea level (signed: below sea level happens)
    angle_deg: int  # course, degrees clockwise from north
    satellites: int  # satellites in use; 0: no fix, the position repeats the last valid one
    speed_kmh: int  # km/h, from GNSS
    event_id: int  # the IO id that triggered the record, 0 when periodic
    io1: IoPairs = ()  # (id, value) of 1-byte elements
    io2: IoPairs = ()
    io4: IoPairs = ()
    io8: IoPairs = ()
    iox: IoVariable = ()  # Codec 8 Extended only: (id, raw bytes) of variable-size elements
    generation: int | None = None  # Codec 16 only: Generation

    @property
    def longitude(self) -> float:
        return self.lon_e7 / 1e7

    @property
    def latitude(self) -> float:
        return self.lat_e7 / 1e7

    @property
    def io(self) -> dict[int, int | bytes]:
        """Every IO element by id (fixed-size ones as unsigned integers, NX ones as bytes)."""
        out: dict[int, int | bytes] = {}
        for group in (self.io1, self.io2, self.io4, self.io8):
            out.update(group)
        out.update(self.iox)
        return out


# --- box → server -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Imei:
    """The first frame of a connection: who the box says it is (no proof: see docs/security.md)."""

    imei: str  # ASCII digits, 15 for a real IMEI


@dataclass(frozen=True, slots=True)
class AvlPacket:
    """1..255 records, acknowledged together by their count."""

    codec: Codec
    records: tuple[AvlRecord, ...]


@dataclass(frozen=True, slots=True)
class Response:
    """Codec 12, type 06: the box's answer to the last command, as text."""

    text: str


# --- server → box -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImeiReply:
    """01: the server takes data from this box; 00: it does not (and closes)."""

    accepted: bool


@dataclass(frozen=True, slots=True)
class RecordsAck:
    """Four bytes: how many records of the last packet the server accepted.

    A count that is not the packet's makes the box send those records again.
    """

    count: int


@dataclass(frozen=True, slots=True)
class Command:
    """Codec 12, type 05: a text command (``getinfo``, ``setdigout 1``, ...)."""

    text: str


Frame = Imei | AvlPacket | Response | ImeiReply | RecordsAck | Command
