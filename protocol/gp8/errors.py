"""Errors raised by the GP8 codec (docs/protocol.md §6).

Every error the decoder raises is a :class:`FrameError`; the decoder has already skipped the
offending bytes when it raises, so the caller counts the error and keeps reading.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base class of every error in the `protocol` package."""


class FrameError(ProtocolError):
    """A frame on the wire could not be accepted.

    ``seq`` is the sequence number the header claimed, when the header could be read: it is
    unverified (the CRC may be wrong) and only good for a NACK the box can match.
    """

    reason: str = "malformed"

    def __init__(self, message: str, *, seq: int | None = None) -> None:
        super().__init__(message)
        self.seq = seq


class Garbage(FrameError):
    """Bytes before a start marker were skipped while resynchronising."""

    reason = "garbage"


class BadCrc(FrameError):
    """The CRC does not match the frame's bytes."""

    reason = "bad_crc"


class BadLength(FrameError):
    """The length field is smaller than the smallest frame."""

    reason = "bad_length"


class FrameTooLarge(FrameError):
    """The length field exceeds MAX_FRAME_SIZE."""

    reason = "too_large"


class UnsupportedVersion(FrameError):
    """The frame's protocol version is not one this codec speaks."""

    reason = "unsupported_version"


class UnknownMessageType(FrameError):
    """The frame's message type is not in the table."""

    reason = "unknown_type"


class MalformedPayload(FrameError):
    """The payload does not have the layout its message type requires."""

    reason = "malformed"


class EncodeError(ProtocolError):
    """A message cannot be encoded (a field out of its wire range)."""
