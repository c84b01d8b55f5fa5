"""Geofence decisions per second with 1,000 vehicles and 1,000 fences, on one core.

Run: ``.venv/bin/python bench/bench_geofences.py [--vehicles 1000] [--fences 1000] [--steps 40]``

1,000 fences (two thirds polygons of 8-16 vertices, a third circles, 150 m to 1.5 km across,
margin 25 m, dwell 30 s, every one applied to every vehicle: the worst case) are scattered over
40 km x 40 km around Paris; 1,000 vehicles drive random walks through them at 30-90 km/h,
reporting every 5 s. Three figures, measured in the same run:

- **decision**: positions/s through the geofence stage's decision code
  (`tracking.observe`: the STRtree, the precise tests on prepared geometries, the hysteresis),
  states adopted as the handler adopts them;
- **handler**: the same positions through `GeofenceHandler.handle` (one live fix per batch,
  signals built, changed states and crossings saved to an in-memory repository: no database);
- **naive**: the floor it is compared with, every fence tested for every position
  (`tracking.observe_naive`), on the first positions only (it is slow).

Both decide the same crossings on the positions they share (checked). Fences are compiled
before the clock starts; each figure is the best of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import asyncio
import builtins
import math
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

# Runnable as a plain script from a checkout, without installing the project.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.summary import report
from processing import DeviceBatch
from storage.models import Geofence, GeofenceEvent, GeofenceState, Page, Position, new_id
from storage.repository import GeofenceRepo
from tracking import CompiledFence, FleetFences, GeofenceHandler, LocalFrame, observe, observe_naive

# The geofence stage must keep up with ingest: bench_ingest.py's target for 1,000 boxes.
TARGET_POSITIONS_PER_S = 20_000
FLEET = "flt_bench"
T0 = 1_714_564_800_000
REPORT_MS = 5_000
AREA_M = 20_000.0  # half side of the area, metres
FRAME = LocalFrame.around(2.35, 48.85)


def make_fences(rng: random.Random, count: int) -> list[Geofence]:
    fences = []
    for i in range(count):
        cx, cy = rng.uniform(-AREA_M, AREA_M), rng.uniform(-AREA_M, AREA_M)
        radius = rng.uniform(75, 750)
        if i % 3 == 0:
            geometry: dict[str, object] = {
                "type": "Point",
                "coordinates": list(FRAME.lonlat(cx, cy)),
            }
            radius_m: float | None = radius
        else:
            n = rng.randint(8, 16)
            ring = []
            for k in range(n):
                a = 2 * math.pi * k / n
                r = radius * rng.uniform(0.6, 1.0)
                ring.append(list(FRAME.lonlat(cx + r * math.cos(a), cy + r * math.sin(a))))
            ring.append(ring[0])
            geometry, radius_m = {"type": "Polygon", "coordinates": [ring]}, None
        fences.append(
            Geofence(
                id=new_id("gfn"),
                fleet_id=FLEET,
                name=f"fence {i}",
                geometry=geometry,
                created_ms=T0,
                updated_ms=T0,
                radius_m=radius_m,
            )
        )
    return fences


@dataclass(slots=True)
class Walker:
    vehicle_id: str
    x: float
    y: float
    heading: float
    speed_kmh: float


def make_positions(rng: random.Random, vehicles: int, steps: int) -> list[Position]:
    """``steps`` fixes of every vehicle, in time order (vehicle after vehicle at each step)."""
    walkers = [
        Walker(
            f"veh_{v:05d}",
            rng.uniform(-AREA_M, AREA_M),
            rng.uniform(-AREA_M, AREA_M),
            rng.uniform(0, 2 * math.pi),
            rng.uniform(30, 90),
        )
        for v in range(vehicles)
    ]
    out = []
    for step in range(steps):
        for w in walkers:
            w.heading += rng.gauss(0, 0.3)
            d = w.speed_kmh / 3.6 * REPORT_MS / 1000
            w.x = max(-AREA_M, min(AREA_M, w.x + d * math.cos(w.heading)))
            w.y = max(-AREA_M, min(AREA_M, w.y + d * math.sin(w.heading)))
            lon, lat = FRAME.lonlat(w.x, w.y)
            out.append(position(w.vehicle_id, T0 + step * REPORT_MS, lon, lat, w.speed_kmh))
    return out


def position(vehicle_id: str, time_ms: int, lon: float, lat: float, speed: float) -> Position:
    return Position(
        FLEET, "dev_" + vehicle_id, vehicle_id, time_ms, time_ms + 300, lat, lon, 35, speed,
        90.0, 9, 0.9, True, True, False, False, True, 0, 12_600, 4_100, 20, 0,
    )  # fmt: skip


def run_decision(
    fleet: FleetFences, positions: Sequence[Position], naive: bool
) -> tuple[float, int]:
    """Seconds for ``positions`` through the decision code, and the crossings it decided."""
    states: dict[str, dict[str, GeofenceState]] = {}
    crossings = 0
    fences = fleet.fences
    start = time.perf_counter()
    for p in positions:
        assert p.vehicle_id is not None
        mine = states.setdefault(p.vehicle_id, {})
        if naive:
            seen = observe_naive(fences, mine, FLEET, p.vehicle_id, p)
        else:
            seen = observe(fleet, mine, FLEET, p.vehicle_id, p)
        for s in seen.touched:
            mine[s.geofence_id] = s
        for s in seen.changed:
            mine[s.geofence_id] = s
        crossings += len(seen.crossings)
    return time.perf_counter() - start, crossings


class MemoryRepo:
    """The part of `storage.repository.GeofenceRepo` the handler uses, in memory."""

    def __init__(self, fences: list[Geofence]) -> None:
        self.fences = fences
        self.stored: dict[tuple[str, str], GeofenceState] = {}
        self.events: list[GeofenceEvent] = []

    async def list(
        self, fleet_id: str, *, cursor: str | None = None, limit: int = 100
    ) -> Page[Geofence]:
        start = int(cursor or 0)
        more = start + limit < len(self.fences)
        return Page(self.fences[start : start + limit], str(start + limit) if more else None)

    async def states(self, fleet_id: str, vehicle_id: str) -> builtins.list[GeofenceState]:
        return [s for (v, _), s in self.stored.items() if v == vehicle_id]

    async def save(
        self, states: Sequence[GeofenceState], events: Sequence[GeofenceEvent] = ()
    ) -> None:
        for s in states:
            self.stored[(s.vehicle_id, s.geofence_id)] = s
        self.events.extend(events)


async def run_handler(fences: list[Geofence], positions: Sequence[Position]) -> tuple[float, int]:
    # Only what the handler calls is implemented: the rest of the protocol is not needed here.
    handler = GeofenceHandler(cast(GeofenceRepo, MemoryRepo(fences)))
    await handler.fleet_fences(FLEET)  # compiled before the clock starts, like the others
    batches = [DeviceBatch(FLEET, p.device_id, (p,), (), p) for p in positions]
    signals = 0
    start = time.perf_counter()
    for b in batches:
        signals += len(await handler.handle(b))
    return time.perf_counter() - start, signals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vehicles", type=int, default=1000)
    parser.add_argument("--fences", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=40, help="fixes per vehicle")
    parser.add_argument("--naive-positions", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=8000)
    args = parser.parse_args(argv)

    rng = random.Random(args.seed)
    fences = make_fences(rng, args.fences)
    positions = make_positions(rng, args.vehicles, args.steps)
    start = time.perf_counter()
    fleet = FleetFences(CompiledFence.of(f) for f in fences)
    compile_s = time.perf_counter() - start

    decision = [run_decision(fleet, positions, naive=False) for _ in range(args.repeat)]
    best_s, crossings = min(decision)
    handler = [asyncio.run(run_handler(fences, positions)) for _ in range(args.repeat)]
    handler_s, signals = min(handler)
    subset = positions[: args.naive_positions]
    naive_s, naive_crossings = min(
        run_decision(fleet, subset, naive=True) for _ in range(args.repeat)
    )
    _, indexed_crossings = run_decision(fleet, subset, naive=False)
    if naive_crossings != indexed_crossings or signals != crossings:
        print(f"MISMATCH: naive {naive_crossings} vs indexed {indexed_crossings} crossings, "
              f"handler {signals} vs decision {crossings}")  # fmt: skip
        return 2

    rate = len(positions) / best_s
    handler_rate = len(positions) / handler_s
    naive_rate = len(subset) / naive_s
    print(
        f"{args.vehicles:,} vehicles x {args.fences:,} fences ({len(positions):,} fixes, 5 s apart;"
        f" fences compiled in {compile_s * 1e3:,.0f} ms); {crossings:,} crossings; best of "
        f"{args.repeat}"
    )
    print(
        f"decision: {rate:,.0f} positions/s (target {TARGET_POSITIONS_PER_S:,}), "
        f"{best_s / len(positions) * 1e6:,.1f} us per position"
    )
    print(f"handler:  {handler_rate:,.0f} positions/s (in-memory repository, signals built)")
    print(
        f"naive:    {naive_rate:,.0f} positions/s (every fence tested, first {len(subset):,} fixes)"
    )
    print(f"ratio:    decision / naive = {rate / naive_rate:,.0f}x")
    report(
        "geofences",
        f"geofence decisions ({args.vehicles:,} vehicles x {args.fences:,} fences, one core)",
        rate,
        "positions/s",
        op=">=",
        goal=TARGET_POSITIONS_PER_S,
        floor=naive_rate,
        floor_name="every fence tested",
    )
    return 0 if rate >= TARGET_POSITIONS_PER_S else 1


if __name__ == "__main__":
    sys.exit(main())
