"""A live session re-reads its box's fitting history (gateway/connection.py) in the background:
a slow read never holds up an ACK, and the new history applies once it is in."""

from __future__ import annotations

import asyncio

import pytest

from gateway import TcpGateway
from storage.models import Fitting
from tests.gateway.conftest import TIMEOUT, new_box, track
from tests.gateway.fakes import FakeStore


async def test_a_slow_fittings_refresh_does_not_hold_up_acks(
    store: FakeStore, gateway: TcpGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("gateway.connection.FITTINGS_MAX_AGE_S", 0.0)  # refresh on every read
    box = new_box(store, gateway, batch_size=5)
    device = store.devices.by_imei[box.imei]
    store.devices.fit(device, "veh_old", from_ms=0)
    await box.connect()
    released = asyncio.Event()
    reads: list[str] = []

    async def slow_fittings(device_id: str) -> list[Fitting]:
        reads.append(device_id)
        await released.wait()
        return [Fitting(device.fleet_id, device.id, "veh_new", 0)]

    monkeypatch.setattr(store.devices, "fittings", slow_fittings)
    records = track(50)
    batches = [records[i : i + 5] for i in range(0, 50, 5)]
    async with asyncio.timeout(TIMEOUT):
        for batch in batches[:2]:
            await box.send_positions(batch)  # ACKed while the refresh hangs
    assert reads == [device.id]  # one refresh at a time
    assert box.acked == 10
    released.set()
    vehicles: list[str | None] = []
    async with asyncio.timeout(TIMEOUT):
        for batch in batches[2:]:
            await box.send_positions(batch)
            stored = store.telemetry.positions[(device.id, batch[0].time_ms)]
            vehicles.append(stored.vehicle_id)
            if stored.vehicle_id == "veh_new":
                break
    # The refresh lands within a read or two of its answer, and applies from then on.
    assert vehicles[-1] == "veh_new" and len(vehicles) <= 3, vehicles
    await box.close()
