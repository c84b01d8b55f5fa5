"""MQTT ingest throughput: positions per second stored through the MQTT bridge, with one gateway
process and with two sharing the uplink (``$share/...``), the broker on this machine.

Run: ``.venv/bin/python bench/bench_mqtt.py [--boxes 200] [--records 500] [--batch 50]``

Each gateway is a separate process (``python -m gateway.mqtt.worker``: store, ingest pipeline
and MQTT bridge, on the SQLite engine). The virtual boxes (simulator.mqtt_box.MqttBox) run in
this process, each publishing IDENT + POSITION frames of ``--batch`` records at QoS 1 with
``--window`` frames in flight, and counting a record only when gp8's GP8 ACK for it arrives,
i.e. once it is durably stored. The clock runs from the first publication to the last ACK.

By default a private Mosquitto is started on a free port (anonymous, generous queue limits)
so the run does not depend on how the system broker is configured; ``--mqtt-url`` uses another.
Everything shares this machine's cores: the broker, the gateway processes and the boxes.

The broker's own ceiling is measured in the same run: the same number of clients publish frames
of the same size at QoS 1 with the same window, and one plain echo client (no gp8: it subscribes
at QoS 1 and publishes a 16-byte answer per message to the sender's topic, as gp8's ACK) answers
them; its rate in positions/s (messages/s x records per frame) is printed beside gp8's, with the
ratio and the goal (>= 50,000 positions/s with one gateway process).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Runnable as a plain script from a checkout, without installing the project.
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiomqtt  # noqa: E402

from bench.summary import report  # noqa: E402
from protocol.gp8 import Position, encode  # noqa: E402
from simulator.box import make_record  # noqa: E402
from simulator.mqtt_box import MqttBox  # noqa: E402
from storage.models import DeviceModel, now_ms  # noqa: E402
from storage.sqlite import SqliteStore  # noqa: E402

START_TIMEOUT_S = 30.0
GOAL_POSITIONS_S = 50_000.0
ECHO_ANSWER = b"\x00" * 16  # about a GP8 ACK frame


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU time of a process (this one by default), from /proc."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main_thread_cpu_seconds(pid: int) -> float:
    """CPU time of a process's main thread alone (its event loop), from /proc."""
    fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


BROKER_PID: int | None = None


@contextlib.contextmanager
def private_broker(workdir: Path) -> Iterator[str]:
    port = free_port()
    conf = workdir / "mosquitto.conf"
    lines = [
        f"listener {port} 127.0.0.1",
        "allow_anonymous true",
        "max_queued_messages 1000000",
        "max_inflight_messages 0",
    ]
    if os.geteuid() == 0:
        lines.append("user root")
    conf.write_text("\n".join(lines) + "\n")
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    process = subprocess.Popen([binary, "-c", str(conf)], stderr=subprocess.DEVNULL)
    global BROKER_PID
    BROKER_PID = process.pid
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("mosquitto did not start")
            time.sleep(0.02)
        yield f"mqtt://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


async def provision(data_dir: Path, count: int) -> list[tuple[str, str]]:
    store = SqliteStore(data_dir / "gp8.sqlite3")
    await store.start()
    try:
        fleet = await store.fleets.create("bench")
        boxes = []
        for _ in range(count):
            imei = f"{secrets.randbelow(9 * 10**14) + 10**14:015d}"
            secret = secrets.token_urlsafe(16)
            await store.devices.create(fleet.id, imei=imei, model=DeviceModel.GP8000, secret=secret)
            boxes.append((imei, secret))
        return boxes
    finally:
        await store.close()


def _profiler() -> list[str]:
    """``GP8_BENCH_PROFILE=FILE``: run the gateway process under cProfile, stats to FILE."""
    path = os.environ.get("GP8_BENCH_PROFILE")
    return ["-m", "cProfile", "-o", path] if path else []


async def start_worker(url: str, data_dir: Path, client_id: str, group: str) -> Any:
    process = await asyncio.create_subprocess_exec(
        sys.executable, *_profiler(), "-m", "gateway.mqtt.worker",
        "--url", url, "--data-dir", str(data_dir), "--client-id", client_id,
        "--share-group", group, "--session-expiry-s", "60",
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    async with asyncio.timeout(START_TIMEOUT_S):
        line = json.loads(await process.stdout.readline())
    if not line.get("ready"):
        raise RuntimeError(f"worker did not start: {line}")
    return process


async def stop_worker(process: Any) -> dict[str, Any]:
    process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(START_TIMEOUT_S):
        line = await process.stdout.readline()
        await process.wait()
    result: dict[str, Any] = json.loads(line)
    return result


async def run_once(
    url: str, workers: int, args: argparse.Namespace, workdir: Path
) -> tuple[float, list[dict[str, Any]], float, float | None, tuple[float, float]]:
    shared = args.db == "shared"
    dirs = [workdir / f"data-{workers}-{'shared' if shared else i}" for i in range(workers)]
    boxes_spec: list[tuple[str, str]] = []
    for i, d in enumerate(dirs):
        d.mkdir(exist_ok=True)
        if i == 0 or not shared:
            spec = await provision(d, args.boxes) if not boxes_spec else None
            if spec is not None:
                boxes_spec = spec
            elif not shared:  # the same boxes in every separate database
                await _provision_same(d, boxes_spec)
    group = f"bench-{secrets.token_hex(3)}"
    processes = [
        await start_worker(url, dirs[i], f"bench-gw-{i}-{secrets.token_hex(2)}", group)
        for i in range(workers)
    ]
    boxes = [
        MqttBox.from_url(
            url,
            imei,
            secret,
            batch_size=args.batch,
            window=args.window,
            io_timeout_s=120,
            session_expiry_s=60,
        )
        for imei, secret in boxes_spec
    ]
    try:
        await asyncio.gather(*(box.connect() for box in boxes))
        start_ms = now_ms() - args.records * 1000 - 60_000
        for box in boxes:
            box.enqueue(
                make_record(start_ms + i * 1000, 48.85 + i * 1e-5, 2.35, speed_kmh=50.0)
                for i in range(args.records)
            )
        began = time.perf_counter()
        cpu = (cpu_seconds(), cpu_seconds(BROKER_PID) if BROKER_PID else 0.0)
        # The gateways' CPU over the run alone (start-up excluded): on a shared machine the
        # rate is noisy, CPU per position much less so.
        gateways_before = sum(cpu_seconds(p.pid) for p in processes)
        loops_before = sum(main_thread_cpu_seconds(p.pid) for p in processes)
        await asyncio.gather(*(box.deliver(timeout=600) for box in boxes))
        elapsed = time.perf_counter() - began
        gateways_run_cpu = sum(cpu_seconds(p.pid) for p in processes) - gateways_before
        loops_cpu = sum(main_thread_cpu_seconds(p.pid) for p in processes) - loops_before
        boxes_cpu = cpu_seconds() - cpu[0]
        broker_cpu = (cpu_seconds(BROKER_PID) - cpu[1]) if BROKER_PID else None
    finally:
        await asyncio.gather(*(box.close() for box in boxes), return_exceptions=True)
        results = await asyncio.gather(*(stop_worker(p) for p in processes))
    return elapsed, results, boxes_cpu, broker_cpu, (gateways_run_cpu, loops_cpu)


async def broker_ceiling(url: str, args: argparse.Namespace) -> float:
    """Positions/s through a plain QoS 1 publish -> echo -> answer loop on the same broker, with
    the bench's clients, frame size and window, and no gp8 (see the module's docstring)."""
    host, port = url.removeprefix("mqtt://").rsplit(":", 1)
    frame = encode(
        Position(
            seq=1, records=tuple(make_record(now_ms(), 48.85, 2.35) for _ in range(args.batch))
        )
    )
    messages = args.records // args.batch
    tag = secrets.token_hex(3)
    echo = aiomqtt.Client(host, int(port), identifier=f"echo-{tag}", max_inflight_messages=500)
    clients = [
        aiomqtt.Client(host, int(port), identifier=f"pub-{tag}-{i}", max_inflight_messages=50)
        for i in range(args.boxes)
    ]
    # The echo has up to one answer in flight per frame in flight (boxes x window) by design:
    # aiomqtt's "There are N pending publish calls." warning (past 10) would flood the output.
    echo.pending_calls_threshold = args.boxes * args.window

    async def answer() -> None:
        # One task per answer, as gp8's bridge does: the PUBACK waits overlap.
        answering: set[asyncio.Task[None]] = set()
        async for message in echo.messages:
            sender = message.topic.value.rsplit("/", 1)[1]
            task = asyncio.create_task(
                echo.publish(f"ceiling/{tag}/down/{sender}", ECHO_ANSWER, qos=1, timeout=30)
            )
            answering.add(task)
            task.add_done_callback(answering.discard)

    async def box(i: int, client: aiomqtt.Client) -> None:
        window = asyncio.Semaphore(args.window)
        answered = 0
        done = asyncio.Event()

        async def answers() -> None:
            nonlocal answered
            async for _ in client.messages:
                answered += 1
                window.release()
                if answered == messages:
                    done.set()
                    return

        reader = asyncio.create_task(answers())
        for _ in range(messages):
            await window.acquire()
            await client.publish(f"ceiling/{tag}/up/{i}", frame, qos=1, timeout=30)
        await asyncio.wait_for(done.wait(), 600)
        await reader

    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(echo)
        await echo.subscribe(f"ceiling/{tag}/up/+", qos=1)
        for i, client in enumerate(clients):
            await stack.enter_async_context(client)
            await client.subscribe(f"ceiling/{tag}/down/{i}", qos=1)
        echoing = asyncio.create_task(answer())
        began = time.perf_counter()
        await asyncio.gather(*(box(i, c) for i, c in enumerate(clients)))
        elapsed = time.perf_counter() - began
        echoing.cancel()
        await asyncio.gather(echoing, return_exceptions=True)
    return args.boxes * messages * args.batch / elapsed


async def _provision_same(data_dir: Path, spec: list[tuple[str, str]]) -> None:
    store = SqliteStore(data_dir / "gp8.sqlite3")
    await store.start()
    try:
        fleet = await store.fleets.create("bench")
        for imei, secret in spec:
            await store.devices.create(fleet.id, imei=imei, model=DeviceModel.GP8000, secret=secret)
    finally:
        await store.close()


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--boxes", type=int, default=200)
    parser.add_argument("--records", type=int, default=500, help="positions per box")
    parser.add_argument("--batch", type=int, default=50, help="records per POSITION frame")
    parser.add_argument("--window", type=int, default=4, help="frames in flight per box")
    parser.add_argument("--workers", default="1,2", help="gateway process counts to run")
    parser.add_argument(
        "--db",
        choices=["shared", "separate"],
        default="shared",
        help="the gateway processes write one SQLite file (default) or one each",
    )
    parser.add_argument("--mqtt-url", help="use this broker instead of a private Mosquitto")
    args = parser.parse_args()
    total = args.boxes * args.records
    with tempfile.TemporaryDirectory(prefix="gp8-bench-mqtt-") as tmp:
        workdir = Path(tmp)
        with contextlib.ExitStack() as stack:
            url = args.mqtt_url or stack.enter_context(private_broker(workdir))
            print(
                f"MQTT ingest: {args.boxes} boxes x {args.records} positions = {total:,}, "
                f"{args.batch} per frame, {args.window} frames in flight per box; "
                f"SQLite ({args.db} database); broker {url}; {os.cpu_count()} cores"
            )
            ceiling = await broker_ceiling(url, args)
            print(
                f"broker ceiling (plain QoS 1 publish/echo loop, same clients, frames, window): "
                f"{ceiling:10,.0f} positions/s"
            )
            for workers in (int(w) for w in args.workers.split(",")):
                elapsed, results, boxes_cpu, broker_cpu, (run_cpu, loop_cpu) = await run_once(
                    url, workers, args, workdir
                )
                stored = sum(r["records"].get("stored", 0) for r in results)
                duplicates = sum(r["records"].get("duplicate", 0) for r in results)
                split = "/".join(str(r["mqtt"]["accepted"]) for r in results)
                plural = "process " if workers == 1 else "processes"
                print(
                    f"MQTT ingest, {workers} gateway {plural}: {total / elapsed:10,.0f} "
                    f"positions/s  ({elapsed:.2f} s; stored {stored:,}, duplicates "
                    f"{duplicates}, messages per process {split})"
                )
                gateways_cpu = sum(r["cpu_s"] for r in results)
                broker = f"{broker_cpu:.1f} s" if broker_cpu is not None else "n/a"
                print(
                    f"  CPU: gateways {gateways_cpu:.1f} s in all, {run_cpu:.2f} s during the run "
                    f"({run_cpu / total * 1e6:.1f} us/position: event loop "
                    f"{loop_cpu / total * 1e6:.1f}, other threads "
                    f"{(run_cpu - loop_cpu) / total * 1e6:.1f}), "
                    f"broker {broker}, boxes {boxes_cpu:.1f} s"
                )
                flushes = sum(r.get("flushes", 0) for r in results)
                store_s = sum(r.get("store_s", 0.0) for r in results)
                if flushes:
                    print(
                        f"  flushes: {flushes} of {total / flushes:,.0f} records on average, "
                        f"{store_s / flushes * 1000:.1f} ms each in the store "
                        f"({store_s / elapsed:.0%} of the run)"
                    )
                if workers == 1:
                    rate = total / elapsed
                    print(f"  ratio to the broker ceiling: {rate / ceiling:.2f}")
                    report(
                        "mqtt", "MQTT ingest, one gateway process", rate, "positions/s",
                        op=">=", goal=GOAL_POSITIONS_S, floor=ceiling,
                        floor_name="broker ceiling (QoS 1 echo loop)",
                    )  # fmt: skip
                if stored != total:
                    print(f"  WARNING: {total - stored:,} positions missing", file=sys.stderr)
                    return 1
    return 0


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        sys.exit(asyncio.run(main()))
    sys.exit(uvloop.run(main()))
