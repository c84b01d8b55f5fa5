"""Contract: vehicles."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable

import pytest
from pymongo.asynchronous.client_session import AsyncClientSession

from storage.audit_chain import verify, walk
from storage.errors import Conflict, NotFound
from storage.models import AccessLogEntry, Fleet, Vehicle
from storage.mongo.audit_chain import ChainRace
from storage.mongo.resources import MongoVehicles
from storage.repository import Store
from tests.storage.conftest import ENGINES_WITH_TRANSACTIONS, make_device
from tests.storage.factories import access_entry
from tests.storage.fakes import FakeTransactions, record_inside


@pytest.fixture(params=ENGINES_WITH_TRANSACTIONS)
def engine(request: pytest.FixtureRequest) -> str:
    """A write and its access-log entry go in one transaction where MongoDB has them: every
    test here also runs on the fake with transactions."""
    name: str = request.param
    return name


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


def _log(fleet_id: str, action: str, resource_id: str | None = None) -> AccessLogEntry:
    return dataclasses.replace(access_entry(fleet_id, 1_000, action), resource_id=resource_id)


async def _chain(store: Store, fleet_id: str) -> list[AccessLogEntry]:
    return await store.access_log.chain(fleet_id)


async def test_writes_append_their_log_entry_with_them(store: Store, fleet: Fleet) -> None:
    vehicle = await store.vehicles.create(
        fleet.id, vin="VIN1", plate="P1", label="a", log=_log(fleet.id, "create")
    )
    await make_device(store, fleet.id, "350000000000004")
    await store.devices.fit(fleet.id, vehicle.id, "350000000000004", 100)
    await store.vehicles.update(
        fleet.id, vehicle.id, label="b", log=_log(fleet.id, "update", vehicle.id)
    )
    await store.vehicles.delete(fleet.id, vehicle.id, 500, log=_log(fleet.id, "delete", vehicle.id))
    chain = await _chain(store, fleet.id)
    # The new vehicle's entry names it: its id is made by the write.
    assert [(e.seq, e.action, e.resource_id) for e in chain] == [
        (1, "create", vehicle.id),
        (2, "update", vehicle.id),
        (3, "delete", vehicle.id),
    ]
    report = await verify(
        walk(lambda after, n: store.access_log.chain(fleet.id, after_seq=after, limit=n))
    )
    assert (report.entries, report.broken) == (3, None)


async def test_a_failed_write_logs_nothing(store: Store, fleet: Fleet, vehicle: Vehicle) -> None:
    other = await store.vehicles.create(fleet.id, vin="OTHERVIN", plate="P", label="L")
    with pytest.raises(Conflict):
        await store.vehicles.create(
            fleet.id, vin=vehicle.vin, plate="P", label="L", log=_log(fleet.id, "create")
        )
    with pytest.raises(Conflict):
        await store.vehicles.update(
            fleet.id, other.id, vin=vehicle.vin, log=_log(fleet.id, "update", other.id)
        )
    missing = "veh_doesnotexist"
    with pytest.raises(NotFound):
        await store.vehicles.update(fleet.id, missing, label="x", log=_log(fleet.id, "update"))
    with pytest.raises(NotFound):
        await store.vehicles.delete(fleet.id, missing, 1, log=_log(fleet.id, "delete"))
    assert await _chain(store, fleet.id) == []


class _RacedTransactions(FakeTransactions):
    """The first run loses the race for the chain's head (as the real transaction would, its
    writes undone): the write must be run again."""

    async def run(self, work: Callable[[AsyncClientSession], Awaitable[None]]) -> None:
        if self.runs == 0:
            self.runs += 1
            raise ChainRace("access_log")
        await super().run(work)


async def test_mongo_write_and_entry_share_one_transaction(
    engine: str, store: Store, fleet: Fleet
) -> None:
    if engine != "mongo-txn":
        pytest.skip("the transaction path: Mongo with transactions only")
    transactions = _RacedTransactions()
    vehicles = MongoVehicles(store._db, transactions)  # type: ignore[attr-defined]
    sessions = record_inside(store._db, transactions)  # type: ignore[attr-defined]
    vehicle = await vehicles.create(
        fleet.id, vin="VIN1", plate="P", label="L", log=_log(fleet.id, "create")
    )
    assert transactions.runs == 2  # lost the race once, then committed
    # The fleet check before, then the vehicle and its entry (head, insert) inside.
    assert sessions == [False, True, True, True]
    [entry] = await _chain(store, fleet.id)
    assert entry.resource_id == vehicle.id
