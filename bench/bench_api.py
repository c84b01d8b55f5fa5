"""API latency and throughput on one day of a 100-vehicle fleet (SQLite engine).

Seeds 100 vehicles x one day of 30 s positions (288,000 rows) straight into storage, then drives
the API in-process through httpx's ASGITransport (no sockets: this measures the API and the
storage engine, not uvicorn or the kernel) and prints:

* p50/p99 latency of GET /v1/vehicles/{id}/position (last position),
* p50/p99 latency of GET /v1/vehicles/{id}/positions over 24 hours (2,880 rows, one JSON page),
* requests/s of GET /v1/fleet/positions (the map query), sequential and 8 concurrent clients.

Every one of these requests also appends an access-log entry (one committed write), as in
production. Run: ``.venv/bin/python bench/bench_api.py [--data-dir DIR]``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from api.app import create_app
from api.security import new_api_key
from api.validation import luhn_check_digit
from storage import open_store
from storage.models import DeviceModel, Position, Role, now_ms
from storage.repository import Store

DAY_MS = 86_400_000
BATCH = 5_000  # rows per store() call while seeding: a gateway flush is of this order


def vin_for(i: int) -> str:
    # European-style VINs (no check digit rule applies): WMI + filler + serial.
    return f"WVWZZZ1JZ{i:08d}"


def imei_for(i: int) -> str:
    body = f"35{i:012d}"
    return body + str(luhn_check_digit(body))


async def seed(store: Store, vehicles: int, interval_s: int, end_ms: int) -> tuple[str, list[str]]:
    fleet = await store.fleets.create("bench")
    secret, key = new_api_key(fleet_id=fleet.id, role=Role.VIEWER, name="bench")
    await store.keys.create(key)
    ids: list[tuple[str, str]] = []
    for i in range(vehicles):
        v = await store.vehicles.create(fleet.id, vin=vin_for(i), plate=f"B-{i:03d}", label="van")
        d = await store.devices.create(
            fleet.id, imei=imei_for(i), model=DeviceModel.GP8000, secret="s" * 32
        )
        await store.devices.fit(fleet.id, v.id, d.imei, end_ms - 2 * DAY_MS)
        ids.append((v.id, d.id))
    per_vehicle = DAY_MS // (interval_s * 1000)
    start_ms = end_ms - DAY_MS
    batch: list[Position] = []
    rng = random.Random(8)
    t0 = time.perf_counter()
    total = 0
    for n, (vehicle_id, device_id) in enumerate(ids):
        lat, lon = 48.0 + rng.random(), 2.0 + rng.random()
        odometer = rng.randrange(10_000_000)
        for k in range(per_vehicle):
            moving = (k // 120) % 2 == 0  # an hour driving, an hour parked
            if moving:
                lat += 0.0002
                lon += 0.0001
                odometer += 400
            batch.append(
                Position(
                    fleet_id=fleet.id,
                    device_id=device_id,
                    vehicle_id=vehicle_id,
                    time_ms=start_ms + k * interval_s * 1000 + n,
                    received_ms=start_ms + k * interval_s * 1000 + n + 800,
                    lat=round(lat, 7),
                    lon=round(lon, 7),
                    altitude_m=40,
                    speed_kmh=48.0 if moving else 0.0,
                    heading_deg=27.0,
                    satellites=10,
                    hdop=0.8,
                    fix_valid=True,
                    ignition=moving,
                    doors_locked=not moving,
                    engine_start_inhibited=False,
                    external_power=True,
                    odometer_m=odometer,
                    external_power_mv=13_800 if moving else 12_500,
                    battery_mv=4_100,
                    gsm_signal=21,
                    warnings=0,
                )
            )
            if len(batch) >= BATCH:
                await store.telemetry.store(batch, [])
                total += len(batch)
                batch = []
    if batch:
        await store.telemetry.store(batch, [])
        total += len(batch)
    elapsed = time.perf_counter() - t0
    print(f"seeded {total:,} positions in {elapsed:.1f} s ({total / elapsed:,.0f} rows/s)")
    return secret, [vehicle_id for vehicle_id, _ in ids]


def percentiles(samples: list[float]) -> tuple[float, float, float]:
    """p50 and p99 wall latency and CPU per request (the last sample), in ms."""
    cpu = samples[-1]
    ordered = sorted(samples[:-1])
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return p50 * 1000, p99 * 1000, cpu * 1000


async def timed(n: int, call: Callable[[int], Awaitable[httpx.Response]]) -> list[float]:
    samples = []
    cpu = time.process_time()
    for i in range(n):
        t = time.perf_counter()
        r = await call(i)
        samples.append(time.perf_counter() - t)
        if r.status_code != 200:
            raise SystemExit(f"unexpected {r.status_code}: {r.text[:300]}")
    # CPU time of the whole process (event loop and SQLite threads) per request: unlike wall
    # time it does not grow when other processes compete for the cores.
    samples.append((time.process_time() - cpu) / n)
    return samples


async def throughput(
    seconds: float, clients: int, call: Callable[[], Awaitable[httpx.Response]]
) -> tuple[float, float]:
    """Requests per second, and CPU ms per request."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            r = await call()
            if r.status_code != 200:
                raise SystemExit(f"unexpected {r.status_code}: {r.text[:300]}")
            done += 1

    t, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return done / (time.perf_counter() - t), (time.process_time() - cpu) / done * 1000


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=None, help="default: a temporary dir")
    parser.add_argument("--vehicles", type=int, default=100)
    parser.add_argument("--interval", type=int, default=30, help="seconds between positions")
    parser.add_argument("--requests", type=int, default=500, help="per latency measurement")
    parser.add_argument("--seconds", type=float, default=5.0, help="per throughput measurement")
    args = parser.parse_args()

    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="gp8-bench-"))
    store = open_store(mongo_url=None, mongo_db="gp8", data_dir=data_dir)
    await store.start()
    end_ms = now_ms()
    secret, vehicle_ids = await seed(store, args.vehicles, args.interval, end_ms)
    app = create_app(store, rate_limit_per_minute=None)
    headers = {"Authorization": f"Bearer {secret}"}
    rng = random.Random(1)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://bench", headers=headers
        ) as client,
    ):

        async def last_position(_: int) -> httpx.Response:
            return await client.get(f"/v1/vehicles/{rng.choice(vehicle_ids)}/position")

        day = {"from": str(end_ms - DAY_MS), "to": str(end_ms + 1), "limit": "10000"}

        async def history(_: int) -> httpx.Response:
            return await client.get(f"/v1/vehicles/{rng.choice(vehicle_ids)}/positions", params=day)

        async def fleet_map() -> httpx.Response:
            return await client.get("/v1/fleet/positions")

        check = await history(0)
        rows = len(check.json()["data"])
        fleet_rows = len((await fleet_map()).json()["data"])
        await timed(20, last_position)  # warm-up
        p50, p99, cpu = percentiles(await timed(args.requests, last_position))
        print(
            f"GET /v1/vehicles/{{id}}/position          p50 {p50:7.2f} ms   p99 {p99:7.2f} ms"
            f"   cpu {cpu:6.2f} ms/req"
        )
        n = max(20, args.requests // 5)
        p50, p99, cpu = percentiles(await timed(n, history))
        print(
            f"GET /v1/vehicles/{{id}}/positions (24 h)   p50 {p50:7.2f} ms   p99 {p99:7.2f} ms"
            f"   cpu {cpu:6.2f} ms/req   ({rows:,} rows, {len(check.content) / 1e6:.1f} MB JSON)"
        )
        for clients in (1, 8):
            rps, cpu = await throughput(args.seconds, clients, fleet_map)
            print(
                f"GET /v1/fleet/positions                 {rps:7.0f} req/s"
                f"   cpu {cpu:6.2f} ms/req   ({fleet_rows} vehicles, {clients} client(s))"
            )
    await store.close()
    print(f"data: {data_dir}")


if __name__ == "__main__":
    asyncio.run(main())
