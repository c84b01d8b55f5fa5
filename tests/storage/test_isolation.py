"""Contract: one fleet's ids used through another fleet are NotFound; listings never leak."""

from __future__ import annotations

import pytest

from storage.errors import NotFound
from storage.models import DeviceModel, Fleet
from storage.repository import Store
from tests.storage.factories import access_entry, api_key, event, position


@pytest.fixture
async def populated(store: Store, fleet: Fleet, other_fleet: Fleet) -> dict[str, str]:
    """Fleet A with a key, a vehicle fitted with a box, telemetry and an access log entry."""
    key = await store.keys.create(api_key(fleet.id))
    vehicle = await store.vehicles.create(fleet.id, vin="VIN-A", plate="PA", label="a")
    device = await store.devices.create(
        fleet.id, imei="356938035643809", model=DeviceModel.GP8000, secret="k"
    )
    await store.devices.fit(fleet.id, vehicle.id, device.imei, 1_000)
    await store.telemetry.store(
        [position(fleet.id, device.id, vehicle.id, 2_000)],
        [event(fleet.id, device.id, vehicle.id, 2_000)],
    )
    await store.access_log.append(access_entry(fleet.id, 3_000))
    return {"key": key.id, "vehicle": vehicle.id, "device": device.id, "imei": device.imei}


async def test_ids_through_other_fleet_are_not_found(
    store: Store, other_fleet: Fleet, populated: dict[str, str]
) -> None:
    b = other_fleet.id
    with pytest.raises(NotFound):
        await store.keys.get(b, populated["key"])
    with pytest.raises(NotFound):
        await store.keys.revoke(b, populated["key"], 5_000)
    with pytest.raises(NotFound):
        await store.vehicles.get(b, populated["vehicle"])
    with pytest.raises(NotFound):
        await store.vehicles.update(b, populated["vehicle"], label="stolen")
    with pytest.raises(NotFound):
        await store.vehicles.delete(b, populated["vehicle"], 5_000)
    with pytest.raises(NotFound):
        await store.devices.get(b, populated["device"])
    with pytest.raises(NotFound):
        await store.devices.unfit(b, populated["vehicle"], 5_000)
    b_vehicle = await store.vehicles.create(b, vin="VIN-B", plate="PB", label="b")
    with pytest.raises(NotFound):  # fleet A's box onto fleet B's vehicle
        await store.devices.fit(b, b_vehicle.id, populated["imei"], 5_000)
    assert await store.telemetry.last_position(b, populated["vehicle"]) is None


async def test_failed_cross_fleet_calls_change_nothing(
    store: Store, fleet: Fleet, other_fleet: Fleet, populated: dict[str, str]
) -> None:
    for call in (
        store.keys.revoke(other_fleet.id, populated["key"], 5_000),
        store.vehicles.update(other_fleet.id, populated["vehicle"], label="stolen"),
        store.vehicles.delete(other_fleet.id, populated["vehicle"], 5_000),
        store.devices.unfit(other_fleet.id, populated["vehicle"], 5_000),
    ):
        with pytest.raises(NotFound):
            await call
    assert (await store.keys.get(fleet.id, populated["key"])).revoked_ms is None
    vehicle = await store.vehicles.get(fleet.id, populated["vehicle"])
    assert (vehicle.label, vehicle.device_id) == ("a", populated["device"])


async def test_listings_never_leak(
    store: Store, other_fleet: Fleet, populated: dict[str, str]
) -> None:
    b = other_fleet.id
    assert (await store.keys.list(b)).items == []
    assert (await store.keys.list(None)).items == []
    assert (await store.vehicles.list(b)).items == []
    assert (await store.devices.list(b)).items == []
    assert (await store.devices.list(b, imei=populated["imei"])).items == []
    assert await store.telemetry.last_positions(b) == []
    track = await store.telemetry.positions(b, populated["vehicle"], from_ms=0, to_ms=10**9)
    assert track.items == []
    assert (await store.telemetry.events(b)).items == []
    assert (await store.telemetry.events(b, vehicle_id=populated["vehicle"])).items == []
    assert (await store.access_log.list(b)).items == []
    assert (await store.access_log.list(None)).items == []


async def test_purge_of_other_fleet_leaves_data(
    store: Store, fleet: Fleet, other_fleet: Fleet, populated: dict[str, str]
) -> None:
    assert await store.telemetry.purge_before(other_fleet.id, 10**12) == 0
    track = await store.telemetry.positions(fleet.id, populated["vehicle"], from_ms=0, to_ms=10**9)
    assert len(track.items) == 1
