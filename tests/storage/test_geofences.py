"""Contract: geofences, their per-vehicle states and crossings, on every engine."""

from __future__ import annotations

import dataclasses

import pytest

from storage.errors import InvalidCursor, NotFound
from storage.models import (
    FenceSide,
    Fleet,
    Geofence,
    GeofenceEvent,
    GeofenceEventKind,
    GeofenceSchedule,
    GeofenceState,
    Vehicle,
    new_id,
)
from storage.repository import Store

SQUARE = {
    "type": "Polygon",
    "coordinates": [[[2.30, 48.80], [2.40, 48.80], [2.40, 48.90], [2.30, 48.90], [2.30, 48.80]]],
}
SCHEDULE = GeofenceSchedule(
    timezone="Europe/Paris", days=(1, 2, 3, 4, 5), start="07:00", end="19:00"
)


def fence(fleet_id: str, name: str = "depot", **overrides: object) -> Geofence:
    fields: dict[str, object] = {
        "id": new_id("gfn"),
        "fleet_id": fleet_id,
        "name": name,
        "geometry": SQUARE,
        "created_ms": 1_000,
        "updated_ms": 1_000,
    }
    fields.update(overrides)
    return Geofence(**fields)  # type: ignore[arg-type]


def state(f: Geofence, vehicle_id: str, checked_ms: int, **overrides: object) -> GeofenceState:
    return dataclasses.replace(
        GeofenceState(fleet_id=f.fleet_id, vehicle_id=vehicle_id, geofence_id=f.id),
        checked_ms=checked_ms,
        **overrides,  # type: ignore[arg-type]
    )


def crossing(
    f: Geofence, vehicle_id: str, time_ms: int, kind: GeofenceEventKind = GeofenceEventKind.ENTER
) -> GeofenceEvent:
    return GeofenceEvent(
        id=new_id("gfe"),
        fleet_id=f.fleet_id,
        vehicle_id=vehicle_id,
        device_id="dev_1",
        geofence_id=f.id,
        kind=kind,
        time_ms=time_ms,
        lat=48.85,
        lon=2.35,
    )


async def test_create_get_round_trip(store: Store, fleet: Fleet) -> None:
    full = fence(
        fleet.id,
        radius_m=None,
        vehicle_ids=("veh_1", "veh_2"),
        schedule=SCHEDULE,
        margin_m=12.5,
        dwell_s=45,
        speed_limit_kmh=30.0,
    )
    circle = fence(
        fleet.id, "yard", geometry={"type": "Point", "coordinates": [2.35, 48.85]}, radius_m=150.0
    )
    for f in (full, circle):
        assert await store.geofences.create(f) == f
        assert await store.geofences.get(fleet.id, f.id) == f
    assert await store.geofences.count(fleet.id) == 2


async def test_create_fleet_missing_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.geofences.create(fence("flt_nope"))


async def test_get_other_fleet_not_found(store: Store, fleet: Fleet, other_fleet: Fleet) -> None:
    f = await store.geofences.create(fence(other_fleet.id))
    with pytest.raises(NotFound):
        await store.geofences.get(fleet.id, f.id)
    with pytest.raises(NotFound):
        await store.geofences.replace(dataclasses.replace(f, fleet_id=fleet.id, name="x"))
    with pytest.raises(NotFound):
        await store.geofences.delete(fleet.id, f.id)
    assert (await store.geofences.get(other_fleet.id, f.id)).name == "depot"


async def test_list_pages_in_id_order(store: Store, fleet: Fleet, other_fleet: Fleet) -> None:
    """Ids start with their creation time: id order is creation order (to the millisecond)."""
    made = [await store.geofences.create(fence(fleet.id, f"f{i}")) for i in range(5)]
    await store.geofences.create(fence(other_fleet.id, "theirs"))
    expected = sorted(made, key=lambda f: f.id)
    first = await store.geofences.list(fleet.id, limit=3)
    assert first.items == expected[:3]
    assert first.next_cursor is not None
    rest = await store.geofences.list(fleet.id, cursor=first.next_cursor, limit=3)
    assert rest.items == expected[3:]
    assert rest.next_cursor is None
    with pytest.raises(InvalidCursor):
        await store.geofences.list(fleet.id, cursor="garbage")


async def test_replace_keeps_creation_and_drops_states_of_vehicles_left_out(
    store: Store, fleet: Fleet
) -> None:
    f = await store.geofences.create(fence(fleet.id))
    await store.geofences.save(
        [
            state(f, "veh_keep", 10, side=FenceSide.INSIDE, since_ms=10),
            state(f, "veh_drop", 10, side=FenceSide.INSIDE, since_ms=10),
        ]
    )
    changed = dataclasses.replace(
        f, name="renamed", vehicle_ids=("veh_keep",), margin_m=5.0, updated_ms=2_000
    )
    assert await store.geofences.replace(changed) == changed
    assert await store.geofences.get(fleet.id, f.id) == changed
    assert [s.vehicle_id for s in await store.geofences.states(fleet.id, "veh_keep")] == [
        "veh_keep"
    ]
    assert await store.geofences.states(fleet.id, "veh_drop") == []
    # Back to "every vehicle": no state is dropped.
    await store.geofences.replace(dataclasses.replace(changed, vehicle_ids=None, updated_ms=3_000))
    assert len(await store.geofences.states(fleet.id, "veh_keep")) == 1


async def test_delete_drops_states_keeps_crossings(store: Store, fleet: Fleet) -> None:
    f = await store.geofences.create(fence(fleet.id))
    other = await store.geofences.create(fence(fleet.id, "other"))
    inside = state(f, "veh_1", 10, side=FenceSide.INSIDE, since_ms=10)
    await store.geofences.save([inside, state(other, "veh_1", 10)], [crossing(f, "veh_1", 10)])
    await store.geofences.delete(fleet.id, f.id)
    with pytest.raises(NotFound):
        await store.geofences.get(fleet.id, f.id)
    with pytest.raises(NotFound):
        await store.geofences.delete(fleet.id, f.id)
    assert [s.geofence_id for s in await store.geofences.states(fleet.id, "veh_1")] == [other.id]
    assert len((await store.geofences.events(fleet.id, geofence_id=f.id)).items) == 1


async def test_states_upsert_never_goes_back(store: Store, fleet: Fleet, vehicle: Vehicle) -> None:
    f = await store.geofences.create(fence(fleet.id))
    candidate = state(f, vehicle.id, 100, candidate=FenceSide.INSIDE, candidate_ms=100)
    await store.geofences.save([candidate])
    assert await store.geofences.states(fleet.id, vehicle.id) == [candidate]
    committed = state(f, vehicle.id, 200, side=FenceSide.INSIDE, since_ms=200)
    await store.geofences.save([committed])
    # A stale writer (an older decision) does not undo the newer one.
    await store.geofences.save([candidate])
    assert await store.geofences.states(fleet.id, vehicle.id) == [committed]
    assert await store.geofences.states(fleet.id, "veh_other") == []


async def test_save_crossing_twice_keeps_one(store: Store, fleet: Fleet) -> None:
    f = await store.geofences.create(fence(fleet.id))
    first = crossing(f, "veh_1", 500)
    again = dataclasses.replace(first, id=new_id("gfe"))  # derived again after a restart
    await store.geofences.save([state(f, "veh_1", 500)], [first])
    await store.geofences.save([state(f, "veh_1", 500)], [again])
    assert (await store.geofences.events(fleet.id)).items == [first]


async def test_save_for_a_deleted_fence_writes_nothing(store: Store, fleet: Fleet) -> None:
    f = await store.geofences.create(fence(fleet.id))
    await store.geofences.delete(fleet.id, f.id)
    await store.geofences.save([state(f, "veh_1", 10)], [crossing(f, "veh_1", 10)])
    assert await store.geofences.states(fleet.id, "veh_1") == []
    assert (await store.geofences.events(fleet.id)).items == []


async def test_events_filters_range_and_pages(
    store: Store, fleet: Fleet, other_fleet: Fleet
) -> None:
    a = await store.geofences.create(fence(fleet.id, "a"))
    b = await store.geofences.create(fence(fleet.id, "b"))
    theirs = await store.geofences.create(fence(other_fleet.id, "theirs"))
    events = [
        crossing(a, "veh_1", 1_000),
        crossing(b, "veh_1", 2_000),
        crossing(a, "veh_2", 3_000, GeofenceEventKind.EXIT),
        crossing(a, "veh_1", 4_000, GeofenceEventKind.EXIT),
    ]
    await store.geofences.save([], events)
    await store.geofences.save([], [crossing(theirs, "veh_9", 1_500)])
    assert (await store.geofences.events(fleet.id)).items == events
    by_fence = await store.geofences.events(fleet.id, geofence_id=a.id)
    assert [e.time_ms for e in by_fence.items] == [1_000, 3_000, 4_000]
    by_vehicle = await store.geofences.events(fleet.id, vehicle_id="veh_1", from_ms=1_500)
    assert [e.time_ms for e in by_vehicle.items] == [2_000, 4_000]
    both = await store.geofences.events(fleet.id, geofence_id=a.id, vehicle_id="veh_1", to_ms=4_000)
    assert [e.time_ms for e in both.items] == [1_000]
    page = await store.geofences.events(fleet.id, limit=3)
    assert page.items == events[:3] and page.next_cursor is not None
    rest = await store.geofences.events(fleet.id, cursor=page.next_cursor, limit=3)
    assert rest.items == events[3:] and rest.next_cursor is None
    with pytest.raises(InvalidCursor):
        await store.geofences.events(
            fleet.id, cursor=(await store.geofences.list(fleet.id, limit=1)).next_cursor
        )


async def test_purge_before_deletes_old_crossings(store: Store, fleet: Fleet) -> None:
    f = await store.geofences.create(fence(fleet.id))
    await store.geofences.save([], [crossing(f, "veh_1", t) for t in (1_000, 2_000, 3_000)])
    assert await store.geofences.purge_before(fleet.id, 2_500) == 2
    assert [e.time_ms for e in (await store.geofences.events(fleet.id)).items] == [3_000]


async def test_purge_keeps_the_crossings_of_a_vehicle_under_legal_hold(
    store: Store, fleet: Fleet, vehicle: Vehicle
) -> None:
    from tests.storage.test_theft import case, hold_of

    f = await store.geofences.create(fence(fleet.id))
    await store.geofences.save(
        [], [crossing(f, vehicle_id, t) for vehicle_id in ("veh_other", vehicle.id) for t in (1, 2)]
    )
    stolen = case(fleet.id, vehicle.id)
    await store.theft_cases.create(stolen, hold_of(stolen))
    assert await store.geofences.purge_before(fleet.id, 10) == 2  # the other vehicle's only
    kept = (await store.geofences.events(fleet.id)).items
    assert {e.vehicle_id for e in kept} == {vehicle.id} and len(kept) == 2


async def test_fleet_erasure_erases_fences_states_crossings(
    store: Store, fleet: Fleet, other_fleet: Fleet
) -> None:
    gone = await store.geofences.create(fence(fleet.id))
    kept = await store.geofences.create(fence(other_fleet.id))
    for f, vehicle_id in ((gone, "veh_a"), (kept, "veh_b")):
        await store.geofences.save(
            [state(f, vehicle_id, 10, side=FenceSide.INSIDE, since_ms=10)],
            [crossing(f, vehicle_id, 10)],
        )
    await store.fleets.delete(fleet.id)
    with pytest.raises(NotFound):
        await store.geofences.get(fleet.id, gone.id)
    assert await store.geofences.count(fleet.id) == 0
    assert await store.geofences.states(fleet.id, "veh_a") == []
    assert (await store.geofences.events(fleet.id)).items == []
    assert await store.geofences.get(other_fleet.id, kept.id) == kept
    assert len(await store.geofences.states(other_fleet.id, "veh_b")) == 1
    assert len((await store.geofences.events(other_fleet.id)).items) == 1
