"""A real gp8 (gateway + API on SQLite, in this process, ports picked by the OS) and helpers to
run simulated fleets against it and read the result back through the API."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from gp8.serve import Running, start_services, stop_services
from gp8.settings import ApiSettings, Settings, TcpSettings, TeltonikaSettings
from simulator.fleet import Fleet, FleetOptions, make_clock
from simulator.geo import LatLon
from simulator.provision import ApiClient, ProvisionedBox, provision_fleet
from simulator.report import Report
from simulator.scenario import Scenario, load_scenario
from simulator.trajectory import RoadNetwork, StreetGrid
from simulator.transport import TransportConfig

OPERATOR_KEY = "gp8-sim-test-operator-key"
CENTER = LatLon(48.8566, 2.3522)
# A whole e2e run gives up after this long: the runs take a few seconds on a loaded machine.
RUN_TIMEOUT_S = 60.0
_TMPFS = Path("/dev/shm")


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    # tmpfs when there is one: an fsync per commit on a disk slows every test for nothing.
    if not _TMPFS.is_dir():
        yield tmp_path
        return
    path = Path(tempfile.mkdtemp(prefix="gp8-sim-test-", dir=_TMPFS))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@dataclass
class Gp8:
    run: Running
    base_url: str

    @property
    def tcp_port(self) -> int:
        return self.run.tcp_port

    def port_for(self, protocol: str) -> int:
        """The listener boxes of ``protocol`` dial."""
        if protocol == "teltonika":
            return int(self.run.gateway.teltonika_port or 0)
        return self.tcp_port

    async def health(self) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=10) as c:
            response = await c.get("/health")
            response.raise_for_status()
            result: dict[str, Any] = response.json()
            return result


@pytest.fixture
async def gp8(data_dir: Path) -> AsyncIterator[Gp8]:
    settings = Settings(
        data_dir=data_dir,
        bootstrap_key=OPERATOR_KEY,
        log_level="warning",
        tcp=TcpSettings(host="127.0.0.1", port=0),
        teltonika=TeltonikaSettings(port=0),
        api=ApiSettings(host="127.0.0.1", port=0, rate_limit_per_minute=0),
    )
    run = await start_services(settings)
    try:
        yield Gp8(run, f"http://127.0.0.1:{run.api_port}")
    finally:
        await stop_services(run)


@dataclass
class FleetAccess:
    """A fleet of the server and an admin client for it."""

    gp8: Gp8
    fleet_id: str
    key: str
    client: httpx.AsyncClient

    async def get(self, path: str, **params: Any) -> Any:
        response = await self.client.get(path, params=params)
        assert response.status_code == 200, response.text
        return response.json()

    async def positions(self, vehicle_id: str, from_ms: int, to_ms: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"from": from_ms, "to": to_ms, "limit": 10_000}
            if cursor:
                params["cursor"] = cursor
            page = await self.get(f"/v1/vehicles/{vehicle_id}/positions", **params)
            out += page["data"]
            cursor = page["next_cursor"]
            if not cursor:
                return out

    async def events(self, vehicle_id: str, from_ms: int, to_ms: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        cursor = None
        while True:
            params: dict[str, Any] = {
                "from": from_ms,
                "to": to_ms,
                "limit": 1000,
                "vehicle_id": vehicle_id,
            }
            if cursor:
                params["cursor"] = cursor
            page = await self.get("/v1/events", **params)
            out += page["data"]
            cursor = page["next_cursor"]
            if not cursor:
                return out

    async def last_position(self, vehicle_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.get(f"/v1/vehicles/{vehicle_id}/position")
        return result


@pytest.fixture
async def fleet(gp8: Gp8) -> AsyncIterator[FleetAccess]:
    async with ApiClient(gp8.base_url, OPERATOR_KEY) as operator:
        created = await operator.create_fleet("sim e2e")
        admin = await operator.create_key(created["id"], "admin", "sim e2e")
    headers = {"Authorization": f"Bearer {admin['key']}"}
    async with httpx.AsyncClient(base_url=gp8.base_url, headers=headers, timeout=30) as client:
        yield FleetAccess(gp8, created["id"], admin["key"], client)


@dataclass
class SimRun:
    fleet: Fleet
    report: Report
    boxes: list[ProvisionedBox]
    start_ms: int

    @property
    def snapshot(self) -> dict[str, Any]:
        return self.report.snapshot()


async def provision_backdated(
    access: FleetAccess, devices: int, fitted_ms: int, *, seed: str = "e2e", protocol: str = "gp8"
) -> list[ProvisionedBox]:
    """Vehicles and boxes created and fitted through the API, the fittings dated
    ``fitted_ms`` (in the past: the scenarios run in the past and end now)."""
    async with ApiClient(access.gp8.base_url, access.key) as client:
        assert await client.supports_backdated_fitting()
        boxes = await provision_fleet(
            client, devices, seed=seed, fitted_at_ms=fitted_ms, protocol=protocol
        )
    assert all(box.fitted_ms == fitted_ms for box in boxes)
    return boxes


def build_fleet(
    access: FleetAccess,
    boxes: list[ProvisionedBox],
    scenario: Scenario,
    *,
    interval_s: float,
    count: int | None = None,
    rate: float | None = None,
    seed: str = "e2e",
    start_ms: int | None = None,
    protocol: str = "gp8",
    network: RoadNetwork | None = None,
    batch_size: int = 50,
    window: int = 4,
) -> Fleet:
    transport = TransportConfig(
        protocol=protocol, port=access.gp8.port_for(protocol), batch_size=batch_size, window=window
    )
    options = FleetOptions(
        transport=transport,
        interval_s=interval_s,
        count=count,
        rate=rate,
        seed=seed,
        reconnect_delay_s=0.05,
        reconnect_max_s=1.0,
        flush_timeout_s=10.0,
        final_timeout_s=20.0,
    )
    clock = make_clock(scenario, options, lon=CENTER.lon)
    if start_ms is not None:
        clock.start_ms = start_ms
    if network is None:
        network = StreetGrid(CENTER, 3_000, seed=seed)
    return Fleet(boxes, scenario=scenario, network=network, clock=clock, options=options)


async def run_scenario(
    access: FleetAccess,
    name: str | Scenario,
    *,
    devices: int = 2,
    interval_s: float = 30.0,
    count: int | None = None,
    seed: str = "e2e",
    protocol: str = "gp8",
) -> SimRun:
    """Run a scenario to its end against the server: boxes provisioned through the API, the
    simulated clock in the past so that the run ends now."""
    import asyncio

    scenario = load_scenario(name) if isinstance(name, str) else name
    options = FleetOptions(transport=TransportConfig(), interval_s=interval_s, count=count)
    start = make_clock(scenario, options, lon=CENTER.lon).start_ms
    boxes = await provision_backdated(access, devices, start - 60_000, seed=seed, protocol=protocol)
    fleet = build_fleet(
        access,
        boxes,
        scenario,
        interval_s=interval_s,
        count=count,
        seed=seed,
        start_ms=start,
        protocol=protocol,
    )
    async with asyncio.timeout(RUN_TIMEOUT_S):
        report = await fleet.run()
    assert not fleet.failures(), fleet.failures()
    return SimRun(fleet, report, boxes, start)
