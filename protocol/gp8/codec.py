"""GP8 v1 framing: a streaming decoder and an encoder (docs/protocol.md §2).

Strategy: the decoder keeps one receive buffer and a read offset. ``feed`` only appends and never
raises. ``next_frame`` implements the reader contract (as h11's readers do):

* it returns a decoded message and consumes its bytes,
* it returns ``None`` when the buffer holds no complete frame yet ("need more bytes"),
* it raises a :class:`~protocol.errors.FrameError` for malformed input, *after* skipping the bad
  bytes, so the caller counts the error and simply calls it again.

Resynchronisation: everything before a start marker is garbage. A header whose length is
impossible, or a frame whose CRC does not match, costs exactly one byte (the first marker byte),
because a real frame may start inside what we mistook for one. A frame with a good CRC but an
unknown type, version or payload layout is skipped whole: its boundaries are trustworthy.

Payload parsing and serialisation are dispatched by table on the message type.
"""

from __future__ import annotations

import functools
import heapq
import struct
from binascii import crc_hqx
from collections.abc import Callable, Iterator
from typing import Any

from protocol.gp8.crc import CRC_INIT, WIDE_FROM, crc16, crc16_wide
from protocol.gp8.errors import (
    BadCrc,
    BadLength,
    EncodeError,
    FrameError,
    FrameTooLarge,
    Garbage,
    MalformedPayload,
    UnknownMessageType,
    UnsupportedVersion,
)
from protocol.gp8.frames import (
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
    MessageType,
    Model,
    Nack,
    NackReason,
    Position,
    PositionRecord,
)

VERSION = 1
MAGIC = b"G8"
# magic(2) length(2) version(1) type(1) seq(4)
_HEADER = struct.Struct(">2sHBBI")
HEADER_SIZE = _HEADER.size
CRC_SIZE = 2
# The length field counts every byte after itself: version, type, seq, payload and CRC.
MIN_LENGTH = 1 + 1 + 4 + CRC_SIZE
# Largest whole frame we accept. A full 255-record batch is 11,488 bytes; 16 KiB leaves room
# for that and bounds what one connection can make us hold: with 10,000 boxes connected the
# receive buffers stay under 10,000 x 2 x 16 KiB ≈ 330 MiB even if every box misbehaves.
MAX_FRAME_SIZE = 16 * 1024
MAX_RECORDS_PER_FRAME = 255  # the count is one byte
MAX_SEQ = 0xFFFF_FFFF

RECORD = struct.Struct(">QiihHHBBHIHHBHQ")
RECORD_SIZE = RECORD.size  # 45
_IMEI_MAX = 999_999_999_999_999

_LOGIN = struct.Struct(">QBBBB32s")
_IDENT = struct.Struct(">QBBBB")
_EVENT_HEAD = struct.Struct(">HI")
_COMMAND_RESULT = struct.Struct(">IBBH")
_CHALLENGE = struct.Struct(">16sQ")
_LOGIN_RESULT = struct.Struct(">BQ")
_COMMAND = struct.Struct(">BI")
_ACK = struct.Struct(">I")
_NACK = struct.Struct(">IB")

# A record straight from struct's tuple, in C: PositionRecord._make is a Python function, and
# decoding a big frame is mostly this call repeated (the length is struct's, always 15).
_make_record = functools.partial(tuple.__new__, PositionRecord)


# --- payload parsers: payload bytes -> message (raise ValueError/struct.error on bad layout) ---

Payload = bytes | bytearray  # the decoder hands over a bytearray copy of the frame's payload


def _exact(s: struct.Struct, payload: Payload) -> tuple[Any, ...]:
    if len(payload) != s.size:
        raise ValueError(f"payload is {len(payload)} bytes, expected {s.size}")
    return s.unpack(payload)


def _parse_login(seq: int, payload: Payload) -> Login:
    imei, model, major, minor, patch, proof = _exact(_LOGIN, payload)
    if imei > _IMEI_MAX:
        raise ValueError("IMEI has more than 15 digits")
    return Login(seq, f"{imei:015d}", Model(model), (major, minor, patch), proof)


def _parse_ident(seq: int, payload: Payload) -> Ident:
    imei, model, major, minor, patch = _exact(_IDENT, payload)
    if imei > _IMEI_MAX:
        raise ValueError("IMEI has more than 15 digits")
    return Ident(seq, f"{imei:015d}", Model(model), (major, minor, patch))


def _parse_position(seq: int, payload: Payload) -> Position:
    if not payload:
        raise ValueError("empty POSITION payload")
    count = payload[0]
    if count == 0:
        raise ValueError("POSITION with no records")
    if len(payload) != 1 + count * RECORD_SIZE:
        raise ValueError(f"POSITION announces {count} records in {len(payload) - 1} bytes")
    # The hot path: one Struct call for the frame, from the payload itself (no payload[1:]).
    if count == 1:
        return Position(seq, (_make_record(RECORD.unpack_from(payload, 1)),))
    return Position(seq, tuple(map(_make_record, RECORD.iter_unpack(memoryview(payload)[1:]))))


def _parse_event(seq: int, payload: Payload) -> Event:
    if len(payload) != _EVENT_HEAD.size + RECORD_SIZE:
        raise ValueError("EVENT payload must be 51 bytes")
    code, detail = _EVENT_HEAD.unpack_from(payload)
    return Event(seq, EventCode(code), detail, _make_record(RECORD.unpack_from(payload, 6)))


def _parse_heartbeat(seq: int, payload: Payload) -> Heartbeat:
    if payload:
        raise ValueError("HEARTBEAT has no payload")
    return Heartbeat(seq)


def _parse_command_result(seq: int, payload: Payload) -> CommandResult:
    command_seq, status, failure, state = _exact(_COMMAND_RESULT, payload)
    return CommandResult(seq, command_seq, CommandStatus(status), CommandFailure(failure), state)


def _parse_challenge(seq: int, payload: Payload) -> Challenge:
    nonce, server_time = _exact(_CHALLENGE, payload)
    return Challenge(seq, nonce, server_time)


def _parse_login_result(seq: int, payload: Payload) -> LoginResult:
    status, server_time = _exact(_LOGIN_RESULT, payload)
    return LoginResult(seq, LoginStatus(status), server_time)


def _parse_command(seq: int, payload: Payload) -> Command:
    command, param = _exact(_COMMAND, payload)
    return Command(seq, CommandType(command), param)


def _parse_ack(seq: int, payload: Payload) -> Ack:
    (acked,) = _exact(_ACK, payload)
    return Ack(seq, acked)


def _parse_nack(seq: int, payload: Payload) -> Nack:
    nacked, reason = _exact(_NACK, payload)
    return Nack(seq, nacked, NackReason(reason))


# --- payload serialisers: message -> payload bytes --------------------------------------------
# Enum fields go through their enum so that a value the decoder would reject (an event code 99)
# fails here, as an EncodeError: whatever encode() accepts, FrameDecoder decodes back equal.


def _pack_record(record: PositionRecord) -> bytes:
    return RECORD.pack(*record)


def _serialize_login(m: Login) -> bytes:
    # isascii: str.isdigit() also accepts "²" and non-Latin digits, which int() rejects or maps
    # to a different number.
    if not (len(m.imei) == 15 and m.imei.isascii() and m.imei.isdigit()):
        raise EncodeError("IMEI must be 15 ASCII digits")
    if len(m.proof) != 32:
        raise EncodeError("proof must be 32 bytes")
    return _LOGIN.pack(int(m.imei), Model(m.model), *m.firmware, m.proof)


def _serialize_ident(m: Ident) -> bytes:
    if not (len(m.imei) == 15 and m.imei.isascii() and m.imei.isdigit()):
        raise EncodeError("IMEI must be 15 ASCII digits")
    return _IDENT.pack(int(m.imei), Model(m.model), *m.firmware)


def _serialize_position(m: Position) -> bytes:
    if not 1 <= len(m.records) <= MAX_RECORDS_PER_FRAME:
        raise EncodeError(f"a POSITION carries 1..{MAX_RECORDS_PER_FRAME} records")
    return bytes((len(m.records),)) + b"".join(map(_pack_record, m.records))


def _serialize_event(m: Event) -> bytes:
    return _EVENT_HEAD.pack(EventCode(m.code), m.detail) + _pack_record(m.record)


def _serialize_heartbeat(m: Heartbeat) -> bytes:
    return b""


def _serialize_command_result(m: CommandResult) -> bytes:
    return _COMMAND_RESULT.pack(
        m.command_seq, CommandStatus(m.status), CommandFailure(m.failure), m.state
    )


def _serialize_challenge(m: Challenge) -> bytes:
    if len(m.nonce) != 16:
        raise EncodeError("nonce must be 16 bytes")
    return _CHALLENGE.pack(m.nonce, m.server_time_ms)


def _serialize_login_result(m: LoginResult) -> bytes:
    return _LOGIN_RESULT.pack(LoginStatus(m.status), m.server_time_ms)


def _serialize_command(m: Command) -> bytes:
    return _COMMAND.pack(CommandType(m.command), m.param)


def _serialize_ack(m: Ack) -> bytes:
    return _ACK.pack(m.acked_seq)


def _serialize_nack(m: Nack) -> bytes:
    return _NACK.pack(m.nacked_seq, NackReason(m.reason))


Parser = Callable[[int, Payload], Message]
Serializer = Callable[[Any], bytes]

# The one table the codec dispatches on: message type → (class, parser, serialiser).
MESSAGES: dict[MessageType, tuple[type[Any], Parser, Serializer]] = {
    MessageType.LOGIN: (Login, _parse_login, _serialize_login),
    MessageType.POSITION: (Position, _parse_position, _serialize_position),
    MessageType.EVENT: (Event, _parse_event, _serialize_event),
    MessageType.HEARTBEAT: (Heartbeat, _parse_heartbeat, _serialize_heartbeat),
    MessageType.COMMAND_RESULT: (CommandResult, _parse_command_result, _serialize_command_result),
    MessageType.IDENT: (Ident, _parse_ident, _serialize_ident),
    MessageType.CHALLENGE: (Challenge, _parse_challenge, _serialize_challenge),
    MessageType.LOGIN_RESULT: (LoginResult, _parse_login_result, _serialize_login_result),
    MessageType.COMMAND: (Command, _parse_command, _serialize_command),
    MessageType.ACK: (Ack, _parse_ack, _serialize_ack),
    MessageType.NACK: (Nack, _parse_nack, _serialize_nack),
}
_PARSERS: dict[int, Parser] = {int(t): p for t, (_, p, _) in MESSAGES.items()}
_SERIALIZERS: dict[type[Any], tuple[int, Serializer]] = {
    cls: (int(t), s) for t, (cls, _, s) in MESSAGES.items()
}


def encode(message: Message) -> bytes:
    """The complete frame for ``message``. Raises EncodeError for out-of-range fields."""
    try:
        type_, serialize = _SERIALIZERS[type(message)]
    except KeyError:
        raise EncodeError(f"not a GP8 message: {type(message).__name__}") from None
    try:
        payload = serialize(message)
        length = MIN_LENGTH + len(payload)
        if HEADER_SIZE + len(payload) + CRC_SIZE > MAX_FRAME_SIZE:
            raise EncodeError(f"frame of {length + 4} bytes exceeds MAX_FRAME_SIZE")
        head = _HEADER.pack(MAGIC, length, VERSION, type_, message.seq)
    except (struct.error, ValueError) as exc:  # ValueError: a value outside its enum
        raise EncodeError(str(exc)) from exc
    body = head + payload
    return body + crc16(memoryview(body)[2:]).to_bytes(2, "big")


class FrameDecoder:
    """Streaming GP8 decoder: feed it bytes as they arrive, pull messages out.

    Memory is bounded: once ``next_frame`` has returned ``None`` the decoder holds less than
    ``max_frame_size`` bytes, whatever it was fed, because garbage is dropped as it is scanned.
    """

    def __init__(self, max_frame_size: int = MAX_FRAME_SIZE) -> None:
        self.max_frame_size = max_frame_size
        self._buf = bytearray()
        self._pos = 0
        self.garbage_bytes = 0  # bytes skipped while resynchronising, for metrics
        # The search for a frame hidden inside an incomplete one, kept across reads so that a
        # trickle costs linear time (a rescan per read made one byte per read quadratic).
        # Offsets are relative to the head of the frame waited on, so compaction keeps them.
        self._scan_head = -1  # self._pos the state below belongs to; -1: none
        self._scan_from = 0  # start markers before this offset are already classified
        # Markers whose frame was still incomplete: (offset where it ends, offset of marker).
        self._scan_waiting: list[tuple[int, int]] = []

    @property
    def buffered(self) -> int:
        """Bytes received but not yet consumed."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes. Never raises."""
        if self._pos and self._pos >= len(self._buf) // 2:
            # Compact only when at least half is consumed, so the copy is amortised O(1).
            del self._buf[: self._pos]
            if self._scan_head >= 0:
                self._scan_head -= self._pos
            self._pos = 0
        self._buf += data

    def _skip(self, n: int) -> None:
        self._scan_head = -1  # a new head: the hidden-frame search starts over
        self._pos += n
        if self._pos >= len(self._buf):
            self._buf.clear()
            self._pos = 0

    def next_frame(self) -> Message | None:
        """The next message, or None for "need more bytes"; raises FrameError on bad input."""
        buf, pos = self._buf, self._pos
        end = len(buf)
        if end - pos < 2 or buf[pos] != 0x47 or buf[pos + 1] != 0x38:
            start = buf.find(MAGIC, pos)
            if start < 0:
                # Keep a trailing "G": it may be the first half of a marker still in flight.
                keep = 1 if end > pos and buf[end - 1] == 0x47 else 0
                skipped = end - pos - keep
                self._skip(skipped)
                if skipped:
                    self.garbage_bytes += skipped
                    raise Garbage(f"skipped {skipped} bytes of garbage")
                return None
            if start > pos:
                self._skip(start - pos)
                self.garbage_bytes += start - pos
                raise Garbage(f"skipped {start - pos} bytes of garbage")
        if end - pos < HEADER_SIZE:
            return None
        _, length, version, type_, seq = _HEADER.unpack_from(buf, pos)
        if length < MIN_LENGTH:
            self._skip(1)
            raise BadLength(f"length {length} is below the minimum {MIN_LENGTH}", seq=seq)
        total = 4 + length
        if total > self.max_frame_size:
            self._skip(1)
            raise FrameTooLarge(f"frame of {total} bytes exceeds {self.max_frame_size}", seq=seq)
        if end - pos < total:
            hidden = self._complete_frame_inside(pos, end)
            if hidden is None:
                return None
            # A whole, CRC-valid frame starts inside what we were waiting on, so what we were
            # waiting on was line noise with a "G8" in it: without this, a box that waits for
            # its ACK before sending more would stall until a timeout.
            self._skip(hidden - pos)
            self.garbage_bytes += hidden - pos
            raise Garbage(f"skipped {hidden - pos} bytes: a false start marker", seq=None)
        # Covering the CRC field too: a frame is intact when the CRC of it all is 0 (crc.py).
        # crc16's choice of implementation made inline: its call was a fifth of the cost of a
        # 1-record frame. A small frame is copied (cheaper than making a view); no view is
        # kept, as a bytearray with one cannot be resized.
        if total - 2 < WIDE_FROM:
            bad_crc = crc_hqx(buf[pos + 2 : pos + total], CRC_INIT)
        else:
            bad_crc = crc16_wide(memoryview(buf)[pos + 2 : pos + total])
        if bad_crc:
            self._skip(1)
            raise BadCrc("CRC mismatch", seq=seq)
        # A bytearray copy (one copy, where bytes() of the slice made two): the parsers only
        # unpack it, and unpack gives bytes for the byte-string fields.
        payload = buf[pos + HEADER_SIZE : pos + total - CRC_SIZE]
        # Consumed (the common case of _skip, inline: this runs once per frame).
        self._scan_head = -1
        if pos + total < end:
            self._pos = pos + total
        else:
            buf.clear()
            self._pos = 0
        if version != VERSION:
            raise UnsupportedVersion(f"protocol version {version}", seq=seq)
        parser = _PARSERS.get(type_)
        if parser is None:
            raise UnknownMessageType(f"message type 0x{type_:02x}", seq=seq)
        try:
            return parser(seq, payload)
        except (ValueError, struct.error) as exc:  # IntEnum lookups raise ValueError too
            raise MalformedPayload(f"{MessageType(type_).name}: {exc}", seq=seq) from exc

    def _complete_frame_inside(self, pos: int, end: int) -> int | None:
        """Where a complete frame with a valid CRC starts in buf[pos+1:end], if one does.

        Only called while the frame at ``pos`` is incomplete, over less than max_frame_size
        bytes; a marker inside a real frame's payload almost never heads a CRC-valid frame
        (1 in 65,536). Incremental: each marker is classified once, and each candidate's CRC is
        computed once, when its last byte has arrived, so the work over a frame's whole wait is
        linear in its bytes however they were cut (docs/security.md, "quadratic decoding").
        """
        buf = self._buf
        if self._scan_head != pos:
            self._scan_head, self._scan_from, self._scan_waiting = pos, 1, []
        waiting = self._scan_waiting
        at = buf.find(MAGIC, pos + self._scan_from, end)
        while at >= 0:
            if end - at < 4:  # its length has not arrived yet: classify it on a later read
                break
            length = buf[at + 2] << 8 | buf[at + 3]
            total = 4 + length
            if length >= MIN_LENGTH and total <= self.max_frame_size:
                heapq.heappush(waiting, (at - pos + total, at - pos))
            at = buf.find(MAGIC, at + 1, end)
        # Past the last marker seen; a trailing "G" may be the first half of the next one.
        self._scan_from = (at - pos) if at >= 0 else max(self._scan_from, end - pos - 1)
        found: int | None = None
        while waiting and waiting[0][0] <= end - pos:
            _, offset = heapq.heappop(waiting)
            if found is not None and offset >= found:
                continue
            at = pos + offset
            if not crc16(memoryview(buf)[at + 2 : at + 4 + (buf[at + 2] << 8 | buf[at + 3])]):
                found = offset
        return None if found is None else pos + found

    def __iter__(self) -> Iterator[Message | FrameError]:
        """Drain the buffer: messages, and the errors met on the way, in stream order."""
        while True:
            try:
                message = self.next_frame()
            except FrameError as exc:
                yield exc
                continue
            if message is None:
                return
            yield message
