"""Contract: a box's create, fit and unfit store the request's access-log entry with the write
(DeviceRepo), in one commit on SQLite and in one transaction where MongoDB has them."""

from __future__ import annotations

import dataclasses

import pytest

from storage.audit_chain import verify, walk
from storage.errors import Conflict, NotFound
from storage.models import AccessLogEntry, DeviceModel, Fleet, Vehicle
from storage.mongo.devices import MongoDevices
from storage.repository import Store
from tests.storage.conftest import ENGINES_WITH_TRANSACTIONS, make_device
from tests.storage.factories import access_entry
from tests.storage.fakes import FakeTransactions, record_inside

IMEI_1 = "356938035643809"
IMEI_2 = "356938035643810"


@pytest.fixture(params=ENGINES_WITH_TRANSACTIONS)
def engine(request: pytest.FixtureRequest) -> str:
    """Every test here also runs on the fake with transactions (the entry then joins the
    write's transaction)."""
    name: str = request.param
    return name


def _log(
    fleet_id: str, action: str, resource: str, resource_id: str | None = None
) -> AccessLogEntry:
    entry = access_entry(fleet_id, 1_000, action)
    return dataclasses.replace(entry, resource=resource, resource_id=resource_id, detail="")


async def _chain(store: Store, fleet_id: str) -> list[tuple[str, str, str | None, str]]:
    return [
        (e.action, e.resource, e.resource_id, e.detail)
        for e in await store.access_log.chain(fleet_id)
    ]


async def test_create_fit_and_unfit_append_entries_naming_the_box(
    store: Store, fleet: Fleet, vehicle: Vehicle
) -> None:
    entry = dataclasses.replace(_log(fleet.id, "create", "device"), detail=IMEI_1)
    device = await store.devices.create(
        fleet.id, imei=IMEI_1, model=DeviceModel.GP8000, secret="s", log=entry
    )
    fitted = await store.devices.fit(
        fleet.id, vehicle.id, IMEI_1, 100, log=_log(fleet.id, "fit", "vehicle", vehicle.id)
    )
    # Fitted there already: nothing changes, and the request is still logged.
    again = await store.devices.fit(
        fleet.id, vehicle.id, IMEI_1, 200, log=_log(fleet.id, "fit", "vehicle", vehicle.id)
    )
    ended = await store.devices.unfit(
        fleet.id, vehicle.id, 300, log=_log(fleet.id, "unfit", "vehicle", vehicle.id)
    )
    assert fitted == again and ended.to_ms == 300
    # The new box's entry names it (its id is made by the write); a fitting's names the box
    # the write found by its IMEI.
    assert await _chain(store, fleet.id) == [
        ("create", "device", device.id, IMEI_1),
        ("fit", "vehicle", vehicle.id, device.id),
        ("fit", "vehicle", vehicle.id, device.id),
        ("unfit", "vehicle", vehicle.id, device.id),
    ]
    report = await verify(
        walk(lambda after, n: store.access_log.chain(fleet.id, after_seq=after, limit=n))
    )
    assert (report.entries, report.broken) == (4, None)


async def test_a_failed_write_logs_nothing(store: Store, fleet: Fleet, vehicle: Vehicle) -> None:
    await make_device(store, fleet.id, IMEI_1)
    with pytest.raises(Conflict):  # the IMEI is taken
        await store.devices.create(
            fleet.id,
            imei=IMEI_1,
            model=DeviceModel.GP8000,
            secret="s",
            log=_log(fleet.id, "create", "device"),
        )
    fit = _log(fleet.id, "fit", "vehicle", vehicle.id)
    with pytest.raises(NotFound):
        await store.devices.fit(fleet.id, vehicle.id, IMEI_2, 100, log=fit)
    with pytest.raises(NotFound):
        await store.devices.fit(fleet.id, "veh_doesnotexist", IMEI_1, 100, log=fit)
    with pytest.raises(NotFound):  # nothing fitted yet
        await store.devices.unfit(fleet.id, vehicle.id, 100, log=fit)
    await store.devices.fit(fleet.id, vehicle.id, IMEI_1, 500)  # no entry given: none stored
    with pytest.raises(Conflict):  # would end the fitting before it began
        await store.devices.unfit(fleet.id, vehicle.id, 400, log=fit)
    assert await _chain(store, fleet.id) == []


@pytest.mark.parametrize("logged", [True, False], ids=["with-entry", "without-entry"])
async def test_mongo_fit_and_unfit_are_one_transaction_each(
    engine: str, store: Store, fleet: Fleet, vehicle: Vehicle, logged: bool
) -> None:
    """With the request's entry, it joins the fitting's transaction; without one (no request
    behind the write), the fitting's three collections are still written in one."""
    if engine != "mongo-txn":
        pytest.skip("the transaction path: Mongo with transactions only")
    await make_device(store, fleet.id, IMEI_1)
    transactions = FakeTransactions()
    devices = MongoDevices(store._db, store._secrets, transactions)  # type: ignore[attr-defined]
    sessions = record_inside(store._db, transactions)  # type: ignore[attr-defined]
    fit = _log(fleet.id, "fit", "vehicle", vehicle.id) if logged else None
    unfit = _log(fleet.id, "unfit", "vehicle", vehicle.id) if logged else None
    await devices.fit(fleet.id, vehicle.id, IMEI_1, 100, log=fit)
    await devices.unfit(fleet.id, vehicle.id, 200, log=unfit)
    assert transactions.runs == 2
    # Every read and write of the fitting, and the entry's, inside the transaction.
    assert sessions and all(sessions)
    assert len(await _chain(store, fleet.id)) == (2 if logged else 0)
