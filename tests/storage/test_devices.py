"""Contract: boxes, fitting history, connection state."""

from __future__ import annotations

import pytest

from storage.errors import Conflict, NotFound
from storage.models import (
    DeviceConnection,
    DeviceModel,
    DeviceStatus,
    Fitting,
    Fleet,
    Transport,
    Vehicle,
)
from storage.repository import Store
from tests.storage.conftest import make_device

IMEI_1 = "356938035643809"
IMEI_2 = "356938035643810"


async def test_create_get(store: Store, fleet: Fleet) -> None:
    device = await store.devices.create(fleet.id, imei=IMEI_1, model=DeviceModel.GP8500, secret="k")
    assert device.id.startswith("dev_")
    assert (device.status, device.vehicle_id, device.model) == (
        DeviceStatus.ACTIVE,
        None,
        DeviceModel.GP8500,
    )
    assert await store.devices.get(fleet.id, device.id) == device
    assert await store.devices.get_by_imei(IMEI_1) == device
    assert await store.devices.get_by_imei(IMEI_2) is None


async def test_missing_is_not_found(store: Store, fleet: Fleet) -> None:
    with pytest.raises(NotFound):
        await store.devices.get(fleet.id, "dev_doesnotexist")
    with pytest.raises(NotFound):
        await store.devices.create(
            "flt_doesnotexist", imei=IMEI_1, model=DeviceModel.GP8000, secret="k"
        )


async def test_imei_unique_across_fleets(store: Store, fleet: Fleet, other_fleet: Fleet) -> None:
    await make_device(store, fleet.id, IMEI_1)
    with pytest.raises(Conflict):
        await make_device(store, fleet.id, IMEI_1)
    with pytest.raises(Conflict):
        await make_device(store, other_fleet.id, IMEI_1)
    assert (await store.devices.list(other_fleet.id)).items == []


async def test_list_filters(store: Store, fleet: Fleet, vehicle: Vehicle) -> None:
    a = await make_device(store, fleet.id, IMEI_1, DeviceModel.GP8000)
    b = await make_device(store, fleet.id, IMEI_2, DeviceModel.GP8500)
    await store.devices.fit(fleet.id, vehicle.id, IMEI_2, 10)

    async def ids(**filters: object) -> list[str]:
        return [d.id for d in (await store.devices.list(fleet.id, **filters)).items]  # type: ignore[arg-type]

    assert await ids() == sorted([a, b])
    assert await ids(imei=IMEI_1) == [a]
    assert await ids(model=DeviceModel.GP8500) == [b]
    assert await ids(fitted=True) == [b]
    assert await ids(fitted=False) == [a]


async def test_fit_links_both_ways(store: Store, fleet: Fleet, vehicle: Vehicle) -> None:
    device_id = await make_device(store, fleet.id, IMEI_1)
    fitting = await store.devices.fit(fleet.id, vehicle.id, IMEI_1, 1_000)
    assert fitting == Fitting(fleet.id, device_id, vehicle.id, from_ms=1_000, to_ms=None)
    assert (await store.vehicles.get(fleet.id, vehicle.id)).device_id == device_id
    assert (await store.devices.get(fleet.id, device_id)).vehicle_id == vehicle.id


async def test_unfit_ends_fitting_and_keeps_history(
    store: Store, fleet: Fleet, vehicle: Vehicle
) -> None:
    device_id = await make_device(store, fleet.id, IMEI_1)
    await store.devices.fit(fleet.id, vehicle.id, IMEI_1, 1_000)
    ended = await store.devices.unfit(fleet.id, vehicle.id, 2_000)
    assert ended == Fitting(fleet.id, device_id, vehicle.id, from_ms=1_000, to_ms=2_000)
    assert (await store.vehicles.get(fleet.id, vehicle.id)).device_id is None
    assert (await store.devices.get(fleet.id, device_id)).vehicle_id is None
    await store.devices.fit(fleet.id, vehicle.id, IMEI_1, 3_000)
    assert await store.devices.fittings(device_id) == [
        Fitting(fleet.id, device_id, vehicle.id, 1_000, 2_000),
        Fitting(fleet.id, device_id, vehicle.id, 3_000, None),
    ]


async def test_box_moved_to_new_vehicle_ends_old_fitting(
    store: Store, fleet: Fleet, vehicle: Vehicle
) -> None:
    device_id = await make_device(store, fleet.id, IMEI_1)
    second = await store.vehicles.create(fleet.id, vin="VIN-2", plate="P2", label="2")
    await store.devices.fit(fleet.id, vehicle.id, IMEI_1, 1_000)
    await store.devices.fit(fleet.id, second.id, IMEI_1, 2_000)
    assert await store.devices.fittings(device_id) == [
        Fitting(fleet.id, device_id, vehicle.id, 1_000, 2_000),
        Fitting(fleet.id, device_id, second.id, 2_000, None),
    ]
    assert (await store.vehicles.get(fleet.id, vehicle.id)).device_id is None
    assert (await store.vehicles.get(fleet.id, second.id)).device_id == device_id
    assert (await store.devices.get(fleet.id, device_id)).vehicle_id == second.id


async def test_new_box_replaces_vehicles_old_box(
    store: Store, fleet: Fleet, vehicle: Vehicle
) -> None:
    old = await make_device(store, fleet.id, IMEI_1)
    new = await make_device(store, fleet.id, IMEI_2)
    await store.devices.fit(fleet.id, vehicle.id, IMEI_1, 1_000)
    await store.devices.fit(fleet.id, vehicle.id, IMEI_2, 2_000)
    assert await store.devices.fittings(old) == [Fitting(fleet.id, old, vehicle.id, 1_000, 2_000)]
    assert await store.devices.fittings(new) == [Fitting(fleet.id, new, vehicle.id, 2_000, None)]
    assert (await store.devices.get(fleet.id, old)).vehicle_id is None
    assert (await store.vehicles.get(fleet.id, vehicle.id)).device_id == new


async def test_fit_again_to_same_vehicle_changes_nothing(
    store: Store, fleet: Fleet, vehicle: Vehicle
) -> None:
    device_id = await make_device(store, fleet.id, IMEI_1)
    first = await store.devices.fit(fleet.id, vehicle.id, IMEI_1, 1_000)
    again = await store.devices.fit(fleet.id, vehicle.id, IMEI_1, 5_000)
    assert again == first
    assert await store.devices.fittings(device_id) == [first]


async def test_fit_before_current_fitting_began_conflicts(
    store: Store, fleet: Fleet, vehicle: Vehicle
) -> None:
    device_id = await make_device(store, fleet.id, IMEI_1)
    second = await store.vehicles.create(fleet.id, vin="VIN-2", plate="P2", label="2")
    await store.devices.fit(fleet.id, vehicle.id, IMEI_1, 5_000)
    with pytest.raises(Conflict):
        await store.devices.fit(fleet.id, second.id, IMEI_1, 4_000)
    with pytest.raises(Conflict):
        await store.devices.unfit(fleet.id, vehicle.id, 4_000)
    # Nothing changed.
    assert await store.devices.fittings(device_id) == [
        Fitting(fleet.id, device_id, vehicle.id, 5_000)
    ]
    assert (await store.vehicles.get(fleet.id, second.id)).device_id is None


async def test_fit_unknown_vehicle_or_box_is_not_found(
    store: Store, fleet: Fleet, vehicle: Vehicle
) -> None:
    await make_device(store, fleet.id, IMEI_1)
    with pytest.raises(NotFound):
        await store.devices.fit(fleet.id, "veh_doesnotexist", IMEI_1, 1)
    with pytest.raises(NotFound):
        await store.devices.fit(fleet.id, vehicle.id, IMEI_2, 1)


async def test_unfit_with_nothing_fitted_is_not_found(store: Store, vehicle: Vehicle) -> None:
    with pytest.raises(NotFound):
        await store.devices.unfit(vehicle.fleet_id, vehicle.id, 1)
    with pytest.raises(NotFound):
        await store.devices.unfit(vehicle.fleet_id, "veh_doesnotexist", 1)


async def test_connection_state(store: Store, fleet: Fleet) -> None:
    device_id = await make_device(store, fleet.id, IMEI_1)
    assert await store.devices.connection(device_id) is None
    online = DeviceConnection(device_id, True, Transport.TCP, "gw-1", 1_000, "10.0.0.7:40000")
    await store.devices.set_connection(online)
    assert await store.devices.connection(device_id) == online
    offline = DeviceConnection(device_id, False, None, None, 2_000)
    await store.devices.set_connection(offline)
    assert await store.devices.connection(device_id) == offline


async def test_connection_of_unknown_box_is_ignored(store: Store) -> None:
    await store.devices.set_connection(DeviceConnection("dev_gone", True, Transport.MQTT, "gw", 1))
    assert await store.devices.connection("dev_gone") is None


async def test_refit_in_the_same_millisecond_orders_history(
    store: Store, fleet: Fleet, vehicle: Vehicle
) -> None:
    device_id = await make_device(store, fleet.id, IMEI_1)
    second = await store.vehicles.create(fleet.id, vin="VIN-2", plate="P2", label="2")
    await store.devices.fit(fleet.id, second.id, IMEI_1, 1_000)
    await store.devices.fit(fleet.id, vehicle.id, IMEI_1, 1_000)  # fitted to the wrong one
    assert await store.devices.fittings(device_id) == [
        Fitting(fleet.id, device_id, second.id, 1_000, 1_000),
        Fitting(fleet.id, device_id, vehicle.id, 1_000, None),
    ]
