"""Many boxes at a low rate, then a reconnect storm: ACK latency, storage timeouts, duplicates.

A TCP gateway on SQLite runs in this process, wired as `gp8 serve` wires it (the registry's
ledger is the store, so logins read and write the shared connection rows); the boxes
(simulator/box.py, over real sockets) run in a child process. Three phases:

1. ``--boxes`` boxes connect and log in (100 at a time), then each sends one fix every
   ``--interval`` seconds (1,000 positions/s for 10,000 boxes at 10 s) for ``--steady`` seconds;
   the box side records each frame's ACK latency (written → ACK read).
2. Storm: every box loses its link at the same moment and they all reconnect at once (no
   gate), while they keep their fix every ``--interval`` s; the records in flight are resent.
3. Each box then delivers whatever it still holds, and the gateway stops.

Checks: every position sent is stored exactly once (rows = records sent = records ACKed; the
key (time_ms, device_id) makes a second copy impossible), zero storage timeouts (failed
flushes and connection-state writes, timed out ones included, and state writes a login or a
close gave up waiting for: `gp8_gateway_storage_errors_total` and
`gp8_gateway_connection_states{result="wait_timed_out"}`), every box recorded online once the
storm is over. The latency floor is the same steady phase with ``--floor-boxes`` boxes (100),
run first in the same invocation. Printed beside the figures: CPU use and event-loop lag of
both processes and their GC pauses, and the machine's load (the figure is only as good as the
cores the two processes get).

    .venv/bin/python bench/bench_storm.py                 # 10,000 boxes
    .venv/bin/python bench/bench_storm.py --boxes 2000 --steady 20
    .venv/bin/python bench/bench_storm.py --profile out.prof   # cProfile of the gateway side
    .venv/bin/python bench/bench_storm.py --gc default     # CPython's GC thresholds (A/B)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import logging
import multiprocessing as mp
import os
import random
import resource
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_ingest import _identity, _use_uvloop
from bench.summary import report
from gateway import TcpGateway
from gateway.lifecycle import tune_gc
from gateway.metrics import STORE_LATENCY_BUCKETS
from protocol.gp8 import Model, NackReason
from simulator.box import BoxDisconnected, BoxError, VirtualBox, make_record
from storage.models import DeviceConnection, DeviceModel
from storage.sqlite import SqliteStore

BENCH = "storm"
GOAL_P99_MS = 100.0  # issue 15: 10,000 boxes at one fix every 10 s
CONNECT_CONCURRENCY = 100  # the initial logins: a rolling start, not a storm
PROVISION_CONCURRENCY = 500  # writes in flight while provisioning (group-committed)
RECONNECT_BACKOFF_S = (0.5, 2.0)  # a box whose reconnect failed waits this long (uniform)


def _raise_fd_limit() -> None:
    # 10,000 sockets per side: the soft limit may be lower than the hard one.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _percentiles(values: list[float]) -> tuple[float, float, float]:
    """p50, p95, p99 in ms."""
    if len(values) < 2:
        return (values[0] * 1000,) * 3 if values else (float("nan"),) * 3
    q = statistics.quantiles(values, n=100, method="inclusive")
    return q[49] * 1000, q[94] * 1000, q[98] * 1000


class LoopWatch:
    """Where a tail comes from on the gateway side: how late the event loop wakes a 10 ms
    sleep (a stall: a long callback, the GIL held by the SQLite thread) and the garbage
    collector's pauses by generation."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self.gc_pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self._gc_started = 0.0
        self._task: asyncio.Task[None] | None = None

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.gc_pauses[info["generation"]].append(time.perf_counter() - self._gc_started)

    async def _sample(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(0.01)
            self.lags.append(loop.time() - before - 0.01)

    def start(self) -> None:
        gc.callbacks.append(self._on_gc)
        self._task = asyncio.create_task(self._sample())

    async def stop(self) -> None:
        gc.callbacks.remove(self._on_gc)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def describe(self) -> str:
        _, lag95, lag99 = _percentiles(self.lags)
        worst = max(self.lags, default=0.0) * 1000
        gcs = ", ".join(
            f"gen{g} {len(p)}x (median {statistics.median(p) * 1000 if p else 0:.1f} ms,"
            f" max {max(p, default=0) * 1000:.0f} ms, total {sum(p):.2f} s)"
            for g, p in self.gc_pauses.items()
        )
        return f"loop lag p95 {lag95:.1f} ms, p99 {lag99:.1f} ms, max {worst:.0f} ms; GC {gcs}"


# --- the box side (child process) -----------------------------------------------------------


@dataclass
class BoxPlan:
    port: int
    boxes: list[tuple[str, str]]
    interval_s: float
    steady_s: float
    storm: bool
    after_s: float


@dataclass
class BoxResults:
    connect_s: float
    steady: list[float] = field(default_factory=list)  # ACK latencies, seconds
    storm: list[float] = field(default_factory=list)
    reconnect_s: float = 0.0  # storm: from the cut until every box is logged in again
    reconnect_failures: int = 0  # connect attempts that failed during the storm
    sent: int = 0
    acked: int = 0
    busy: int = 0  # NACK SERVER_BUSY received
    watch: str = ""  # the box process's loop lag and GC pauses
    cpu: float = 0.0  # the box process's CPU time over wall time, from "go" to the end


def drive(plan: BoxPlan, pipe: Connection) -> None:
    _raise_fd_limit()
    _use_uvloop()
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(_drive(plan, pipe))


async def _drive(plan: BoxPlan, pipe: Connection) -> None:
    phase: list[float] = []  # where the ACK hook puts latencies: the current phase's list
    boxes = [
        VirtualBox(
            imei,
            secret,
            Model.GP8000,
            port=plan.port,
            io_timeout_s=60,
            connect_timeout_s=60,
            on_ack=lambda _n, _event, latency: phase.append(latency),
        )
        for imei, secret in plan.boxes
    ]
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def first_connect(box: VirtualBox) -> None:
        async with gate:
            await box.connect()

    began = time.perf_counter()
    await asyncio.gather(*(first_connect(b) for b in boxes))
    results = BoxResults(connect_s=time.perf_counter() - began)
    # The boxes are the measuring instrument: their own GC pauses must not show as latency.
    tune_gc()
    watch = LoopWatch()
    watch.start()
    pipe.send("ready")
    pipe.recv()  # go
    cpu_began, wall_began = time.process_time(), time.perf_counter()

    loop = asyncio.get_running_loop()
    stop_at = loop.time() + plan.steady_s
    sent = [0]

    async def report_fixes(n: int, box: VirtualBox, until: float) -> None:
        # Spread over the interval, as boxes powered on at random moments are.
        next_fix = loop.time() + random.uniform(0, plan.interval_s)
        while next_fix < until:
            await asyncio.sleep(max(0.0, next_fix - loop.time()))
            fix_ms = int(time.time() * 1000)
            box.enqueue([make_record(fix_ms, 48.0 + n * 1e-4, 2.0, speed_kmh=40.0)])
            sent[0] += 1
            next_fix += plan.interval_s
            if box.connected:
                # On failure the records stay in the outbox: the next flush resends them.
                with contextlib.suppress(BoxDisconnected, BoxError, TimeoutError, OSError):
                    await box.flush(timeout=plan.interval_s)

    phase = results.steady
    await asyncio.gather(*(report_fixes(n, b, stop_at) for n, b in enumerate(boxes)))

    if plan.storm:
        phase = results.storm
        cut_at = loop.time()
        for box in boxes:
            box.cut()
        failures = [0]

        async def reconnect(box: VirtualBox) -> None:
            while True:
                try:
                    await box.connect()
                    return
                except (BoxDisconnected, BoxError, TimeoutError, OSError):
                    failures[0] += 1
                    await asyncio.sleep(random.uniform(*RECONNECT_BACKOFF_S))

        async def back_in(box: VirtualBox) -> float:
            await reconnect(box)
            back = loop.time() - cut_at
            # What was in flight at the cut goes out again at once, as the firmware does.
            with contextlib.suppress(BoxDisconnected, BoxError, TimeoutError, OSError):
                await box.flush(timeout=plan.interval_s)
            return back

        # The boxes keep their fixes meanwhile: a fix taken while offline waits in the outbox.
        fixes = [
            asyncio.create_task(report_fixes(n, b, cut_at + plan.after_s))
            for n, b in enumerate(boxes)
        ]
        backs = await asyncio.gather(*(back_in(b) for b in boxes))
        results.reconnect_s = max(backs)
        results.reconnect_failures = failures[0]
        pipe.send(("back", results.reconnect_s))
        await asyncio.gather(*fixes)

    # Whatever is still in an outbox (a frame refused SERVER_BUSY, a link lost) goes out now.
    phase = []
    await asyncio.gather(*(b.deliver(timeout=120) for b in boxes), return_exceptions=True)
    await watch.stop()
    results.watch = watch.describe()
    results.cpu = (time.process_time() - cpu_began) / (time.perf_counter() - wall_began)
    results.sent = sent[0]
    results.acked = sum(b.acked for b in boxes)
    results.busy = sum(b.nacks[NackReason.SERVER_BUSY] for b in boxes)
    await asyncio.gather(*(b.close() for b in boxes), return_exceptions=True)
    pipe.send(results)


# --- the gateway side (this process) --------------------------------------------------------


async def _provision(store: SqliteStore, count: int) -> list[tuple[str, str]]:
    """``count`` boxes fitted to vehicles, many writes in flight so they share commits."""
    fleet = await store.fleets.create("bench")
    gate = asyncio.Semaphore(PROVISION_CONCURRENCY)

    async def one(n: int) -> tuple[str, str]:
        imei, secret = _identity(n)
        async with gate:
            await store.devices.create(fleet.id, imei=imei, model=DeviceModel.GP8000, secret=secret)
            vehicle = await store.vehicles.create(
                fleet.id, vin=f"VF1STORM{n:09d}", plate=f"S-{n:05d}", label=f"storm {n}"
            )
            await store.devices.fit(fleet.id, vehicle.id, imei, 0)
        return imei, secret

    return list(await asyncio.gather(*(one(n) for n in range(count))))


@dataclass
class RunResult:
    boxes: BoxResults
    stored: int
    online_after_storm: int | None  # connection rows online once every box was back
    storage_errors_storm: int
    storage_errors: int
    shed: int
    state_calls: int  # set_connections calls
    flushes: tuple[int, int]  # telemetry flushes, and those whose commit took over 250 ms
    metrics: dict[str, object]
    watch: str
    cpu: float  # the gateway process's CPU time over wall time, from "go" to the end


async def run(
    db_path: Path, boxes: int, args: argparse.Namespace, *, storm: bool, profile: str | None
) -> RunResult:
    store = SqliteStore(db_path, writer_process=True)  # as `gp8 serve` runs it
    await store.start()
    identities = await _provision(store, boxes)
    if args.gc == "tuned":
        tune_gc()  # as gp8/serve.py does
    gateway = TcpGateway(store, port=0, max_connections=boxes + 1000, gateway_id="bench-storm")
    gateway.registry.ledger = store.devices  # as gp8/serve.py wires it
    # Count the connection-state writes (storage calls), to show how the states were batched.
    state_calls = [0]
    set_connections = store.devices.set_connections

    async def counted(connections: list[DeviceConnection]) -> None:
        state_calls[0] += 1
        await set_connections(connections)

    store.devices.set_connections = counted  # type: ignore[method-assign]
    await gateway.start()
    plan = BoxPlan(gateway.port, identities, args.interval, args.steady, storm, args.after)
    ctx = mp.get_context("spawn")
    ours, theirs = ctx.Pipe()
    child = ctx.Process(target=drive, args=(plan, theirs), daemon=True)
    child.start()
    loop = asyncio.get_running_loop()
    profiler = cProfile.Profile() if profile else None
    watch = LoopWatch()
    try:
        assert await loop.run_in_executor(None, ours.recv) == "ready"
        tracked = len(gc.get_objects())
        began = time.perf_counter()
        gc.collect()
        print(
            f"  gateway with {boxes:,} boxes logged in: {tracked:,} objects tracked by the GC,"
            f" a full collection takes {(time.perf_counter() - began) * 1000:.0f} ms"
        )
        errors_before = gateway.metrics.storage_errors
        waits_before = gateway.metrics.state_writes["wait_timed_out"]

        def timed_out() -> int:
            return gateway.metrics.state_writes["wait_timed_out"] - waits_before

        if profiler is not None:
            profiler.enable()
        watch.start()
        cpu_began, wall_began = time.process_time(), time.perf_counter()
        ours.send("go")
        message = await loop.run_in_executor(None, ours.recv)
        online_after_storm = None
        if storm:
            assert message[0] == "back", message
            online_after_storm = await _online_rows(store, boxes)
            message = await loop.run_in_executor(None, ours.recv)
        results: BoxResults = message
        cpu = (time.process_time() - cpu_began) / (time.perf_counter() - wall_began)
        if profiler is not None and profile is not None:
            profiler.disable()
            profiler.dump_stats(profile)
        # Failed writes (flushes, connection states), and state writes a login or a close
        # stopped waiting for.
        storm_errors = gateway.metrics.storage_errors - errors_before + timed_out()
        await watch.stop()
    finally:
        await loop.run_in_executor(None, child.join, 30)
        await gateway.stop(grace_s=5)
        await store.close()
    metrics = gateway.metrics.snapshot()
    slow = dict(zip(STORE_LATENCY_BUCKETS, gateway.metrics.store_latency.counts, strict=False))
    flushes = gateway.metrics.store_latency.count
    # Flushes whose commit took over 250 ms (the disk is shared with whatever else runs).
    slow_flushes = flushes - sum(n for bound, n in slow.items() if bound <= 0.25)
    with sqlite3.connect(db_path) as conn:
        # (time_ms, device_id) is the key: a resent record cannot make a second row.
        (stored,) = conn.execute("SELECT count(*) FROM positions").fetchone()
    return RunResult(
        results,
        stored,
        online_after_storm,
        storm_errors,
        gateway.metrics.storage_errors,
        gateway.metrics.shed,
        state_calls[0],
        (flushes, slow_flushes),
        metrics,
        watch.describe(),
        cpu,
    )


async def _online_rows(store: SqliteStore, expected: int, wait_s: float = 10.0) -> int:
    """Connection rows recorded online, once they reach ``expected`` or after ``wait_s``
    (state writes are bookkeeping: they may land a moment after the login)."""
    deadline = time.monotonic() + wait_s
    while True:
        online = await asyncio.to_thread(_count_online, store.path)
        if online >= expected or time.monotonic() > deadline:
            return online
        await asyncio.sleep(0.2)


def _count_online(db_path: Path) -> int:
    with sqlite3.connect(db_path) as conn:
        (online,) = conn.execute("SELECT count(*) FROM connections WHERE online").fetchone()
    return int(online)


def _describe(label: str, latencies: list[float]) -> tuple[float, float, float]:
    p50, p95, p99 = _percentiles(latencies)
    print(
        f"  {label}: {len(latencies):,} ACKs, p50 {p50:.1f} ms, p95 {p95:.1f} ms, p99 {p99:.1f} ms"
    )
    return p50, p95, p99


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boxes", type=int, default=10_000)
    parser.add_argument("--floor-boxes", type=int, default=100)
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between fixes")
    parser.add_argument("--steady", type=float, default=40.0, help="seconds of steady phase")
    parser.add_argument("--after", type=float, default=30.0, help="seconds after the storm")
    parser.add_argument("--no-floor", action="store_true", help="skip the floor run")
    parser.add_argument(
        "--gc",
        choices=("tuned", "default"),
        default="tuned",
        help="the gateway process's GC: as gp8 serve sets it (gateway.lifecycle.tune_gc), or"
        " CPython's defaults",
    )
    parser.add_argument("--profile", metavar="FILE", help="cProfile the gateway side (big run)")
    parser.add_argument(
        "--quick", action="store_true", help="1,000 boxes, short phases: checks the bench works"
    )
    args = parser.parse_args()
    if args.quick:
        args.boxes, args.steady, args.after = 1000, 10.0, 10.0
    logging.basicConfig(level=logging.ERROR)
    _raise_fd_limit()
    print(f"event loop: {_use_uvloop()}; fd limit {resource.getrlimit(resource.RLIMIT_NOFILE)[0]}")
    floor_p99: float | None = None
    with tempfile.TemporaryDirectory(prefix="gp8-storm-") as tmp:
        if not args.no_floor:
            floor = asyncio.run(
                run(Path(tmp) / "floor.sqlite3", args.floor_boxes, args, storm=False, profile=None)
            )
            print(f"floor: {args.floor_boxes} boxes, one fix every {args.interval:g} s")
            floor_p99 = _describe("steady", floor.boxes.steady)[2]
            print(f"  gateway: {floor.cpu:.0%} of a core; {floor.watch}")
        began = time.perf_counter()
        big = asyncio.run(
            run(Path(tmp) / "storm.sqlite3", args.boxes, args, storm=True, profile=args.profile)
        )
    b = big.boxes
    print(
        f"{args.boxes:,} boxes, one fix every {args.interval:g} s "
        f"({args.boxes / args.interval:,.0f} positions/s); connected in {b.connect_s:.1f} s; "
        f"{time.perf_counter() - began:.0f} s in all"
    )
    _, _, p99 = _describe("steady", b.steady)
    _describe("storm and after", b.storm)
    print(f"  gateway: {big.cpu:.0%} of a core; {big.watch}")
    print(f"  boxes: {b.cpu:.0%} of a core; {b.watch}")
    print(
        f"  storage: {big.flushes[0]:,} flushes, {big.flushes[1]:,} of them over 250 ms; machine"
        f" load average over the run: {os.getloadavg()[1]:.1f} (2 cores)"
    )
    print(
        f"  storm: every box back in {b.reconnect_s:.1f} s ({b.reconnect_failures:,} failed "
        f"attempts); storage errors during the run {big.storage_errors_storm} "
        f"(whole run {big.storage_errors}); SERVER_BUSY seen by boxes {b.busy:,}, "
        f"shed {big.shed:,}; connection states {big.metrics['state_writes']} in"
        f" {big.state_calls:,} writes"
    )
    print(
        f"  positions: {b.sent:,} sent, {b.acked:,} acked, {big.stored:,} rows stored, "
        f"records {big.metrics['records']} (duplicates: resends absorbed); connection rows "
        f"online once every box was back: {big.online_after_storm}"
    )
    report(
        BENCH,
        f"ACK p99, {args.boxes:,} boxes at 1 fix/{args.interval:g} s",
        p99,
        "ms",
        op="<=",
        goal=GOAL_P99_MS,
        floor=floor_p99,
        floor_name=f"same, {args.floor_boxes} boxes",
    )
    report(
        BENCH,
        f"storage timeouts, {args.boxes:,}-box reconnect storm",
        big.storage_errors_storm,
        "errors",
        op="<=",
        goal=0,
    )
    lost = b.sent - big.stored
    report(
        BENCH,
        "positions not stored exactly once (storm)",
        abs(lost) + (b.sent - b.acked),
        "positions",
        op="<=",
        goal=0,
    )
    ok = big.stored == b.sent == b.acked and big.online_after_storm == args.boxes
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
