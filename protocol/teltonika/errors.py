"""Errors of the Teltonika codec (docs/teltonika.md, "Framing and errors").

Every error the decoder raises is a :class:`FrameError`, and every one is final: Teltonika's TCP
framing has no start marker to resynchronise on (a packet starts with four zero bytes, which
data is full of), so once a length, a CRC or a layout is wrong, where the next packet starts is
unknown. The decoder drops what it holds and takes nothing more; the link is closed, and the box
resends what was not acknowledged on its next connection.
"""

from __future__ import annotations


class TeltonikaError(Exception):
    """Base class of every error of the Teltonika codec."""


class FrameError(TeltonikaError):
    """What the box sent cannot be decoded; the stream is unusable from here on."""

    reason: str = "malformed"


class BadImei(FrameError):
    """The opening IMEI frame is not 1 to MAX_IMEI_LENGTH ASCII digits."""

    reason = "bad_imei"


class BadPreamble(FrameError):
    """A packet does not start with the four zero bytes of the preamble."""

    reason = "bad_preamble"


class BadLength(FrameError):
    """The data length is smaller than the smallest packet of any codec."""

    reason = "bad_length"


class FrameTooLarge(FrameError):
    """The data length exceeds MAX_PACKET_SIZE (rejected from the header alone)."""

    reason = "too_large"


class BadCrc(FrameError):
    """The CRC field does not match the packet's bytes."""

    reason = "bad_crc"


class UnknownCodec(FrameError):
    """The codec id is none this decoder speaks (8, 8 Extended, 16, 12)."""

    reason = "unknown_codec"


class MalformedPacket(FrameError):
    """The CRC is good but the content contradicts itself: counts, sizes, a record cut short."""

    reason = "malformed"


class EncodeError(TeltonikaError):
    """A frame cannot be encoded (a field out of its wire range, or not carried by the codec)."""
