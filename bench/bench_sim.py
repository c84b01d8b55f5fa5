"""How many positions per second one core of `gp8 sim` can make, before any network.

Run: ``.venv/bin/python bench/bench_sim.py [--vehicles 1000] [--fixes 50] [--interval 10]``

Per position: move the vehicle along its streets to the next fix (closed-form speed profiles),
sample it, build the wire record with the box's state, and encode it in a POSITION frame (50
records per frame, as a box catching up sends them). The best of several runs is reported.
The simulator must not be what limits a load test: one core has to make far more positions per
second than a gateway takes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

# Runnable as a plain script from a checkout, without installing the project.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from protocol.gp8 import Position, PositionRecord, encode
from simulator.box import make_record
from simulator.geo import LatLon
from simulator.trajectory import StreetGrid, Vehicle

# 10,000 boxes reporting every second, on one core, with room to spare for the sockets.
TARGET_POSITIONS_PER_S = 10_000
START_MS = 1_772_438_400_000  # a Monday morning in Paris: traffic


def run(vehicles: int, fixes: int, interval_ms: int) -> float:
    grid = StreetGrid(LatLon(48.8566, 2.3522), 10_000, seed=1)
    fleet = [Vehicle(grid, seed=i, start_ms=START_MS) for i in range(vehicles)]
    started = time.perf_counter()
    for vehicle in fleet:
        batch: list[PositionRecord] = []
        for k in range(1, fixes + 1):
            vehicle.advance(START_MS + k * interval_ms)
            s = vehicle.sample()
            batch.append(
                make_record(
                    s.time_ms,
                    s.lat,
                    s.lon,
                    speed_kmh=s.speed_kmh,
                    heading_deg=s.heading_deg,
                    altitude_m=s.altitude_m,
                    satellites=s.satellites,
                    hdop=s.hdop,
                    ignition=s.ignition,
                    odometer_m=s.odometer_m,
                    ext_power_mv=s.ext_power_mv,
                    battery_mv=s.battery_mv,
                    warnings=s.warnings,
                    badge=s.badge,
                )
            )
            if len(batch) == 50:
                encode(Position(k, tuple(batch)))
                batch = []
        if batch:
            encode(Position(fixes + 1, tuple(batch)))
    elapsed = time.perf_counter() - started
    return vehicles * fixes / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vehicles", type=int, default=1000)
    parser.add_argument("--fixes", type=int, default=50)
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between fixes")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    best = max(
        run(args.vehicles, args.fixes, round(args.interval * 1000)) for _ in range(args.runs)
    )
    print(
        f"simulated positions: {best:,.0f}/s on one core "
        f"({args.vehicles} vehicles x {args.fixes} fixes every {args.interval:g} s; "
        f"target {TARGET_POSITIONS_PER_S:,}/s)"
    )
    return 0 if best >= TARGET_POSITIONS_PER_S else 1


if __name__ == "__main__":
    sys.exit(main())
