"""CRC-16/IBM-3740 (also known as CRC-16/CCITT-FALSE), docs/protocol.md §2.3.

Poly 0x1021, init 0xFFFF, no reflection, xorout 0x0000; check value for b"123456789" is 0x29B1.
Two C implementations, each where it is fastest: ``binascii.crc_hqx`` (this polynomial; the
init value makes it IBM-3740 rather than XMODEM) goes a byte at a time, about 4 ns a byte, and
costs almost nothing to call; `anycrc` (a dependency already, protocol/teltonika/crc.py) goes
many bytes at a time, 2,262 bytes (a 50-record frame) in ~0.7 µs instead of ~9 µs, but its
call costs ~0.3 µs more. The CRC was the largest cost of decoding big frames.
"""

from __future__ import annotations

from binascii import crc_hqx
from collections.abc import Callable

import anycrc

CRC_INIT = 0xFFFF
CHECK_VALUE = 0x29B1  # crc16(b"123456789"), the catalogue's check value
# From this many bytes on anycrc is faster (measured: even at 128, 12x at 2,262).
WIDE_FROM = 128

# The many-bytes-at-a-time implementation alone (FrameDecoder makes crc16's choice inline).
crc16_wide: Callable[[bytes | bytearray | memoryview], int] = anycrc.Model("CRC16-IBM-3740").calc


def crc16(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/IBM-3740 of ``data``.

    Appending the result big-endian gives data whose CRC is 0 (no reflection, no xorout), which
    is how the decoder checks a frame with its CRC in one call.
    """
    if len(data) < WIDE_FROM:
        return crc_hqx(data, CRC_INIT)
    return crc16_wide(data)
