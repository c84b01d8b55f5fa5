"""Guard on the package's public surface: the gateway, the simulator and the CLI import these."""

from __future__ import annotations

import protocol.teltonika as teltonika

PUBLIC = {
    "LAYOUTS", "MAX_IMEI_LENGTH", "MAX_PACKET_SIZE", "MAX_RECORDS", "AvlId", "AvlPacket",
    "AvlRecord", "BadCrc", "BadImei", "BadLength", "BadPreamble", "Codec", "Command",
    "DeviceDecoder", "EncodeError", "Frame", "FrameDecoder", "FrameError", "FrameTooLarge",
    "Generation", "Imei", "ImeiReply", "MalformedPacket", "MessageType", "Priority",
    "RecordsAck", "Response", "TeltonikaError", "UnknownCodec", "crc16", "encode",
}  # fmt: skip


def test_all_is_exactly_the_public_api() -> None:
    assert set(teltonika.__all__) == PUBLIC
    assert len(teltonika.__all__) == len(PUBLIC)


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from protocol.teltonika import *", namespace)
    assert set(namespace) - {"__builtins__"} == PUBLIC


def test_error_tree() -> None:
    for error in (
        teltonika.BadImei,
        teltonika.BadPreamble,
        teltonika.BadLength,
        teltonika.FrameTooLarge,
        teltonika.BadCrc,
        teltonika.UnknownCodec,
        teltonika.MalformedPacket,
    ):
        assert issubclass(error, teltonika.FrameError)
    for base in (teltonika.FrameError, teltonika.EncodeError):
        assert issubclass(base, teltonika.TeltonikaError)


def test_every_avl_codec_has_a_layout() -> None:
    assert set(teltonika.LAYOUTS) == set(teltonika.Codec) - {teltonika.Codec.CODEC_12}


def test_imports_nothing_of_gp8() -> None:
    # A codec of a third-party protocol stands alone: not even protocol.gp8.
    import ast
    from pathlib import Path

    for path in Path(teltonika.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert node.module.startswith(("protocol.teltonika", "__future__")) or (
                    node.module.split(".")[0] not in {"protocol", "gateway", "storage", "gp8"}
                ), (path.name, node.module)
