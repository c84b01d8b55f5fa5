"""Onboarding: a bulk import of 10,000 vehicles with their boxes, and API writes one by one.

A whole gp8 runs in this process (`gp8.serve.start_services`: SQLite, uvicorn on a real port).

* Bulk import: POST /v1/imports with a CSV of N vehicles, each with its box fitted, timed from
  the POST to the 201 (validated whole, stored in one transaction). The floor beside it is the
  storage write alone (`ImportRepo.provision` of the same number of rows into another fleet,
  same run): what is left is parsing, validation and the HTTP answer.
* API writes: POST /v1/vehicles with 16 requests in flight, writes/s. The SQLite writer commits
  the writes queued together in one transaction (storage/sqlite/db.py, group commit); the floor
  is the data directory's rate of fsynced commits, one small transaction each: what one commit
  per request would allow. The clients run in a child process, so the CPU ms per write printed
  is gp8's alone (as bench_commands' per command): the figure to compare between runs on a
  shared machine. They are plain HTTP/1.1 over 16 kept-alive connections (bench/http_client.py),
  as a load generator (wrk, oha) is: httpx took 1.6 ms of CPU per request, more than gp8, so on two
  cores the client was the limit of the rate. The client's CPU per write is printed too.

Summary lines (bench/summary.py): the import's seconds (goal ≤ 30 s for 10,000) and the API
writes/s (goal ≥ 1,000).

Run: ``.venv/bin/python bench/bench_import.py [--vehicles 10000] [--writes 2000]
[--data-dir DIR] [--quick] [--profile FILE]``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import multiprocessing.connection
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from api.security import new_api_key
from bench.bench_commands import commit_floor, result_of_child
from bench.bench_ingest import _use_uvloop
from bench.http_client import Connection, connections, post_head
from bench.summary import report
from gateway.lifecycle import tune_gc
from gp8.serve import start_services, stop_services
from gp8.settings import ApiSettings, Settings, TcpSettings
from storage.models import Device, DeviceModel, Fitting, Role, Vehicle, new_id, now_ms
from tests.api.helpers import luhn_imei

BOOTSTRAP_KEY = "gp8_bench-import-operator-key-0123456789abcdef"
BENCH = "import"
GOAL_IMPORT_S = 30.0
GOAL_IMPORT_VEHICLES = 10_000
GOAL_WRITES_PER_S = 1000.0
CONCURRENCY = 16
FLOOR_COMMITS = 300
TIMEOUT_S = 120.0


def vin(n: int) -> str:
    return f"WVWZZZ1JZ{n:08d}"  # European: no check digit


def imei(n: int) -> str:
    return luhn_imei(f"3539{n:010d}")


def csv_text(first: int, n: int) -> str:
    lines = ["vin,plate,label,imei,model"]
    lines += [f"{vin(i)},B-{i},van,{imei(i)},GP8000" for i in range(first, first + n)]
    return "\n".join(lines) + "\n"


def rows(fleet_id: str, first: int, n: int) -> tuple[list[Vehicle], list[Device], list[Fitting]]:
    at = now_ms()
    vehicles, devices, fittings = [], [], []
    for i in range(first, first + n):
        vehicle_id, device_id = new_id("veh"), new_id("dev")
        vehicles.append(Vehicle(vehicle_id, fleet_id, vin(i), f"B-{i}", "van", at, device_id))
        devices.append(
            Device(
                device_id,
                fleet_id,
                imei(i),
                DeviceModel.GP8000,
                "s" * 32,
                at,
                vehicle_id=vehicle_id,
            )
        )
        fittings.append(Fitting(fleet_id, device_id, vehicle_id, at))
    return vehicles, devices, fittings


async def api_writes(base_url: str, key: str, first: int, n: int) -> float:
    """POST /v1/vehicles ``n`` times, CONCURRENCY in flight (a `Connection` each); writes/s."""
    head = post_head(base_url, "/v1/vehicles", key)
    numbers = iter(range(first, first + n))

    async def client(own: Connection) -> None:
        for i in numbers:
            body = orjson.dumps({"vin": vin(i), "plate": f"W-{i}", "label": "van"})
            status, answer = await own.post(head, body)
            if status != 201:
                raise RuntimeError(f"POST /v1/vehicles answered {status}: {answer!r}")

    # Opened before the clock starts.
    async with connections(base_url, CONCURRENCY, TIMEOUT_S) as opened:
        started = time.perf_counter()
        await asyncio.gather(*(client(own) for own in opened))
        return n / (time.perf_counter() - started)


def run_writes(
    base_url: str, key: str, first: int, n: int, out: multiprocessing.connection.Connection
) -> None:
    """Child process: `api_writes`, its rate and the client's CPU ms per write sent back on
    ``out`` (beside gp8's: when the client's is the larger, the rate is the client's)."""
    _use_uvloop()
    cpu = time.process_time()
    rate = asyncio.run(api_writes(base_url, key, first, n))
    out.send((rate, (time.process_time() - cpu) * 1000 / n))


async def writes_elsewhere(
    base_url: str, key: str, first: int, n: int
) -> tuple[float, float, float]:
    """`api_writes` from a child process, as bench_commands drives its commands: the client's
    CPU is not gp8's. Writes/s, gp8's CPU ms per write (this process alone) and the client's."""
    cpu = time.process_time()
    rate, client_ms = await result_of_child(run_writes, base_url, key, first, n)
    return rate, (time.process_time() - cpu) * 1000 / n, client_ms


async def main(args: argparse.Namespace) -> None:
    own_dir = args.data_dir is None
    data_dir = Path(tempfile.mkdtemp(prefix="gp8-bench-import-")) if own_dir else args.data_dir
    settings = Settings(
        data_dir=data_dir,
        bootstrap_key=BOOTSTRAP_KEY,
        log_level="warning",
        tcp=TcpSettings(host="127.0.0.1", port=0),
        api=ApiSettings(host="127.0.0.1", port=0, rate_limit_per_minute=1_000_000_000),
    )
    try:
        run = await start_services(settings)
    except BaseException:
        if own_dir:
            shutil.rmtree(data_dir, ignore_errors=True)
        raise
    # What `gp8 serve` does once started (gp8/serve.py): the start-up heap out of the GC's
    # full collections, each of which pauses the loop.
    tune_gc()
    try:
        store = run.store
        fleet = await store.fleets.create("bench import")
        floor_fleet = await store.fleets.create("bench import floor")
        key, record = new_api_key(fleet_id=fleet.id, role=Role.ADMIN, name="bench")
        await store.keys.create(record)
        n = args.vehicles
        floor = commit_floor(data_dir, FLOOR_COMMITS)
        print(f"floor: {floor:.0f} fsynced commits/s on {data_dir}")

        batch = rows(floor_fleet.id, 10 * n, n)
        started = time.perf_counter()
        await store.imports.provision(floor_fleet.id, *batch)
        provision_s = time.perf_counter() - started
        print(f"storage alone: {n} vehicles with boxes and fittings in {provision_s:.2f} s")

        text = csv_text(0, n)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{run.api_port}",
            timeout=TIMEOUT_S,
            limits=httpx.Limits(max_connections=CONCURRENCY + 4),
        ) as http:
            started = time.perf_counter()
            r = await http.post(
                "/v1/imports",
                content=text.encode(),
                headers={"Authorization": f"Bearer {key}", "Content-Type": "text/csv"},
            )
            import_s = time.perf_counter() - started
            if r.status_code != 201:
                raise RuntimeError(f"POST /v1/imports answered {r.status_code}: {r.text[:500]}")
            body = r.json()
            print(
                f"POST /v1/imports ({len(text) / 1e6:.2f} MB): {len(body['vehicles'])} vehicles,"
                f" {len(body['boxes'])} boxes, {body['fittings']} fittings in {import_s:.2f} s"
            )
            profiler = cProfile.Profile() if args.profile else None
            if profiler is not None:
                profiler.enable()
            rate, cpu_ms, client_ms = await writes_elsewhere(
                str(http.base_url), key, 20 * n, args.writes
            )
            if profiler is not None:
                # The event loop's thread only: the storage threads' CPU is in the ms per write.
                profiler.disable()
                profiler.dump_stats(args.profile)
            print(
                f"POST /v1/vehicles, {CONCURRENCY} in flight: {rate:.0f} writes/s"
                f" ({cpu_ms:.2f} ms gp8 CPU per write; the client, in a process of its own,"
                f" {client_ms:.2f} ms)"
            )
        report(
            BENCH,
            f"bulk import of {n} vehicles with boxes",
            import_s,
            "s",
            op="<=",
            goal=GOAL_IMPORT_S * n / GOAL_IMPORT_VEHICLES,
            floor=provision_s,
            floor_name="storage write alone",
        )
        report(
            BENCH,
            f"API writes/s (POST /v1/vehicles, {CONCURRENCY} in flight)",
            rate,
            "writes/s",
            op=">=",
            goal=GOAL_WRITES_PER_S,
            floor=floor,
            floor_name="one fsynced commit per write",
        )
    finally:
        await stop_services(run)
        if own_dir:
            shutil.rmtree(data_dir, ignore_errors=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vehicles", type=int, default=GOAL_IMPORT_VEHICLES)
    parser.add_argument("--writes", type=int, default=2000, help="POST /v1/vehicles measured")
    parser.add_argument("--data-dir", type=Path, default=None, help="default: a temp dir")
    parser.add_argument("--quick", action="store_true", help="1,000 vehicles, 300 writes")
    parser.add_argument(
        "--profile", metavar="FILE", help="cProfile the event loop during the API writes"
    )
    args = parser.parse_args()
    if args.quick:
        args.vehicles, args.writes = 1000, 300
    return args


if __name__ == "__main__":
    # The loop `gp8 serve` runs on (gp8/cli.py): uvloop where it is installed.
    print(f"event loop: {_use_uvloop()}")
    asyncio.run(main(parse_args()))
