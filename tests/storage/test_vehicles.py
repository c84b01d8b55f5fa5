"""Contract: vehicles."""

from __future__ import annotations

import pytest

from storage.errors import Conflict, NotFound
from storage.models import Fleet, Vehicle
from storage.repository import Store
from tests.storage.conftest import make_device


async def test_create_get(store: Store, fleet: Fleet) -> None:
    vehicle = await store.vehicles.create(fleet.id, vin="VIN1", plate="P1", label="Truck")
    assert vehicle.fleet_id == fleet.id and vehicle.device_id is None
    assert vehicle.id.startswith("veh_")
    assert await store.vehicles.get(fleet.id, vehicle.id) == vehicle


async def test_missing_is_not_found(store: Store, fleet: Fleet) -> None:
    with pytest.raises(NotFound):
        await store.vehicles.get(fleet.id, "veh_doesnotexist")
    with pytest.raises(NotFound):
        await store.vehicles.update(fleet.id, "veh_doesnotexist", label="x")
    with pytest.raises(NotFound):
        await store.vehicles.delete(fleet.id, "veh_doesnotexist", 1)


async def test_create_in_missing_fleet_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.vehicles.create("flt_doesnotexist", vin="V", plate="P", label="L")


async def test_vin_unique_per_fleet_only(store: Store, fleet: Fleet, other_fleet: Fleet) -> None:
    await store.vehicles.create(fleet.id, vin="SAMEVIN", plate="P1", label="a")
    with pytest.raises(Conflict):
        await store.vehicles.create(fleet.id, vin="SAMEVIN", plate="P2", label="b")
    # Another fleet may hold a vehicle with the same VIN (a sold vehicle, a rental).
    elsewhere = await store.vehicles.create(other_fleet.id, vin="SAMEVIN", plate="P3", label="c")
    assert elsewhere.fleet_id == other_fleet.id
    assert len((await store.vehicles.list(fleet.id)).items) == 1


async def test_update_changes_only_given_fields(store: Store, vehicle: Vehicle) -> None:
    updated = await store.vehicles.update(vehicle.fleet_id, vehicle.id, plate="NEW-PLATE")
    assert updated.plate == "NEW-PLATE"
    assert (updated.vin, updated.label) == (vehicle.vin, vehicle.label)
    assert await store.vehicles.get(vehicle.fleet_id, vehicle.id) == updated
    unchanged = await store.vehicles.update(vehicle.fleet_id, vehicle.id)
    assert unchanged == updated


async def test_update_to_taken_vin_conflicts(store: Store, fleet: Fleet, vehicle: Vehicle) -> None:
    other = await store.vehicles.create(fleet.id, vin="OTHERVIN", plate="P", label="L")
    with pytest.raises(Conflict):
        await store.vehicles.update(fleet.id, other.id, vin=vehicle.vin)
    assert (await store.vehicles.get(fleet.id, other.id)).vin == "OTHERVIN"


async def test_get_many_reads_the_fleets_vehicles_among_the_ids(
    store: Store, fleet: Fleet, other_fleet: Fleet
) -> None:
    a = await store.vehicles.create(fleet.id, vin="VIN-A", plate="PA", label="a")
    b = await store.vehicles.create(fleet.id, vin="VIN-B", plate="PB", label="b")
    gone = await store.vehicles.create(fleet.id, vin="VIN-C", plate="PC", label="c")
    await store.vehicles.delete(fleet.id, gone.id, 1)
    elsewhere = await store.vehicles.create(other_fleet.id, vin="VIN-D", plate="PD", label="d")
    asked = [b.id, a.id, gone.id, elsewhere.id, "veh_doesnotexist", a.id]
    assert await store.vehicles.get_many(fleet.id, asked) == {a.id: a, b.id: b}
    assert await store.vehicles.get_many(other_fleet.id, asked) == {elsewhere.id: elsewhere}
    assert await store.vehicles.get_many(fleet.id, []) == {}


async def test_list_filters(store: Store, fleet: Fleet) -> None:
    a = await store.vehicles.create(fleet.id, vin="VIN-A", plate="PA", label="a")
    b = await store.vehicles.create(fleet.id, vin="VIN-B", plate="PB", label="b")
    await make_device(store, fleet.id, "350000000000001")
    await store.devices.fit(fleet.id, b.id, "350000000000001", 10)
    assert [v.id for v in (await store.vehicles.list(fleet.id, vin="VIN-A")).items] == [a.id]
    assert [v.id for v in (await store.vehicles.list(fleet.id, plate="PB")).items] == [b.id]
    assert [v.id for v in (await store.vehicles.list(fleet.id, fitted=True)).items] == [b.id]
    assert [v.id for v in (await store.vehicles.list(fleet.id, fitted=False)).items] == [a.id]
    assert (await store.vehicles.list(fleet.id, vin="VIN-A", plate="PB")).items == []


async def test_delete_unfits_the_box_and_keeps_history(store: Store, vehicle: Vehicle) -> None:
    fleet_id = vehicle.fleet_id
    device_id = await make_device(store, fleet_id, "350000000000002")
    await store.devices.fit(fleet_id, vehicle.id, "350000000000002", 100)
    await store.vehicles.delete(fleet_id, vehicle.id, 500)
    with pytest.raises(NotFound):
        await store.vehicles.get(fleet_id, vehicle.id)
    assert (await store.devices.get(fleet_id, device_id)).vehicle_id is None
    history = await store.devices.fittings(device_id)
    assert [(f.vehicle_id, f.from_ms, f.to_ms) for f in history] == [(vehicle.id, 100, 500)]


async def test_delete_never_ends_a_fitting_before_it_began(store: Store, vehicle: Vehicle) -> None:
    device_id = await make_device(store, vehicle.fleet_id, "350000000000003")
    await store.devices.fit(vehicle.fleet_id, vehicle.id, "350000000000003", 1_000)
    await store.vehicles.delete(vehicle.fleet_id, vehicle.id, 400)  # a clock behind
    [fitting] = await store.devices.fittings(device_id)
    assert (fitting.from_ms, fitting.to_ms) == (1_000, 1_000)
