"""Corrupted frames for the `garbage` behaviour: what a noisy link or a buggy firmware sends.

Four kinds, each rejected differently by a receiver that follows docs/protocol.md §2.5:

- ``noise``: random bytes without a start marker (skipped as garbage, no NACK);
- ``bad_crc``: a real frame with one byte changed after the header (BAD_CRC NACK);
- ``unknown_type``: a well-formed frame of a type no one defined (UNKNOWN_TYPE NACK);
- ``malformed``: a POSITION whose record count disagrees with its size (MALFORMED NACK).

None of them contains a header announcing a long frame, so a receiver never waits for bytes
that will not come, and their sequence numbers come from a range the box never uses for its
own frames, so a NACK for them cannot make the box drop or resend a real frame. Pure.
"""

from __future__ import annotations

import random
import struct

from protocol.gp8 import MAX_RECORDS_PER_FRAME, Position, PositionRecord, crc16, encode

KINDS = ("noise", "bad_crc", "unknown_type", "malformed")
# Sequence numbers of corrupted frames: the top 1/16 of the u32 space. A box starts at 1 and
# would need 4 billion frames to get there.
GARBAGE_SEQ_BASE = 0xF000_0000
NOISE_BYTES = (4, 64)
_MARKER_FIRST = 0x47  # "G": without it no start marker can appear
_HEADER = struct.Struct(">2sHBBI")
_UNKNOWN_TYPE = 0x7E
_POSITION_TYPE = 0x02
_HEADER_SIZE = 10


def _frame(type_: int, seq: int, payload: bytes) -> bytes:
    body = _HEADER.pack(b"G8", 8 + len(payload), 1, type_, seq) + payload
    return body + crc16(body[2:]).to_bytes(2, "big")


def noise(rng: random.Random) -> bytes:
    size = rng.randint(*NOISE_BYTES)
    data = bytearray(rng.randbytes(size))
    for i, byte in enumerate(data):
        if byte == _MARKER_FIRST:
            data[i] = _MARKER_FIRST - 1
    return bytes(data)


def bad_crc(rng: random.Random, seq: int, record: PositionRecord) -> bytes:
    """A real frame with one byte changed; noise instead when no change keeps the frame free
    of a second start marker (after the CRC fails the receiver rescans from the next byte, and
    a marker there followed by a large length would make it wait for bytes that never come)."""
    original = encode(Position(seq, (record,)))
    for _ in range(8):
        frame = bytearray(original)
        at = rng.randrange(_HEADER_SIZE, len(frame))
        frame[at] ^= rng.randrange(1, 256)
        if b"G8" not in frame[1:]:
            return bytes(frame)
    return noise(rng)


def unknown_type(seq: int) -> bytes:
    return _frame(_UNKNOWN_TYPE, seq, b"")


def malformed(seq: int, record: PositionRecord) -> bytes:
    # Announces two records (or 255) and carries one: a size mismatch with a valid CRC.
    count = 2 if MAX_RECORDS_PER_FRAME > 1 else 0
    payload = bytes((count,)) + encode(Position(seq, (record,)))[_HEADER_SIZE + 1 : -2]
    return _frame(_POSITION_TYPE, seq, payload)


class GarbageMaker:
    """Corrupted frames of the four kinds in turn-by-chance, numbered from their own range."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self._seq = GARBAGE_SEQ_BASE
        self.made: dict[str, int] = dict.fromkeys(KINDS, 0)

    def make(self, record: PositionRecord) -> bytes:
        kind = self.rng.choice(KINDS)
        self.made[kind] += 1
        self._seq += 1
        if kind == "noise":
            return noise(self.rng)
        if kind == "bad_crc":
            return bad_crc(self.rng, self._seq, record)
        if kind == "unknown_type":
            return unknown_type(self._seq)
        return malformed(self._seq, record)
