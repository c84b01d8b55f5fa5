"""Stolen-vehicle tracking end to end: simulated boxes through a real `gp8 serve` (gateway,
processing stage, API on SQLite). The towing scenario raises a suspected-theft alert within one
report interval; a start without a badge does when the fleet asks for badges; opening a theft
case changes the box's report interval (seen in its next positions); another fleet sees none
of it."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from datetime import datetime
from typing import Any

import httpx
import pytest

from simulator.fleet import FleetOptions, make_clock
from simulator.pacing import wall_ms
from simulator.provision import ApiClient
from simulator.scenario import Scenario, load_scenario
from simulator.transport import TransportConfig
from tests.simulator.conftest import (
    CENTER,
    OPERATOR_KEY,
    FleetAccess,
    build_fleet,
    provision_backdated,
    run_scenario,
)

pytestmark = pytest.mark.slow

INTERVAL_S = 30.0
INTERVAL_MS = int(INTERVAL_S * 1000)


def _ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


async def _suspected_thefts(access: FleetAccess, vehicle_id: str) -> list[dict[str, Any]]:
    page = await access.get("/v1/alerts", type="suspected_theft", vehicle_id=vehicle_id)
    found: list[dict[str, Any]] = page["data"]
    return found


async def _wait_for_theft_alert(access: FleetAccess, vehicle_id: str) -> dict[str, Any]:
    async with asyncio.timeout(30):
        while True:
            alerts = await _suspected_thefts(access, vehicle_id)
            if alerts:
                return alerts[0]
            await asyncio.sleep(0.1)


async def _other_fleet(access: FleetAccess) -> httpx.AsyncClient:
    async with ApiClient(access.gp8.base_url, OPERATOR_KEY) as operator:
        created = await operator.create_fleet("someone else")
        admin = await operator.create_key(created["id"], "admin", "someone else")
    headers = {"Authorization": f"Bearer {admin['key']}"}
    return httpx.AsyncClient(base_url=access.gp8.base_url, headers=headers, timeout=30)


def _tow_start(positions: list[dict[str, Any]], events: list[dict[str, Any]]) -> int:
    """When the tow began: its towing alarm, or the first fix moving with the ignition off
    after the vehicle had been parked."""
    towing = [_ms(e["time"]) for e in events if e["type"] == "towing"]
    moving_off = [_ms(p["time"]) for p in positions if not p["ignition"] and p["speed_kmh"] >= 5]
    return min([*towing, *moving_off])


async def test_towing_raises_suspected_theft_within_one_interval(fleet: FleetAccess) -> None:
    run = await run_scenario(fleet, "theft", devices=1, interval_s=INTERVAL_S)
    vehicle = run.boxes[0].vehicle_id
    assert vehicle is not None
    alert = await _wait_for_theft_alert(fleet, vehicle)
    positions = await fleet.positions(vehicle, run.start_ms - 1, wall_ms() + 1)
    events = await fleet.events(vehicle, run.start_ms - 1, wall_ms() + 1)
    tow_start = _tow_start(positions, events)
    first_seen = _ms(alert["first_seen_at"])
    assert tow_start <= first_seen <= tow_start + INTERVAL_MS, (alert, tow_start)
    assert (alert["severity"], alert["state"]) == ("critical", "open")
    assert alert["count"] > 1  # towed on, hidden, driven away: one incident, updated
    # One alert for the whole theft, not one per record.
    assert len(await _suspected_thefts(fleet, vehicle)) == 1
    guard = await fleet.get(f"/v1/vehicles/{vehicle}/guard")
    assert (guard["status"], guard["alert_id"]) == ("triggered", alert["id"])

    async with await _other_fleet(fleet) as other:
        r = await other.get(f"/v1/alerts/{alert['id']}")
        assert r.status_code == 404
        r = await other.get("/v1/alerts")
        assert r.json()["data"] == []
        r = await other.get(f"/v1/vehicles/{vehicle}/guard")
        assert r.status_code == 404


async def test_start_without_badge_raises_suspected_theft(fleet: FleetAccess) -> None:
    r = await fleet.client.put("/v1/badge-policy", json={"require_badge": True, "badges": []})
    assert r.status_code == 200, r.text
    run = await run_scenario(fleet, "parked-guard", devices=1, interval_s=INTERVAL_S)
    vehicle = run.boxes[0].vehicle_id
    assert vehicle is not None
    alert = await _wait_for_theft_alert(fleet, vehicle)
    positions = await fleet.positions(vehicle, run.start_ms - 1, wall_ms() + 1)
    park_end = run.start_ms + 40 * 60_000  # 10 min drive, 30 min parked
    started = min(_ms(p["time"]) for p in positions if p["ignition"] and _ms(p["time"]) >= park_end)
    first_seen = _ms(alert["first_seen_at"])
    assert started <= first_seen <= started + INTERVAL_MS, (alert, started)
    assert "not recognised" in alert["detail"]


# The theft scenario with shorter quiet phases: the guard arms 5 min into the parking, and a
# paced run spends its seconds on the theft rather than on a parked or hidden car.
SHORTER_PHASES_S = {"parked for the night": 40 * 60.0, "hidden": 5 * 60.0, "driven away": 10 * 60.0}


def _shorter(scenario: Scenario) -> Scenario:
    phases = tuple(
        dataclasses.replace(p, duration_s=SHORTER_PHASES_S.get(p.name, p.duration_s))
        for p in scenario.phases
    )
    assert {p.name for p in scenario.phases} >= SHORTER_PHASES_S.keys()
    return dataclasses.replace(scenario, phases=phases)


@pytest.mark.parametrize("protocol", ["gp8", "teltonika"])
async def test_theft_case_switches_the_box_to_fast_reporting(
    fleet: FleetAccess, protocol: str
) -> None:
    # A Teltonika box gets the interval as a Codec 12 setparam and answers it as an FMB does.
    scenario = _shorter(load_scenario("theft"))
    options = FleetOptions(transport=TransportConfig(), interval_s=INTERVAL_S)
    start = make_clock(scenario, options, lon=CENTER.lon).start_ms
    boxes = await provision_backdated(fleet, 1, start - 60_000, protocol=protocol)
    vehicle = boxes[0].vehicle_id
    assert vehicle is not None
    # Paced (60 positions/s: the 120 records before the tow in two seconds) so the theft
    # happens while the box is still reporting, and the case's command reaches it before the
    # end (its 10 s records for the 30 min left).
    sim = build_fleet(
        fleet, boxes, scenario, interval_s=INTERVAL_S, rate=60, start_ms=start, protocol=protocol
    )
    running = asyncio.create_task(sim.run())
    try:
        alert = await _wait_for_theft_alert(fleet, vehicle)
        r = await fleet.client.post(
            f"/v1/alerts/{alert['id']}/theft", json={"note": "not where it was parked"}
        )
        assert r.status_code == 201, r.text
        case = r.json()
        assert case["started_at"] == alert["first_seen_at"]
        assert case["previous_interval_s"] == int(INTERVAL_S)
        async with asyncio.timeout(60):
            report = await running
    finally:
        running.cancel()
    assert not sim.failures() and report.acked == report.sent

    command = await fleet.get(f"/v1/commands/{case['interval_command_id']}")
    assert command["status"] == "acknowledged", command
    positions = await fleet.positions(vehicle, start - 1, wall_ms() + 1)
    times = [_ms(p["time"]) for p in positions]
    if protocol == "teltonika":
        # An FMB's eventual record is a record: its event's fix is among the positions.
        events = await fleet.events(vehicle, start - 1, wall_ms() + 1)
        eventual = {_ms(e["time"]) for e in events}
        times = [t for t in times if t not in eventual]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # 30 s apart until the box took the command, 10 s apart from its next record on.
    change = next(i for i, gap in enumerate(gaps) if gap == 10_000)
    assert set(gaps[:change]) == {INTERVAL_MS}
    assert set(gaps[change:]) == {10_000}
    assert times[change] >= _ms(alert["first_seen_at"])  # after the theft began
    assert len(gaps) - change >= 10

    # The case: its timeline from the first suspicious record, the command acknowledged.
    detail = await fleet.get(f"/v1/theft-cases/{case['id']}")
    assert _ms(detail["positions"][0]["time"]) >= _ms(case["started_at"])
    assert detail["positions"][-1]["time"] == positions[-1]["time"]
    assert [(c["type"], c["status"]) for c in detail["commands"]] == [
        ("set_report_interval", "acknowledged")
    ]
    r = await fleet.client.get(f"/v1/theft-cases/{case['id']}/track", params={"format": "gpx"})
    assert r.status_code == 200 and b"<trkpt" in r.content

    async with await _other_fleet(fleet) as other:
        for path in (f"/v1/theft-cases/{case['id']}", f"/v1/theft-cases/{case['id']}/track"):
            assert (await other.get(path)).status_code == 404
        assert (await other.get("/v1/theft-cases")).json()["data"] == []
        r = await other.post(f"/v1/alerts/{alert['id']}/theft")
        assert r.status_code == 404
