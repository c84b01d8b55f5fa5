"""CRC-16/IBM-3740 (docs/protocol.md §2.3)."""

from __future__ import annotations

from binascii import crc_hqx

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.gp8 import crc16
from protocol.gp8.crc import CHECK_VALUE, CRC_INIT, WIDE_FROM, crc16_wide
from tests.protocol.gp8.reference import crc16_bitwise


def test_catalogue_check_value() -> None:
    # The check value of CRC-16/IBM-3740 in the CRC RevEng catalogue.
    assert crc16(b"123456789") == 0x29B1
    assert CHECK_VALUE == 0x29B1


@pytest.mark.parametrize(
    ("data", "crc"),
    [
        (b"", 0xFFFF),  # init passes through untouched: no xorout
        (b"\x00", 0xE1F0),
        (b"A", 0xB915),
    ],
)
def test_known_values(data: bytes, crc: int) -> None:
    assert crc16(data) == crc


def test_not_the_xmodem_or_kermit_variant() -> None:
    # Same polynomial, other init/reflection: CRC-16/XMODEM gives 0x31C3, KERMIT 0x2189.
    assert crc16(b"123456789") not in (0x31C3, 0x2189)


def test_reference_agrees_with_catalogue() -> None:
    assert crc16_bitwise(b"123456789") == 0x29B1


@settings(max_examples=300)
@given(st.binary(max_size=512))
def test_matches_bitwise_reference(data: bytes) -> None:
    assert crc16(data) == crc16_bitwise(data)


@given(st.binary(max_size=64))
def test_accepts_every_buffer_type(data: bytes) -> None:
    assert crc16(bytearray(data)) == crc16(memoryview(data)) == crc16(data)


@settings(max_examples=200)
@given(st.binary(min_size=1, max_size=256), st.data())
def test_detects_every_single_bit_error(data: bytes, draw: st.DataObject) -> None:
    bit = draw.draw(st.integers(0, len(data) * 8 - 1))
    flipped = bytearray(data)
    flipped[bit // 8] ^= 0x80 >> (bit % 8)
    assert crc16(flipped) != crc16(data)


@pytest.mark.parametrize("size", [WIDE_FROM - 1, WIDE_FROM, WIDE_FROM + 1, 2262, 16 * 1024])
def test_both_implementations_match_the_reference(size: int) -> None:
    # crc16 switches implementation at WIDE_FROM bytes; each side must be the same CRC.
    data = bytes((i * 37 + 11) % 256 for i in range(size))
    assert crc16(data) == crc16_bitwise(data)
    assert crc16_wide(data) == crc_hqx(data, CRC_INIT) == crc16_bitwise(data)


@given(st.binary(max_size=600))
def test_data_followed_by_its_crc_has_crc_zero(data: bytes) -> None:
    # What the decoder checks a frame by: the CRC over payload and CRC field together.
    assert crc16(data + crc16(data).to_bytes(2, "big")) == 0
