"""CRC-16/IBM (ARC): the check value, and the C implementation against the bitwise one."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from protocol.teltonika import crc16
from protocol.teltonika.crc import CHECK_VALUE, POLY


def crc16_bitwise(data: bytes) -> int:
    """The textbook definition, one bit at a time."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ POLY if crc & 1 else crc >> 1
    return crc


def test_check_value() -> None:
    assert crc16(b"123456789") == CHECK_VALUE == 0xBB3D


def test_empty_and_odd_lengths() -> None:
    assert crc16(b"") == 0
    assert crc16(b"1") == crc16_bitwise(b"1")


def test_published_packet_crcs() -> None:
    # From Teltonika's examples: the CRC of the data (codec id ... second count).
    data = bytes.fromhex("0C010500000007676574696E666F01")
    assert crc16(data) == 0x4312


@given(st.binary(max_size=300))
def test_matches_the_bitwise_definition(data: bytes) -> None:
    assert crc16(data) == crc16_bitwise(data)
    assert crc16(memoryview(bytearray(data))) == crc16_bitwise(data)
