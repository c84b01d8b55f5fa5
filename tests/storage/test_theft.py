"""Contract: theft cases (one open per vehicle, listing, stream), legal holds and retention."""

from __future__ import annotations

import dataclasses

import pytest

from storage.errors import Conflict, NotFound
from storage.models import (
    Event,
    Fleet,
    LegalHold,
    Position,
    StreamKind,
    TheftCase,
    TheftCaseStatus,
    TheftOutcome,
    Vehicle,
    new_id,
    now_ms,
)
from storage.repository import Store
from tests.storage.factories import event, position

T0 = 1_714_564_800_000
DAY_MS = 86_400_000


def case(fleet_id: str, vehicle_id: str, t: int = T0, **over: object) -> TheftCase:
    fields: dict[str, object] = {
        "id": new_id("thc"),
        "fleet_id": fleet_id,
        "vehicle_id": vehicle_id,
        "opened_ms": t,
        "reported_ms": t - 60_000,
        "started_ms": t - 600_000,
        "device_id": "dev_1",
        "note": "gone from the depot",
        "opened_by": "key_admin",
        "alert_id": "alr_1",
        "previous_interval_s": 30,
        "interval_command_id": "cmd_1",
        "updated_ms": t,
    }
    fields.update(over)
    return TheftCase(**fields)  # type: ignore[arg-type]


def hold_of(c: TheftCase) -> LegalHold:
    return LegalHold(c.id, c.fleet_id, c.vehicle_id, c.started_ms)


async def test_open_get_list_close(
    store: Store, fleet: Fleet, other_fleet: Fleet, vehicle: Vehicle
) -> None:
    first = case(fleet.id, vehicle.id)
    assert await store.theft_cases.create(first, hold_of(first)) == first
    assert await store.theft_cases.get(fleet.id, first.id) == first
    assert await store.theft_cases.open_case(fleet.id, vehicle.id) == first
    with pytest.raises(NotFound):
        await store.theft_cases.get(other_fleet.id, first.id)
    assert await store.theft_cases.open_case(other_fleet.id, vehicle.id) is None
    with pytest.raises(Conflict):  # one open case per vehicle
        second = case(fleet.id, vehicle.id, T0 + 1)
        await store.theft_cases.create(second, hold_of(second))
    with pytest.raises(NotFound):
        orphan = case("flt_missing", "veh_x")
        await store.theft_cases.create(orphan, hold_of(orphan))

    closed = dataclasses.replace(
        first,
        status=TheftCaseStatus.CLOSED,
        outcome=TheftOutcome.RECOVERED,
        closed_ms=T0 + 1000,
        closed_by="key_admin",
        hold_until_ms=T0 + 1000 + 90 * DAY_MS,
    )
    hold = dataclasses.replace(hold_of(first), until_ms=closed.hold_until_ms)
    assert await store.theft_cases.replace(closed, hold) == closed
    assert await store.theft_cases.get(fleet.id, first.id) == closed
    assert await store.theft_cases.open_case(fleet.id, vehicle.id) is None
    with pytest.raises(NotFound):
        await store.theft_cases.replace(dataclasses.replace(closed, fleet_id=other_fleet.id))
    # Closed, the vehicle may have a new case.
    later = case(fleet.id, vehicle.id, T0 + 2000)
    await store.theft_cases.create(later, hold_of(later))
    other = case(other_fleet.id, "veh_b")
    await store.theft_cases.create(other, hold_of(other))

    page = await store.theft_cases.list(fleet.id)
    assert [c.id for c in page.items] == [first.id, later.id]
    opened = await store.theft_cases.list(fleet.id, status=TheftCaseStatus.OPEN)
    assert opened.items == [later]
    assert (await store.theft_cases.list(fleet.id, vehicle_id="veh_b")).items == []
    one = await store.theft_cases.list(fleet.id, limit=1)
    assert one.next_cursor is not None
    rest = await store.theft_cases.list(fleet.id, limit=1, cursor=one.next_cursor)
    assert [c.id for c in rest.items] == [later.id] and rest.next_cursor is None

    holds = await store.theft_cases.holds(fleet.id, at_ms=T0 + 5000)
    assert {h.case_id for h in holds} == {first.id, later.id}
    after_hold = T0 + 1000 + 90 * DAY_MS
    assert [h.case_id for h in await store.theft_cases.holds(fleet.id, at_ms=after_hold)] == [
        later.id
    ]


async def test_cases_reach_the_stream(store: Store, fleet: Fleet, vehicle: Vehicle) -> None:
    head = await store.stream.head(fleet.id)
    opened = case(fleet.id, vehicle.id)
    await store.theft_cases.create(opened, hold_of(opened))
    closed = dataclasses.replace(opened, status=TheftCaseStatus.CLOSED)
    await store.theft_cases.replace(closed)
    page = await store.stream.after(fleet.id, head)
    assert [(e.kind, e.vehicle_id, e.item) for e in page.entries] == [
        (StreamKind.THEFT_CASE, vehicle.id, opened),
        (StreamKind.THEFT_CASE, vehicle.id, closed),
    ]


async def test_retention_skips_held_vehicles(store: Store, fleet: Fleet, vehicle: Vehicle) -> None:
    held_vehicle = vehicle.id
    free_vehicle = (await store.vehicles.create(fleet.id, vin="V2", plate="P2", label="L")).id
    old = 2_000
    records: list[tuple[Position, Event | None]] = []
    for vid, dev in ((held_vehicle, "dev_h"), (free_vehicle, "dev_f")):
        records.append((position(fleet.id, dev, vid, old), event(fleet.id, dev, vid, old)))
        # A newer last position, so the old one is history retention may delete.
        records.append((position(fleet.id, dev, vid, old + 10_000), None))
    await store.telemetry.store([p for p, _ in records], [e for _, e in records if e is not None])
    held = case(fleet.id, held_vehicle, now_ms())
    await store.theft_cases.create(held, hold_of(held))

    assert await store.telemetry.purge_before(fleet.id, old + 1) == 2  # the free one's two
    kept = await store.telemetry.positions(fleet.id, held_vehicle, from_ms=0, to_ms=10**6)
    assert [p.time_ms for p in kept.items] == [old, old + 10_000]
    assert len((await store.telemetry.events(fleet.id, vehicle_id=held_vehicle)).items) == 1

    # The hold ends its period after the case is closed: then retention applies again.
    expired = dataclasses.replace(hold_of(held), until_ms=now_ms() - 1)
    await store.theft_cases.replace(
        dataclasses.replace(held, status=TheftCaseStatus.CLOSED), expired
    )
    assert await store.telemetry.purge_before(fleet.id, old + 1) == 2


async def test_erasure_removes_cases_and_holds(
    store: Store, fleet: Fleet, other_fleet: Fleet
) -> None:
    for f in (fleet, other_fleet):
        c = case(f.id, f"veh_{f.id}")
        await store.theft_cases.create(c, hold_of(c))
    await store.fleets.delete(fleet.id)
    assert (await store.theft_cases.list(fleet.id)).items == []
    assert await store.theft_cases.holds(fleet.id, at_ms=T0) == []
    assert len((await store.theft_cases.list(other_fleet.id)).items) == 1
    assert len(await store.theft_cases.holds(other_fleet.id, at_ms=T0)) == 1
