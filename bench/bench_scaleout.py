"""Two TCP gateway processes on one SQLite file against one (docs/scaling.md).

The same boxes, the same records, the same durability (ACK after the commit is on disk): first
one gateway process takes every box, then two take half each, on one database file. Each
gateway gets its own box-driver process, so with two gateways four processes share the
machine's cores; the figure is stored and ACKed positions per second, over the slowest half.
On one SQLite file the writers take turns on the database lock (`BEGIN IMMEDIATE`), so this
measures how much a second process adds when storage, not the gateway, is the floor.

    .venv/bin/python bench/bench_scaleout.py --boxes 400 --positions 100
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import sqlite3
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_ingest import Plan, _provision, _use_uvloop, drive_boxes
from gateway import TcpGateway
from storage.sqlite import SqliteStore


def serve_gateway(db_path: Path, name: str, boxes: int, pipe: Connection) -> None:
    _use_uvloop()
    asyncio.run(_serve(db_path, name, boxes, pipe))


async def _serve(db_path: Path, name: str, boxes: int, pipe: Connection) -> None:
    store = SqliteStore(db_path, writer_process=True)  # as `gp8 serve` runs it
    await store.start()
    gateway = TcpGateway(
        store,
        port=0,
        max_connections=boxes + 100,
        batch_size=1000,
        max_delay_ms=20,
        queue_limit=50_000,
        gateway_id=name,
    )
    await gateway.start()
    pipe.send(gateway.port)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, pipe.recv)  # stop
    await gateway.stop(grace_s=5)
    await store.close()
    pipe.send("stopped")


def run(
    db_path: Path, boxes: list[tuple[str, str]], processes: int, args: argparse.Namespace
) -> float:
    ctx = mp.get_context("spawn")
    share = len(boxes) // processes
    gateways, drivers = [], []
    for n in range(processes):
        ours, theirs = ctx.Pipe()
        proc = ctx.Process(
            target=serve_gateway, args=(db_path, f"gw{n}", share, theirs), daemon=True
        )
        proc.start()
        gateways.append((proc, ours))
    for n, (_, pipe) in enumerate(gateways):
        port = pipe.recv()
        plan = Plan(port, boxes[n * share : (n + 1) * share], args.positions, args.batch, 4)
        ours, theirs = ctx.Pipe()
        proc = ctx.Process(target=drive_boxes, args=(plan, theirs), daemon=True)
        proc.start()
        drivers.append((proc, ours))
    for _, pipe in drivers:
        ready, _connect_s = pipe.recv()
        assert ready == "ready"
    for _, pipe in drivers:
        pipe.send("go")
    results = [pipe.recv() for _, pipe in drivers]
    for proc, _ in drivers:
        proc.join(30)
    for _, pipe in gateways:
        pipe.send("stop")
    for proc, pipe in gateways:
        assert pipe.recv() == "stopped"
        proc.join(30)
    acked = sum(r[0] for r in results)
    elapsed = max(r[1] for r in results)
    with sqlite3.connect(db_path) as conn:
        (stored,) = conn.execute("SELECT count(*) FROM positions").fetchone()
    assert stored == acked == share * processes * args.positions, (stored, acked)
    return acked / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boxes", type=int, default=400)
    parser.add_argument("--positions", type=int, default=100, help="per box")
    parser.add_argument("--batch", type=int, default=25, help="records per POSITION frame")
    args = parser.parse_args()
    rates = {}
    for processes in (1, 2):
        with tempfile.TemporaryDirectory(prefix="gp8-scaleout-") as tmp:
            db_path = Path(tmp) / "bench.sqlite3"

            async def provision(db_path: Path = db_path) -> list[tuple[str, str]]:
                store = SqliteStore(db_path)
                await store.start()
                try:
                    return await _provision(store, args.boxes)
                finally:
                    await store.close()

            boxes = asyncio.run(provision())
            began = time.perf_counter()
            rates[processes] = run(db_path, boxes, processes, args)
            print(
                f"{processes} gateway process(es), one SQLite file: {rates[processes]:,.0f} "
                f"positions/s stored+acked ({args.boxes} boxes x {args.positions}; "
                f"{time.perf_counter() - began:.1f} s with start and stop)"
            )
    print(f"two processes / one: {rates[2] / rates[1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
