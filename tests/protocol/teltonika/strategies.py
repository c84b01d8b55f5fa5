"""Hypothesis strategies for every Teltonika frame, over each field's full wire range."""

from __future__ import annotations

from hypothesis import strategies as st

from protocol.teltonika import (
    MAX_IMEI_LENGTH,
    AvlPacket,
    AvlRecord,
    Codec,
    Command,
    Frame,
    Imei,
    RecordsAck,
    Response,
)


def _uint(bits: int) -> st.SearchStrategy[int]:
    return st.integers(0, 2**bits - 1)


def _sint(bits: int) -> st.SearchStrategy[int]:
    return st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


_VALUE_BITS = (8, 16, 32, 64)


def _pairs(id_bits: int, value_bits: int) -> st.SearchStrategy[tuple[tuple[int, int], ...]]:
    return st.lists(st.tuples(_uint(id_bits), _uint(value_bits)), max_size=4).map(tuple)


@st.composite
def records(draw: st.DrawFn, codec: Codec) -> AvlRecord:
    wide = codec is not Codec.CODEC_8
    id_bits = 16 if wide else 8
    groups = [draw(_pairs(id_bits, bits)) for bits in _VALUE_BITS]
    iox: tuple[tuple[int, bytes], ...] = ()
    if codec is Codec.CODEC_8E:
        iox = tuple(draw(st.lists(st.tuples(_uint(16), st.binary(max_size=12)), max_size=3)))
    return AvlRecord(
        time_ms=draw(_uint(64)),
        priority=draw(_uint(8)),
        lon_e7=draw(_sint(32)),
        lat_e7=draw(_sint(32)),
        altitude_m=draw(_sint(16)),
        angle_deg=draw(_uint(16)),
        satellites=draw(_uint(8)),
        speed_kmh=draw(_uint(16)),
        event_id=draw(_uint(id_bits)),
        io1=groups[0],
        io2=groups[1],
        io4=groups[2],
        io8=groups[3],
        iox=iox,
        generation=draw(_uint(8)) if codec is Codec.CODEC_16 else None,
    )


AVL_CODECS = [Codec.CODEC_8, Codec.CODEC_8E, Codec.CODEC_16]


@st.composite
def packets(draw: st.DrawFn) -> AvlPacket:
    codec = draw(st.sampled_from(AVL_CODECS))
    return AvlPacket(codec, tuple(draw(st.lists(records(codec), min_size=1, max_size=8))))


imeis = st.text(alphabet="0123456789", min_size=1, max_size=MAX_IMEI_LENGTH).map(Imei)
texts = st.text(alphabet=st.characters(max_codepoint=0xFF), max_size=200)
responses = texts.map(Response)
commands = texts.map(Command)

# What a box sends after its IMEI, and what a server sends after its IMEI reply.
box_packets: st.SearchStrategy[Frame] = st.one_of(packets(), responses)
server_frames: st.SearchStrategy[Frame] = st.one_of(_uint(32).map(RecordsAck), commands)
