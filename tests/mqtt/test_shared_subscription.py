"""Two gateway processes on one shared subscription split the uplink with no duplicate and no
loss: each is a separate OS process (python -m gateway.mqtt.worker) with its own event loop and
MQTT session, storing into the same SQLite file."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from storage.models import DeviceModel
from storage.sqlite import SqliteStore
from tests.mqtt.conftest import BoxFactory, Mosquitto, track, unique, unique_imei

pytestmark = [pytest.mark.mqtt, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 30.0


class Worker:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, url: str, data_dir: Path, client_id: str, group: str) -> Worker:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway.mqtt.worker",
            "--url",
            url,
            "--data-dir",
            str(data_dir),
            "--client-id",
            client_id,
            "--share-group",
            group,
            "--session-expiry-s",
            "30",
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        worker = cls(process)
        line = await worker.read_line(START_TIMEOUT_S)
        assert line.get("ready"), line
        return worker

    async def read_line(self, timeout: float) -> dict[str, Any]:  # noqa: ASYNC109
        assert self.process.stdout is not None
        async with asyncio.timeout(timeout):
            raw = await self.process.stdout.readline()
        if not raw:
            raise RuntimeError(f"worker exited with {await self.process.wait()}")
        parsed: dict[str, Any] = json.loads(raw)
        return parsed

    async def stop(self) -> dict[str, Any]:
        self.process.send_signal(signal.SIGTERM)
        result = await self.read_line(START_TIMEOUT_S)
        async with asyncio.timeout(START_TIMEOUT_S):
            await self.process.wait()
        return result

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()


async def test_two_gateway_processes_split_the_load_without_duplicates(
    tmp_path: Path, start_broker: Callable[..., Awaitable[Mosquitto]], make_box: BoxFactory
) -> None:
    broker = await start_broker()  # anonymous: this test is about load sharing
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    store = SqliteStore(data_dir / "gp8.sqlite3")
    await store.start()
    fleet = await store.fleets.create("shared")
    devices = [
        await store.devices.create(
            fleet.id, imei=unique_imei(), model=DeviceModel.GP8000, secret=f"s-{i}"
        )
        for i in range(20)
    ]
    group = unique("share")
    workers = await asyncio.gather(
        Worker.start(broker.url, data_dir, unique("gw-a"), group),
        Worker.start(broker.url, data_dir, unique("gw-b"), group),
    )
    try:
        boxes = [make_box(broker.url, d, batch_size=10, window=4) for d in devices]
        tracks = [track(100) for _ in devices]
        for box, records in zip(boxes, tracks, strict=True):
            box.enqueue(records)
        await asyncio.gather(*(box.deliver(timeout=30.0) for box in boxes))
        results = await asyncio.gather(*(w.stop() for w in workers))
    finally:
        for w in workers:
            w.kill()

    published = sum(len(records) // 10 for records in tracks)  # one message per frame
    accepted = [r["mqtt"]["accepted"] for r in results]
    assert sum(accepted) == published  # each message was handled by exactly one process
    assert all(n >= published // 5 for n in accepted), accepted  # and both took a share
    assert sum(r["records"].get("stored", 0) for r in results) == 20 * 100
    assert sum(r["records"].get("duplicate", 0) for r in results) == 0
    assert all(box.acked == 100 and box.resent == 0 for box in boxes)
    for device, records in zip(devices, tracks, strict=True):
        times = await asyncio.to_thread(_times, data_dir / "gp8.sqlite3", device.id)
        assert times == [r.time_ms for r in records]
    await store.close()


def _times(db: Path, device_id: str) -> list[int]:
    import contextlib
    import sqlite3

    with contextlib.closing(sqlite3.connect(db)) as conn:
        sql = "SELECT time_ms FROM positions WHERE device_id = ? ORDER BY time_ms"
        return [row[0] for row in conn.execute(sql, (device_id,))]
