"""Contract: bulk onboarding (`ImportRepo`) on each engine: all stored, or none."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo_async_mock import AsyncMongoMockCollection

from storage.errors import Conflict, NotFound
from storage.models import Device, DeviceModel, DeviceProtocol, Fitting, Fleet, Vehicle, new_id
from storage.mongo import MongoStore
from storage.mongo.schema import FITTINGS
from storage.repository import Store
from tests.storage.conftest import ENGINES_WITH_TRANSACTIONS, make_device

T0 = 1_714_564_800_000


@pytest.fixture(params=ENGINES_WITH_TRANSACTIONS)
def engine(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def _file(fleet_id: str, n: int) -> tuple[list[Vehicle], list[Device], list[Fitting]]:
    vehicles, devices, fittings = [], [], []
    for i in range(n):
        vehicle_id, device_id = new_id("veh"), new_id("dev")
        vehicles.append(
            Vehicle(vehicle_id, fleet_id, f"VIN{i:014d}", f"P{i}", "", T0, device_id=device_id)
        )
        devices.append(
            Device(
                id=device_id,
                fleet_id=fleet_id,
                imei=f"35000000000{i:04d}",
                model=DeviceModel.GP8000,
                secret=f"secret-{i}",
                created_ms=T0,
                vehicle_id=vehicle_id,
                protocol=DeviceProtocol.GP8,
            )
        )
        fittings.append(Fitting(fleet_id, device_id, vehicle_id, T0))
    return vehicles, devices, fittings


async def test_provision_stores_vehicles_boxes_and_fittings(store: Store, fleet: Fleet) -> None:
    vehicles, devices, fittings = _file(fleet.id, 3)
    await store.imports.provision(fleet.id, vehicles, devices, fittings)

    for vehicle, device in zip(vehicles, devices, strict=True):
        assert await store.vehicles.get(fleet.id, vehicle.id) == vehicle
        # The secret was sealed at rest and opens again on read.
        assert await store.devices.get_by_imei(device.imei) == device
        assert await store.devices.fittings(device.id) == [
            Fitting(fleet.id, device.id, vehicle.id, T0)
        ]
    vins, imeis = await store.imports.taken(
        fleet.id, [vehicles[0].vin, "VIN-unknown"], [devices[2].imei, "359999999999999"]
    )
    assert (vins, imeis) == ({vehicles[0].vin}, {devices[2].imei})
    # VINs are per fleet, IMEIs platform-wide.
    other = await store.fleets.create("other")
    assert await store.imports.taken(other.id, [vehicles[0].vin], [devices[0].imei]) == (
        set(),
        {devices[0].imei},
    )


async def test_provision_stores_nothing_when_one_box_is_taken(store: Store, fleet: Fleet) -> None:
    vehicles, devices, fittings = _file(fleet.id, 3)
    await make_device(store, fleet.id, devices[2].imei)  # taken since the file was checked

    with pytest.raises(Conflict):
        await store.imports.provision(fleet.id, vehicles, devices, fittings)

    for vehicle in vehicles:
        with pytest.raises(NotFound):
            await store.vehicles.get(fleet.id, vehicle.id)
    for device in devices[:2]:
        assert await store.devices.get_by_imei(device.imei) is None
    with pytest.raises(NotFound):
        await store.imports.provision("flt_unknown", *_file("flt_unknown", 1))


async def test_mongo_without_transactions_deletes_what_it_inserted_when_a_write_fails(
    store: Store, engine: str, fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    if engine != "mongo-fake":
        pytest.skip("the compensating delete is the path without transactions")
    assert isinstance(store, MongoStore)
    insert_many = AsyncMongoMockCollection.insert_many

    async def failing(self: Any, docs: Any, *args: Any, **kwargs: Any) -> Any:
        if self.name == FITTINGS:
            raise Conflict("the last write fails")
        return await insert_many(self, docs, *args, **kwargs)

    monkeypatch.setattr(AsyncMongoMockCollection, "insert_many", failing)
    vehicles, devices, fittings = _file(fleet.id, 2)

    with pytest.raises(Conflict):
        await store.imports.provision(fleet.id, vehicles, devices, fittings)

    assert (await store.vehicles.list(fleet.id)).items == []
    assert await store.devices.get_by_imei(devices[0].imei) is None
