"""Records parsed by shape (protocol/teltonika/codec.py, "record shapes"): the compiled builders
against the loop that defines them, packets whose records differ or only seem alike, lies in a
later record's total, and the bounds on what the shape cache holds and compiles."""

from __future__ import annotations

from itertools import count

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import protocol.teltonika.codec as codec_module
from protocol.teltonika import (
    LAYOUTS,
    AvlPacket,
    AvlRecord,
    Codec,
    FrameDecoder,
    MalformedPacket,
    crc16,
    encode,
)
from protocol.teltonika.codec import COMPILE_AFTER, MAX_SHAPE_ELEMENTS, MAX_SHAPES, _Shape
from tests.protocol.teltonika import strategies as tel

T0 = 1_700_000_000_000


@pytest.fixture(autouse=True)
def no_shape_known(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with an empty shape cache (it is the module's)."""
    monkeypatch.setattr(codec_module, "_SHAPES", {})


def decode(data: bytes) -> AvlPacket:
    decoder = FrameDecoder(expect_imei=False)
    decoder.feed(data)
    frame = decoder.next_frame()
    assert isinstance(frame, AvlPacket)
    return frame


def rewrap(packet: bytes, patch: dict[int, int]) -> bytes:
    """``packet`` with some bytes of its data changed (offsets in the data), CRC made right."""
    data = bytearray(packet[8:-4])
    for offset, value in patch.items():
        data[offset] = value
    return packet[:8] + bytes(data) + crc16(bytes(data)).to_bytes(4, "big")


def key_of(codec: Codec, r: AvlRecord) -> tuple[Codec, int, int, int, int]:
    return (codec, len(r.io1), len(r.io2), len(r.io4), len(r.io8))


def record(n: int = 0, **fields: object) -> AvlRecord:
    return AvlRecord(T0 + n, 1, 10 * n, -20 * n, -3, 90, 7, 50, 0)._replace(**fields)


@settings(max_examples=100, deadline=None)  # deadline: each example compiles a shape
@given(st.sampled_from(tel.AVL_CODECS).flatmap(lambda c: st.tuples(st.just(c), tel.records(c))))
def test_compiled_builders_give_what_the_loop_gives(case: tuple[Codec, AvlRecord]) -> None:
    codec, r = case
    data = encode(AvlPacket(codec, (r,)))[8:-4]
    shape = _Shape(key_of(codec, r))
    row = shape.struct.unpack_from(data, 2)
    assert shape.one(row, r.iox) == r  # the loop
    assert shape.many([row]) == [r._replace(iox=())]
    shape._compile()
    assert shape.compiled
    built = shape.one(row, r.iox)
    assert built == r and type(built) is AvlRecord
    assert shape.many([row, row]) == [r._replace(iox=())] * 2


@pytest.mark.parametrize("codec", tel.AVL_CODECS)
def test_runs_of_shapes_decode_the_same_before_and_after_compiling(codec: Codec) -> None:
    gen = 5 if codec is Codec.CODEC_16 else None
    a = [record(n, io1=((1, n % 2), (2, 3)), io4=((16, n),), generation=gen) for n in range(4)]
    b = [
        record(n, io2=((66, 12_000 + n),), io8=((78, 2**64 - 1),), generation=gen) for n in range(3)
    ]
    records = [a[0], a[1], b[0], b[1], a[2], b[2], a[3]]
    if codec is Codec.CODEC_8E:
        records[3] = records[3]._replace(iox=((385, b"\x01\x02\x03"),))
    packet = AvlPacket(codec, tuple(records))
    data = encode(packet)
    for _ in range(COMPILE_AFTER // 2):  # a's and b's shapes get compiled on the way
        assert decode(data) == packet
    shapes = codec_module._SHAPES
    assert shapes[key_of(codec, a[0])].compiled and shapes[key_of(codec, b[0])].compiled
    assert decode(data) == packet


@pytest.mark.parametrize("codec", tel.AVL_CODECS)
def test_records_all_alike_decode_the_same_before_and_after_compiling(codec: Codec) -> None:
    gen = 7 if codec is Codec.CODEC_16 else None
    packet = AvlPacket(
        codec, tuple(record(n, io1=((239, 1),), io8=((78, n),), generation=gen) for n in range(10))
    )
    data = encode(packet)
    for _ in range(COMPILE_AFTER // 10 + 1):
        assert decode(data) == packet
    assert codec_module._SHAPES[key_of(codec, packet.records[0])].compiled
    assert decode(data) == packet


def test_records_of_one_size_and_other_shapes_are_walked() -> None:
    """Three 1-byte elements and two 2-byte ones take the same 6 bytes: the first record's shape,
    repeated, fills the data, but the second record's counts are not the first one's."""
    a = record(1, io1=((1, 1), (2, 2), (3, 3)))
    b = record(2, io2=((4, 4), (5, 5)))
    assert len(encode(AvlPacket(Codec.CODEC_8, (a,)))) == len(
        encode(AvlPacket(Codec.CODEC_8, (b,)))
    )
    packet = AvlPacket(Codec.CODEC_8, (a, b, a))
    assert decode(encode(packet)) == packet


def test_nx_elements_in_a_later_record_are_walked() -> None:
    """Records 0 and 1 have the same counts, but 1 carries an NX element (6 bytes) that record 2
    makes up for by having two 1-byte elements (6 bytes) less: the data is three times record 0,
    and read in steps of record 0's size, every count but record 1's NX count says "alike"."""
    a = record(0, io1=((1, 1), (2, 2)))
    b = record(1, io1=((1, 1), (2, 2)), iox=((385, b"\xab\xcd"),))
    c = record(2, speed_kmh=2, angle_deg=0, satellites=2)
    packet = AvlPacket(Codec.CODEC_8E, (a, b, c))
    data = encode(packet)
    size = _Shape(key_of(Codec.CODEC_8E, a)).struct.size
    assert len(data) - 12 - 3 == 3 * size
    assert decode(data) == packet
    # Record 1's total made to say 2, as if it had no NX element: the NX count alone tells.
    total = 2 + size + LAYOUTS[Codec.CODEC_8E].head.size - 1
    assert data[8 + total] == 3
    with pytest.raises(MalformedPacket, match="announces 2 IO elements and carries 3"):
        decode(rewrap(data, {total: 2}))


@pytest.mark.parametrize("codec", tel.AVL_CODECS)
@pytest.mark.parametrize("alike", [True, False], ids=["alike", "walked"])
def test_a_later_record_lying_about_its_total(codec: Codec, alike: bool) -> None:
    first = record(0, io1=((1, 1),), generation=0 if codec is Codec.CODEC_16 else None)
    second = first if alike else first._replace(io1=(), io2=((2, 2),))
    data = encode(AvlPacket(codec, (first, second, first)))
    layout = LAYOUTS[codec]
    size = len(encode(AvlPacket(codec, (first,)))) - 15  # header, CRC, codec id and counts
    total = 2 + size + layout.head.size - 1  # the total's last byte in the second record
    assert data[8 + total] == 1
    with pytest.raises(MalformedPacket, match="announces 2 IO elements and carries 1"):
        decode(rewrap(data, {total: 2}))


def test_the_cache_holds_at_most_max_shapes_and_compiles_none_of_one_offs() -> None:
    shapes = ((n1, n2) for n1 in count() for n2 in range(20))
    for _, (n1, n2) in zip(range(MAX_SHAPES + 20), shapes, strict=False):
        r = record(io1=tuple((i, 1) for i in range(n1)), io2=tuple((i, 2) for i in range(n2)))
        packet = AvlPacket(Codec.CODEC_8, (r,))
        assert decode(encode(packet)) == packet
        assert len(codec_module._SHAPES) <= MAX_SHAPES
    assert not any(shape.compiled for shape in codec_module._SHAPES.values())


def test_a_shape_too_large_to_keep_is_decoded_and_not_kept() -> None:
    elements = MAX_SHAPE_ELEMENTS + 1
    r = record(io1=tuple((i, i) for i in range(elements)))
    packet = AvlPacket(Codec.CODEC_8, (r,) * 3)
    for _ in range(COMPILE_AFTER):  # never compiled either
        assert decode(encode(packet)) == packet
    assert not codec_module._SHAPES
