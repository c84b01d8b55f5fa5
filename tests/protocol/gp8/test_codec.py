"""Encoder and streaming decoder against the shared golden table, and every decoder error."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from protocol.gp8 import (
    MAX_FRAME_SIZE,
    Ack,
    BadCrc,
    BadLength,
    Challenge,
    Command,
    CommandFailure,
    CommandResult,
    CommandStatus,
    CommandType,
    EncodeError,
    Event,
    EventCode,
    FrameDecoder,
    FrameError,
    FrameTooLarge,
    Garbage,
    Heartbeat,
    Ident,
    Login,
    LoginResult,
    MalformedPayload,
    Message,
    MessageType,
    Model,
    Nack,
    Position,
    ProtocolError,
    UnknownMessageType,
    UnsupportedVersion,
    encode,
)
from protocol.gp8.codec import HEADER_SIZE
from tests.protocol.gp8.cases import CASE_IDS, CASES, CASES_BY_ID, PARIS, PARIS_HEX, RIO_HEX, Case
from tests.protocol.gp8.reference import frame, hexbytes

HEARTBEAT = CASES_BY_ID["heartbeat"]
ACK = CASES_BY_ID["ack"]


def test_cases_cover_every_message_type() -> None:
    assert {MessageType(case.frame[5]) for case in CASES} == set(MessageType)


# --- encode -----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_encode(case: Case) -> None:
    assert encode(case.message) == case.frame


# --- decode: the same table, fed three ways -----------------------------------------------------


def feed_whole(data: bytes) -> list[Message]:
    decoder = FrameDecoder()
    decoder.feed(data)
    out: list[Message] = []
    while (message := decoder.next_frame()) is not None:
        out.append(message)
    assert decoder.buffered == 0
    return out


def feed_bytewise(data: bytes) -> list[Message]:
    """One byte at a time, draining after each: a message may only appear once it is complete."""
    decoder = FrameDecoder()
    out: list[Message] = []
    for i in range(len(data)):
        decoder.feed(data[i : i + 1])
        while (message := decoder.next_frame()) is not None:
            out.append(message)
    assert decoder.buffered == 0
    return out


def feed_in_chunks(data: bytes, size: int) -> list[Message]:
    decoder = FrameDecoder()
    out: list[Message] = []
    view = memoryview(data)
    for i in range(0, len(data), size):
        decoder.feed(view[i : i + size])
        while (message := decoder.next_frame()) is not None:
            out.append(message)
    assert decoder.buffered == 0
    return out


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_decode_whole(case: Case) -> None:
    assert feed_whole(case.frame) == [case.message]


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_decode_bytewise(case: Case) -> None:
    decoder = FrameDecoder()
    for byte in case.frame[:-1]:
        decoder.feed(bytes((byte,)))
        assert decoder.next_frame() is None
    decoder.feed(case.frame[-1:])
    assert decoder.next_frame() == case.message
    assert decoder.next_frame() is None
    assert decoder.buffered == 0


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_decode_with_trailing_data(case: Case) -> None:
    """Bytes after a frame stay buffered, give None while incomplete, then the next frame."""
    size = len(case.frame)
    for tail in sorted({1, 2, HEADER_SIZE - 1, HEADER_SIZE, size - 1}):
        decoder = FrameDecoder()
        decoder.feed(case.frame + case.frame[:tail])
        assert decoder.next_frame() == case.message
        assert decoder.next_frame() is None
        assert decoder.buffered == tail
        decoder.feed(case.frame[tail:])
        assert decoder.next_frame() == case.message
        assert decoder.next_frame() is None
        assert decoder.buffered == 0


@pytest.mark.parametrize(
    "feed",
    [feed_whole, feed_bytewise, lambda d: feed_in_chunks(d, 7), lambda d: feed_in_chunks(d, 4096)],
    ids=["whole", "bytewise", "chunks7", "chunks4096"],
)
def test_decode_back_to_back(feed: Callable[[bytes], list[Message]]) -> None:
    stream = b"".join(case.frame for case in CASES)
    assert feed(stream) == [case.message for case in CASES]


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_feed_accepts_any_buffer(kind: Callable[[bytes], Any]) -> None:
    decoder = FrameDecoder()
    decoder.feed(kind(ACK.frame))
    assert decoder.next_frame() == ACK.message


def test_records_come_back_with_their_units() -> None:
    (message,) = feed_whole(CASES_BY_ID["position_1"].frame)
    assert isinstance(message, Position)
    (record,) = message.records
    assert record.latitude == pytest.approx(48.8583701)
    assert record.longitude == pytest.approx(2.2944813)
    assert record.speed_kmh == pytest.approx(52.3)
    assert record.heading_deg == pytest.approx(271.5)
    assert record.hdop == pytest.approx(1.1)
    assert record.fix_valid and record.ignition
    assert not (record.doors_locked or record.engine_start_inhibited)
    assert record.driver_badge is None


# --- encode errors ------------------------------------------------------------------------------


def _bad(value: object) -> Any:
    """A value of the wrong type or range, smuggled past the type checker on purpose."""
    return value


_LOGIN = CASES_BY_ID["login"].message
assert isinstance(_LOGIN, Login)

UNENCODABLE: list[tuple[str, object]] = [
    ("imei_14_digits", Login(1, "35693803564380", Model.GP8000, (1, 0, 0), _LOGIN.proof)),
    ("imei_16_digits", Login(1, "3569380356438090", Model.GP8000, (1, 0, 0), _LOGIN.proof)),
    ("imei_letter", Login(1, "35693803564380x", Model.GP8000, (1, 0, 0), _LOGIN.proof)),
    ("imei_superscripts", Login(1, "²" * 15, Model.GP8000, (1, 0, 0), _LOGIN.proof)),
    ("imei_arabic_indic", Login(1, "٣" * 15, Model.GP8000, (1, 0, 0), _LOGIN.proof)),
    ("proof_31_bytes", Login(1, _LOGIN.imei, Model.GP8000, (1, 0, 0), b"x" * 31)),
    ("proof_33_bytes", Login(1, _LOGIN.imei, Model.GP8000, (1, 0, 0), b"x" * 33)),
    ("unknown_model", Login(1, _LOGIN.imei, _bad(3), (1, 0, 0), _LOGIN.proof)),
    ("firmware_256", Login(1, _LOGIN.imei, Model.GP8000, (256, 0, 0), _LOGIN.proof)),
    ("firmware_2_parts", Login(1, _LOGIN.imei, Model.GP8000, _bad((1, 0)), _LOGIN.proof)),
    ("ident_imei_letter", Ident(1, "35693803564380x", Model.GP8000, (1, 0, 0))),
    ("ident_unknown_model", Ident(1, _LOGIN.imei, _bad(0), (1, 0, 0))),
    ("seq_negative", Heartbeat(-1)),
    ("seq_2_32", Heartbeat(2**32)),
    ("no_records", Position(1, ())),
    ("256_records", Position(1, (PARIS,) * 256)),
    ("lat_overflow", Position(1, (PARIS._replace(lat_e7=2**31),))),
    ("time_negative", Position(1, (PARIS._replace(time_ms=-1),))),
    ("badge_2_64", Position(1, (PARIS._replace(badge=2**64),))),
    ("float_field", Position(1, (PARIS._replace(speed_dkmh=_bad(52.3)),))),
    ("unknown_event", Event(1, _bad(99), 0, PARIS)),
    ("detail_2_32", Event(1, EventCode.SOS, 2**32, PARIS)),
    ("unknown_status", CommandResult(1, 1, _bad(9), CommandFailure.NONE, 0)),
    ("unknown_failure", CommandResult(1, 1, CommandStatus.FAILED, _bad(99), 0)),
    ("state_2_16", CommandResult(1, 1, CommandStatus.DONE, CommandFailure.NONE, 2**16)),
    ("nonce_15_bytes", Challenge(0, b"n" * 15, 0)),
    ("nonce_17_bytes", Challenge(0, b"n" * 17, 0)),
    ("server_time_negative", Challenge(0, b"n" * 16, -1)),
    ("unknown_login_status", LoginResult(0, _bad(99), 0)),
    ("unknown_command", Command(1, _bad(0), 0)),
    ("param_negative", Command(1, CommandType.SET_REPORT_INTERVAL, -1)),
    ("acked_seq_2_32", Ack(0, 2**32)),
    ("unknown_nack_reason", Nack(0, 0, _bad(0))),
    ("not_a_message", object()),
    ("a_bare_record", PARIS),
]


@pytest.mark.parametrize("message", [m for _, m in UNENCODABLE], ids=[i for i, _ in UNENCODABLE])
def test_encode_rejects_out_of_range(message: object) -> None:
    with pytest.raises(EncodeError):
        encode(_bad(message))


def test_encode_error_is_a_protocol_error_not_a_frame_error() -> None:
    # Callers catch FrameError around the decoder; an encode bug must not be swallowed there.
    assert issubclass(EncodeError, ProtocolError)
    assert not issubclass(EncodeError, FrameError)


# --- decode errors, one by one ----------------------------------------------------------------


def drain(decoder: FrameDecoder) -> list[Message | FrameError]:
    return list(decoder)


def decode_items(data: bytes, **kwargs: int) -> list[Message | FrameError]:
    decoder = FrameDecoder(**kwargs)
    decoder.feed(data)
    items = drain(decoder)
    assert decoder.buffered == 0
    return items


def kinds(items: list[Message | FrameError]) -> list[type]:
    return [type(item) for item in items]


def test_garbage_before_a_frame() -> None:
    decoder = FrameDecoder()
    decoder.feed(b"AT+CSQ\r\n" + ACK.frame)
    items = drain(decoder)
    assert kinds(items) == [Garbage, Ack]
    assert isinstance(items[0], Garbage) and items[0].seq is None
    assert decoder.garbage_bytes == 8


def test_garbage_without_any_frame_is_dropped() -> None:
    decoder = FrameDecoder()
    decoder.feed(b"\x00" * 1000)
    with pytest.raises(Garbage):
        decoder.next_frame()
    assert decoder.next_frame() is None
    assert decoder.buffered == 0
    assert decoder.garbage_bytes == 1000


def test_a_trailing_g_is_kept_as_a_possible_marker_half() -> None:
    decoder = FrameDecoder()
    decoder.feed(b"xxG")
    with pytest.raises(Garbage):
        decoder.next_frame()
    assert decoder.next_frame() is None
    assert decoder.buffered == 1
    decoder.feed(ACK.frame[1:])
    assert decoder.next_frame() == ACK.message


def test_repeated_marker_bytes_resynchronise() -> None:
    assert kinds(decode_items(b"GGG" + ACK.frame)) == [Garbage, Ack]


def test_bad_crc_costs_one_byte_and_the_next_frame_survives() -> None:
    bad = bytearray(ACK.frame)
    bad[-1] ^= 0x01
    assert bad.find(b"G8", 1) == -1  # so what follows the first byte is plain garbage
    decoder = FrameDecoder()
    decoder.feed(bytes(bad) + HEARTBEAT.frame)
    items = drain(decoder)
    assert kinds(items) == [BadCrc, Garbage, Heartbeat]
    assert isinstance(items[0], BadCrc) and items[0].seq == 2
    assert decoder.garbage_bytes == len(bad) - 1


def test_bad_crc_from_a_corrupted_payload() -> None:
    bad = bytearray(CASES_BY_ID["position_1"].frame)
    bad[HEADER_SIZE + 5] ^= 0x40
    items = decode_items(bytes(bad) + HEARTBEAT.frame)
    assert isinstance(items[0], BadCrc) and items[0].seq == 2
    assert items[-1] == HEARTBEAT.message
    assert not any(isinstance(item, Position) for item in items)


@pytest.mark.parametrize("length", [0, 1, 7])
def test_bad_length(length: int) -> None:
    header = b"G8" + length.to_bytes(2, "big") + hexbytes("01", "04", "00000005")
    items = decode_items(header + b"\x00" * 8 + HEARTBEAT.frame)
    assert kinds(items) == [BadLength, Garbage, Heartbeat]
    assert isinstance(items[0], BadLength) and items[0].seq == 5


@pytest.mark.parametrize("length", [MAX_FRAME_SIZE - 3, 0xFFFF])
def test_frame_too_large(length: int) -> None:
    header = b"G8" + length.to_bytes(2, "big") + hexbytes("01", "02", "0000002a")
    # Decided from the header alone: the decoder does not wait for the announced bytes.
    decoder = FrameDecoder()
    decoder.feed(header)
    with pytest.raises(FrameTooLarge) as caught:
        decoder.next_frame()
    assert caught.value.seq == 42
    decoder.feed(HEARTBEAT.frame)
    assert kinds(drain(decoder)) == [Garbage, Heartbeat]


def test_max_frame_size_is_inclusive() -> None:
    data = CASES_BY_ID["position_1"].frame
    assert decode_items(data, max_frame_size=len(data)) == [CASES_BY_ID["position_1"].message]
    items = decode_items(data, max_frame_size=len(data) - 1)
    assert isinstance(items[0], FrameTooLarge) and items[0].seq == 2
    assert not any(isinstance(item, Position) for item in items)


def test_largest_legal_frame_fits_max_frame_size() -> None:
    assert len(CASES_BY_ID["position_255"].frame) == 11_488 <= MAX_FRAME_SIZE


@pytest.mark.parametrize("version", [0, 2, 0xFF])
def test_unsupported_version_skips_the_whole_frame(version: int) -> None:
    items = decode_items(frame(0x04, 8, b"", version=version) + HEARTBEAT.frame)
    # Its CRC was good, so its length was trusted: no garbage between it and the next frame.
    assert kinds(items) == [UnsupportedVersion, Heartbeat]
    assert isinstance(items[0], UnsupportedVersion) and items[0].seq == 8


@pytest.mark.parametrize("type_", [t for t in range(256) if t not in set(MessageType)])
def test_unknown_message_type_skips_the_whole_frame(type_: int) -> None:
    items = decode_items(frame(type_, 9, b"GP8" * 5) + HEARTBEAT.frame)
    assert kinds(items) == [UnknownMessageType, Heartbeat]
    assert isinstance(items[0], UnknownMessageType) and items[0].seq == 9


_RECORD = PARIS_HEX.hex()
MALFORMED: list[tuple[str, int, bytes]] = [
    ("login_short", 0x01, CASES_BY_ID["login"].frame[HEADER_SIZE:-3]),
    ("login_long", 0x01, CASES_BY_ID["login"].frame[HEADER_SIZE:-2] + b"\x00"),
    ("login_16_digit_imei", 0x01, hexbytes("00038d7ea4c68000", "01", "010000", "00" * 32)),
    ("login_model_0", 0x01, hexbytes("0000000000000001", "00", "010000", "00" * 32)),
    ("login_model_3", 0x01, hexbytes("0000000000000001", "03", "010000", "00" * 32)),
    ("ident_with_proof", 0x06, CASES_BY_ID["login"].frame[HEADER_SIZE:-2]),
    ("ident_short", 0x06, hexbytes("0000000000000001", "01", "0100")),
    ("ident_16_digit_imei", 0x06, hexbytes("00038d7ea4c68000", "01", "010000")),
    ("ident_model_0", 0x06, hexbytes("0000000000000001", "00", "010000")),
    ("position_empty", 0x02, b""),
    ("position_count_0", 0x02, b"\x00"),
    ("position_count_0_with_record", 0x02, hexbytes("00", _RECORD)),
    ("position_count_2_with_1", 0x02, hexbytes("02", _RECORD)),
    ("position_count_1_with_2", 0x02, hexbytes("01", _RECORD, _RECORD)),
    ("position_record_short", 0x02, hexbytes("01", _RECORD[:-2])),
    ("position_record_long", 0x02, hexbytes("01", _RECORD, "00")),
    ("event_short", 0x03, hexbytes("0001", "00000000", _RECORD[:-2])),
    ("event_long", 0x03, hexbytes("0001", "00000000", _RECORD, "00")),
    ("event_no_record", 0x03, hexbytes("0001", "00000000")),
    ("event_code_0", 0x03, hexbytes("0000", "00000000", _RECORD)),
    ("event_code_18", 0x03, hexbytes("0012", "00000000", _RECORD)),
    ("event_code_ffff", 0x03, hexbytes("ffff", "00000000", RIO_HEX.hex())),
    ("heartbeat_with_payload", 0x04, b"\x00"),
    ("command_result_short", 0x05, hexbytes("00000001", "00", "00", "00")),
    ("command_result_status_3", 0x05, hexbytes("00000001", "03", "00", "0000")),
    ("command_result_failure_6", 0x05, hexbytes("00000001", "01", "06", "0000")),
    ("challenge_short", 0x80, b"\x00" * 23),
    ("challenge_long", 0x80, b"\x00" * 25),
    ("login_result_status_7", 0x81, hexbytes("07", "0000000000000000")),
    ("login_result_long", 0x81, hexbytes("00", "0000000000000000", "00")),
    ("command_type_0", 0x82, hexbytes("00", "00000000")),
    ("command_type_8", 0x82, hexbytes("08", "00000000")),
    ("command_short", 0x82, hexbytes("01", "000000")),
    ("ack_short", 0xA0, hexbytes("000000")),
    ("ack_long", 0xA0, hexbytes("0000000000")),
    ("nack_reason_0", 0xA1, hexbytes("00000001", "00")),
    ("nack_reason_10", 0xA1, hexbytes("00000001", "0a")),
    ("nack_short", 0xA1, hexbytes("00000001")),
]


@pytest.mark.parametrize(
    ("type_", "payload"), [(t, p) for _, t, p in MALFORMED], ids=[i for i, _, _ in MALFORMED]
)
def test_malformed_payload_skips_the_whole_frame(type_: int, payload: bytes) -> None:
    items = decode_items(frame(type_, 0xC0FFEE, payload) + HEARTBEAT.frame)
    assert kinds(items) == [MalformedPayload, Heartbeat]
    assert isinstance(items[0], MalformedPayload) and items[0].seq == 0xC0FFEE
    assert MessageType(type_).name in str(items[0])


def test_errors_interleave_with_messages_in_stream_order() -> None:
    bad_crc = bytearray(ACK.frame)
    bad_crc[-2] ^= 0xFF
    stream = (
        b"noise"
        + HEARTBEAT.frame
        + frame(0x04, 1, b"", version=9)
        + ACK.frame
        + bytes(bad_crc)
        + frame(0x7F, 1, b"")
        + CASES_BY_ID["nack"].frame
    )
    assert kinds(decode_items(stream)) == [
        Garbage,
        Heartbeat,
        UnsupportedVersion,
        Ack,
        BadCrc,
        Garbage,
        UnknownMessageType,
        Nack,
    ]


def test_error_reasons_are_distinct_metric_labels() -> None:
    errors = [Garbage, BadCrc, BadLength, FrameTooLarge, UnsupportedVersion]
    errors += [UnknownMessageType, MalformedPayload]
    assert all(issubclass(e, FrameError) for e in errors)
    assert len({e.reason for e in errors}) == len(errors)


def test_big_and_small_frames_decode_to_their_records() -> None:
    # Both CRC implementations (below and above WIDE_FROM bytes) and both record paths (one
    # record, many) in one stream, fed in pieces that cut frames.
    records = tuple(PARIS._replace(time_ms=PARIS.time_ms + i, badge=i) for i in range(255))
    messages = [Position(1, records[:1]), Position(2, records), Position(3, records[:2])]
    stream = b"".join(map(encode, messages))
    decoder = FrameDecoder()
    decoded: list[Message | FrameError] = []
    for start in range(0, len(stream), 1000):
        decoder.feed(stream[start : start + 1000])
        decoded += drain(decoder)
    assert decoded == messages
    assert all(type(r) is type(PARIS) for m in messages for r in m.records)


def test_a_kept_error_does_not_pin_the_receive_buffer() -> None:
    # A caller keeps the errors (with their tracebacks) it meets; if one held a view of the
    # receive buffer, the next feed could not grow or compact it (BufferError).
    bad = frame(0x02, 7, hexbytes("02") + PARIS_HEX)  # announces 2 records, carries 1
    decoder = FrameDecoder()
    decoder.feed(bad + HEARTBEAT.frame[:3])
    kept = drain(decoder)
    assert kinds(kept) == [MalformedPayload]
    for _ in range(3):  # compaction happens once half of the buffer is consumed
        decoder.feed(HEARTBEAT.frame[3:] + HEARTBEAT.frame[:3])
        assert drain(decoder) == [HEARTBEAT.message]
    assert kept[0].__traceback__ is not None
