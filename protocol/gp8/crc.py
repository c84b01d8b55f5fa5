"""CRC-16/IBM-3740 (also known as CRC-16/CCITT-FALSE), docs/protocol.md §2.3.

Poly 0x1021, init 0xFFFF, no reflection, xorout 0x0000; check value for b"123456789" is 0x29B1.
``binascii.crc_hqx`` implements exactly this polynomial in C, so we get the speed of C without a
dependency; the init value is what makes it the IBM-3740 variant rather than XMODEM.
"""

from __future__ import annotations

from binascii import crc_hqx

CRC_INIT = 0xFFFF
CHECK_VALUE = 0x29B1  # crc16(b"123456789"), the catalogue's check value


def crc16(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/IBM-3740 of ``data``."""
    return crc_hqx(data, CRC_INIT)
