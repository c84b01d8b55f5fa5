"""Command round trip with 1,000 boxes connected: API request → acknowledged.

A whole gp8 runs in this process (`gp8.serve.start_services`: SQLite, TCP gateway, command
service, uvicorn on a real port); 1,000 virtual boxes (simulator/box.py) run in a child
process and stay logged in over real TCP connections. The bench then POSTs commands (lock /
unlock, manager key) over HTTP to random vehicles and measures, for each, the time from just
before the POST leaves to the moment the box's COMMAND_RESULT is stored as ``acknowledged``
(the command service's listener fires right after that commit; a GET would show it from then
on). Prints p50/p90/p99/max and the throughput, sequential and with concurrent requests.

Every command is several committed writes (request + audit, sent + audit, result + audit,
vehicle state), each fsynced by SQLite (synchronous=FULL): the data directory's disk sets the
floor. ``--data-dir /dev/shm/...`` shows the software alone.

Run: ``.venv/bin/python bench/bench_commands.py [--boxes 1000] [--commands 1000]
[--concurrency 1 16] [--data-dir DIR]``.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import multiprocessing.connection
import random
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from api.security import new_api_key
from gp8.serve import Running, start_services, stop_services
from gp8.settings import ApiSettings, Settings, TcpSettings
from protocol.gp8 import Model
from simulator.box import VirtualBox
from storage.models import CommandRecord, CommandState, DeviceModel, Role

BOOTSTRAP_KEY = "gp8_bench-commands-operator-key-0123456789abcdef"
# Boxes logging in at the same time: what a gateway restart looks like, bounded so the bench
# measures commands, not a reconnect storm.
CONNECT_CONCURRENCY = 100
# The first commands warm up caches, connection pools and SQLite's page cache.
WARMUP = 50
ROUND_TRIP_TIMEOUT_S = 30.0


def imei_for(i: int) -> str:
    return f"{861_000_000_000_000 + i:015d}"


# --- the child process: the boxes ------------------------------------------------------------


def run_boxes(
    port: int, creds: list[tuple[str, str]], conn: multiprocessing.connection.Connection
) -> None:
    asyncio.run(_boxes(port, creds, conn))


async def _boxes(
    port: int, creds: list[tuple[str, str]], conn: multiprocessing.connection.Connection
) -> None:
    boxes = [
        VirtualBox(imei, secret, Model.GP8000, port=port, io_timeout_s=60, connect_timeout_s=60)
        for imei, secret in creds
    ]
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def connect(box: VirtualBox) -> None:
        async with gate:
            await box.connect()

    await asyncio.gather(*(connect(b) for b in boxes))
    conn.send(("ready", len(boxes)))
    loop = asyncio.get_running_loop()
    # Wait for "stop" without blocking the loop that answers the commands.
    await loop.run_in_executor(None, conn.recv)
    executed = sum(len(b.commands) for b in boxes)
    await asyncio.gather(*(b.close() for b in boxes))
    conn.send(("done", executed))


# --- the parent: gp8 and the HTTP client -----------------------------------------------------


async def provision(run: Running, boxes: int) -> tuple[str, list[str], list[tuple[str, str]]]:
    store = run.store
    fleet = await store.fleets.create("bench")
    secret, key = new_api_key(fleet_id=fleet.id, role=Role.MANAGER, name="bench")
    await store.keys.create(key)
    vehicles: list[str] = []
    creds: list[tuple[str, str]] = []
    for i in range(boxes):
        vehicle = await store.vehicles.create(
            fleet.id, vin=f"WVWZZZ1JZ{i:08d}", plate=f"C-{i:04d}", label="van"
        )
        box_secret = secrets.token_urlsafe(24)
        await store.devices.create(
            fleet.id, imei=imei_for(i), model=DeviceModel.GP8000, secret=box_secret
        )
        await store.devices.fit(fleet.id, vehicle.id, imei_for(i), 0)
        vehicles.append(vehicle.id)
        creds.append((imei_for(i), box_secret))
    return secret, vehicles, creds


class Acks:
    """When each command was stored as acknowledged, from the command service's listener."""

    def __init__(self) -> None:
        self._done: dict[str, asyncio.Future[float]] = {}

    def _future(self, command_id: str) -> asyncio.Future[float]:
        future = self._done.get(command_id)
        if future is None:
            future = self._done[command_id] = asyncio.get_running_loop().create_future()
        return future

    def listener(self, command: CommandRecord) -> None:
        # May fire before the POST's response arrives: the future is made by whoever is first.
        if command.status in (CommandState.ACKNOWLEDGED, CommandState.FAILED):
            future = self._future(command.id)
            if not future.done():
                future.set_result(
                    time.perf_counter() if command.status is CommandState.ACKNOWLEDGED else -1.0
                )

    async def wait(self, command_id: str) -> float:
        async with asyncio.timeout(ROUND_TRIP_TIMEOUT_S):
            at = await self._future(command_id)
        del self._done[command_id]
        if at < 0:
            raise RuntimeError(f"command {command_id} failed")
        return at


async def drive(
    http: httpx.AsyncClient,
    key: str,
    vehicles: list[str],
    acks: Acks,
    commands: int,
    concurrency: int,
) -> tuple[list[float], float]:
    headers = {"Authorization": f"Bearer {key}"}
    latencies: list[float] = []
    gate = asyncio.Semaphore(concurrency)
    rng = random.Random(8)

    async def one(i: int) -> None:
        vehicle = rng.choice(vehicles)
        body = {"type": "lock" if i % 2 else "unlock", "ttl_s": 60}
        async with gate:
            started = time.perf_counter()
            r = await http.post(f"/v1/vehicles/{vehicle}/commands", json=body, headers=headers)
            if r.status_code != 201:
                raise RuntimeError(f"POST answered {r.status_code}: {r.text}")
            acked = await acks.wait(r.json()["id"])
        if i >= WARMUP:
            latencies.append(acked - started)

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(commands + WARMUP)))
    return latencies, time.perf_counter() - started


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(args: argparse.Namespace) -> None:
    own_dir = args.data_dir is None
    data_dir = Path(tempfile.mkdtemp(prefix="gp8-bench-commands-")) if own_dir else args.data_dir
    settings = Settings(
        data_dir=data_dir,
        bootstrap_key=BOOTSTRAP_KEY,
        log_level="warning",
        tcp=TcpSettings(host="127.0.0.1", port=0),
        api=ApiSettings(host="127.0.0.1", port=0, rate_limit_per_minute=1_000_000_000),
    )
    run = await start_services(settings)
    ctx = multiprocessing.get_context("spawn")
    parent_end, child_end = ctx.Pipe()
    child: multiprocessing.process.BaseProcess | None = None
    try:
        t = time.perf_counter()
        key, vehicles, creds = await provision(run, args.boxes)
        print(f"provisioned {args.boxes} vehicles with boxes in {time.perf_counter() - t:.1f} s")
        child = ctx.Process(target=run_boxes, args=(run.tcp_port, creds, child_end), daemon=True)
        child.start()
        t = time.perf_counter()
        loop = asyncio.get_running_loop()
        status, connected = await loop.run_in_executor(None, parent_end.recv)
        assert status == "ready"
        print(
            f"{connected} boxes logged in in {time.perf_counter() - t:.1f} s "
            f"(gateway sessions: {len(run.gateway.registry)})"
        )
        acks = Acks()
        run.commands.add_listener(acks.listener)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{run.api_port}",
            timeout=ROUND_TRIP_TIMEOUT_S,
            limits=httpx.Limits(max_connections=max(args.concurrency) + 4),
        ) as http:
            print(
                f"\ncommand round trip, API request -> acknowledged, {len(run.gateway.registry)} "
                f"boxes connected, storage: sqlite in {data_dir}"
            )
            print(
                f"{'concurrency':>11} {'commands':>8} {'p50 ms':>8} {'p90 ms':>8} "
                f"{'p99 ms':>8} {'max ms':>8} {'cmd/s':>7}"
            )
            for concurrency in args.concurrency:
                latencies, elapsed = await drive(
                    http, key, vehicles, acks, args.commands, concurrency
                )
                ms = [x * 1000 for x in latencies]
                print(
                    f"{concurrency:>11} {len(ms):>8} {statistics.median(ms):>8.1f} "
                    f"{percentile(ms, 0.90):>8.1f} {percentile(ms, 0.99):>8.1f} {max(ms):>8.1f} "
                    f"{(args.commands + WARMUP) / elapsed:>7.0f}"
                )
        parent_end.send("stop")
        status, executed = await loop.run_in_executor(None, parent_end.recv)
        print(
            f"\nthe boxes executed {executed} COMMANDs; service stats: {dict(run.commands.stats)}"
        )
    finally:
        if child is not None:
            child.join(timeout=30)
            if child.is_alive():
                child.kill()
        await stop_services(run)
        if own_dir:
            shutil.rmtree(data_dir, ignore_errors=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--boxes", type=int, default=1000)
    parser.add_argument("--commands", type=int, default=1000, help="measured per run")
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=[1, 16], help="requests in flight"
    )
    parser.add_argument("--data-dir", type=Path, default=None, help="default: a temp dir")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
