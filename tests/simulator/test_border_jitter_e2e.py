"""A fence crossing with GPS jitter on the border, end to end: the `border-jitter` scenario
through a real `gp8 serve` (gateway, processing stage, API). The vehicle drives into a fence,
parks on its border for 20 minutes with its fixes scattered 20 m around the spot, so that a
good part of them fall outside, then drives out: exactly one enter and one exit.

Where the vehicle parks depends on its simulated driver; the scenario is deterministic for a
seed and a start time, so a first run in another fleet shows where it stops, and the fence of
the second, identical, run is drawn with its east edge exactly there.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from simulator.geo import LatLon, offset
from simulator.pacing import wall_ms
from simulator.provision import ApiClient
from simulator.scenario import load_scenario
from simulator.tracks import load_track
from simulator.trajectory import TrackRoute
from tests.simulator.conftest import (
    CENTER,
    OPERATOR_KEY,
    RUN_TIMEOUT_S,
    FleetAccess,
    Gp8,
    build_fleet,
    provision_backdated,
)

pytestmark = pytest.mark.slow

SCENARIO = load_scenario("border-jitter")
INTERVAL_S = 10.0
DRIVE_MS = 4 * 60_000  # the scenario's first phase
PARK_MS = 20 * 60_000
SEED = "border"
M_PER_DEG_LAT = 111_320.0


def _ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def _m_per_deg_lon(lat: float) -> float:
    return M_PER_DEG_LAT * math.cos(math.radians(lat))


async def _new_fleet(gp8: Gp8, name: str) -> FleetAccess:
    async with ApiClient(gp8.base_url, OPERATOR_KEY) as operator:
        created = await operator.create_fleet(name)
        admin = await operator.create_key(created["id"], "admin", name)
    client = httpx.AsyncClient(
        base_url=gp8.base_url, headers={"Authorization": f"Bearer {admin['key']}"}, timeout=30
    )
    return FleetAccess(gp8, created["id"], admin["key"], client)


async def _drive(access: FleetAccess, track: Path, start_ms: int) -> list[dict[str, Any]]:
    """The scenario for one box of ``access``'s fleet, from ``start_ms``; its stored fixes."""
    boxes = await provision_backdated(access, 1, start_ms - 60_000, seed=SEED)
    fleet = build_fleet(
        access,
        boxes,
        SCENARIO,
        interval_s=INTERVAL_S,
        seed=SEED,
        start_ms=start_ms,
        network=TrackRoute(load_track(track)),
        # One fix per frame, each ACKed before the next: as a box online reporting every 10 s
        # sends them, so the processing stage sees each as the newest (a frame of many would
        # be judged by its newest fix alone).
        batch_size=1,
        window=1,
    )
    async with asyncio.timeout(RUN_TIMEOUT_S):
        report = await fleet.run()
    assert not fleet.failures() and report.acked == report.sent
    await access.gp8.run.gateway.processing.settle(timeout_s=10)
    vehicle = boxes[0].vehicle_id
    assert vehicle is not None
    return await access.positions(vehicle, start_ms - 1, wall_ms() + 1)


def _parked(fixes: list[dict[str, Any]], start_ms: int) -> list[dict[str, Any]]:
    begin, end = start_ms + DRIVE_MS + 60_000, start_ms + DRIVE_MS + PARK_MS
    return [f for f in fixes if begin <= _ms(f["time"]) < end]


async def test_parked_on_the_border_with_gps_jitter_gives_one_enter_and_one_exit(
    gp8: Gp8, tmp_path: Path
) -> None:
    # A straight road east, longer than the vehicle drives: it never comes back.
    east = offset(CENTER, 20_000, 0)
    track = tmp_path / "east.geojson"
    line = {"type": "LineString", "coordinates": [[CENTER.lon, CENTER.lat], [east.lon, east.lat]]}
    track.write_text(json.dumps(line))
    total_ms = int((SCENARIO.duration_s or 0) * 1000)
    start_ms = wall_ms() - total_ms - 120_000  # in the past, so the run ends now

    scout = await _new_fleet(gp8, "scout")
    try:
        scouted = await _drive(scout, track, start_ms)
    finally:
        await scout.client.aclose()
    parked = _parked(scouted, start_ms)
    spot = LatLon(
        sum(f["lat"] for f in parked) / len(parked), sum(f["lon"] for f in parked) / len(parked)
    )
    # The fence: 600 m of road ending exactly where the vehicle stands, 300 m wide.
    west = spot.lon - 600 / _m_per_deg_lon(spot.lat)
    half = 150 / M_PER_DEG_LAT
    ring = [
        [west, spot.lat - half],
        [spot.lon, spot.lat - half],
        [spot.lon, spot.lat + half],
        [west, spot.lat + half],
        [west, spot.lat - half],
    ]
    assert scouted[0]["lon"] < west - 100 / _m_per_deg_lon(spot.lat)  # it starts outside

    watch = await _new_fleet(gp8, "watch")
    try:
        r = await watch.client.post(
            "/v1/geofences",
            json={"name": "car park", "geometry": {"type": "Polygon", "coordinates": [ring]}},
        )
        assert r.status_code == 201, r.text
        fence = r.json()
        fixes = await _drive(watch, track, start_ms)
        # The same trip as the scout's, fix for fix (the scenario is deterministic).
        assert [(f["time"], f["lat"], f["lon"]) for f in fixes] == [
            (f["time"], f["lat"], f["lon"]) for f in scouted
        ]
        # The jitter really puts the vehicle on both sides of the border, many times over.
        sides = [f["lon"] > spot.lon for f in _parked(fixes, start_ms)]
        flips = sum(a != b for a, b in itertools.pairwise(sides))
        assert sum(sides) > 20 and flips > 20, (sum(sides), flips)

        crossings = await watch.get(
            f"/v1/geofences/{fence['id']}/events",
            **{"from": start_ms - 1, "to": wall_ms() + 1},
        )
    finally:
        await watch.client.aclose()
    kinds = [(c["kind"], _ms(c["time"])) for c in crossings["data"]]
    assert [k for k, _ in kinds] == ["enter", "exit"], kinds
    (_, entered), (_, left) = kinds
    assert entered < start_ms + DRIVE_MS < start_ms + DRIVE_MS + PARK_MS < left
