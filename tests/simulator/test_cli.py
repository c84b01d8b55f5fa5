"""`gp8 sim` as testers and the lead's tests call it, against a real gp8."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from gp8.cli import build_parser
from simulator.cli import run_sim
from simulator.pacing import wall_ms
from simulator.provision import ApiClient, provision_fleet, save_provision_file
from tests.simulator.conftest import FleetAccess

pytestmark = pytest.mark.slow

GP8 = Path(sys.executable).with_name("gp8")


async def _gp8(*argv: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        str(GP8),
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(90):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def _vehicles(access: FleetAccess) -> list[dict[str, Any]]:
    page = await access.get("/v1/vehicles", limit=1000)
    vehicles: list[dict[str, Any]] = page["data"]
    return vehicles


async def test_the_api_contract_invocation(fleet: FleetAccess) -> None:
    started = wall_ms()
    code, out, err = await _gp8(
        "sim",
        "--api",
        fleet.gp8.base_url,
        "--key",
        fleet.key,
        "--gateway",
        f"127.0.0.1:{fleet.gp8.tcp_port}",
        "--devices",
        "3",
        "--count",
        "20",
        "--interval",
        "0",
    )
    assert code == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    assert report["devices"] == 3
    assert report["sent"] == report["acked"] == 60
    assert report["ack_latency_ms"]["p50"] is not None
    # A run shorter than the connection sampling still counts its boxes (was 0).
    assert report["max_connected"] == 3
    vehicles = await _vehicles(fleet)
    assert len(vehicles) == 3 and all(v["device_id"] for v in vehicles)
    for vehicle in vehicles:
        positions = await fleet.positions(vehicle["id"], started - 1, wall_ms() + 1)
        assert len(positions) == 20


async def test_hours_of_simulated_time_in_seconds_with_backdated_fittings(
    fleet: FleetAccess, capsys: pytest.CaptureFixture[str]
) -> None:
    # Two hours at one fix a minute: the clock starts two hours ago and the boxes' fittings
    # are back-dated through the API, so every record is the vehicle's and the run is quick.
    args = build_parser().parse_args(
        [
            "sim",
            "--api",
            fleet.gp8.base_url,
            "--key",
            fleet.key,
            "--gateway",
            f"127.0.0.1:{fleet.gp8.tcp_port}",
            "--devices",
            "2",
            "--count",
            "120",
            "--interval",
            "60",
            "--json",
        ]
    )
    started = wall_ms()
    assert await run_sim(args) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["sent"] == report["acked"] == 240
    assert report["elapsed_s"] < 30 and not report["notes"]
    assert _iso_ms(report["sim_start"]) <= started - 119 * 60_000
    assert _iso_ms(report["sim_end"]) <= wall_ms()
    for vehicle in await _vehicles(fleet):
        positions = await fleet.positions(vehicle["id"], started - 3 * 3_600_000, wall_ms() + 1)
        assert len(positions) == 120


def _iso_ms(text: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


async def test_provisioned_boxes_a_scenario_file_and_json_output(
    fleet: FleetAccess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with ApiClient(fleet.gp8.base_url, fleet.key) as client:
        boxes = await provision_fleet(client, 2, seed="cli")
    provision = tmp_path / "boxes.jsonl"
    save_provision_file(provision, boxes)
    scenario = tmp_path / "short.toml"
    scenario.write_text(
        'name = "short"\n[[phases]]\nbehaviour = "drive"\nduration = "1s"\n'
        '[[phases]]\nbehaviour = "tunnel"\nduration = "1s"\n'
    )
    args = build_parser().parse_args(
        [
            "sim",
            "--provision",
            str(provision),
            "--gateway",
            f"127.0.0.1:{fleet.gp8.tcp_port}",
            "--scenario",
            str(scenario),
            "--interval",
            "0.1",
            "--seed",
            "42",
            "--json",
        ]
    )
    assert await run_sim(args) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1  # --json: the one line, nothing else on stdout
    report = json.loads(out[0])
    assert report["devices"] == 2 and report["scenario"] == "short"
    # Two seconds of simulated time at 10 fixes a second, in real time after the fitting.
    assert report["sent"] == report["acked"] == 2 * 20
    for box in boxes:
        assert box.vehicle_id is not None and box.fitted_ms is not None
        positions = await fleet.positions(box.vehicle_id, box.fitted_ms, wall_ms() + 1)
        assert len(positions) == 20
        assert [p["fix_valid"] for p in positions] == [True] * 10 + [False] * 10


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sim"], "give --api URL --key KEY"),
        (["sim", "--api", "http://127.0.0.1:1"], "--api needs --key"),
        (["sim", "--provision", "x", "--api", "http://h", "--key", "k"], "not both"),
        (["sim", "--provision", "/nonexistent.jsonl"], "nonexistent"),
        (["sim", "--provision", "x", "--scenario", "nope"], "no scenario 'nope'"),
    ],
)
async def test_usage_errors_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = build_parser().parse_args(argv)
    assert await run_sim(args) == 2
    assert message in capsys.readouterr().err


async def test_list_scenarios(capsys: pytest.CaptureFixture[str]) -> None:
    assert await run_sim(build_parser().parse_args(["sim", "--list-scenarios"])) == 0
    out = capsys.readouterr().out
    for name in ("normal", "theft", "tunnel", "storm", "garbage", "offline-replay"):
        assert name in out


async def test_interval_0_with_a_timed_scenario_is_refused_with_a_reason(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = "sim --api http://127.0.0.1:9 --key k --scenario theft --devices 2 --interval 0"
    args = build_parser().parse_args(argv.split())
    assert await run_sim(args) == 2
    err = capsys.readouterr().err
    assert "--interval 0" in err and "'theft'" in err and "positive --interval" in err
