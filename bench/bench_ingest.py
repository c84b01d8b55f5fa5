"""End-to-end TCP ingest benchmark: virtual boxes → gateway → SQLite, over real sockets.

The gateway and the SQLite engine run in this process; the boxes run in a separate process
(each side gets a core on a 2-core machine), all connected and logged in before the clock
starts. The rate counts positions that are both durably stored and ACKed to their box: the
clock runs from the moment the boxes start sending until the last box has its last ACK, and
the stored row count is checked against what was sent.

    .venv/bin/python bench/bench_ingest.py                    # 1000 boxes x 100 positions
    .venv/bin/python bench/bench_ingest.py --profile out.prof # cProfile of the gateway side
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging
import multiprocessing as mp
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

# Run as a script from anywhere: make the repository importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway import TcpGateway  # noqa: E402
from protocol import Model  # noqa: E402
from simulator.box import VirtualBox, make_record  # noqa: E402
from storage.models import DeviceModel, now_ms  # noqa: E402
from storage.sqlite import SqliteStore  # noqa: E402

TARGET = 20_000  # positions/s stored and ACKed, 1,000 boxes, 2 cores
# Boxes connect in waves so the accept queue and the logins are not one thundering herd.
CONNECT_CONCURRENCY = 100


@dataclass(frozen=True)
class Plan:
    port: int
    boxes: list[tuple[str, str]]  # (imei, secret)
    positions: int
    batch: int
    window: int


def _use_uvloop() -> str:
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


# --- the box side (child process) -----------------------------------------------------------


def drive_boxes(plan: Plan, pipe: Connection) -> None:
    _use_uvloop()
    asyncio.run(_drive(plan, pipe))


async def _drive(plan: Plan, pipe: Connection) -> None:
    boxes = [
        VirtualBox(
            imei,
            secret,
            Model.GP8000,
            port=plan.port,
            batch_size=plan.batch,
            window=plan.window,
            io_timeout_s=120,
        )
        for imei, secret in plan.boxes
    ]
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def connect(box: VirtualBox) -> None:
        async with gate:
            await box.connect()

    await asyncio.gather(*(connect(b) for b in boxes))
    # Records are built before the clock starts: the boxes' own cost is not the gateway's.
    start = now_ms() - plan.positions * 1000 - 60_000
    for n, box in enumerate(boxes):
        box.enqueue(
            make_record(start + i * 1000, 48.0 + n * 1e-3, 2.0 + i * 1e-5, speed_kmh=50.0)
            for i in range(plan.positions)
        )
    pipe.send("ready")
    pipe.recv()  # go
    began = time.perf_counter()
    await asyncio.gather(*(box.flush(timeout=600) for box in boxes))
    elapsed = time.perf_counter() - began
    acked = sum(b.acked for b in boxes)
    await asyncio.gather(*(b.close() for b in boxes))
    pipe.send((acked, elapsed))


# --- the gateway side (this process) --------------------------------------------------------


async def _provision(store: SqliteStore, count: int) -> list[tuple[str, str]]:
    fleet = await store.fleets.create("bench")
    boxes = []
    for n in range(count):
        imei, secret = f"{490_000_000_000_000 + n:015d}", f"bench-secret-{n}"
        await store.devices.create(fleet.id, imei=imei, model=DeviceModel.GP8000, secret=secret)
        vehicle = await store.vehicles.create(
            fleet.id, vin=f"VF1BENCH{n:09d}", plate=f"B-{n:05d}", label=f"bench {n}"
        )
        await store.devices.fit(fleet.id, vehicle.id, imei, 0)
        boxes.append((imei, secret))
    return boxes


async def run(args: argparse.Namespace, db_path: Path) -> int:
    store = SqliteStore(db_path)
    await store.start()
    boxes = await _provision(store, args.boxes)
    gateway = TcpGateway(
        store,
        port=0,
        max_connections=args.boxes + 100,
        batch_size=args.flush_size,
        max_delay_ms=args.max_delay_ms,
        queue_limit=50_000,
        gateway_id="bench",
    )
    await gateway.start()
    plan = Plan(gateway.port, boxes, args.positions, args.batch, args.window)
    ctx = mp.get_context("spawn")
    ours, theirs = ctx.Pipe()
    child = ctx.Process(target=drive_boxes, args=(plan, theirs), daemon=True)
    child.start()
    loop = asyncio.get_running_loop()
    try:
        assert await loop.run_in_executor(None, ours.recv) == "ready"
        profiler = cProfile.Profile() if args.profile else None
        if profiler is not None:
            profiler.enable()
        ours.send("go")
        acked, elapsed = await loop.run_in_executor(None, ours.recv)
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile)
    finally:
        await loop.run_in_executor(None, child.join, 30)
        await gateway.stop(grace_s=5)
        await store.close()

    sent = args.boxes * args.positions
    with sqlite3.connect(db_path) as conn:
        (stored,) = conn.execute("SELECT count(*) FROM positions").fetchone()
    rate = min(acked, stored) / elapsed
    print(
        f"ingest (sqlite, {args.boxes} boxes): {rate:,.0f} positions/s stored+acked "
        f"(target {TARGET:,})"
    )
    print(
        f"  {sent:,} sent, {stored:,} stored, {acked:,} acked in {elapsed:.2f} s; "
        f"{args.positions} per box in frames of {args.batch}, window {args.window}; "
        f"{gateway.metrics.flushes} flushes (avg {stored / max(gateway.metrics.flushes, 1):.0f}"
        f" records)"
    )
    return 0 if stored == sent == acked else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boxes", type=int, default=1000)
    parser.add_argument("--positions", type=int, default=100, help="per box")
    parser.add_argument("--batch", type=int, default=25, help="records per POSITION frame")
    parser.add_argument("--window", type=int, default=4, help="frames in flight per box")
    parser.add_argument("--flush-size", type=int, default=1000, help="records per flush")
    parser.add_argument("--max-delay-ms", type=int, default=20)
    parser.add_argument("--profile", metavar="FILE", help="cProfile the gateway side")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    loop_name = _use_uvloop()
    print(f"event loop: {loop_name}")
    with tempfile.TemporaryDirectory(prefix="gp8-bench-") as tmp:
        return asyncio.run(run(args, Path(tmp) / "bench.sqlite3"))


if __name__ == "__main__":
    sys.exit(main())
