"""Contract: privacy facts and drivers, on every engine (storage/privacy.py)."""

from __future__ import annotations

import pytest

from storage.errors import Conflict, NotFound
from storage.models import Fleet, Vehicle
from storage.privacy import Driver, PrivacySchedule, PrivacyWindow, ScheduleChange
from storage.repository import Store

NIGHTS = PrivacySchedule("Europe/Paris", (PrivacyWindow((1, 2, 3, 4, 5), "19:00", "07:00"),))


async def test_schedule_history_toggles_and_badge(
    store: Store, fleet: Fleet, other_fleet: Fleet, vehicle: Vehicle
) -> None:
    await store.privacy.set_schedule(fleet.id, ScheduleChange(vehicle.id, 2_000, None, "k"))
    await store.privacy.set_schedule(fleet.id, ScheduleChange(vehicle.id, 1_000, NIGHTS, "k"))
    assert await store.privacy.add_toggles(fleet.id, vehicle.id, [5_000, 7_000]) == 2
    assert await store.privacy.add_toggles(fleet.id, vehicle.id, [5_000]) == 0  # idempotent
    await store.privacy.set_badge(fleet.id, 42)
    facts = await store.privacy.fleet(fleet.id)
    assert [(c.effective_ms, c.schedule) for c in facts.changes[vehicle.id]] == [
        (1_000, NIGHTS),
        (2_000, None),
    ]
    assert facts.toggles[vehicle.id] == (5_000, 7_000) and facts.badge == 42
    assert (await store.privacy.fleet(fleet.id, vehicle.id)).changes == facts.changes
    other = await store.privacy.fleet(other_fleet.id)
    assert not other.changes and not other.toggles and other.badge is None
    await store.privacy.set_badge(fleet.id, None)
    assert await store.privacy.badge(fleet.id) is None


async def test_facts_of_existing_vehicles_only(
    store: Store, fleet: Fleet, other_fleet: Fleet, vehicle: Vehicle
) -> None:
    gone = await store.vehicles.create(fleet.id, vin="VIN-GONE", plate="G", label="")
    theirs = await store.vehicles.create(other_fleet.id, vin="VIN-X", plate="X", label="")
    for v in (vehicle, gone, theirs):
        # theirs: filed under this fleet by mistake, as no vehicle of this fleet.
        await store.privacy.set_schedule(fleet.id, ScheduleChange(v.id, 1_000, NIGHTS))
        await store.privacy.add_toggles(fleet.id, v.id, [5_000])
    await store.vehicles.delete(fleet.id, gone.id, 2_000)
    kept = await store.privacy.fleet(fleet.id)  # a deleted vehicle's history is still read
    assert set(kept.changes) == set(kept.toggles) == {vehicle.id, gone.id, theirs.id}
    existing = await store.privacy.fleet(fleet.id, existing=True)
    assert set(existing.changes) == set(existing.toggles) == {vehicle.id}
    assert existing.changes[vehicle.id] == kept.changes[vehicle.id]
    assert existing.toggles[vehicle.id] == (5_000,)
    one = await store.privacy.fleet(fleet.id, gone.id, existing=True)
    assert not one.changes and not one.toggles
    assert not (await store.privacy.fleet(other_fleet.id, existing=True)).toggles


async def test_drivers_by_badge_per_fleet(store: Store, fleet: Fleet, other_fleet: Fleet) -> None:
    await store.drivers.create(Driver("drv_1", fleet.id, 77, "Ana", 1))
    with pytest.raises(Conflict):
        await store.drivers.create(Driver("drv_2", fleet.id, 77, "Bo", 2))
    await store.drivers.create(Driver("drv_3", other_fleet.id, 77, "Cy", 3))
    assert [d.name for d in await store.drivers.list(fleet.id)] == ["Ana"]
    with pytest.raises(NotFound):
        await store.drivers.delete(other_fleet.id, "drv_1")
    assert await store.drivers.delete_badge(fleet.id, 77) == 1
    assert await store.drivers.list(fleet.id) == []
