"""An MQTT-only ingest process: store, pipeline and bridge, without TCP or the API.

``python -m gateway.mqtt.worker --url mqtt://host:1883 --data-dir DIR --client-id ID``

`gp8 serve --mqtt-url` is how gp8 runs in production; this smaller process is what the tests
and bench/bench_mqtt.py start several of, to exercise a shared subscription across processes.
It prints one JSON line when subscribed (``{"ready": ...}``) and one with its counters when it
stops (SIGTERM, SIGINT, or its stdin closing).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import resource
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from gateway.lifecycle import tune_gc
from gateway.metrics import GatewayMetrics
from gateway.mqtt.bridge import SESSION_EXPIRY_S, MqttBridge
from gateway.pipeline import IngestPipeline
from storage import open_store

READY_TIMEOUT_S = 30.0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m gateway.mqtt.worker", description=__doc__)
    p.add_argument("--url", required=True, help="mqtt://[user:password@]host[:port]")
    p.add_argument("--data-dir", type=Path, required=True, help="SQLite data directory")
    p.add_argument("--mongo-url", help="use MongoDB instead of SQLite")
    p.add_argument("--client-id", required=True, help="stable MQTT client id of this process")
    p.add_argument("--share-group", default="gp8")
    p.add_argument("--gateway-id", help="default: the client id")
    p.add_argument("--session-expiry-s", type=int, default=SESSION_EXPIRY_S)
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--max-delay-ms", type=int, default=20)
    p.add_argument("--log-level", default="warning")
    return p


async def run(args: argparse.Namespace) -> int:
    store = open_store(mongo_url=args.mongo_url, mongo_db="gp8", data_dir=args.data_dir)
    await store.start()
    metrics = GatewayMetrics()
    pipeline = IngestPipeline(
        store.telemetry,
        batch_size=args.batch_size,
        max_delay_ms=args.max_delay_ms,
        metrics=metrics,
    )
    await pipeline.start()
    bridge = MqttBridge.from_url(
        args.url,
        pipeline,
        store,
        share_group=args.share_group,
        client_id=args.client_id,
        gateway_id=args.gateway_id or args.client_id,
        session_expiry_s=args.session_expiry_s,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    watcher = asyncio.create_task(_watch_stdin(stop))
    try:
        await bridge.start()
        await bridge.wait_connected(READY_TIMEOUT_S)
        tune_gc()  # this process's entry point, as gp8/serve.py
        _emit({"ready": True, "client_id": args.client_id})
        await stop.wait()
    finally:
        watcher.cancel()
        await bridge.stop()
        await pipeline.stop(grace_s=10.0)
        await store.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    _emit(
        {
            "done": True,
            "mqtt": bridge.metrics.snapshot(),
            "records": dict(metrics.records),
            "flushes": metrics.flushes,
            "store_s": round(metrics.store_seconds, 3),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
        }
    )
    return 0


async def _watch_stdin(stop: asyncio.Event) -> None:
    """The parent going away closes our stdin: stop then, rather than linger."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    try:
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    except (OSError, ValueError):
        return  # not a pipe (a terminal, /dev/null): signals only
    while await reader.read(4096):
        pass
    stop.set()


def _emit(obj: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        import uvloop
    except ImportError:  # uvloop is optional (not on Windows)
        return asyncio.run(run(args))
    return uvloop.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
