"""Two real `gp8 serve` processes on one SQLite file (docs/scaling.md): each test starts them
with their own ports and gateway ids, and provisions what it needs through the file itself."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from protocol.gp8 import Model
from simulator.provision import ApiClient, make_imei, make_plate, make_vin
from storage import SQLITE_FILENAME
from storage.models import now_ms
from storage.sqlite import SqliteStore

GP8 = Path(sys.executable).with_name("gp8")
OPERATOR_KEY = "gp8-scaleout-test-operator-key"
START_TIMEOUT_S = 30.0
DEADLINE_S = 15.0
START_ATTEMPTS = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Gp8:
    name: str
    process: asyncio.subprocess.Process
    tcp_port: int
    api_port: int

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"


async def _start(name: str, data_dir: Path, env: dict[str, str]) -> Gp8:
    # A free port may be taken by another test's server before gp8 binds it: try new ones.
    for _ in range(START_ATTEMPTS - 1):
        with contextlib.suppress(PortTaken):
            return await _start_once(name, data_dir, env)
    return await _start_once(name, data_dir, env)


class PortTaken(Exception):
    """gp8 could not bind a port free a moment before."""


async def _start_once(name: str, data_dir: Path, env: dict[str, str]) -> Gp8:
    tcp_port, api_port = free_port(), free_port()
    log_path = data_dir / f"{name}.log"
    log = log_path.open("wb")
    process = await asyncio.create_subprocess_exec(
        *(str(GP8), "serve", "--data-dir", str(data_dir), "--host", "127.0.0.1"),
        *("--api-host", "127.0.0.1", "--tcp-port", str(tcp_port), "--api-port", str(api_port)),
        *("--bootstrap-key", OPERATOR_KEY, "--log-level", "warning"),
        env={**os.environ, "GP8_GATEWAY_ID": name, **env},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=log,
    )
    log.close()  # the child holds its own descriptor
    server = Gp8(name, process, tcp_port, api_port)
    async with httpx.AsyncClient(base_url=server.api, timeout=5) as probe:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            with contextlib.suppress(httpx.TransportError, ValueError, KeyError, TypeError):
                r = await probe.get("/health")
                # Ours, not whoever else may answer on that port: it names our TCP port.
                if r.status_code == 200 and r.json()["gateway"]["tcp_port"] == tcp_port:
                    return server
            if process.returncode is not None:
                tail = log_path.read_text()[-2000:]
                if "address already in use" in tail:
                    raise PortTaken(tail)
                raise AssertionError(f"{name} exited with {process.returncode}: {tail}")
            assert time.monotonic() < deadline, f"{name} did not start"
            await asyncio.sleep(0.1)


async def _stop(server: Gp8) -> None:
    if server.process.returncode is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(server.process.wait(), START_TIMEOUT_S)
        except TimeoutError:
            server.process.kill()
            await server.process.wait()


@dataclass
class Pair:
    """Two gp8 processes on one file, and the test's own store on that file."""

    a: Gp8
    b: Gp8
    store: SqliteStore


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pair(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Pair]:
    """One pair per test module (starting two processes costs seconds): its settings are
    the module's ``GP8_ENV``; each test provisions its own fleet."""
    data_dir = tmp_path_factory.mktemp("scaleout") / "data"
    data_dir.mkdir()
    # Created first, at the current schema, so that the processes find it ready.
    store = SqliteStore(data_dir / SQLITE_FILENAME)
    await store.start()
    # Unique per run: an MQTT gateway's broker session is named after its gateway id.
    run = secrets.token_hex(3)
    env: dict[str, str] = getattr(request.module, "GP8_ENV", {})
    started = await asyncio.gather(
        _start(f"gw-a-{run}", data_dir, env),
        _start(f"gw-b-{run}", data_dir, env),
        return_exceptions=True,
    )
    try:
        servers = [s for s in started if isinstance(s, Gp8)]
        for failure in started:
            if isinstance(failure, BaseException):
                raise failure
        yield Pair(servers[0], servers[1], store)
    finally:
        await asyncio.gather(*(_stop(s) for s in servers))
        await store.close()


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll ``check`` until it holds (no fixed sleeps): fails after DEADLINE_S."""
    deadline = time.monotonic() + DEADLINE_S
    while not await check():
        assert time.monotonic() < deadline, f"never: {what}"
        await asyncio.sleep(0.05)


async def provision(server: Gp8, rng: random.Random) -> dict[str, Any]:
    """A fleet with an admin key and one vehicle with a box fitted, through ``server``'s API."""
    async with ApiClient(server.api, OPERATOR_KEY) as operator:
        fleet = await operator.create_fleet("scale-out")
        admin = await operator.create_key(fleet["id"], "admin", "admin")
    async with ApiClient(server.api, admin["key"]) as client:
        vehicle = await client.create_vehicle(make_vin(rng), make_plate(rng), "van")
        imei = make_imei(rng)
        device = await client.create_device(imei, Model.GP8000)
        # Fitted a minute ago: the records a test sends (dated by the box) are the vehicle's.
        await client.fit(vehicle["id"], imei, now_ms() - 60_000)
    return {
        "fleet_id": fleet["id"],
        "key": admin["key"],
        "key_id": admin["id"],
        "vehicle_id": vehicle["id"],
        "device_id": device["id"],
        "imei": imei,
        "secret": device["secret"],
    }
