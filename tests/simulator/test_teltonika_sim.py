"""Virtual Teltonika boxes (simulator.teltonika): the box's side of the protocol on its own
(sans-IO), then the same scenarios through a real `gp8 serve` with its Teltonika listener, and
`gp8 sim --protocol teltonika` from the command line."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from gp8.cli import build_parser
from protocol.gp8 import CommandType, EventCode, RecordFlags
from protocol.teltonika import AvlId, Command, FrameDecoder, Imei, RecordsAck, Response, encode
from protocol.teltonika import commands as gprs
from simulator.cli import run_sim
from simulator.outbox import Framing
from simulator.pacing import wall_ms
from simulator.records import make_record
from simulator.teltonika import TeltonikaOutbox, to_avl
from tests.simulator.conftest import FleetAccess, run_scenario
from tests.simulator.test_cli import _gp8 as gp8_command

IMEI = "356307042441013"
WIRING = gprs.Wiring()


def _online() -> TeltonikaOutbox:
    box = TeltonikaOutbox(IMEI)
    box.link_up(Framing.STREAM)
    assert box.greeting()[0].data == encode(Imei(IMEI))
    reaction = box.receive_data(b"\x01", 0.0)
    assert reaction.login is not None and box.online
    return box


def _server_reads(data: bytes) -> list[Any]:
    decoder = FrameDecoder(expect_imei=False)
    decoder.feed(data)
    return list(decoder)


def _text(units: list[Any]) -> str:
    (unit,) = units
    (frame,) = _server_reads(unit.data)
    assert isinstance(frame, Response)
    return frame.text


def test_records_become_fmb_avl_records() -> None:
    flags = RecordFlags.FIX_VALID | RecordFlags.IGNITION | RecordFlags.DOORS_LOCKED
    record = make_record(
        1_700_000_000_123, -33.8688, -70.6693, speed_kmh=72.5, heading_deg=271.0, flags=flags
    )
    avl = to_avl(record._replace(badge=0x1234, gsm_signal=31, odometer_m=5_000))
    assert (avl.time_ms, avl.lat_e7, avl.lon_e7) == (record.time_ms, record.lat_e7, record.lon_e7)
    assert (avl.speed_kmh, avl.angle_deg, avl.event_id) == (72, 271, 0)
    io = avl.io
    assert io[AvlId.IGNITION] == 1 and io[AvlId.MOVEMENT] == 1 and io[AvlId.GNSS_STATUS] == 1
    assert io[gprs.OUTPUT_IO_IDS[WIRING.lock or 0]] == 1  # doors locked
    assert io[gprs.OUTPUT_IO_IDS[WIRING.immobiliser or 0]] == 0
    assert (io[AvlId.GSM_SIGNAL], io[AvlId.TOTAL_ODOMETER], io[AvlId.IBUTTON]) == (5, 5_000, 0x1234)
    towing = to_avl(record, (EventCode.TOWING, 0))
    assert towing.event_id == AvlId.TOWING and towing.io[AvlId.TOWING] == 1
    off = to_avl(record, (EventCode.IGNITION_OFF, 0))
    assert off.event_id == AvlId.IGNITION and off.io[AvlId.IGNITION] == 0
    # No FMB counterpart: an ordinary record, as the box would send.
    assert to_avl(record, (EventCode.SOS, 0)).event_id == 0


def test_packets_one_at_a_time_settled_by_their_count() -> None:
    box = _online()
    box.enqueue(make_record(1_700_000_000_000 + i * 1000, 48.85, 2.35) for i in range(3))
    box.enqueue_event(EventCode.TOWING, make_record(1_700_000_010_000, 48.85, 2.35))
    assert box.room == 1
    (first,) = box.take(0.0, box.room)
    (packet,) = _server_reads(first.data)
    assert len(packet.records) == 3  # the positions; the event goes in a packet of its own
    box.receive_data(encode(RecordsAck(0)), 0.1)  # nothing stored: sent again after a pause
    assert box.pending == 4 and not box.may_send(0.2)
    (again,) = box.take(5.0, 1)
    assert again.data == first.data
    box.receive_data(encode(RecordsAck(3)), 5.1)
    (event,) = box.take(5.2, 1)
    (packet,) = _server_reads(event.data)
    assert packet.records[0].event_id == AvlId.TOWING
    box.receive_data(encode(RecordsAck(1)), 5.3)
    assert (box.pending, box.acked) == (0, 4)


def test_codec_12_commands_are_executed_and_answered_like_an_fmb() -> None:
    box = _online()
    box.receive_data(encode(Command(gprs.lock(WIRING, True) or "")), 0.0)
    assert box.commands_due == 1
    assert _text(box.execute_due()) == "DOUT1:0 DOUT2:1" and box.state.doors_locked
    box.receive_data(encode(Command(gprs.report_period(10))), 0.0)
    assert _text(box.execute_due()).startswith("New value 10050:10;")
    assert box.state.report_interval_s == 10
    assert [c.command for c in box.commands] == [
        CommandType.LOCK,
        CommandType.SET_REPORT_INTERVAL,
    ]
    box.receive_data(encode(Command("setdigout 1 0 rm -rf")), 0.0)  # gp8 never sends these
    box.receive_data(encode(Command("getgps")), 0.0)
    answers = [f.text for u in box.execute_due() for f in _server_reads(u.data)]
    assert gprs.refused(answers[1]) and "Unknown" in answers[1]


def test_a_speed_gated_immobilisation_waits_until_the_vehicle_stops() -> None:
    box = _online()
    box.enqueue([make_record(1_700_000_000_000, 48.85, 2.35, speed_kmh=50.0)])
    box.receive_data(encode(Command(gprs.immobilise(WIRING, True) or "")), 0.0)
    answer = _text(box.execute_due())
    assert "queued" in answer and not gprs.refused(answer)
    assert not box.state.engine_start_inhibited  # moving: never cut
    box.enqueue([make_record(1_700_000_001_000, 48.85, 2.35, speed_kmh=20.0)])
    assert not box.state.engine_start_inhibited
    box.enqueue([make_record(1_700_000_002_000, 48.85, 2.35, speed_kmh=0.0)])
    assert box.state.engine_start_inhibited
    # Releasing is never gated.
    box.receive_data(encode(Command(gprs.immobilise(WIRING, False) or "")), 0.0)
    assert _text(box.execute_due()) == "DOUT1:0 DOUT2:0"


# --- through a real gp8 serve ---------------------------------------------------------------

pytestmark_slow = pytest.mark.slow


@pytestmark_slow
async def test_the_theft_scenario_over_teltonika_raises_the_same_alert(
    fleet: FleetAccess,
) -> None:
    run = await run_scenario(fleet, "theft", devices=1, interval_s=30.0, protocol="teltonika")
    snap = run.snapshot
    assert snap["pending"] == 0 and snap["acked"] == snap["sent"] > 100
    vehicle = run.boxes[0].vehicle_id
    assert vehicle is not None
    positions = await fleet.positions(vehicle, run.start_ms - 1, wall_ms() + 1)
    assert len(positions) == snap["sent"] + snap["events_sent"]  # an event is a record too
    # What has no gp8 field is kept raw: 240 Movement on each, an event's own element on it.
    assert all(p["io"]["240"] == int(p["speed_kmh"] > 0) for p in positions)
    events = await fleet.events(vehicle, run.start_ms - 1, wall_ms() + 1)
    towed = [e for e in events if e["type"] == "towing"]
    assert towed and all(e["position"]["io"]["246"] == 1 for e in towed)
    async with asyncio.timeout(30):
        while True:
            alerts = await fleet.get("/v1/alerts", type="suspected_theft", vehicle_id=vehicle)
            if alerts["data"]:
                break
            await asyncio.sleep(0.1)
    device = await fleet.get(f"/v1/devices/{run.boxes[0].device_id}")
    assert device["protocol"] == "teltonika"


@pytestmark_slow
async def test_gp8_sim_protocol_teltonika_from_the_command_line(fleet: FleetAccess) -> None:
    port = fleet.gp8.port_for("teltonika")
    code, out, err = await gp8_command(
        "sim", "--protocol", "teltonika", "--api", fleet.gp8.base_url, "--key", fleet.key,
        "--gateway", f"127.0.0.1:{port}", "--devices", "2", "--count", "5", "--json",
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(out.splitlines()[-1])
    assert (report["acked"], report["pending"]) == (10, 0)
    devices = await fleet.get("/v1/devices", protocol="teltonika")
    assert len(devices["data"]) == 2


async def test_teltonika_boxes_speak_over_tcp_only(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["sim", "--protocol", "teltonika", "--transport", "mqtt", "--provision", "/dev/null"]
    assert await run_sim(build_parser().parse_args(argv)) == 2
    assert "TCP only" in capsys.readouterr().err
