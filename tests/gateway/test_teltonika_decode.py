"""`gp8 decode --protocol gp8|teltonika`: captures as JSON lines with what gp8 would store."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from gp8.cli import main
from gp8.decode import read_input, run_decode
from tests.protocol.teltonika.cases import CODEC8_1, CODEC8E, GETINFO_RESPONSE, IMEI

NOW = 1_560_161_100_000  # a few seconds after the records of the examples
GP8_HEARTBEAT = "47 38 00 08 01 04 00 00 00 04 2e b1"  # docs/protocol.md §2.3


def lines(protocol: str, source: str) -> tuple[int, list[dict[str, object]]]:
    out = io.StringIO()
    rc = run_decode(protocol, source, NOW, stdout=out)
    return rc, [json.loads(line) for line in out.getvalue().splitlines()]


def test_teltonika_capture_with_what_would_be_stored() -> None:
    rc, out = lines("teltonika", IMEI.hex + CODEC8_1.hex + GETINFO_RESPONSE.hex)
    assert rc == 0
    assert out[0] == {"frame": "Imei", "imei": "356307042441013"}
    (record,) = out[1]["records"]  # type: ignore[misc]
    assert record["io"] == {"21": 3, "1": 1, "66": 24079, "241": 24602, "78": 0}
    position = record["position"]
    assert position["time_ms"] == 1_560_161_086_000
    assert position["external_power_mv"] == 24_079 and position["fix_valid"] is False
    assert position["io"] == {"1": 1, "241": 24602}  # the elements with no gp8 field
    assert out[2]["frame"] == "Response" and str(out[2]["text"]).startswith("INI:")


def test_teltonika_capture_starting_with_a_packet_and_a_bad_one() -> None:
    bad = CODEC8E.hex[:-2] + "00"
    rc, out = lines("teltonika", CODEC8E.hex + bad)
    assert rc == 1
    assert out[0]["frame"] == "AvlPacket"
    assert out[1]["error"] == "bad_crc"


def test_truncated_capture() -> None:
    rc, out = lines("teltonika", CODEC8E.hex[:40])
    assert rc == 1 and out == [{"error": "truncated", "detail": "20 bytes of an incomplete frame"}]


def test_gp8_capture() -> None:
    rc, out = lines("gp8", GP8_HEARTBEAT)
    assert rc == 0 and out == [{"frame": "Heartbeat", "seq": 4}]


def test_inputs(tmp_path: Path) -> None:
    raw = IMEI.data + CODEC8E.data
    capture = tmp_path / "capture.bin"
    capture.write_bytes(raw)
    assert read_input(str(capture)) == raw
    assert read_input(IMEI.hex.lower()) == IMEI.data
    assert read_input("-", io.BytesIO(raw)) == raw  # raw bytes on stdin
    assert read_input("-", io.BytesIO(b"000F 3335\n")) == bytes.fromhex("000F3335")


def test_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", "--protocol", "teltonika", IMEI.hex]) == 0
    assert json.loads(capsys.readouterr().out) == {"frame": "Imei", "imei": "356307042441013"}
