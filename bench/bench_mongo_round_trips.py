"""MongoDB round trips per 1,000 positions, end to end through the TCP gateway.

Boxes log in over real sockets and send their positions; the gateway batches them into
`telemetry.store()` calls on the Mongo engine. The engine counts every driver call that goes to
the server (`MongoStore.round_trips`); the count is reset once every box is logged in, so it
covers ingestion only (inserts of positions and events, last-position updates).

By default it runs on the in-memory Mongo-compatible fake (no server here): the round-trip
count is a property of our code, not of the server, so the fake gives the same figure. Each
flush of the ingest pipeline is one insert of positions, one of events if any, and one bulk
update of last positions, whatever its size. The fake's own speed is not meaningful and is not
printed. ``--mongo-url`` (or GP8_TEST_MONGO_URL) runs it against a real MongoDB and then
prints the rate too.

    .venv/bin/python bench/bench_mongo_round_trips.py [--boxes 20] [--positions 100]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import time
from pathlib import Path

# Runnable as a plain script from a checkout, without installing the project.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from api.validation import luhn_check_digit
from bench.summary import report
from protocol.gp8 import Model
from simulator.box import VirtualBox, make_record
from storage.models import DeviceModel, now_ms
from storage.mongo import MongoStore

BENCH = "mongo_round_trips"
# The goal: a full flush (--flush-size records) costs at most three round trips whatever its
# size: the positions' insert, the events' if any, the last positions' bulk update.
ROUND_TRIPS_PER_FLUSH = 3


async def run(args: argparse.Namespace) -> int:
    from gateway import TcpGateway

    url = args.mongo_url
    if url:
        store = MongoStore.from_url(url, f"gp8_bench_{secrets.token_hex(4)}")
    else:
        from pymongo_async_mock import AsyncMongoMockClient

        store = MongoStore(AsyncMongoMockClient(), "gp8_bench")
    await store.start()
    fleet = await store.fleets.create("bench")
    boxes_spec = []
    for i in range(args.boxes):
        imei = f"35{i:012d}"
        imei += str(luhn_check_digit(imei))
        secret = secrets.token_urlsafe(24)
        await store.devices.create(fleet.id, imei=imei, model=DeviceModel.GP8000, secret=secret)
        boxes_spec.append((imei, secret))

    gateway = TcpGateway(store, host="127.0.0.1", port=0, batch_size=args.flush_size)
    await gateway.start()
    boxes = [
        VirtualBox(imei, secret, Model.GP8000, port=gateway.port, batch_size=args.batch)
        for imei, secret in boxes_spec
    ]
    try:
        await asyncio.gather(*(box.connect() for box in boxes))
        start_ms = now_ms() - args.positions * 1000
        for n, box in enumerate(boxes):
            box.enqueue(
                make_record(start_ms + k * 1000, 48.85 + n * 1e-3, 2.35 + k * 1e-5, odometer_m=k)
                for k in range(args.positions)
            )
        store.round_trips = 0
        t0 = time.perf_counter()
        await asyncio.gather(*(box.deliver(timeout=600) for box in boxes))
        elapsed = time.perf_counter() - t0
        trips = store.round_trips
    finally:
        for box in boxes:
            await box.close()
        await gateway.stop(5)
        await store.close()
    total = args.boxes * args.positions
    acked = sum(box.acked for box in boxes)
    per_1000 = trips * 1000 / total
    engine = "mongodb" if url else "in-memory fake"
    print(
        f"mongo round trips ({engine}, {args.boxes} boxes x {args.positions} positions): "
        f"{trips} for {total:,} positions = {per_1000:.1f} per 1,000 positions (acked {acked:,})"
    )
    if url:
        print(f"mongo ingest: {total / elapsed:,.0f} positions/s stored+acked")
    report(
        BENCH,
        f"round trips per 1,000 positions ({engine}, flushes of {args.flush_size})",
        per_1000,
        "round trips",
        op="<=",
        goal=ROUND_TRIPS_PER_FLUSH * 1000 / args.flush_size,
    )
    return 0 if acked == total else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boxes", type=int, default=20)
    parser.add_argument("--positions", type=int, default=100, help="per box")
    parser.add_argument("--batch", type=int, default=25, help="records per POSITION frame")
    parser.add_argument("--flush-size", type=int, default=1000, help="records per flush")
    parser.add_argument("--mongo-url", default=os.environ.get("GP8_TEST_MONGO_URL"))
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
