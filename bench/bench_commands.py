"""Command round trip with 1,000 boxes connected: API request → acknowledged.

A whole gp8 runs in this process (`gp8.serve.start_services`: SQLite, TCP gateway, command
service, uvicorn on a real port); 1,000 virtual boxes (simulator/box.py) run in a child
process and stay logged in over real TCP connections. HTTP clients in another child process
POST commands (lock / unlock, manager key) to random vehicles, each waiting for its command's
acknowledgement (forwarded by this process) before the next, and measure, for each, the time
from just before the POST leaves to the moment the box's COMMAND_RESULT is stored as
``acknowledged`` (the command service's listener fires right after that commit; a GET would
show it from then on). Prints p50/p90/p99/max and the throughput, sequential and with
concurrent requests; then a bulk lock of every vehicle (POST /v1/commands/bulk, ``"all":
true``) timed from the POST to the last box's answer stored as acknowledged.

Every command is two committed writes (request and sent with their audit lines; the box's
receipt and answer with theirs and the vehicle state: docs/commands.md, "Performance"), each
fsynced by SQLite (synchronous=FULL); the SQLite writer commits the writes queued together in
one transaction (storage/sqlite/db.py, group commit). The floor printed
beside the throughput is the data directory's own rate of fsynced commits (one small
transaction each, measured in the same run): what one commit per command would allow.
``--data-dir /dev/shm/...`` shows the software alone.

``cpu ms/cmd`` is gp8's CPU per command (this process and its SQLite writer process, as
`gp8 serve` runs it: storage/sqlite/writer_process.py; the clients and the boxes run in
processes of their own): unlike the rate, it does not fall when other processes take the
cores, so it is the figure to compare between runs on a shared machine (1,000 / it: the
commands/s one core allows). It is also printed by thread: the event loop (API, gateway,
command service), the SQLite writer thread (which hands the writes to the process) and the
reader, and the writer process. Beside it, the CPU per command of the
clients' process and of the boxes' (``boxes ms``): when one of those nears a core of its own,
the rate is its, not gp8's. ``cpu cap/s``: the machine's cores over the three together, the
rate if every core did nothing but this run's work at this run's cost per command (a ceiling
no scheduling can pass; the rate stays below it while any part waits on another).

Summary lines (bench/summary.py): commands/s and p99 at 16 in flight, the bulk lock's time.

Run: ``.venv/bin/python bench/bench_commands.py [--boxes 1000] [--commands 1000]
[--concurrency 1 16] [--data-dir DIR] [--quick] [--profile FILE]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import multiprocessing
import multiprocessing.connection
import os
import random
import secrets
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from api.security import new_api_key
from bench.bench_ingest import _use_uvloop
from bench.cpu import process_cpu_s, stat_cpu_s, writer_process_cpu_s
from bench.http_client import Connection, connections, post_head
from bench.summary import report
from gateway.lifecycle import tune_gc
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
BENCH = "commands"
# The goals (issue 15): at 16 in flight, with 1,000 boxes connected.
GOAL_COMMANDS_PER_S = 1000.0
GOAL_P99_MS = 50.0
GOAL_BULK_S = 2.0
GOAL_CONCURRENCY = 16
FLOOR_COMMITS = 300


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


# --- the second child process: the HTTP clients ---------------------------------------------


def run_clients(
    base_url: str,
    key: str,
    vehicles: list[str],
    commands: int,
    concurrency: int,
    acked: multiprocessing.connection.Connection,
    result: multiprocessing.connection.Connection,
) -> None:
    """`drive` in a process of its own, told of each acknowledgement by gp8's process; sends
    back the latencies, the elapsed time and the clients' CPU ms per command (beside gp8's:
    when the clients' is the larger, the rate is theirs)."""
    _use_uvloop()
    cpu = time.process_time()
    latencies, elapsed = asyncio.run(
        _clients(base_url, key, vehicles, commands, concurrency, acked)
    )
    result.send((latencies, elapsed, (time.process_time() - cpu) * 1000 / (commands + WARMUP)))


async def _clients(
    base_url: str,
    key: str,
    vehicles: list[str],
    commands: int,
    concurrency: int,
    acked: multiprocessing.connection.Connection,
) -> tuple[list[float], float]:
    acks = Acks()

    def on_acked() -> None:
        while acked.poll():
            for command_id, at in acked.recv():
                acks.arrived(command_id, at)

    loop = asyncio.get_running_loop()
    loop.add_reader(acked.fileno(), on_acked)
    try:
        return await drive(base_url, key, vehicles, acks, commands, concurrency)
    finally:
        loop.remove_reader(acked.fileno())


async def result_of_child(target: Callable[..., None], *args: Any) -> Any:
    """Run ``target(*args, out)`` in a spawned child process; what it sends on ``out``."""
    ctx = multiprocessing.get_context("spawn")
    result_in, result_out = ctx.Pipe(duplex=False)  # (receiving end, sending end)
    child = ctx.Process(target=target, args=(*args, result_out), daemon=True)
    child.start()
    try:
        return await asyncio.get_running_loop().run_in_executor(None, result_in.recv)
    finally:
        child.join(timeout=30)
        if child.is_alive():
            child.kill()


async def drive_elsewhere(
    run: Running, base_url: str, key: str, vehicles: list[str], commands: int, concurrency: int
) -> tuple[list[float], float, float]:
    """`drive` from a child process: the clients' CPU is not gp8's, as the boxes' is not;
    clients of a fleet API are elsewhere. Latencies, seconds and the clients' CPU ms/cmd."""
    acked_in, acked_out = multiprocessing.get_context("spawn").Pipe(duplex=False)
    measuring = True
    loop = asyncio.get_running_loop()
    # The acknowledgements of one group commit reach the listener in one turn of the loop; they
    # go to the clients in one message, sent once that turn is over: the bench's own pickling
    # and pipe writes, on gp8's loop, took ~4% of it when each went alone (py-spy). Each is
    # timed when the listener hears of it, not when it is sent.
    pending: list[tuple[str, float]] = []

    def flush() -> None:
        acked_out.send(pending[:])
        pending.clear()

    def forward(command: CommandRecord) -> None:
        done = finished(command)
        if measuring and done is not None:
            if not pending:
                loop.call_soon(flush)
            pending.append(done)

    run.commands.add_listener(forward)
    try:
        measured: tuple[list[float], float, float] = await result_of_child(
            run_clients, base_url, key, vehicles, commands, concurrency, acked_in
        )
        return measured
    finally:
        measuring = False


# --- the parent: gp8 -------------------------------------------------------------------------


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


def finished(command: CommandRecord) -> tuple[str, float] | None:
    """(id, when) of a command just stored as acknowledged (when: perf_counter, which is
    CLOCK_MONOTONIC, one clock for every process) or failed (-1); None for other changes."""
    if command.status is CommandState.ACKNOWLEDGED:
        return command.id, time.perf_counter()
    if command.status is CommandState.FAILED:
        return command.id, -1.0
    return None


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
        done = finished(command)
        if done is not None:
            self.arrived(*done)

    def arrived(self, command_id: str, at: float) -> None:
        """``command_id`` was stored as acknowledged at ``at`` (perf_counter), -1: failed."""
        # May come before the POST's response: the future is made by whoever is first.
        future = self._future(command_id)
        if not future.done():
            future.set_result(at)

    async def wait(self, command_id: str) -> float:
        async with asyncio.timeout(ROUND_TRIP_TIMEOUT_S):
            at = await self._future(command_id)
        del self._done[command_id]
        if at < 0:
            raise RuntimeError(f"command {command_id} failed")
        return at


async def drive(
    base_url: str,
    key: str,
    vehicles: list[str],
    acks: Acks,
    commands: int,
    concurrency: int,
) -> tuple[list[float], float]:
    """``concurrency`` clients, each with one command in flight on a kept-alive connection of
    its own (bench/http_client.py: httpx cost more CPU per request than gp8 answering it)."""
    heads = {v: post_head(base_url, f"/v1/vehicles/{v}/commands", key) for v in vehicles}
    bodies = [orjson.dumps({"type": kind, "ttl_s": 60}) for kind in ("unlock", "lock")]
    latencies: list[float] = []
    rng = random.Random(8)
    numbers = iter(range(commands + WARMUP))

    async def client(own: Connection) -> None:
        for i in numbers:
            head = heads[rng.choice(vehicles)]
            started = time.perf_counter()
            status, answer = await own.post(head, bodies[i % 2])
            if status != 201:
                raise RuntimeError(f"POST answered {status}: {answer!r}")
            acked = await acks.wait(orjson.loads(answer)["id"])
            if i >= WARMUP:
                latencies.append(acked - started)

    # Opened before the clock starts.
    async with connections(base_url, concurrency, ROUND_TRIP_TIMEOUT_S) as opened:
        started = time.perf_counter()
        await asyncio.gather(*(client(own) for own in opened))
        return latencies, time.perf_counter() - started


async def bulk_lock(
    http: httpx.AsyncClient, key: str, acks: Acks, vehicles: int
) -> tuple[float, int]:
    """POST one bulk lock of the whole fleet; seconds until every command is acknowledged."""
    headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": secrets.token_hex(8)}
    started = time.perf_counter()
    r = await http.post("/v1/commands/bulk", json={"type": "lock", "all": True}, headers=headers)
    answered = time.perf_counter()
    if r.status_code != 200:
        raise RuntimeError(f"bulk POST answered {r.status_code}: {r.text}")
    body = r.json()
    if body["created"] != vehicles:
        raise RuntimeError(f"bulk created {body['created']} of {vehicles}: {body['data'][:3]}")
    ids = [item["command_id"] for item in body["data"]]
    last = max(await asyncio.gather(*(acks.wait(i) for i in ids)))
    print(f"bulk POST answered in {(answered - started) * 1000:.0f} ms")
    return last - started, len(ids)


def commit_floor(data_dir: Path, commits: int) -> float:
    """Fsynced commits per second on ``data_dir``: one small transaction each, WAL and
    synchronous=FULL as gp8's writer uses them."""
    path = data_dir / "commit-floor.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
        started = time.perf_counter()
        for i in range(commits):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t (body) VALUES (?)", (f"command {i}",))
            conn.execute("COMMIT")
        return commits / (time.perf_counter() - started)
    finally:
        conn.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


def thread_cpu() -> dict[str, float]:
    """CPU seconds so far of this process's threads by role (the event loop, the SQLite writer
    and reader, the rest), and of its SQLite writer process, from /proc: where a command's CPU
    goes, beside its total."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    main = threading.main_thread().native_id
    totals: dict[str, float] = {"writer-process": writer_process_cpu_s()}
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError):
            tid = int(task.name)
            name = "loop" if tid == main else names.get(tid, "other")
            role = next((r for r in ("writer", "reader") if r in name), name)
            role = role if role in ("loop", "writer", "reader") else "other"
            totals[role] = totals.get(role, 0.0) + stat_cpu_s(task / "stat")
    return totals


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
    try:
        run = await start_services(settings)
    except BaseException:
        if own_dir:
            shutil.rmtree(data_dir, ignore_errors=True)
        raise
    # What `gp8 serve` does once started (gp8/serve.py): the start-up heap out of the GC's
    # full collections, which paused the loop for 0.1-0.2 s several times a run (the p99).
    tune_gc()
    ctx = multiprocessing.get_context("spawn")
    parent_end, child_end = ctx.Pipe()
    child: multiprocessing.process.BaseProcess | None = None
    try:
        t = time.perf_counter()
        key, vehicles, creds = await provision(run, args.boxes)
        print(f"provisioned {args.boxes} vehicles with boxes in {time.perf_counter() - t:.1f} s")
        child = ctx.Process(target=run_boxes, args=(run.tcp_port, creds, child_end), daemon=True)
        child.start()
        boxes_pid = child.pid
        assert boxes_pid is not None  # started
        t = time.perf_counter()
        loop = asyncio.get_running_loop()
        status, connected = await loop.run_in_executor(None, parent_end.recv)
        assert status == "ready"
        print(
            f"{connected} boxes logged in in {time.perf_counter() - t:.1f} s "
            f"(gateway sessions: {len(run.gateway.registry)})"
        )
        floor = commit_floor(data_dir, FLOOR_COMMITS)
        print(f"floor: {floor:.0f} fsynced commits/s on {data_dir}")
        acks = Acks()
        run.commands.add_listener(acks.listener)
        measured: dict[int, tuple[float, float]] = {}
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{run.api_port}",
            timeout=ROUND_TRIP_TIMEOUT_S,
            limits=httpx.Limits(max_connections=max(args.concurrency, default=1) + 4),
        ) as http:
            print(
                f"\ncommand round trip, API request -> acknowledged, {len(run.gateway.registry)} "
                f"boxes connected, storage: sqlite in {data_dir}"
            )
            print(
                f"{'concurrency':>11} {'commands':>8} {'p50 ms':>8} {'p90 ms':>8} "
                f"{'p99 ms':>8} {'max ms':>8} {'cmd/s':>7} {'cpu ms/cmd':>10} {'client ms':>9}"
                f" {'boxes ms':>8} {'cpu cap/s':>9}"
            )
            cores = len(os.sched_getaffinity(0))
            profiler = cProfile.Profile() if args.profile else None
            split: list[str] = []
            for concurrency in args.concurrency:
                threads = thread_cpu()
                cpu = time.process_time() + threads["writer-process"]
                boxes_cpu = process_cpu_s(boxes_pid)
                if profiler is not None:
                    profiler.enable()
                latencies, elapsed, client_ms = await drive_elsewhere(
                    run, str(http.base_url), key, vehicles, args.commands, concurrency
                )
                if profiler is not None:
                    profiler.disable()
                after = thread_cpu()
                cpu_ms = (
                    (time.process_time() + after["writer-process"] - cpu)
                    * 1000
                    / (args.commands + WARMUP)
                )
                boxes_ms = (process_cpu_s(boxes_pid) - boxes_cpu) * 1000 / (args.commands + WARMUP)
                spent = {
                    role: (seconds - threads.get(role, 0.0)) * 1000 / (args.commands + WARMUP)
                    for role, seconds in after.items()
                }
                ms = [x * 1000 for x in latencies]
                measured[concurrency] = (
                    (args.commands + WARMUP) / elapsed,
                    percentile(ms, 0.99),
                )
                print(
                    f"{concurrency:>11} {len(ms):>8} {statistics.median(ms):>8.1f} "
                    f"{percentile(ms, 0.90):>8.1f} {percentile(ms, 0.99):>8.1f} {max(ms):>8.1f} "
                    f"{(args.commands + WARMUP) / elapsed:>7.0f} {cpu_ms:>10.2f}"
                    f" {client_ms:>9.2f} {boxes_ms:>8.2f}"
                    f" {cores * 1000 / (cpu_ms + client_ms + boxes_ms):>9.0f}"
                )
                split.append(
                    f"{concurrency:>11} "
                    + " ".join(f"{role} {ms:.2f}" for role, ms in sorted(spent.items()))
                )
            print("cpu ms/cmd by thread:")
            for line in split:
                print(line)
            bulk_s, bulk_n = await bulk_lock(http, key, acks, len(vehicles))
            if profiler is not None:
                # The event loop's thread only: the storage threads' CPU is in cpu ms/cmd.
                profiler.dump_stats(args.profile)
            print(f"bulk lock of {bulk_n} vehicles: all acknowledged in {bulk_s:.2f} s")
        if GOAL_CONCURRENCY in measured:
            rate, p99 = measured[GOAL_CONCURRENCY]
            at = f"{GOAL_CONCURRENCY} in flight, {args.boxes} boxes"
            report(
                BENCH,
                f"commands acknowledged/s ({at})",
                rate,
                "cmd/s",
                op=">=",
                goal=GOAL_COMMANDS_PER_S,
                floor=floor,
                floor_name="one fsynced commit per command",
            )
            report(BENCH, f"p99 round trip ({at})", p99, "ms", op="<=", goal=GOAL_P99_MS)
        report(
            BENCH,
            f"bulk lock of {bulk_n} vehicles acknowledged",
            bulk_s,
            "s",
            op="<=",
            goal=GOAL_BULK_S,
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
        "--concurrency",
        type=int,
        nargs="*",
        default=[1, 16],
        help="requests in flight, a run each (none: the bulk lock alone)",
    )
    parser.add_argument("--data-dir", type=Path, default=None, help="default: a temp dir")
    parser.add_argument(
        "--quick", action="store_true", help="50 boxes, 100 commands: checks the bench runs"
    )
    parser.add_argument(
        "--profile", metavar="FILE", help="cProfile the event loop during the measured runs"
    )
    args = parser.parse_args()
    if args.quick:
        args.boxes, args.commands = 50, 100
    return args


if __name__ == "__main__":
    # The loop `gp8 serve` runs on (gp8/cli.py): uvloop where it is installed.
    print(f"event loop: {_use_uvloop()}")
    asyncio.run(main(parse_args()))
