"""An independent, deliberately naive implementation of GP8 framing, written from the spec.

The golden frames in cases.py are assembled with it rather than with protocol/, so an encoder
bug cannot hide by producing the very bytes it is compared against.
"""

from __future__ import annotations


def crc16_bitwise(data: bytes) -> int:
    """CRC-16/IBM-3740 one bit at a time: poly 0x1021, init 0xFFFF, no reflection, no xorout."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def frame(type_: int, seq: int, payload: bytes, *, version: int = 1) -> bytes:
    """magic ‖ length ‖ version ‖ type ‖ seq ‖ payload ‖ CRC, as docs/protocol.md §2 lays out."""
    length = 1 + 1 + 4 + len(payload) + 2
    body = length.to_bytes(2, "big") + bytes((version, type_)) + seq.to_bytes(4, "big") + payload
    return b"G8" + body + crc16_bitwise(body).to_bytes(2, "big")


def hexbytes(*parts: str) -> bytes:
    """Bytes from hex pieces, one per field, so a golden payload reads like its layout table."""
    return bytes.fromhex("".join(parts))
