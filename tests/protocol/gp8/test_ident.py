"""IDENT (0x06), the frame that names the box at the head of every MQTT uplink message, and the
box's MQTT password derived from its secret (docs/protocol.md §7)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.gp8 import (
    DeviceSession,
    EncodeError,
    FrameDecoder,
    Ident,
    MalformedPayload,
    MessageType,
    Model,
    SessionError,
    encode,
    mqtt_password,
)
from tests.protocol.gp8.reference import frame, hexbytes

IMEI = "356938035643809"
IMEI_HEX = "000144a21cd245a1"


def decode(data: bytes) -> list[object]:
    decoder = FrameDecoder()
    decoder.feed(data)
    return list(decoder)


def test_type_byte() -> None:
    assert MessageType.IDENT == 0x06
    assert MessageType.IDENT < 0x80  # box → server range


def test_layout_against_the_reference_framer() -> None:
    expected = frame(0x06, 7, hexbytes(IMEI_HEX, "02", "02", "04", "01"))
    message = Ident(7, IMEI, Model.GP8500, (2, 4, 1))
    assert encode(message) == expected
    assert len(expected) == 10 + 12 + 2  # header, imei u64 + model + 3 firmware bytes, CRC
    assert decode(expected) == [message]
    assert message.firmware_version == "2.4.1"


def test_leading_zeros_of_the_imei_survive() -> None:
    message = Ident(1, "000000000000042", Model.GP8000, (0, 0, 1))
    assert decode(encode(message)) == [message]


@given(
    seq=st.integers(0, 2**32 - 1),
    imei=st.text(alphabet="0123456789", min_size=15, max_size=15),
    model=st.sampled_from(Model),
    firmware=st.tuples(*(st.integers(0, 255),) * 3),
)
def test_round_trip(seq: int, imei: str, model: Model, firmware: tuple[int, int, int]) -> None:
    message = Ident(seq, imei, model, firmware)
    assert decode(encode(message)) == [message]


@pytest.mark.parametrize(
    "imei", ["35693803564380", "3569380356438091", "35693803564380x", "³" * 15]
)
def test_encode_refuses_a_bad_imei(imei: str) -> None:
    with pytest.raises(EncodeError):
        encode(Ident(1, imei, Model.GP8000, (1, 0, 0)))


@pytest.mark.parametrize(
    ("name", "payload"),
    [
        ("short", hexbytes(IMEI_HEX, "01", "0100")),
        ("long", hexbytes(IMEI_HEX, "01", "010000", "00")),
        ("imei_over_15_digits", hexbytes("00038d7ea4c68000", "01", "010000")),
        ("unknown_model", hexbytes(IMEI_HEX, "09", "010000")),
    ],
)
def test_malformed_payloads(name: str, payload: bytes) -> None:
    items = decode(frame(0x06, 5, payload))
    assert len(items) == 1
    assert isinstance(items[0], MalformedPayload)
    assert items[0].seq == 5


def test_ident_and_data_frames_share_one_stream() -> None:
    from protocol.gp8 import Heartbeat

    data = encode(Ident(1, IMEI, Model.GP8000, (1, 4, 2))) + encode(Heartbeat(2))
    assert decode(data) == [Ident(1, IMEI, Model.GP8000, (1, 4, 2)), Heartbeat(2)]


def test_a_tcp_session_refuses_ident() -> None:
    # Over TCP the box identifies itself with LOGIN; IDENT is for MQTT only.
    session = DeviceSession()
    with pytest.raises(SessionError):
        session.receive(Ident(1, IMEI, Model.GP8000, (1, 0, 0)))
    session.authenticated()
    with pytest.raises(SessionError):
        session.receive(Ident(2, IMEI, Model.GP8000, (1, 0, 0)))


# --- the MQTT password ---------------------------------------------------------------------------


def test_mqtt_password_is_the_documented_hmac() -> None:
    secret = "gp8-example-secret"
    digest = hmac.new(secret.encode(), b"GP8v1-MQTT", hashlib.sha256).digest()
    assert mqtt_password(secret) == base64.urlsafe_b64encode(digest).decode().rstrip("=")


@given(st.text(min_size=1, max_size=64))
def test_mqtt_password_shape(secret: str) -> None:
    password = mqtt_password(secret)
    assert len(password) == 43
    assert set(password) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert mqtt_password(secret) == password  # deterministic: the broker file can be regenerated


def test_mqtt_passwords_differ_per_secret() -> None:
    passwords = {mqtt_password(f"secret-{i}") for i in range(200)}
    assert len(passwords) == 200


# --- the example of docs/protocol.md §7.7 --------------------------------------------------------

DOC = (Path(__file__).resolve().parents[3] / "docs" / "protocol.md").read_text(encoding="utf-8")


def _block(marker: str) -> bytes:
    match = re.search(rf"<!-- {marker} -->\n```text\n(.*?)```", DOC, re.S)
    assert match, marker
    return bytes.fromhex("".join(line.split("#", 1)[0] for line in match.group(1).splitlines()))


def test_the_documented_uplink_example() -> None:
    ident = _block("mqtt uplink: ident")
    position = _block("example: position")
    assert decode(ident) == [Ident(7, IMEI, Model.GP8500, (2, 4, 1))]
    assert encode(Ident(7, IMEI, Model.GP8500, (2, 4, 1))) == ident
    assert len(position) == 58 and len(ident + position) == 82  # as the text says
    assert "58 bytes of the POSITION frame\nof A.4, 82 bytes in all" in DOC
