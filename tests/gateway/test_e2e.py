"""End to end over real sockets: virtual boxes → TCP gateway → storage engine (fake and SQLite).

The acceptance test: 20 boxes x 50 positions, connections cut mid-batch and resent, exactly
1,000 positions stored: none lost, none duplicated.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

import pytest

from gateway import GatewayStore, TcpGateway
from protocol.gp8 import Model, PositionRecord
from simulator.box import BoxDisconnected, VirtualBox
from storage.models import DeviceModel, now_ms
from storage.sqlite import SqliteStore
from tests.gateway.conftest import TIMEOUT, imei_for, track
from tests.gateway.fakes import FakeStore

BOXES = 20
POSITIONS = 50


class Engine(Protocol):
    store: GatewayStore

    async def provision(self, n: int, *, fitted_from_ms: int) -> tuple[str, str, str]:
        """A box fitted to its own vehicle: (imei, secret, vehicle_id)."""
        ...

    async def refit(self, imei: str, at_ms: int) -> str:
        """Move the box to a new vehicle from ``at_ms``; returns the vehicle id."""
        ...

    async def stored_times(self, vehicle_id: str) -> list[int]: ...
    async def last_time(self, vehicle_id: str) -> int | None: ...


class FakeEngine:
    def __init__(self) -> None:
        self.fake = FakeStore()
        self.store: GatewayStore = self.fake
        self._vehicles = 0

    async def provision(self, n: int, *, fitted_from_ms: int) -> tuple[str, str, str]:
        device = self.fake.devices.add(imei_for(n), f"secret-{n}")
        self._vehicles += 1
        vehicle = f"veh_{self._vehicles}"
        self.fake.devices.fit(device, vehicle, fitted_from_ms)
        return device.imei, device.secret, vehicle

    async def refit(self, imei: str, at_ms: int) -> str:
        device = self.fake.devices.by_imei[imei]
        history = self.fake.devices.history[device.id]
        last = history[-1]
        history[-1] = type(last)(
            last.fleet_id, last.device_id, last.vehicle_id, last.from_ms, at_ms
        )
        self._vehicles += 1
        vehicle = f"veh_{self._vehicles}"
        self.fake.devices.fit(device, vehicle, at_ms)
        return vehicle

    async def stored_times(self, vehicle_id: str) -> list[int]:
        return sorted(
            p.time_ms for p in self.fake.telemetry.positions.values() if p.vehicle_id == vehicle_id
        )

    async def last_time(self, vehicle_id: str) -> int | None:
        last = self.fake.telemetry.last.get(vehicle_id)
        return None if last is None else last.time_ms


class SqliteEngine:
    def __init__(self, sqlite: SqliteStore, fleet_id: str) -> None:
        self.sqlite = sqlite
        self.store: GatewayStore = sqlite
        self.fleet_id = fleet_id

    @classmethod
    async def open(cls, path: Path) -> SqliteEngine:
        sqlite = SqliteStore(path)
        await sqlite.start()
        fleet = await sqlite.fleets.create("e2e")
        return cls(sqlite, fleet.id)

    async def provision(self, n: int, *, fitted_from_ms: int) -> tuple[str, str, str]:
        imei, secret = imei_for(n), f"secret-{n}"
        await self.sqlite.devices.create(
            self.fleet_id, imei=imei, model=DeviceModel.GP8000, secret=secret
        )
        vehicle = await self._vehicle(f"{n}-{fitted_from_ms}")
        await self.sqlite.devices.fit(self.fleet_id, vehicle, imei, fitted_from_ms)
        return imei, secret, vehicle

    async def refit(self, imei: str, at_ms: int) -> str:
        vehicle = await self._vehicle(f"{imei}-{at_ms}")
        await self.sqlite.devices.fit(self.fleet_id, vehicle, imei, at_ms)
        return vehicle

    async def _vehicle(self, tag: str) -> str:
        vin = f"VF1{abs(hash(tag)) % 10**14:014d}"
        vehicle = await self.sqlite.vehicles.create(
            self.fleet_id, vin=vin, plate=tag[:10], label=tag
        )
        return vehicle.id

    async def stored_times(self, vehicle_id: str) -> list[int]:
        times: list[int] = []
        cursor = None
        while True:
            page = await self.sqlite.telemetry.positions(
                self.fleet_id, vehicle_id, from_ms=0, to_ms=2**62, cursor=cursor, limit=500
            )
            times += [p.time_ms for p in page.items]
            if page.next_cursor is None:
                return times
            cursor = page.next_cursor

    async def last_time(self, vehicle_id: str) -> int | None:
        last = await self.sqlite.telemetry.last_position(self.fleet_id, vehicle_id)
        return None if last is None else last.time_ms


@pytest.fixture(params=["fake", "sqlite"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Engine]:
    if request.param == "fake":
        yield FakeEngine()
        return
    sqlite_engine = await SqliteEngine.open(tmp_path / "gp8.sqlite3")
    try:
        yield sqlite_engine
    finally:
        await sqlite_engine.sqlite.close()


@pytest.fixture
async def gw(engine: Engine) -> AsyncIterator[TcpGateway]:
    gateway = TcpGateway(
        engine.store,
        port=0,
        idle_timeout_s=30,
        login_timeout_s=5,
        write_timeout_s=5,
        batch_size=200,
        max_delay_ms=5,
        gateway_id="gw-e2e",
    )
    await gateway.start()
    yield gateway
    await gateway.stop(grace_s=5)


async def drive_with_cuts(box: VirtualBox, rng: random.Random, cuts: int) -> int:
    """Deliver the outbox, cutting the connection mid-batch ``cuts`` times; returns cuts done."""
    done = 0
    async with asyncio.timeout(TIMEOUT * 3):
        while box.pending:
            try:
                if not box.connected:
                    await box.connect()
                if done < cuts and rng.random() < 0.7:
                    await box.send_frames(rng.randint(1, 3))
                    await asyncio.sleep(rng.random() * 0.02)  # let some ACKs come, or not
                    box.cut()
                    done += 1
                    continue
                await box.flush(timeout=TIMEOUT)
            except BoxDisconnected:
                await asyncio.sleep(0.01)
    await box.close()
    return done


@pytest.mark.slow
async def test_1000_positions_from_20_boxes_with_cut_connections_are_stored_exactly_once(
    engine: Engine, gw: TcpGateway
) -> None:
    start = now_ms() - 3_600_000
    boxes: list[tuple[VirtualBox, str, list[PositionRecord]]] = []
    for n in range(1, BOXES + 1):
        imei, secret, vehicle = await engine.provision(n, fitted_from_ms=start - 1)
        rng = random.Random(n)
        box = VirtualBox(
            imei,
            secret,
            Model.GP8000,
            port=gw.port,
            batch_size=rng.randint(3, 12),
            window=rng.randint(1, 4),
            io_timeout_s=TIMEOUT,
            busy_backoff_s=0.05,
        )
        records = track(POSITIONS, start_ms=start + n, step_ms=5_000)
        box.enqueue(records)
        boxes.append((box, vehicle, records))

    cuts = await asyncio.gather(
        *(drive_with_cuts(box, random.Random(i), cuts=3) for i, (box, _, _) in enumerate(boxes))
    )

    assert sum(cuts) >= BOXES  # the connections really were cut, repeatedly
    total = 0
    for box, vehicle, records in boxes:
        times = await engine.stored_times(vehicle)
        assert times == [r.time_ms for r in records], box.imei  # none lost, none twice
        assert box.acked == POSITIONS and box.dropped == 0
        total += len(times)
    assert total == BOXES * POSITIONS == 1000
    assert gw.metrics.records["stored"] == 1000
    assert gw.metrics.logins["ok"] > BOXES  # the boxes logged in again after cuts


@pytest.mark.slow
async def test_late_records_keep_their_own_time_and_vehicle(engine: Engine, gw: TcpGateway) -> None:
    t0 = now_ms() - 3_600_000
    imei, secret, first_vehicle = await engine.provision(1, fitted_from_ms=t0)
    refit_at = t0 + 100_000
    second_vehicle = await engine.refit(imei, refit_at)
    recent = track(10, start_ms=refit_at + 50_000, step_ms=1_000)  # in the second vehicle
    # Kept offline by the box and sent after the recent ones, oldest last.
    late = list(reversed(track(10, start_ms=t0 + 1_000, step_ms=1_000, buffered=True)))
    box = VirtualBox(imei, secret, Model.GP8000, port=gw.port, batch_size=4)
    await box.connect()
    await box.send_positions(recent, timeout=TIMEOUT)
    await box.send_positions(late, timeout=TIMEOUT)
    await box.close()

    assert await engine.stored_times(second_vehicle) == [r.time_ms for r in recent]
    assert await engine.stored_times(first_vehicle) == sorted(r.time_ms for r in late)
    # The late records did not move anything back in time.
    assert await engine.last_time(second_vehicle) == recent[-1].time_ms
    assert await engine.last_time(first_vehicle) == max(r.time_ms for r in late)
