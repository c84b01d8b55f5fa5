"""`gp8 decode --protocol gp8|teltonika HEX|-|FILE`: the frames of a capture as JSON, one per line,
with what gp8 would store from them — for field engineers checking a box (docs/teltonika.md).

The input is hex text (spaces and newlines allowed), ``-`` for standard input (hex text or raw
bytes), or a file of raw bytes as captured off the wire. A Teltonika capture may start with the
box's IMEI or with a packet. Decoding stops at the first framing error, which is printed as the
last line (exit status 1), as the gateway would close the link there.
"""

from __future__ import annotations

import string
import sys
from collections.abc import Iterable, Iterator
from dataclasses import asdict, is_dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import orjson

from gateway.adapters import gp8 as gp8_adapter
from gateway.adapters import teltonika as teltonika_adapter
from gateway.context import DeviceContext
from protocol import gp8, teltonika
from storage.models import DeviceModel

# Stored models need a fleet and a box: a decode has neither.
_CONTEXT = DeviceContext("-", "-", "-")
_HEX = set(string.hexdigits + string.whitespace)


def read_input(source: str, stdin: Any = None) -> bytes:
    """The capture's bytes from a hex argument, ``-`` (stdin) or a file of raw bytes."""
    if source == "-":
        raw: bytes = (stdin or sys.stdin.buffer).read()
        text = raw.decode("latin-1")
        return bytes.fromhex(text) if text.strip() and set(text) <= _HEX else raw
    path = Path(source)
    if not set(source) <= _HEX and path.exists():
        return path.read_bytes()
    return bytes.fromhex(source)


def _plain(value: Any) -> Any:
    """A frame's value as JSON-friendly data (bytes as hex, enums by name)."""
    if isinstance(value, Enum):
        return value.name.lower()
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    if hasattr(value, "_asdict"):  # NamedTuple records
        return {k: _plain(v) for k, v in value._asdict().items()}
    if is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def _error(exc: Exception) -> dict[str, Any]:
    return {"error": getattr(exc, "reason", type(exc).__name__), "detail": str(exc)}


def decode_teltonika(
    data: bytes, received_ms: int, model: DeviceModel = DeviceModel.FMC130
) -> Iterator[dict[str, Any]]:
    profile = teltonika_adapter.profile_for(model, {})
    decoder = teltonika.FrameDecoder(expect_imei=data[:2] != b"\x00\x00")
    decoder.feed(data)
    for item in decoder:
        if isinstance(item, teltonika.FrameError):
            yield _error(item)
            return
        out: dict[str, Any] = {"frame": type(item).__name__, **_plain(item)}
        if isinstance(item, teltonika.AvlPacket):
            out["records"] = [_teltonika_record(r, received_ms, profile) for r in item.records]
        yield out
    if decoder.buffered:
        yield {"error": "truncated", "detail": f"{decoder.buffered} bytes of an incomplete frame"}


def _teltonika_record(
    record: teltonika.AvlRecord, received_ms: int, profile: teltonika_adapter.DeviceProfile
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "time_ms": record.time_ms,
        "priority": record.priority,
        "lon_e7": record.lon_e7,
        "lat_e7": record.lat_e7,
        "altitude_m": record.altitude_m,
        "angle_deg": record.angle_deg,
        "satellites": record.satellites,
        "speed_kmh": record.speed_kmh,
        "event_id": record.event_id,
        "generation": record.generation,
        "io": _plain(record.io),
    }
    rejection = teltonika_adapter.check_record(record, received_ms)
    if rejection is not None:
        out["rejected"] = rejection.value
        return out
    io = record.io
    position = teltonika_adapter.to_position(record, io, _CONTEXT, received_ms, profile)
    out["position"] = _stored(position._asdict())  # its "io": the elements with no gp8 field
    event = teltonika_adapter.to_event(record, io, position, profile)
    if event is not None:
        out["event"] = {"code": event.code, "detail": event.detail}
    return out


def _stored(fields: dict[str, Any]) -> dict[str, Any]:
    # The decode's placeholder context is not worth printing.
    return {k: v for k, v in fields.items() if k not in ("fleet_id", "device_id", "vehicle_id")}


def decode_gp8(data: bytes, received_ms: int) -> Iterator[dict[str, Any]]:
    decoder = gp8.FrameDecoder()
    decoder.feed(data)
    for item in decoder:
        if isinstance(item, gp8.FrameError):
            yield _error(item)  # GP8 resynchronises: carry on
            continue
        out: dict[str, Any] = {"frame": type(item).__name__, **_plain(item)}
        if isinstance(item, gp8.Position):
            out["stored"] = [
                _stored(gp8_adapter.to_position(r, _CONTEXT, received_ms)._asdict())
                for r in item.records
                if gp8.check_record(r, received_ms) is None
            ]
        yield out


def run_decode(protocol: str, source: str, received_ms: int, stdout: Any = None) -> int:
    data = read_input(source)
    lines: Iterable[dict[str, Any]] = (
        decode_teltonika(data, received_ms)
        if protocol == "teltonika"
        else decode_gp8(data, received_ms)
    )
    out = stdout or sys.stdout
    failed = False
    for line in lines:
        failed = failed or "error" in line
        out.write(orjson.dumps(line).decode() + "\n")
    return 1 if failed else 0
