"""Round trips: whatever the encoder accepts, the decoders give back equal, however it is cut."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.teltonika import (
    AvlPacket,
    DeviceDecoder,
    Frame,
    FrameDecoder,
    Imei,
    ImeiReply,
    RecordsAck,
    encode,
)
from tests.protocol.teltonika import strategies as tel


def _cuts(data: bytes, draw: st.DataObject) -> list[bytes]:
    points = sorted(draw.draw(st.lists(st.integers(0, len(data)), max_size=8)))
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in pairwise(bounds)]


@settings(max_examples=300)
@given(tel.imeis, st.lists(tel.box_packets, max_size=5), st.data())
def test_box_stream_round_trip_however_cut(
    imei: Imei, frames: list[Frame], draw: st.DataObject
) -> None:
    stream = encode(imei) + b"".join(map(encode, frames))
    decoder = FrameDecoder()
    out: list[Frame] = []
    for piece in _cuts(stream, draw):
        decoder.feed(piece)
        while (frame := decoder.next_frame()) is not None:
            out.append(frame)
    assert out == [imei, *frames]
    assert decoder.buffered == 0


@settings(max_examples=300)
@given(tel.packets())
def test_packet_round_trip(packet: AvlPacket) -> None:
    data = encode(packet)
    decoder = FrameDecoder(expect_imei=False)
    decoder.feed(data)
    assert decoder.next_frame() == packet
    assert encode(packet) == data  # deterministic


@settings(max_examples=200)
@given(st.lists(tel.server_frames, max_size=6), st.data())
def test_server_stream_round_trip(frames: list[Frame], draw: st.DataObject) -> None:
    frames = [ImeiReply(True), *frames]
    box = DeviceDecoder()
    out: list[Frame] = []
    for frame in frames:
        if isinstance(frame, RecordsAck):
            box.expect_ack()  # as a box does once its packet is out
        for piece in _cuts(encode(frame), draw):
            box.feed(piece)
            while (decoded := box.next_frame()) is not None:
                out.append(decoded)
    assert out == frames
    assert box.buffered == 0
