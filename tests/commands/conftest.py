"""A whole gp8 (`gp8.serve.start_services`: SQLite, TCP gateway, command service, HTTP API) on
port 0, fleets made through the API, and virtual boxes that connect to it over real sockets;
and, for the service-level tests, the service alone on each engine (`world`)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from gp8.serve import Running, start_services, stop_services
from gp8.settings import ApiSettings, Settings, TcpSettings
from protocol.gp8 import Model
from simulator.box import VirtualBox
from tests.api.helpers import OPERATOR_KEY, VALID_IMEIS, VALID_VINS, FleetFixture, bearer
from tests.api.helpers import create_fleet as api_create_fleet
from tests.commands.world import ENGINES, World, open_world

# Generous for a loaded 2-core machine; the happy paths take milliseconds.
TIMEOUT_S = 10.0
_TMPFS = Path("/dev/shm")


@dataclass
class Gp8:
    """A running gp8 and an HTTP client on its API port."""

    data_dir: Path
    run: Running
    http: httpx.AsyncClient
    boxes: list[VirtualBox] = field(default_factory=list)

    @property
    def tcp_port(self) -> int:
        return self.run.tcp_port

    async def fleet(self, n: int) -> Fleet:
        fixture = await api_create_fleet(self.http, f"fleet{n}", VALID_VINS[n], VALID_IMEIS[n])
        device = await self.run.store.devices.get(fixture.id, fixture.device_id)
        return Fleet(fixture, device.secret)

    def box(self, fleet: Fleet, **kw: Any) -> VirtualBox:
        kw.setdefault("io_timeout_s", TIMEOUT_S)
        kw.setdefault("connect_timeout_s", TIMEOUT_S)
        box = VirtualBox(fleet.imei, fleet.secret, Model.GP8000, port=self.tcp_port, **kw)
        self.boxes.append(box)
        return box

    async def restart(self) -> None:
        """Stop everything gracefully and start a new gp8 on the same data directory (new ports),
        as after a deploy; the boxes are pointed at the new TCP port."""
        await self.http.aclose()
        await stop_services(self.run)
        self.run = await start_services(settings(self.data_dir))
        self.http = client_for(self.run)
        for box in self.boxes:
            box.port = self.tcp_port


@dataclass
class Fleet:
    api: FleetFixture
    secret: str  # its box's LOGIN secret

    @property
    def id(self) -> str:
        return self.api.id

    @property
    def imei(self) -> str:
        return self.api.imei

    @property
    def vehicle_id(self) -> str:
        return self.api.vehicle_id

    def h(self, role: str = "admin") -> dict[str, str]:
        return self.api.h(role)

    @property
    def commands_url(self) -> str:
        return f"/v1/vehicles/{self.vehicle_id}/commands"


def settings(data_dir: Path) -> Settings:
    return Settings(
        data_dir=data_dir,
        bootstrap_key=OPERATOR_KEY,
        log_level="warning",
        tcp=TcpSettings(host="127.0.0.1", port=0, login_timeout_s=5.0, write_timeout_s=5.0),
        api=ApiSettings(host="127.0.0.1", port=0, rate_limit_per_minute=1_000_000),
    )


def client_for(run: Running) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{run.api_port}", timeout=TIMEOUT_S)


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    # tmpfs when there is one: SQLite fsyncs every commit, which these tests do not measure.
    if not _TMPFS.is_dir():
        yield tmp_path
        return
    path = Path(tempfile.mkdtemp(prefix="gp8-commands-test-", dir=_TMPFS))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def gp8(data_dir: Path) -> AsyncIterator[Gp8]:
    run = await start_services(settings(data_dir))
    stack = Gp8(data_dir, run, client_for(run))
    try:
        yield stack
    finally:
        for box in stack.boxes:
            await box.close()
        await stack.http.aclose()
        await stop_services(stack.run)


@pytest.fixture
async def fleet(gp8: Gp8) -> Fleet:
    return await gp8.fleet(0)


@pytest.fixture
async def other_fleet(gp8: Gp8) -> Fleet:
    return await gp8.fleet(1)


OPERATOR = bearer(OPERATOR_KEY)


@pytest.fixture(params=ENGINES)
async def world(request: pytest.FixtureRequest) -> AsyncIterator[World]:
    """The command service's world on each storage engine (tests/commands/world.py)."""
    async with open_world(request.param) as world:
        yield world


async def wait_status(
    gp8: Gp8, fleet: Fleet, command_id: str, statuses: Iterable[str], timeout_s: float = TIMEOUT_S
) -> dict[str, Any]:
    """The command once its status is one of ``statuses`` (polled through the API)."""
    wanted = set(statuses)
    async with asyncio.timeout(timeout_s):
        while True:
            r = await gp8.http.get(f"/v1/commands/{command_id}", headers=fleet.h("viewer"))
            assert r.status_code == 200, r.text
            body: dict[str, Any] = r.json()
            if body["status"] in wanted:
                return body
            await asyncio.sleep(0.02)


async def wait_silent(registry: Any, imei: str, window_s: float) -> None:
    """Until the box's session has received nothing for longer than ``window_s`` (what the
    session registry calls no longer live), polled with a deadline."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(TIMEOUT_S):
        while True:
            if loop.time() - registry.get(imei).last_activity > window_s:
                return
            await asyncio.sleep(0.02)


async def send(
    gp8: Gp8,
    fleet: Fleet,
    type_: str,
    *,
    role: str = "admin",
    expect: int | tuple[int, ...] = (201, 202),
    headers: dict[str, str] | None = None,
    **body: Any,
) -> dict[str, Any]:
    """POST a command and check the status code."""
    r = await gp8.http.post(
        fleet.commands_url,
        json={"type": type_, **body},
        headers={**fleet.h(role), **(headers or {})},
    )
    expected = (expect,) if isinstance(expect, int) else expect
    assert r.status_code in expected, r.text
    result: dict[str, Any] = r.json()
    return result
