"""The geofence handler (tracking/geofences.py) on hand-made device batches: signals, stored
crossings and states, late records, restarts, storage failures, fence caching; then inside a
real processing stage."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from processing import DeviceBatch, ProcessingStage, Signal
from storage.models import FenceSide, Position
from storage.sqlite import SqliteStore
from tests.tracking.helpers import (
    T0,
    FakeGeofenceRepo,
    batch,
    east_of_border,
    fix,
    kinds,
    replace_fence,
    square_fence,
)
from tracking import GeofenceHandler

STEP_MS = 5_000
INSIDE = east_of_border(-200)
OUTSIDE = east_of_border(200)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def feed(
    handler: GeofenceHandler, where: tuple[float, float], start_ms: int, count: int, **kw: object
) -> list[Signal]:
    out: list[Signal] = []
    for i in range(count):
        out.extend(await handler.handle(batch(fix(start_ms + i * STEP_MS, where, **kw))))  # type: ignore[arg-type]
    return out


async def test_handle_enter_then_exit_signals_events_and_states() -> None:
    fence = square_fence(name="Depot", speed_limit_kmh=30.0)
    repo = FakeGeofenceRepo([fence])
    handler = GeofenceHandler(repo)
    entered = await feed(handler, INSIDE, T0, 8)
    assert [s.kind for s in entered] == ["geofence_enter"]
    (enter,) = entered
    assert enter.ref == fence.id and enter.vehicle_id == "veh_test"
    assert enter.device_id == "dev_test" and enter.fleet_id == fence.fleet_id
    assert enter.time_ms == T0 + 30_000 and enter.position is not None
    assert enter.position.time_ms == enter.time_ms
    assert enter.data["name"] == "Depot" and enter.data["speed_limit_kmh"] == 30.0
    assert enter.data["schedule"] is None
    (stored,) = repo.crossings
    assert enter.data["event_id"] == stored.id
    assert (stored.kind.value, stored.time_ms, stored.geofence_id) == (
        "enter",
        enter.time_ms,
        fence.id,
    )
    assert (stored.lat, stored.lon) == (enter.position.lat, enter.position.lon)
    exited = await feed(handler, OUTSIDE, T0 + 600_000, 8)
    assert [s.kind for s in exited] == ["geofence_exit"]
    assert kinds(repo.crossings) == ["enter", "exit"]
    assert repo.stored[("veh_test", fence.id)].side is FenceSide.OUTSIDE


async def test_handle_writes_only_on_change() -> None:
    repo = FakeGeofenceRepo([square_fence()])
    handler = GeofenceHandler(repo)
    await feed(handler, INSIDE, T0, 20)
    # The candidate at the first fix inside, the enter 30 s later; then nothing to store.
    assert repo.saves == 2
    assert repo.state_loads == 1  # loaded once, then kept in memory


async def test_handle_late_batch_never_flips_state() -> None:
    repo = FakeGeofenceRepo([square_fence()])
    handler = GeofenceHandler(repo)
    await feed(handler, INSIDE, T0, 8)
    # A buffered backlog replayed late: the stage gives it no live fix.
    for i in range(20):
        late = fix(T0 + 100_000 + i * STEP_MS, OUTSIDE)
        assert await handler.handle(batch(late, live=False)) == []
    # Even as "live" (say, the stage lost its memory), a fix older than the newest decided on
    # changes nothing.
    for i in range(20):
        assert await handler.handle(batch(fix(T0 - i * STEP_MS, OUTSIDE))) == []
    assert kinds(repo.crossings) == ["enter"]


async def test_handle_unfitted_box_or_no_fences_loads_nothing() -> None:
    repo = FakeGeofenceRepo([square_fence()])
    handler = GeofenceHandler(repo)
    assert await feed(handler, INSIDE, T0, 8, vehicle_id=None) == []
    assert repo.lists == 0 and repo.state_loads == 0
    other_fleet = fix(T0, INSIDE, fleet_id="flt_empty")
    assert await handler.handle(batch(other_fleet)) == []
    assert repo.lists == 1 and repo.state_loads == 0


async def test_handle_fence_for_other_vehicles_ignored() -> None:
    repo = FakeGeofenceRepo([square_fence(vehicle_ids=("veh_other",))])
    handler = GeofenceHandler(repo)
    assert await feed(handler, INSIDE, T0, 10) == []
    assert await feed(handler, INSIDE, T0, 10, vehicle_id="veh_other") != []


async def test_handle_state_survives_a_restart_fake_repo() -> None:
    repo = FakeGeofenceRepo([square_fence()])
    assert kinds_of(await feed(GeofenceHandler(repo), INSIDE, T0, 8)) == ["geofence_enter"]
    restarted = GeofenceHandler(repo)
    # Still inside for the new process: a fix inside is nothing, a fix outside is an exit.
    assert await feed(restarted, INSIDE, T0 + 100_000, 3) == []
    assert kinds_of(await feed(restarted, OUTSIDE, T0 + 200_000, 8)) == ["geofence_exit"]


async def test_handle_state_survives_a_restart_sqlite(tmp_path: Path) -> None:
    """The same through the real engine, closed and opened again in between."""
    path = tmp_path / "gp8.sqlite3"
    store = SqliteStore(path)
    await store.start()
    fleet = await store.fleets.create("f")
    vehicle = await store.vehicles.create(fleet.id, vin="VF1AAAAA000000001", plate="P", label="L")
    fence = await store.geofences.create(square_fence(fleet.id))
    kw = {"fleet_id": fleet.id, "vehicle_id": vehicle.id}
    try:
        entered = await feed(GeofenceHandler(store.geofences), INSIDE, T0, 8, **kw)
        assert kinds_of(entered) == ["geofence_enter"]
        # Half way to an exit when the process stops: the candidate is stored too.
        halfway = await feed(GeofenceHandler(store.geofences), OUTSIDE, T0 + 100_000, 3, **kw)
        assert halfway == []
    finally:
        await store.close()
    store = SqliteStore(path)
    await store.start()
    try:
        (state,) = await store.geofences.states(fleet.id, vehicle.id)
        assert state.side is FenceSide.INSIDE and state.candidate is FenceSide.OUTSIDE
        restarted = GeofenceHandler(store.geofences)
        exited = await feed(restarted, OUTSIDE, T0 + 115_000, 4, **kw)
        # The candidate started at T0 + 100 s before the restart: it commits 30 s after that.
        assert [(s.kind, s.time_ms) for s in exited] == [("geofence_exit", T0 + 130_000)]
        events = (await store.geofences.events(fleet.id, geofence_id=fence.id)).items
        assert kinds(events) == ["enter", "exit"]
    finally:
        await store.close()


async def test_handle_failed_save_retried_with_the_next_fix() -> None:
    repo = FakeGeofenceRepo([square_fence()])
    handler = GeofenceHandler(repo)
    await feed(handler, INSIDE, T0, 6)  # candidate stored, 25 s in
    repo.fail_saves = 1
    with pytest.raises(ConnectionError):
        await handler.handle(batch(fix(T0 + 30_000, INSIDE)))
    assert repo.crossings == []
    signals = await handler.handle(batch(fix(T0 + 35_000, INSIDE)))
    assert [(s.kind, s.time_ms) for s in signals] == [("geofence_enter", T0 + 35_000)]
    assert kinds(repo.crossings) == ["enter"]


async def test_fences_cached_for_ttl_and_invalidated() -> None:
    clock = Clock()
    repo = FakeGeofenceRepo()
    handler = GeofenceHandler(repo, ttl_s=30.0, clock=clock)
    assert await feed(handler, INSIDE, T0, 2) == []
    fence = await repo.create(square_fence())
    assert await feed(handler, INSIDE, T0 + 10_000, 10) == []  # not seen yet
    clock.now += 31.0
    assert kinds_of(await feed(handler, INSIDE, T0 + 100_000, 8)) == ["geofence_enter"]
    # A change through this process's API: used at once.
    await repo.replace(replace_fence(fence, name="Renamed", updated_ms=2_000))
    handler.invalidate(fence.fleet_id)
    exited = await feed(handler, OUTSIDE, T0 + 200_000, 8)
    assert [s.data["name"] for s in exited] == ["Renamed"]


async def test_fences_reload_failure_keeps_fences_in_hand() -> None:
    clock = Clock()
    repo = FakeGeofenceRepo([square_fence()])
    handler = GeofenceHandler(repo, ttl_s=30.0, clock=clock)
    await feed(handler, INSIDE, T0, 2)

    async def broken(*args: object, **kwargs: object) -> object:
        raise ConnectionError("storage down")

    repo.list = broken  # type: ignore[assignment, method-assign]
    clock.now += 31.0
    assert kinds_of(await feed(handler, INSIDE, T0 + 10_000, 8)) == ["geofence_enter"]
    assert handler.counters["fence_load_failures"] == 1  # retried after RETRY_AFTER_S only


async def test_deleted_fence_forgotten_in_memory() -> None:
    clock = Clock()
    fence = square_fence()
    repo = FakeGeofenceRepo([fence])
    handler = GeofenceHandler(repo, clock=clock)
    await feed(handler, INSIDE, T0, 8)
    await repo.delete(fence.fleet_id, fence.id)
    await repo.create(square_fence(name="other"))
    handler.invalidate()
    assert await feed(handler, OUTSIDE, T0 + 100_000, 8) == []  # no exit of a deleted fence


def kinds_of(signals: Sequence[Signal]) -> list[str]:
    return [s.kind for s in signals]


# --- in a processing stage ------------------------------------------------------------------------


@dataclass
class AlertRules:
    """Stands for the alert rules after the geofence handler: records the signals it sees."""

    name: str = "alert-rules"
    seen: list[Signal] = field(default_factory=list)

    async def handle(self, batch: DeviceBatch) -> Sequence[Position]:
        self.seen.extend(batch.signals)
        return ()


async def test_stage_hands_crossings_to_the_next_handler_and_ignores_a_late_replay() -> None:
    repo = FakeGeofenceRepo([square_fence()])
    rules = AlertRules()
    stage = ProcessingStage([GeofenceHandler(repo), rules])  # type: ignore[list-item]
    await stage.start()
    try:
        stage.offer([fix(T0 + i * STEP_MS, INSIDE) for i in range(8)], [])
        await stage.settle(5.0)
        # One flush is one batch: only its newest fix is live, so no dwell within it...
        assert rules.seen == []
        for i in range(8, 16):
            stage.offer([fix(T0 + i * STEP_MS, INSIDE)], [])
        await stage.settle(5.0)
        assert kinds_of(rules.seen) == ["geofence_enter"]
        # ...and a backlog replayed late, outside, is history only.
        stage.offer([fix(T0 - 60_000 + i * STEP_MS, OUTSIDE) for i in range(10)], [])
        await stage.settle(5.0)
        assert kinds_of(rules.seen) == ["geofence_enter"]
        assert stage.counters["failed"] == 0 and stage.counters["timeout"] == 0
    finally:
        await asyncio.wait_for(stage.stop(), 5.0)
