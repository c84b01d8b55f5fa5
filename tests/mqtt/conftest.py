"""Real brokers for the MQTT tests.

* the shared Mosquitto on 127.0.0.1:1883 (anonymous), for the basic flows: every test uses its
  own IMEIs, share group and client ids, and short session expiries so nothing outlives it;
* a private Mosquitto per test (`start_broker`), on a free port, configured from the password,
  ACL and conf files gp8 generates (`gp8 admin mqtt-acl`), with persistence in tmp_path when a
  test restarts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gateway.mqtt import MqttBridge
from gateway.mqtt.acl import generate_acl
from gateway.pipeline import IngestPipeline
from simulator.mqtt_box import MqttBox
from storage.models import Device, DeviceModel, Fleet, now_ms
from storage.sqlite import SqliteStore

SHARED_HOST = "127.0.0.1"
SHARED_PORT = 1883
# Every await of a test is bounded by this; generous for a loaded 2-core machine.
TIMEOUT = 10.0
# Sessions made on the shared broker expire this soon after their client leaves.
SHORT_SESSION_S = 10
GATEWAY_USER = "gp8-gateway"


def unique_imei() -> str:
    """A random 15-digit IMEI: tests on the shared broker must not see each other's topics."""
    return f"{secrets.randbelow(9 * 10**14) + 10**14:015d}"


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
        return True
    return False


def track(count: int, *, start_ms: int | None = None) -> list[Any]:
    """``count`` plausible records one second apart, ending before now."""
    from simulator.box import make_record

    start = start_ms if start_ms is not None else now_ms() - (count + 10) * 1000
    return [
        make_record(start + i * 1000, 48.85 + i * 1e-5, 2.35 + i * 1e-5, speed_kmh=40.0)
        for i in range(count)
    ]


@pytest.fixture(scope="session")
def shared_broker() -> str:
    if not port_open(SHARED_PORT, SHARED_HOST):
        pytest.fail("no MQTT broker on 127.0.0.1:1883: run .ci/ensure-mosquitto")
    return f"mqtt://{SHARED_HOST}:{SHARED_PORT}"


# --- a gp8 side: SQLite store, pipeline, provisioned boxes -----------------------------------


@dataclass
class Env:
    store: SqliteStore
    pipeline: IngestPipeline
    fleet: Fleet
    boxes: dict[str, Device] = field(default_factory=dict)  # by IMEI

    async def provision(self, n: int = 1) -> list[Device]:
        created = []
        for _ in range(n):
            device = await self.store.devices.create(
                self.fleet.id,
                imei=unique_imei(),
                model=DeviceModel.GP8000,
                secret=secrets.token_urlsafe(16),
            )
            self.boxes[device.imei] = device
            created.append(device)
        return created

    async def stored_times(self, device: Device) -> list[int]:
        """time_ms of every stored position of the box, duplicates included if any."""
        db = self.store.path
        rows = await asyncio.to_thread(_query_times, db, device.id)
        return rows


def _query_times(db: Path, device_id: str) -> list[int]:
    import sqlite3

    with contextlib.closing(sqlite3.connect(db)) as conn:
        return [
            row[0]
            for row in conn.execute(
                "SELECT time_ms FROM positions WHERE device_id = ? ORDER BY time_ms", (device_id,)
            )
        ]


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    store = SqliteStore(tmp_path / "gp8.sqlite3")
    await store.start()
    pipeline = IngestPipeline(store.telemetry, max_delay_ms=5)
    await pipeline.start()
    fleet = await store.fleets.create("mqtt-tests")
    yield Env(store, pipeline, fleet)
    await pipeline.stop(grace_s=5)
    await store.close()


BridgeFactory = Callable[..., Awaitable[MqttBridge]]
BoxFactory = Callable[..., MqttBox]


@pytest.fixture
async def make_bridge(env: Env) -> AsyncIterator[BridgeFactory]:
    started: list[MqttBridge] = []

    async def factory(url: str, *, connect: bool = True, **kw: Any) -> MqttBridge:
        options: dict[str, Any] = {
            "share_group": unique("grp"),
            "client_id": unique("gw"),
            "gateway_id": "gw-test",
            "session_expiry_s": SHORT_SESSION_S,
            "backoff_min_s": 0.1,
            "backoff_max_s": 0.5,
            "operation_timeout_s": 5.0,
        }
        options.update(kw)
        pipeline = options.pop("pipeline", env.pipeline)
        bridge = MqttBridge.from_url(url, pipeline, env.store, **options)
        await bridge.start()
        started.append(bridge)
        if connect:
            await bridge.wait_connected(TIMEOUT)
        return bridge

    yield factory
    for bridge in started:
        await bridge.stop(grace_s=2.0)


@pytest.fixture
async def make_box() -> AsyncIterator[BoxFactory]:
    boxes: list[MqttBox] = []

    def factory(url: str, device: Device, **kw: Any) -> MqttBox:
        kw.setdefault("io_timeout_s", TIMEOUT)
        kw.setdefault("connect_timeout_s", TIMEOUT)
        kw.setdefault("session_expiry_s", SHORT_SESSION_S)
        box = MqttBox.from_url(url, device.imei, device.secret, **kw)
        boxes.append(box)
        return box

    yield factory
    for box in boxes:
        await box.close()


# --- a private Mosquitto ----------------------------------------------------------------------


class Mosquitto:
    """A broker process of our own: started from gp8's generated files, killable."""

    def __init__(self, workdir: Path, auth_dir: Path | None, *, persistence: bool) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        lines = [f"listener {self.port} 127.0.0.1"]
        if os.geteuid() == 0:
            lines.append("user root")  # else it drops to "mosquitto", who cannot read tmp_path
        if persistence:
            (workdir / "data").mkdir(exist_ok=True)
            lines += ["persistence true", f"persistence_location {workdir / 'data'}/"]
        if auth_dir is not None:
            lines.append(f"include_dir {auth_dir}")
        else:
            lines += ["allow_anonymous true", "max_queued_messages 1000000"]
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.log = workdir / "mosquitto.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        with self.log.open("ab") as log:
            self._process = subprocess.Popen([binary, "-c", str(self.conf)], stderr=log)
        deadline = time.monotonic() + TIMEOUT
        while not port_open(self.port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.02)

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        process = self._process
        if process is None:
            return
        self._process = None
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(TIMEOUT)

    def reload(self) -> None:
        """SIGHUP: re-read the password and ACL files."""
        assert self._process is not None
        self._process.send_signal(signal.SIGHUP)


@pytest.fixture
def start_broker(tmp_path: Path) -> Iterator[Callable[..., Awaitable[Mosquitto]]]:
    brokers: list[Mosquitto] = []

    async def factory(
        env: Env | None = None, *, persistence: bool = False, gateway_password: str = "gw-pw"
    ) -> Mosquitto:
        workdir = tmp_path / f"broker{len(brokers)}"
        workdir.mkdir()
        auth_dir = None
        if env is not None:
            auth_dir = workdir / "auth"
            await generate_acl(
                env.store, auth_dir, gateway_user=GATEWAY_USER, gateway_password=gateway_password
            )
        broker = Mosquitto(workdir, auth_dir, persistence=persistence)
        broker.start()
        brokers.append(broker)
        return broker

    yield factory
    for broker in brokers:
        broker.stop(signal.SIGKILL)
