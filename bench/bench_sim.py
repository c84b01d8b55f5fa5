"""How many positions per second one core of `gp8 sim` can make, before any network.

Run: ``.venv/bin/python bench/bench_sim.py [--vehicles 1000] [--fixes 50] [--interval 10]``

Per position: move the vehicle along its streets to the next fix (closed-form speed profiles),
sample it, build the wire record with the box's state, put it in the box's outbox, which frames
it in a POSITION (50 records per frame, as a box catching up sends them), and read the frame's
ACK back, so the outbox's accounting is in the figure (simulator.outbox is sans-IO: no network
needed). The best of several runs is reported.
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

from bench.summary import report
from protocol.gp8 import Ack, encode
from simulator.geo import LatLon
from simulator.outbox import Framing, Outbox
from simulator.records import make_record
from simulator.trajectory import StreetGrid, Vehicle

# 10,000 boxes reporting every second, on one core, with room to spare for the sockets.
TARGET_POSITIONS_PER_S = 10_000
START_MS = 1_772_438_400_000  # a Monday morning in Paris: traffic
BATCH = 50


def _send_and_ack(outbox: Outbox, now: float) -> None:
    """The outbox's frames out, their ACKs in, as a gateway answering at once would."""
    acks = b"".join(encode(Ack(0, unit.seq or 0)) for unit in outbox.take(now))
    outbox.receive_data(acks, now)


def run(vehicles: int, fixes: int, interval_ms: int) -> float:
    grid = StreetGrid(LatLon(48.8566, 2.3522), 10_000, seed=1)
    fleet = [Vehicle(grid, seed=i, start_ms=START_MS) for i in range(vehicles)]
    started = time.perf_counter()
    acked = 0
    for i, vehicle in enumerate(fleet):
        outbox = Outbox(f"{356_000_000_000_000 + i:015d}", "secret", batch_size=BATCH)
        outbox.link_up(Framing.MESSAGES)  # online at once: no login to script
        for k in range(1, fixes + 1):
            vehicle.advance(START_MS + k * interval_ms)
            s = vehicle.sample()
            record = make_record(
                s.time_ms,
                s.lat,
                s.lon,
                speed_kmh=s.speed_kmh,
                heading_deg=s.heading_deg,
                altitude_m=s.altitude_m,
                satellites=s.satellites,
                hdop=s.hdop,
                ignition=s.ignition,
                flags=outbox.state.flags,
                odometer_m=s.odometer_m,
                ext_power_mv=s.ext_power_mv,
                battery_mv=s.battery_mv,
                warnings=s.warnings,
                badge=s.badge,
            )
            outbox.enqueue((record,))
            if outbox.waiting == BATCH:
                _send_and_ack(outbox, float(k))
        _send_and_ack(outbox, float(fixes + 1))
        acked += outbox.acked
    elapsed = time.perf_counter() - started
    assert acked == vehicles * fixes, acked
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
    # No floor: the figure is the simulator's own ceiling, the goal what a load test needs.
    report(
        "sim",
        "simulated positions/s, one core",
        best,
        "positions/s",
        op=">=",
        goal=TARGET_POSITIONS_PER_S,
    )
    return 0 if best >= TARGET_POSITIONS_PER_S else 1


if __name__ == "__main__":
    sys.exit(main())
