"""API read paths at fleet scale (SQLite engine): a vehicle's day of history, the fleet map.

gp8 runs in this process as it does in production (`gp8.serve.start_services`: the whole app,
uvicorn on a real port); the requests come from a plain keep-alive HTTP/1.1 client
(bench/http_client.py) in a child process, so the client's work is not done on the server's
event loop (httpx, used before, took more CPU per request than some of the answers it timed,
from the same two cores). Every request is authenticated, rate-limited and
written to the access log (one committed write), and the GC is set as `gp8 serve` sets it
(gateway.lifecycle.tune_gc), as in production.

* History: ``--vehicles`` vehicles x one day of 30 s positions, seeded straight into storage;
  GET /v1/vehicles/{id}/positions over 24 hours (2,880 rows, one JSON page) of random vehicles,
  one at a time: p50/p99. The floor, in the same run and interleaved with it: the same SQL
  (storage/sqlite/telemetry.py's own query) on the same file through a plain sqlite3 connection
  and orjson.dumps of the rows it returns, no HTTP and no objects. Printed beside it, not a
  goal: the same SQL and the answer's JSON made by the route's own rendering, no HTTP (what the
  API must do beyond the floor, apart from HTTP).
* Map: a second fleet of ``--map-vehicles`` vehicles with a last position each (half of them in
  and around Paris, the rest over France), ``PRIVATE_SHARE`` of them in privacy mode (named under
  ``private``, their fixes hidden); GET /v1/fleet/positions?bbox= a Paris viewport, requests/s
  with ``--concurrency`` in flight. The floor: the route's storage queries called directly
  (the privacy facts, the open theft cases, `fleet_map` in the bbox: the last positions with
  the vehicles' names) and orjson.dumps of what they return, same concurrency, no HTTP. Also
  printed: the whole fleet in one answer, and the last position.

Summary lines (bench/summary.py): the history's p99 (goal ≤ 1.5x the floor's p99) and the map's
requests/s (goal ≥ 200).

Run: ``.venv/bin/python bench/bench_api.py [--vehicles 100] [--map-vehicles 10000]
[--requests 300] [--seconds 5] [--concurrency 8] [--data-dir DIR] [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import multiprocessing.connection
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from api.security import new_api_key
from api.services.formats import render_positions
from api.validation import luhn_check_digit
from bench.bench_ingest import _use_uvloop
from bench.http_client import Connection, connections, get_head
from bench.summary import report
from gateway.lifecycle import tune_gc
from gp8.serve import start_services, stop_services
from gp8.settings import ApiSettings, Settings, TcpSettings
from storage import SQLITE_FILENAME
from storage.models import (
    Device,
    DeviceModel,
    Fitting,
    Position,
    Role,
    TheftCaseStatus,
    Vehicle,
    new_id,
    now_ms,
)
from storage.repository import BBox, Store
from storage.sqlite.rows import to_position
from storage.sqlite.telemetry import positions_query

BENCH = "api"
DAY_MS = 86_400_000
BATCH = 5_000  # rows per store() call while seeding: a gateway flush is of this order
# The goals (issue 15).
GOAL_HISTORY_RATIO = 1.5  # history p99 at most this times the select+serialise floor's p99
GOAL_MAP_RPS = 200.0
# A city viewport (the route's own example): with half the fleet around Paris, a few hundred
# vehicles are in it, about what a dispatcher's map shows.
MAP_BBOX: BBox = (2.25, 48.81, 2.42, 48.90)
PARIS: BBox = (2.0, 48.6, 2.7, 49.1)
FRANCE: BBox = (-1.0, 43.0, 7.0, 50.0)
PRIVATE_SHARE = 0.02
# Interleaved rounds of floor and HTTP samples: both see the same noise from other processes.
# At least 5 rounds, and at most 60 requests a round: the floors run on gp8's own loop (~2 s a
# round of 60), and a round much longer would outlast uvicorn's 5 s keep-alive timer, which then
# closes the client's idle connection as its next request arrives.
ROUNDS = 5
ROUND_REQUESTS = 60
TIMEOUT_S = 60.0


def vin_for(i: int) -> str:
    # European-style VINs (no check digit rule applies): WMI + filler + serial.
    return f"WVWZZZ1JZ{i:08d}"


def imei_for(i: int) -> str:
    body = f"35{i:012d}"
    return body + str(luhn_check_digit(body))


def fix(fleet_id: str, device_id: str, vehicle_id: str, t: int, lat: float, lon: float) -> Position:
    moving = (t // 3_600_000) % 2 == 0  # an hour driving, an hour parked
    return Position(
        fleet_id=fleet_id,
        device_id=device_id,
        vehicle_id=vehicle_id,
        time_ms=t,
        received_ms=t + 800,
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
        odometer_m=t // 100 % 10_000_000,
        external_power_mv=13_800 if moving else 12_500,
        battery_mv=4_100,
        gsm_signal=21,
        warnings=0,
    )


async def provision(store: Store, fleet_id: str, first: int, n: int, at_ms: int) -> list[Device]:
    """``n`` vehicles with a box fitted each, in one bulk write (ImportRepo.provision)."""
    vehicles, devices, fittings = [], [], []
    for i in range(first, first + n):
        vehicle_id, device_id = new_id("veh"), new_id("dev")
        vehicles.append(Vehicle(vehicle_id, fleet_id, vin_for(i), f"B-{i:05d}", "van", at_ms))
        devices.append(
            Device(
                device_id,
                fleet_id,
                imei_for(i),
                DeviceModel.GP8000,
                "s" * 32,
                at_ms,
                vehicle_id=vehicle_id,
            )
        )
        fittings.append(Fitting(fleet_id, device_id, vehicle_id, at_ms))
    await store.imports.provision(fleet_id, vehicles, devices, fittings)
    return devices


async def store_all(store: Store, positions: list[Position]) -> None:
    for start in range(0, len(positions), BATCH):
        await store.telemetry.store(positions[start : start + BATCH], [])


async def seed_history(
    store: Store, vehicles: int, interval_s: int, end_ms: int
) -> tuple[str, str, list[str]]:
    """A fleet with a day of positions per vehicle; its viewer key, id and vehicle ids."""
    fleet = await store.fleets.create("bench history")
    secret, key = new_api_key(fleet_id=fleet.id, role=Role.VIEWER, name="bench")
    await store.keys.create(key)
    devices = await provision(store, fleet.id, 0, vehicles, end_ms - 2 * DAY_MS)
    rng = random.Random(8)
    t0 = time.perf_counter()
    batch: list[Position] = []
    total = 0
    for n, device in enumerate(devices):
        assert device.vehicle_id is not None
        lat, lon = 48.0 + rng.random(), 2.0 + rng.random()
        for k in range(DAY_MS // (interval_s * 1000)):
            t = end_ms - DAY_MS + k * interval_s * 1000 + n
            lat, lon = lat + 0.0002 * ((t // 3_600_000) % 2 == 0), lon + 0.0001
            batch.append(fix(fleet.id, device.id, device.vehicle_id, t, lat, lon))
        if len(batch) >= BATCH or n == len(devices) - 1:
            await store.telemetry.store(batch, [])
            total, batch = total + len(batch), []
    elapsed = time.perf_counter() - t0
    print(f"history: seeded {total:,} positions in {elapsed:.1f} s")
    return secret, fleet.id, [d.vehicle_id for d in devices if d.vehicle_id is not None]


def _inside(rng: random.Random, box: BBox) -> tuple[float, float]:
    min_lon, min_lat, max_lon, max_lat = box
    return rng.uniform(min_lat, max_lat), rng.uniform(min_lon, max_lon)


async def seed_map(store: Store, vehicles: int, end_ms: int) -> tuple[str, str, int]:
    """A fleet of ``vehicles`` with a last position each, PRIVATE_SHARE in privacy mode; its
    viewer key, its id and how many vehicles are private."""
    fleet = await store.fleets.create("bench map")
    secret, key = new_api_key(fleet_id=fleet.id, role=Role.VIEWER, name="bench map")
    await store.keys.create(key)
    t0 = time.perf_counter()
    devices = await provision(store, fleet.id, 100_000, vehicles, end_ms - DAY_MS)
    rng = random.Random(15)
    positions = []
    for i, device in enumerate(devices):
        assert device.vehicle_id is not None
        lat, lon = _inside(rng, PARIS if i % 2 else FRANCE)
        positions.append(fix(fleet.id, device.id, device.vehicle_id, end_ms - i, lat, lon))
    await store_all(store, positions)
    # The privacy badge presented once, an hour ago: private from then on (docs/privacy.md).
    private = rng.sample(devices, round(vehicles * PRIVATE_SHARE))
    for device in private:
        assert device.vehicle_id is not None
        await store.privacy.add_toggles(fleet.id, device.vehicle_id, [end_ms - 3_600_000])
    print(
        f"map: {vehicles:,} vehicles with a last position each ({len(private)} private) "
        f"in {time.perf_counter() - t0:.1f} s"
    )
    return secret, fleet.id, len(private)


# --- the child process: the HTTP client ------------------------------------------------------


def run_client(base_url: str, conn: multiprocessing.connection.Connection) -> None:
    uvloop.run(_client(base_url, conn))


async def _client(base_url: str, conn: multiprocessing.connection.Connection) -> None:
    """Answers jobs from the parent: ("latency", key, urls) -> seconds per request, one at a
    time on one connection; ("rate", key, url, seconds, clients) -> (requests, seconds), on
    ``clients`` connections; None ends. Each request's time runs until its whole body is read."""
    loop = asyncio.get_running_loop()

    async def get(own: Connection, head: bytes) -> None:
        status, body = await own.get(head)
        if status != 200:
            raise SystemExit(f"unexpected {status} for {head[:200]!r}: {body[:300]!r}")

    async with connections(base_url, 1, TIMEOUT_S) as (single,):
        while (job := await loop.run_in_executor(None, conn.recv)) is not None:
            if job[0] == "latency":
                _, key, urls = job
                heads = [get_head(base_url, url, key) for url in urls]
                samples = []
                for head in heads:
                    t = time.perf_counter()
                    await get(single, head)
                    samples.append(time.perf_counter() - t)
                conn.send(samples)
            else:
                _, key, url, seconds, clients = job
                head = get_head(base_url, url, key)
                async with connections(base_url, clients, TIMEOUT_S) as pool:
                    idle = list(pool)

                    async def call(head: bytes = head, idle: list[Connection] = idle) -> None:
                        own = idle.pop()
                        try:
                            await get(own, head)
                        finally:
                            idle.append(own)

                    done, elapsed = await _rate(call, seconds, clients)
                conn.send((done, elapsed))


async def _rate(
    call: Callable[[], Awaitable[object]], seconds: float, clients: int
) -> tuple[int, float]:
    """Calls of ``call`` with ``clients`` in flight for ``seconds``: (how many, seconds taken)."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await call()
            done += 1

    t = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return done, time.perf_counter() - t


class Client:
    """The parent's side of the child process."""

    def __init__(self, conn: multiprocessing.connection.Connection) -> None:
        self._conn = conn

    async def _ask(self, job: tuple[Any, ...]) -> Any:
        self._conn.send(job)
        # The server runs on this loop: wait for the answer without blocking it.
        return await asyncio.get_running_loop().run_in_executor(None, self._conn.recv)

    async def latency(self, key: str, urls: list[str]) -> list[float]:
        samples: list[float] = await self._ask(("latency", key, urls))
        return samples

    async def rate(self, key: str, url: str, seconds: float, clients: int) -> float:
        done, elapsed = await self._ask(("rate", key, url, seconds, clients))
        return float(done / elapsed)


# --- the floors ------------------------------------------------------------------------------


def history_floor(
    db: sqlite3.Connection, fleet_id: str, vehicle_ids: list[str], span: tuple[int, int]
) -> list[float]:
    """Seconds per history read as SQL + orjson alone: the storage's own query for the page the
    route asks for (no cursor, limit 10,000, oldest first) and orjson.dumps of its rows."""
    samples = []
    for vehicle_id in vehicle_ids:
        sql, params = positions_query(fleet_id, vehicle_id, *span, None, 10_000, False)
        t = time.perf_counter()
        orjson.dumps(db.execute(sql, params).fetchall())
        samples.append(time.perf_counter() - t)
    return samples


def history_answer(
    db: sqlite3.Connection, fleet_id: str, vehicle_ids: list[str], span: tuple[int, int]
) -> list[float]:
    """Seconds per history read as the same SQL and the answer's JSON made from its rows by the
    route's own code (storage/sqlite/rows.py to_position, api/services/formats.py
    render_positions, orjson), in one thread, no HTTP: printed beside the floor, not a goal, it
    tells the HTTP stack's share of the answer from the rendering's."""
    samples = []
    for vehicle_id in vehicle_ids:
        sql, params = positions_query(fleet_id, vehicle_id, *span, None, 10_000, False)
        t = time.perf_counter()
        positions = list(map(to_position, db.execute(sql, params)))
        orjson.dumps({"data": render_positions(positions)})
        samples.append(time.perf_counter() - t)
    return samples


async def map_floor(store: Store, fleet_id: str, seconds: float, clients: int) -> float:
    """Requests/s of the map's storage queries called directly, as the route issues them, and
    their answer serialised: the fleet's privacy facts beside the map's one query, then (the
    fleet has private vehicles) its open theft cases."""

    async def call() -> None:
        facts, entries = await asyncio.gather(
            store.privacy.fleet(fleet_id, existing=True),
            store.telemetry.fleet_map(fleet_id, bbox=MAP_BBOX),
        )
        if facts.changes or facts.toggles:
            await store.theft_cases.list(fleet_id, status=TheftCaseStatus.OPEN, limit=1000)
        orjson.dumps([(e.plate, e.label, *e.position) for e in entries])

    done, elapsed = await _rate(call, seconds, clients)
    return done / elapsed


def ms(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000


# --- the run ---------------------------------------------------------------------------------


async def main(args: argparse.Namespace) -> None:
    own_dir = args.data_dir is None
    data_dir = Path(tempfile.mkdtemp(prefix="gp8-bench-api-")) if own_dir else args.data_dir
    settings = Settings(
        data_dir=data_dir,
        log_level="warning",
        tcp=TcpSettings(host="127.0.0.1", port=0),
        api=ApiSettings(host="127.0.0.1", port=0, rate_limit_per_minute=1_000_000_000),
    )
    run = await start_services(settings)
    # What `gp8 serve` does once started (gp8/serve.py): the start-up heap out of the GC's
    # full collections, which would otherwise pause the loop for 0.1-0.3 s every few histories.
    tune_gc()
    ctx = multiprocessing.get_context("spawn")
    parent_end, child_end = ctx.Pipe()
    child = ctx.Process(
        target=run_client, args=(f"http://127.0.0.1:{run.api_port}", child_end), daemon=True
    )
    child.start()
    client = Client(parent_end)
    try:
        store: Store = run.store
        end_ms = now_ms()
        key, fleet_id, vehicle_ids = await seed_history(store, args.vehicles, 30, end_ms)
        map_key, map_fleet, private = await seed_map(store, args.map_vehicles, end_ms)
        db = sqlite3.connect(data_dir / SQLITE_FILENAME)
        # The seeding's write-ahead log into the database now, while nothing runs: otherwise
        # the first measured commits (the access log's) would each copy a share of it.
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.close()
        rng = random.Random(1)
        span = (end_ms - DAY_MS, end_ms + 1)
        day = urlencode({"from": span[0], "to": span[1], "limit": 10_000})

        # Last position: printed only.
        urls = [f"/v1/vehicles/{rng.choice(vehicle_ids)}/position" for _ in range(args.requests)]
        await client.latency(key, urls[:20])  # warm-up
        samples = await client.latency(key, urls)
        print(
            f"\nGET /v1/vehicles/{{id}}/position          p50 {ms(samples, 0.5):7.2f} ms"
            f"   p99 {ms(samples, 0.99):7.2f} ms"
        )

        # History: HTTP and floor interleaved in rounds.
        db = sqlite3.connect(f"file:{data_dir / SQLITE_FILENAME}?mode=ro", uri=True)
        http: list[float] = []
        floor: list[float] = []
        answer: list[float] = []
        rounds = max(ROUNDS, -(-args.requests // ROUND_REQUESTS))
        per_round = max(1, args.requests // rounds)
        await client.latency(key, [f"/v1/vehicles/{vehicle_ids[0]}/positions?{day}"] * 5)
        for _ in range(rounds):
            picked = [rng.choice(vehicle_ids) for _ in range(per_round)]
            floor += history_floor(db, fleet_id, picked, span)
            answer += history_answer(db, fleet_id, picked, span)
            http += await client.latency(
                key, [f"/v1/vehicles/{vid}/positions?{day}" for vid in picked]
            )
        db.close()
        print(
            f"GET /v1/vehicles/{{id}}/positions (24 h)   p50 {ms(http, 0.5):7.2f} ms"
            f"   p99 {ms(http, 0.99):7.2f} ms   ({len(http)} requests)\n"
            f"  floor, SQL + orjson of the rows        p50 {ms(floor, 0.5):7.2f} ms"
            f"   p99 {ms(floor, 0.99):7.2f} ms   ratio p50 {ms(http, 0.5) / ms(floor, 0.5):.2f},"
            f" p99 {ms(http, 0.99) / ms(floor, 0.99):.2f}\n"
            f"  SQL + the answer's JSON, no HTTP       p50 {ms(answer, 0.5):7.2f} ms"
            f"   p99 {ms(answer, 0.99):7.2f} ms   (not a floor: the route's rendering in one"
            " thread; HTTP/it p99"
            f" {ms(http, 0.99) / ms(answer, 0.99):.2f})"
        )

        # Map.
        url = "/v1/fleet/positions?" + urlencode({"bbox": ",".join(map(str, MAP_BBOX))})
        await client.latency(map_key, [url] * 20)  # warm-up
        shown = len(await store.telemetry.last_positions(map_fleet, bbox=MAP_BBOX))
        rps = await client.rate(map_key, url, args.seconds, args.concurrency)
        floor_rps = await map_floor(store, map_fleet, args.seconds, args.concurrency)
        one = await client.rate(map_key, url, args.seconds, 1)
        whole = await client.rate(map_key, "/v1/fleet/positions", args.seconds, args.concurrency)
        print(
            f"GET /v1/fleet/positions?bbox=Paris      {rps:7.0f} req/s   ({shown} vehicles in"
            f" the box, {private} private named, {args.concurrency} in flight; 1 in flight:"
            f" {one:.0f} req/s)\n"
            f"  floor, the storage queries + orjson    {floor_rps:7.0f} req/s   ratio"
            f" {rps / floor_rps:.2f}\n"
            f"GET /v1/fleet/positions (whole fleet)   {whole:7.1f} req/s   ({args.map_vehicles:,}"
            " vehicles in each answer)"
        )

        p99, floor_p99 = ms(http, 0.99), ms(floor, 0.99)
        report(
            BENCH,
            "24 h history p99 (2,880 positions, JSON)",
            p99,
            "ms",
            op="<=",
            goal=GOAL_HISTORY_RATIO * floor_p99,
            floor=floor_p99,
            floor_name="SQL + orjson, p99",
        )
        report(
            BENCH,
            f"fleet map req/s ({args.map_vehicles:,} vehicles, bbox, {args.concurrency} in flight)",
            rps,
            "req/s",
            op=">=",
            goal=GOAL_MAP_RPS,
            floor=floor_rps,
            floor_name="storage queries + orjson",
        )
    finally:
        parent_end.send(None)
        child.join(timeout=30)
        if child.is_alive():
            child.kill()
        await stop_services(run)
        if own_dir:
            shutil.rmtree(data_dir, ignore_errors=True)
        else:
            print(f"data: {data_dir}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=None, help="default: a temporary dir")
    parser.add_argument("--vehicles", type=int, default=100, help="history fleet")
    parser.add_argument("--map-vehicles", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=300, help="per latency measurement")
    parser.add_argument("--seconds", type=float, default=5.0, help="per throughput measurement")
    parser.add_argument("--concurrency", type=int, default=8, help="map requests in flight")
    parser.add_argument(
        "--quick", action="store_true", help="10 vehicles, 1,000 on the map: checks the bench runs"
    )
    args = parser.parse_args()
    if args.quick:
        args.vehicles, args.map_vehicles, args.requests, args.seconds = 10, 1000, 50, 1.0
    return args


if __name__ == "__main__":
    # The loop `gp8 serve` runs on (gp8/cli.py): uvloop where it is installed. This bench ran
    # gp8 on asyncio's own loop until 2026-12-03, a slower one than production's for the
    # sockets (its transport copies what the socket does not take at once: most of a history).
    print(f"event loop: {_use_uvloop()}")
    asyncio.run(main(parse_args()))
