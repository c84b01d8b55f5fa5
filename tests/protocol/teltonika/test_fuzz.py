"""Decoder fuzzing: hostile and damaged input never crashes it, never costs an intact frame before
the damage, and never makes it hold more than a packet.

The contract under test (protocol/teltonika/codec.py): ``feed`` never raises; ``next_frame``
raises only FrameError subclasses, and the first one is final (the decoder is then empty and
stays so, whatever it is fed); while it has not failed, a drained decoder holds less than
``max_packet_size`` bytes; the frames before the first damaged byte are all decoded, in order;
and the work is linear in the bytes, however they were cut.

A damaged packet is accepted only if its bytes still carry a valid CRC-16 where the (possibly
damaged) length puts it: CRC-16/IBM detects every error of 1 to 3 bits in packets this size, so
only a flipped length bit can get there, about 1 time in 65,536: too rare to make these flaky.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import protocol.teltonika.codec as codec_module
from protocol.teltonika import (
    MAX_PACKET_SIZE,
    Frame,
    FrameDecoder,
    FrameError,
    Imei,
    encode,
)
from tests.protocol.teltonika import strategies as tel


@dataclass
class Outcome:
    frames: list[Frame] = field(default_factory=list)
    error: FrameError | None = None


def run(
    data: bytes, chunk: int, *, expect_imei: bool = False, max_packet_size: int = MAX_PACKET_SIZE
) -> Outcome:
    """Feed ``data`` like a socket would and drain after every chunk, checking the contract."""
    decoder = FrameDecoder(expect_imei=expect_imei, max_packet_size=max_packet_size)
    out = Outcome()
    for i in range(0, len(data), chunk):
        decoder.feed(data[i : i + chunk])
        while True:
            before = decoder.buffered
            try:
                frame = decoder.next_frame()
            except FrameError as exc:  # anything else escapes and fails the test
                assert out.error is None, "errors are final: there is never a second one"
                out.error = exc
                assert decoder.failed and decoder.buffered == 0
                continue
            if frame is None:
                break
            assert out.error is None
            assert decoder.buffered < before
            out.frames.append(frame)
        if decoder.failed:
            assert decoder.buffered == 0
        else:
            assert decoder.buffered < max_packet_size
    return out


chunks = st.integers(1, 2048)
# Random bytes fail at once on the preamble; start most examples with a plausible header so the
# fuzzer spends its time in the length, CRC and layout paths.
_headers = st.builds(
    lambda length, codec, rest: b"\0\0\0\0" + length.to_bytes(4, "big") + bytes([codec]) + rest,
    st.one_of(st.integers(0, 64), st.integers(0, 2**32 - 1)),
    st.sampled_from([0x08, 0x8E, 0x10, 0x0C, 0x0D, 0x00]),
    st.binary(max_size=80),
)
hostile = st.one_of(st.binary(max_size=2048), _headers)


@settings(max_examples=400)
@given(hostile, chunks, st.booleans())
def test_hostile_bytes(data: bytes, chunk: int, expect_imei: bool) -> None:
    run(data, chunk, expect_imei=expect_imei)


@settings(max_examples=300)
@given(hostile, st.integers(1, 64), st.integers(12, 200))
def test_buffer_stays_below_a_small_max_packet_size(data: bytes, chunk: int, limit: int) -> None:
    run(data, chunk, max_packet_size=limit)


@st.composite
def damaged_streams(draw: st.DrawFn) -> tuple[bytes, list[Frame]]:
    """IMEI and packets, one of them damaged (bit flips, cut, garbage inside); returns the stream
    and the frames before the damage, which must all be decoded."""
    imei = draw(tel.imeis)
    frames = draw(st.lists(tel.box_packets, min_size=1, max_size=5))
    at = draw(st.integers(0, len(frames) - 1))
    damaged = bytearray(encode(frames[at]))
    how = draw(st.sampled_from(["flip", "truncate", "garbage_inside"]))
    if how == "flip":
        for _ in range(draw(st.integers(1, 3))):
            bit = draw(st.integers(0, len(damaged) * 8 - 1))
            damaged[bit // 8] ^= 1 << (bit % 8)
    elif how == "truncate":
        damaged = damaged[: draw(st.integers(0, len(damaged) - 1))]
    else:
        where = draw(st.integers(1, len(damaged) - 1))
        damaged[where:where] = draw(st.binary(min_size=1, max_size=16))
    stream = encode(imei) + b"".join(map(encode, frames[:at])) + bytes(damaged)
    stream += b"".join(map(encode, frames[at + 1 :]))
    return stream, [imei, *frames[:at]]


@settings(max_examples=400)
@given(damaged_streams(), chunks)
def test_damage_never_costs_a_frame_before_it(
    damaged: tuple[bytes, list[Frame]], chunk: int
) -> None:
    stream, intact = damaged
    out = run(stream, chunk, expect_imei=True)
    assert out.frames[: len(intact)] == intact


@settings(max_examples=200)
@given(tel.box_packets, st.data())
def test_every_truncation_waits_for_more(frame: Frame, data: st.DataObject) -> None:
    whole = encode(frame)
    cut = data.draw(st.integers(0, len(whole) - 1))
    decoder = FrameDecoder(expect_imei=False)
    decoder.feed(whole[:cut])
    assert decoder.next_frame() is None
    assert decoder.buffered == cut
    decoder.feed(whole[cut:])
    assert decoder.next_frame() == frame


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_work_is_linear_however_cut(chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each packet is checked and parsed once, when complete: CRC work is exactly the data's size,
    whether it arrives whole or one byte at a time."""
    crc_bytes = 0
    real = codec_module.crc16

    def counting(data: bytes | bytearray | memoryview) -> int:
        nonlocal crc_bytes
        crc_bytes += len(data)
        return real(data)

    monkeypatch.setattr(codec_module, "crc16", counting)
    from tests.protocol.teltonika.cases import PACKETS

    packets = [case.data for case in PACKETS] * 20
    stream = encode(Imei("356307042441013")) + b"".join(packets)
    out = run(stream, chunk, expect_imei=True)
    assert out.error is None and len(out.frames) == 1 + len(packets)
    assert crc_bytes == sum(len(p) - 12 for p in packets)
