"""CRC-16/IBM, also known as CRC-16/ARC: the checksum of Teltonika packets (docs/teltonika.md).

Poly 0x8005 reflected (0xA001), init 0x0000, refin/refout true, xorout 0x0000; the check value for
b"123456789" is 0xBB3D. Not the GP8 CRC (CRC-16/IBM-3740): same width, other polynomial and
bit order, so ``binascii.crc_hqx`` cannot compute it, and the standard library has no other C
implementation of it.

Speed in pure Python comes from "slicing by 4": four 256-entry tables (table k: a byte followed
by k zero bytes) let one loop iteration fold four bytes, read as one little-endian 32-bit word,
into the 16-bit register. Measured on packets of varied bytes, that is about a third faster than
the byte-at-a-time table; a 65,536-entry "two bytes per lookup" table is faster only on data
that keeps hitting the same entries, and much slower on real packets (it does not stay in the
CPU caches). Words stay below 2**32, where CPython's integer operations are cheapest.
"""

from __future__ import annotations

import struct
import sys

POLY = 0xA001  # 0x8005, bit-reversed: the algorithm is reflected
CHECK_VALUE = 0xBB3D  # crc16(b"123456789"), the catalogue's check value


def _tables() -> tuple[list[int], list[int], list[int], list[int]]:
    t0 = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ POLY if crc & 1 else crc >> 1
        t0.append(crc)
    t1 = [(c >> 8) ^ t0[c & 0xFF] for c in t0]
    t2 = [(c >> 8) ^ t0[c & 0xFF] for c in t1]
    t3 = [(c >> 8) ^ t0[c & 0xFF] for c in t2]
    return t0, t1, t2, t3


_T0, _T1, _T2, _T3 = _tables()
_LITTLE_ENDIAN = sys.byteorder == "little"


def crc16(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/IBM (ARC) of ``data``."""
    view = memoryview(data).cast("B")
    n = len(view)
    whole = n & ~3
    t0, t1, t2, t3 = _T0, _T1, _T2, _T3
    words = (
        view[:whole].cast("I")
        if _LITTLE_ENDIAN
        else (w for (w,) in struct.iter_unpack("<I", view[:whole]))
    )
    crc = 0
    for word in words:
        x = word ^ crc
        crc = t3[x & 0xFF] ^ t2[(x >> 8) & 0xFF] ^ t1[(x >> 16) & 0xFF] ^ t0[x >> 24]
    for byte in view[whole:]:
        crc = (crc >> 8) ^ t0[(crc ^ byte) & 0xFF]
    return crc
