"""The Teltonika TCP protocol (Codec 8, 8 Extended, 16 and 12): a sans-IO codec, bytes in and
frames out. See docs/teltonika.md."""

from __future__ import annotations

from protocol.teltonika.avl_ids import AvlId
from protocol.teltonika.codec import (
    LAYOUTS,
    MAX_IMEI_LENGTH,
    MAX_PACKET_SIZE,
    MAX_RECORDS,
    DeviceDecoder,
    FrameDecoder,
    encode,
)
from protocol.teltonika.crc import crc16
from protocol.teltonika.errors import (
    BadCrc,
    BadImei,
    BadLength,
    BadPreamble,
    EncodeError,
    FrameError,
    FrameTooLarge,
    MalformedPacket,
    TeltonikaError,
    UnknownCodec,
)
from protocol.teltonika.frames import (
    AvlPacket,
    AvlRecord,
    Codec,
    Command,
    Frame,
    Generation,
    Imei,
    ImeiReply,
    MessageType,
    Priority,
    RecordsAck,
    Response,
)

__all__ = [
    "LAYOUTS",
    "MAX_IMEI_LENGTH",
    "MAX_PACKET_SIZE",
    "MAX_RECORDS",
    "AvlId",
    "AvlPacket",
    "AvlRecord",
    "BadCrc",
    "BadImei",
    "BadLength",
    "BadPreamble",
    "Codec",
    "Command",
    "DeviceDecoder",
    "EncodeError",
    "Frame",
    "FrameDecoder",
    "FrameError",
    "FrameTooLarge",
    "Generation",
    "Imei",
    "ImeiReply",
    "MalformedPacket",
    "MessageType",
    "Priority",
    "RecordsAck",
    "Response",
    "TeltonikaError",
    "UnknownCodec",
    "crc16",
    "encode",
]
