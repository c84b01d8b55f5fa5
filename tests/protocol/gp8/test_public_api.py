"""Guard on the package's public surface: other packages import these names."""

from __future__ import annotations

import protocol.gp8 as protocol

PUBLIC = {
    "MAX_FRAME_SIZE", "MAX_RECORDS_PER_FRAME", "NONCE_SIZE", "RECORD_SIZE", "VERSION",
    "Ack", "BadCrc", "BadLength", "Challenge", "Command", "CommandFailure", "CommandResult",
    "CommandStatus", "CommandType", "DeviceSession", "EncodeError", "Event", "EventCode",
    "FrameDecoder", "FrameError", "FrameTooLarge", "Garbage", "Heartbeat", "Ident", "Login",
    "LoginResult", "LoginStatus", "MalformedPayload", "Message", "MessageType", "Model", "Nack",
    "NackReason", "Position", "PositionRecord", "ProtocolError", "RecordFlags",
    "RecordRejection", "SessionError", "SessionState", "UnknownMessageType",
    "UnsupportedVersion", "WarningLight", "check_record", "crc16", "encode", "login_proof",
    "mqtt_password", "verify_login_proof",
}  # fmt: skip


def test_all_is_exactly_the_public_api() -> None:
    # Removing a name breaks importers; adding one is a decision. Either way, update this set.
    assert set(protocol.__all__) == PUBLIC
    assert len(protocol.__all__) == len(PUBLIC)  # no duplicates


def test_every_public_name_exists() -> None:
    for name in protocol.__all__:
        assert getattr(protocol, name) is not None, name


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from protocol.gp8 import *", namespace)
    assert set(namespace) - {"__builtins__"} == PUBLIC


def test_constants() -> None:
    assert protocol.VERSION == 1
    assert protocol.RECORD_SIZE == 45
    assert protocol.MAX_RECORDS_PER_FRAME == 255
    assert protocol.NONCE_SIZE == 16
    # Room for the largest legal frame: header 10 + count 1 + 255 records + CRC 2.
    assert 10 + 1 + 255 * 45 + 2 <= protocol.MAX_FRAME_SIZE == 16 * 1024


def test_error_tree() -> None:
    frame_errors = [
        protocol.Garbage,
        protocol.BadCrc,
        protocol.BadLength,
        protocol.FrameTooLarge,
        protocol.UnsupportedVersion,
        protocol.UnknownMessageType,
        protocol.MalformedPayload,
    ]
    for error in frame_errors:
        assert issubclass(error, protocol.FrameError)
    for base in (protocol.FrameError, protocol.EncodeError, protocol.SessionError):
        assert issubclass(base, protocol.ProtocolError)
