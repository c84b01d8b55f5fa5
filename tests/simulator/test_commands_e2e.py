"""A simulated box reacts to commands like a real one, seen through gp8: the gateway sends
COMMANDs, the box answers COMMAND_RESULT, and its next records show the effect."""

from __future__ import annotations

import asyncio
import itertools
from datetime import datetime
from typing import Any

import pytest

from simulator.fleet import FleetOptions, make_clock
from simulator.pacing import wall_ms
from simulator.scenario import parse_scenario
from simulator.transport import TransportConfig
from tests.simulator.conftest import CENTER, FleetAccess, build_fleet, provision_backdated

pytestmark = pytest.mark.slow

SCENARIO = """
name = "commands"
[[phases]]
behaviour = "drive"
duration = "30min"
[[phases]]
behaviour = "park"
duration = "10min"
[[phases]]
behaviour = "drive"
duration = "30min"
"""


def _ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


async def _command(access: FleetAccess, vehicle_id: str, body: dict[str, Any]) -> str:
    response = await access.client.post(f"/v1/vehicles/{vehicle_id}/commands", json=body)
    assert response.status_code == 201, response.text
    command_id: str = response.json()["id"]
    return command_id


async def _final(access: FleetAccess, command_id: str) -> dict[str, Any]:
    """The command once it reached a final status."""
    async with asyncio.timeout(15):
        while True:
            command: dict[str, Any] = await access.get(f"/v1/commands/{command_id}")
            if command["status"] not in ("queued", "sent", "pending_approval"):
                return command
            await asyncio.sleep(0.05)


async def test_lock_inhibit_interval_locate_through_the_api(fleet: FleetAccess) -> None:
    scenario = parse_scenario(SCENARIO)
    interval = 30.0
    options = FleetOptions(transport=TransportConfig(), interval_s=interval)
    start = make_clock(scenario, options, lon=CENTER.lon).start_ms
    boxes = await provision_backdated(fleet, 1, start - 60_000)
    vehicle = boxes[0].vehicle_id
    assert vehicle is not None
    # Paced at 30 positions/s so the commands arrive during the first drive.
    sim = build_fleet(fleet, boxes, scenario, interval_s=interval, rate=30, start_ms=start)
    running = asyncio.create_task(sim.run())
    driver = sim.drivers[0]
    async with asyncio.timeout(10):
        while driver.positions < 10 or not driver.box.connected:  # noqa: ASYNC110 - polling a counter
            await asyncio.sleep(0.01)
    ids = {
        kind: await _command(fleet, vehicle, body)
        for kind, body in (
            ("lock", {"type": "lock"}),
            ("inhibit", {"type": "disable_engine_start", "reason": "sim test"}),
            ("interval", {"type": "set_report_interval", "params": {"seconds": 60}}),
            ("locate", {"type": "locate"}),
        )
    }
    finals = {kind: await _final(fleet, command_id) for kind, command_id in ids.items()}
    async with asyncio.timeout(60):
        report = await running
    assert not sim.failures()
    assert report.acked == report.sent
    assert report.commands == 4 and report.locates == 1

    # Command states in the API: every one answered by the box, with the box's state.
    assert {c["status"] for c in finals.values()} == {"acknowledged"}, finals
    assert finals["lock"]["result"]["doors_locked"] is True
    assert finals["inhibit"]["result"]["engine_start_inhibited"] is True

    positions = await fleet.positions(vehicle, start - 1, wall_ms() + 1)
    assert len(positions) == report.sent
    times = [_ms(p["time"]) for p in positions]
    # Each command shows from the record after it reached the box to the end. (They reach
    # the box a few records apart: the simulated clock runs ahead of the API calls.)
    for flag in ("doors_locked", "engine_start_inhibited"):
        assert not positions[0][flag]
        first = next(i for i, p in enumerate(positions) if p[flag])
        assert all(p[flag] for p in positions[first:])
    # LOCATE: one position off the regular 30 s grid.
    off_grid = [t for t in times if (t - times[0]) % 30_000]
    assert len(off_grid) == 1
    # SET_REPORT_INTERVAL 60: the regular positions are 30 s apart, then a minute apart.
    regular = [t for t in times if t not in off_grid]
    gaps = [b - a for a, b in itertools.pairwise(regular)]
    change = gaps.index(60_000)
    assert set(gaps[:change]) == {30_000} and set(gaps[change:]) == {60_000}
    assert change >= 9
    # The inhibit never stops a running engine: it drove on until it parked...
    inhibited_from = next(i for i, p in enumerate(positions) if p["engine_start_inhibited"])
    park_from = start + 30 * 60_000
    assert any(
        p["ignition"] and p["speed_kmh"] > 0
        for p in positions[inhibited_from:]
        if _ms(p["time"]) < park_from
    )
    # ...and after parking the second drive never starts.
    park_end = park_from + 10 * 60_000
    stuck = [p for p in positions if _ms(p["time"]) >= park_end]
    assert stuck
    assert not any(p["ignition"] or p["speed_kmh"] for p in stuck)
