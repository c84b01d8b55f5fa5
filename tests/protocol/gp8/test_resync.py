"""A false start marker must not hold up the frames behind it (docs/protocol.md §2.5)."""

from __future__ import annotations

import struct

import pytest

from protocol.gp8 import FrameDecoder, Garbage, Heartbeat, Position, encode
from protocol.gp8.codec import MAX_FRAME_SIZE
from tests.protocol.gp8.cases import PARIS

# "G8" then a length that promises ~12 KiB: line noise that looks like a frame header.
FALSE_START = b"G8" + struct.pack(">H", 12_000) + b"\x01\x02\x00\x00\x00\x07"


def test_frame_after_a_false_start_is_decoded_without_more_bytes() -> None:
    # The box sends one frame and waits for its ACK: nothing else will arrive to complete
    # the 12 KiB the false header announced.
    good = encode(Position(9, (PARIS,)))
    decoder = FrameDecoder()
    decoder.feed(FALSE_START + good)
    with pytest.raises(Garbage):
        decoder.next_frame()
    assert decoder.next_frame() == Position(9, (PARIS,))
    assert decoder.next_frame() is None
    assert decoder.buffered == 0
    assert decoder.garbage_bytes == len(FALSE_START)


def test_frame_after_a_false_start_fed_byte_by_byte() -> None:
    decoder = FrameDecoder()
    out: list[object] = []
    for byte in FALSE_START + encode(Heartbeat(3)):
        decoder.feed(bytes((byte,)))
        out.extend(m for m in decoder if not isinstance(m, Garbage))
    assert out == [Heartbeat(3)]


def test_incomplete_real_frame_still_waits() -> None:
    # A real frame split across reads has no complete frame inside it: wait, skip nothing.
    data = encode(Position(1, (PARIS,) * 200))
    assert len(data) < MAX_FRAME_SIZE
    decoder = FrameDecoder()
    decoder.feed(data[:-1])
    assert decoder.next_frame() is None
    assert decoder.garbage_bytes == 0
    decoder.feed(data[-1:])
    assert decoder.next_frame() == Position(1, (PARIS,) * 200)
