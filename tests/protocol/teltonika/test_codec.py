"""The decoders and the encoder against Teltonika's published examples, and every error."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from protocol.teltonika import (
    MAX_PACKET_SIZE,
    AvlPacket,
    AvlRecord,
    BadCrc,
    BadImei,
    BadLength,
    BadPreamble,
    Codec,
    Command,
    DeviceDecoder,
    EncodeError,
    Frame,
    FrameDecoder,
    FrameError,
    FrameTooLarge,
    Imei,
    ImeiReply,
    MalformedPacket,
    RecordsAck,
    Response,
    UnknownCodec,
    crc16,
    encode,
)
from tests.protocol.teltonika.cases import (
    CASE_IDS,
    CASES,
    CODEC8_1,
    CODEC8_3,
    CODEC8E,
    CODEC16,
    GETINFO,
    GETINFO_RESPONSE,
    IMEI,
    PACKET_IDS,
    PACKETS,
    Case,
)


def wrap(data: bytes, *, crc: int | None = None) -> bytes:
    """A packet around ``data`` with its true CRC (or the one given)."""
    value = crc16(data) if crc is None else crc
    return b"\0\0\0\0" + len(data).to_bytes(4, "big") + data + value.to_bytes(4, "big")


def decoder_for(case: Case) -> FrameDecoder:
    return FrameDecoder(expect_imei=isinstance(case.frame, Imei))


# --- the published examples, field by field ---------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_encode_gives_the_published_bytes(case: Case) -> None:
    assert encode(case.frame) == case.data


def test_imei_handshake() -> None:
    decoder = FrameDecoder()
    decoder.feed(IMEI.data)
    assert decoder.next_frame() == Imei("356307042441013")
    assert not decoder.expect_imei  # packets from now on
    assert encode(ImeiReply(True)) == b"\x01"
    assert encode(ImeiReply(False)) == b"\x00"


def test_codec8_first_example_fields() -> None:
    decoder = FrameDecoder(expect_imei=False)
    decoder.feed(CODEC8_1.data)
    packet = decoder.next_frame()
    assert isinstance(packet, AvlPacket)
    assert packet.codec is Codec.CODEC_8
    (record,) = packet.records
    assert record.time_ms == 1_560_161_086_000
    assert datetime.fromtimestamp(record.time_ms / 1000, UTC) == datetime(
        2019, 6, 10, 10, 4, 46, tzinfo=UTC
    )
    assert (record.priority, record.lon_e7, record.lat_e7, record.altitude_m) == (1, 0, 0, 0)
    assert (record.angle_deg, record.satellites, record.speed_kmh) == (0, 0, 0)
    assert record.event_id == 1
    assert record.io1 == ((21, 3), (1, 1))
    assert record.io2 == ((66, 24_079),)
    assert record.io4 == ((241, 24_602),)
    assert record.io8 == ((78, 0),)
    assert record.iox == ()
    assert record.generation is None
    assert record.io == {21: 3, 1: 1, 66: 24_079, 241: 24_602, 78: 0}
    # The server's answer: the record count as four bytes.
    assert encode(RecordsAck(len(packet.records))) == bytes.fromhex("00000001")


def test_codec8_third_example_has_two_records() -> None:
    decoder = FrameDecoder(expect_imei=False)
    decoder.feed(CODEC8_3.data)
    packet = decoder.next_frame()
    assert isinstance(packet, AvlPacket)
    assert [r.time_ms for r in packet.records] == [1_560_160_861_000, 1_560_160_879_000]
    assert [r.io for r in packet.records] == [{1: 0}, {1: 1}]
    assert encode(RecordsAck(2)) == bytes.fromhex("00000002")


def test_codec8_extended_example_fields() -> None:
    decoder = FrameDecoder(expect_imei=False)
    decoder.feed(CODEC8E.data)
    packet = decoder.next_frame()
    assert isinstance(packet, AvlPacket)
    assert packet.codec is Codec.CODEC_8E
    (record,) = packet.records
    assert record.time_ms == 1_560_166_592_000
    assert record.event_id == 1
    assert record.io == {1: 1, 17: 29, 16: 22_949_000, 11: 893_700_218, 14: 500_686_954}
    assert record.io8 == ((11, 0x3544C87A), (14, 0x1DD7E06A))


def test_codec16_example_fields() -> None:
    decoder = FrameDecoder(expect_imei=False)
    decoder.feed(CODEC16.data)
    packet = decoder.next_frame()
    assert isinstance(packet, AvlPacket)
    assert [r.generation for r in packet.records] == [5, 5]
    assert [r.event_id for r in packet.records] == [11, 11]
    assert [r.io for r in packet.records] == [
        {1: 0, 3: 0, 11: 39, 66: 22_074},
        {1: 0, 3: 0, 11: 38, 66: 22_074},
    ]


def test_codec12_examples() -> None:
    box = DeviceDecoder()
    box.awaiting_reply = False
    box.feed(GETINFO.data)
    assert box.next_frame() == Command("getinfo")
    server = FrameDecoder(expect_imei=False)
    server.feed(GETINFO_RESPONSE.data)
    response = server.next_frame()
    assert isinstance(response, Response)
    assert response.text.startswith("INI:2019/7/22 7:22 RTC:2019/7/22 7:53 RST:2 ERR:1")
    assert response.text.endswith("RF:65 SF:1 MD:0")
    assert len(response.text) == 0x88


def test_south_and_west_are_negative() -> None:
    """Buenos Aires: both coordinates negative, two's complement on the wire; a negative
    altitude too. The bytes are written here by hand, not by our encoder."""
    lon, lat = -583_815_591, -346_037_232
    record = (
        (1_700_000_000_123).to_bytes(8, "big")
        + b"\x00"
        + lon.to_bytes(4, "big", signed=True)
        + lat.to_bytes(4, "big", signed=True)
        + (-5).to_bytes(2, "big", signed=True)
        + (359).to_bytes(2, "big")
        + bytes([9])
        + (87).to_bytes(2, "big")
        + bytes([0, 0, 0, 0, 0, 0])  # event id, N, N1, N2, N4, N8
    )
    decoder = FrameDecoder(expect_imei=False)
    decoder.feed(wrap(b"\x08\x01" + record + b"\x01"))
    packet = decoder.next_frame()
    assert isinstance(packet, AvlPacket)
    (decoded,) = packet.records
    assert decoded == AvlRecord(1_700_000_000_123, 0, lon, lat, -5, 359, 9, 87, 0)
    assert decoded.longitude == pytest.approx(-58.3815591)
    assert decoded.latitude == pytest.approx(-34.6037232)


def test_variable_size_elements_round_trip() -> None:
    record = AvlRecord(
        1_700_000_000_000, 1, 1, 2, 3, 4, 5, 6, 385, io2=((318, 1),), iox=((385, b"\x01\x02\x03"),)
    )
    packet = AvlPacket(Codec.CODEC_8E, (record,))
    decoder = FrameDecoder(expect_imei=False)
    decoder.feed(encode(packet))
    assert decoder.next_frame() == packet
    assert record.io == {318: 1, 385: b"\x01\x02\x03"}


# --- the same table, fed three ways -------------------------------------------------------------


def feed_whole(case: Case, data: bytes) -> list[Frame]:
    decoder = decoder_for(case)
    decoder.feed(data)
    out = []
    while (frame := decoder.next_frame()) is not None:
        out.append(frame)
    return out


def feed_bytewise(case: Case, data: bytes) -> list[Frame]:
    """One byte at a time, draining after each: a frame appears only once it is complete."""
    decoder = decoder_for(case)
    out = []
    for i in range(len(data)):
        decoder.feed(data[i : i + 1])
        while (frame := decoder.next_frame()) is not None:
            out.append(frame)
            assert i == len(data) - 1
    return out


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("feed", [feed_whole, feed_bytewise])
def test_decode(case: Case, feed: Callable[[Case, bytes], list[Frame]]) -> None:
    assert feed(case, case.data) == [case.frame]


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_trailing_bytes_stay_buffered(case: Case) -> None:
    following = CODEC8_1.data[:20]  # the start of the next packet
    decoder = decoder_for(case)
    decoder.feed(case.data + following)
    assert decoder.next_frame() == case.frame
    assert decoder.next_frame() is None
    assert decoder.buffered == len(following)


def test_several_packets_in_one_read() -> None:
    decoder = FrameDecoder()
    decoder.feed(IMEI.data + b"".join(c.data for c in PACKETS))
    assert list(decoder) == [IMEI.frame, *(c.frame for c in PACKETS)]
    assert decoder.buffered == 0


# --- errors: each one final --------------------------------------------------------------------


def fails_with(data: bytes, error: type[FrameError], *, expect_imei: bool = False) -> FrameError:
    decoder = FrameDecoder(expect_imei=expect_imei)
    decoder.feed(data)
    with pytest.raises(error) as caught:
        decoder.next_frame()
    # Final: nothing is kept, nothing more is taken, the next good packet is not decoded.
    assert decoder.failed and decoder.buffered == 0
    decoder.feed(CODEC8_1.data)
    assert decoder.buffered == 0
    assert decoder.next_frame() is None
    return caught.value


def test_bad_preamble_fails_at_its_first_byte() -> None:
    fails_with(b"\x01", BadPreamble)
    fails_with(b"\x00\x00\x00\x07", BadPreamble)
    fails_with(b"\x00\x00\x01\x00" + CODEC8_1.data[4:], BadPreamble)


def test_short_length() -> None:
    fails_with(b"\0\0\0\0\0\0\0\x02\x08\x01", BadLength)


def test_oversize_fails_from_the_header_alone() -> None:
    header = b"\0\0\0\0" + (MAX_PACKET_SIZE).to_bytes(4, "big")  # + 12 is too large
    error = fails_with(header, FrameTooLarge)
    assert error.reason == "too_large"
    fails_with(b"\0\0\0\0\xff\xff\xff\xff", FrameTooLarge)


def test_largest_packet_is_accepted() -> None:
    text = "x" * (MAX_PACKET_SIZE - 12 - 8)
    data = encode(Response(text))
    assert len(data) == MAX_PACKET_SIZE
    decoder = FrameDecoder(expect_imei=False)
    decoder.feed(data)
    assert decoder.next_frame() == Response(text)
    with pytest.raises(EncodeError):
        encode(Response(text + "x"))


@pytest.mark.parametrize("case", PACKETS, ids=PACKET_IDS)
def test_bad_crc(case: Case) -> None:
    data = bytearray(case.data)
    data[-1] ^= 0x01
    fails_with(bytes(data), BadCrc)
    data = bytearray(case.data)
    data[-4] = 0x01  # the CRC is 16 bits in a 32-bit field: the upper half must be zero
    fails_with(bytes(data), BadCrc)
    data = bytearray(case.data)
    data[12] ^= 0x80  # a bit of the data
    fails_with(bytes(data), BadCrc)


def test_unknown_codec() -> None:
    error = fails_with(wrap(b"\x0d\x01\x00\x01"), UnknownCodec)  # Codec 13, CRC-valid
    assert error.reason == "unknown_codec"


def _codec8_data(case: Case = CODEC8_1) -> bytes:
    return case.data[8:-4]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(_codec8_data()[:-1] + b"\x02", id="counts_differ"),
        pytest.param(b"\x08\x00\x00", id="no_records"),
        pytest.param(_codec8_data()[:-1] + b"\x00\x01", id="extra_byte_before_count"),
        pytest.param(_codec8_data()[:-3] + b"\x01", id="record_cut_short"),
        pytest.param(_codec8_data()[:27] + b"\x06" + _codec8_data()[28:], id="wrong_io_total"),
        pytest.param(
            b"\x8e\x01" + bytes(24) + b"\x00\x00\x00\x01" + bytes(8) + b"\x00\x01\x00\x07\x00\x09"
            + b"ab" + b"\x01",
            id="nx_element_past_the_end",
        ),
        pytest.param(bytes.fromhex("0c0205000000016101"), id="codec12_two_commands"),
        pytest.param(bytes.fromhex("0c0105000000056101"), id="codec12_size_lies"),
        pytest.param(bytes.fromhex("0c0107000000016101"), id="codec12_unknown_type"),
        pytest.param(bytes.fromhex("0c01050000000161"), id="codec12_no_second_quantity"),
    ],
)  # fmt: skip
def test_malformed_but_crc_valid(data: bytes) -> None:
    assert fails_with(wrap(data), MalformedPacket).reason == "malformed"


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\x00\x00", id="empty"),
        pytest.param(b"\x00\x11" + b"1" * 17, id="too_long"),
        pytest.param(b"\x00\x0f35630704244101X", id="not_digits"),
        pytest.param(b"\x00\x0f" + "35630704244101²".encode()[:15], id="not_ascii"),
    ],
)
def test_bad_imei(data: bytes) -> None:
    assert fails_with(data, BadImei, expect_imei=True).reason == "bad_imei"


def test_a_packet_where_the_imei_belongs_is_refused() -> None:
    fails_with(CODEC8_1.data, BadImei, expect_imei=True)  # length 0


def test_iteration_ends_with_the_error() -> None:
    decoder = FrameDecoder()
    decoder.feed(IMEI.data + CODEC8_1.data + b"\x00\x00\x00\x09" + CODEC8_3.data)
    out = list(decoder)
    assert out[:2] == [IMEI.frame, CODEC8_1.frame]
    assert isinstance(out[2], BadPreamble) and len(out) == 3
    assert list(decoder) == []


# --- the box's side -----------------------------------------------------------------------------


def test_device_decoder_reads_reply_counts_and_commands() -> None:
    box = DeviceDecoder()
    box.feed(b"\x01")
    assert box.next_frame() == ImeiReply(True)
    box.expect_ack()
    # A count of 0 is four zero bytes, like a preamble: the box knows which one it waits for.
    box.feed(encode(RecordsAck(0)) + GETINFO.data)
    assert box.next_frame() == RecordsAck(0)
    assert box.next_frame() == Command("getinfo")
    assert box.next_frame() is None
    box.expect_ack()
    box.feed(b"\x00\x00")
    assert box.next_frame() is None
    box.feed(b"\x00\x07")
    assert box.next_frame() == RecordsAck(7)


def test_device_decoder_refused() -> None:
    box = DeviceDecoder()
    box.feed(b"\x00")
    assert box.next_frame() == ImeiReply(False)
    bad = DeviceDecoder()
    bad.feed(b"\x02")
    with pytest.raises(MalformedPacket):
        bad.next_frame()
    assert bad.failed


# --- encoder refusals -----------------------------------------------------------------------------


_RECORD = AvlRecord(1_700_000_000_000, 0, 0, 0, 0, 0, 0, 0, 0)


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(AvlPacket(Codec.CODEC_8, ()), id="no_records"),
        pytest.param(AvlPacket(Codec.CODEC_8, (_RECORD,) * 256), id="256_records"),
        pytest.param(AvlPacket(Codec.CODEC_12, (_RECORD,)), id="codec12_records"),
        pytest.param(AvlPacket(Codec.CODEC_8, (_RECORD._replace(event_id=256),)), id="event_id"),
        pytest.param(AvlPacket(Codec.CODEC_8, (_RECORD._replace(io1=((300, 1),)),)), id="io_id"),
        pytest.param(AvlPacket(Codec.CODEC_8, (_RECORD._replace(io1=((1, 256),)),)), id="value"),
        pytest.param(
            AvlPacket(Codec.CODEC_8, (_RECORD._replace(iox=((1, b"x"),)),)), id="nx_in_codec8"
        ),
        pytest.param(AvlPacket(Codec.CODEC_16, (_RECORD,)), id="codec16_no_generation"),
        pytest.param(
            AvlPacket(Codec.CODEC_8E, (_RECORD._replace(generation=1),)), id="generation_8e"
        ),
        pytest.param(
            AvlPacket(Codec.CODEC_8, (_RECORD._replace(lat_e7=2**31),)), id="latitude_range"
        ),
        pytest.param(Imei("35630704244101"[:0]), id="empty_imei"),
        pytest.param(Imei("3563070424410133"), id="imei_of_16_is_fine_17_is_not"),
        pytest.param(Imei("35630704244101²"), id="imei_not_ascii"),
        pytest.param(Command("dégivrer ✓"), id="not_latin1"),
        pytest.param(RecordsAck(-1), id="negative_count"),
    ],
)
def test_encode_refuses(frame: Frame) -> None:
    if isinstance(frame, Imei) and len(frame.imei) == 16:
        assert FrameDecoder().expect_imei  # 16 digits encode; the 17th does not
        encode(frame)
        frame = Imei(frame.imei + "1")
    with pytest.raises(EncodeError):
        encode(frame)


def test_encode_refuses_what_is_not_a_frame() -> None:
    with pytest.raises(EncodeError):
        encode(object())  # type: ignore[arg-type]
