"""Contract: retention periods and the purge, export jobs, erasure, rectification and
offboarding (storage/retention.py), on every engine."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import pytest

from retention import RetentionService
from retention.purge import export_file
from storage.errors import Conflict, NotFound
from storage.models import (
    Alert,
    AlertKind,
    DeviceModel,
    Fleet,
    LegalHold,
    TheftCase,
    Vehicle,
    new_id,
)
from storage.repository import Store
from storage.retention import (
    DAY_MS,
    DEFAULT_RETENTION_DAYS,
    DataKind,
    ExportJob,
    ExportStatus,
    Offboarding,
    PurgeRun,
)
from tests.storage.factories import access_entry, event, position

NOW = 400 * DAY_MS
OLD = NOW - 100 * DAY_MS  # past the 61 days of positions and events
RECENT = NOW - DAY_MS


async def hold(store: Store, fleet_id: str, vehicle_id: str) -> None:
    case = TheftCase(
        id=new_id("thc"),
        fleet_id=fleet_id,
        vehicle_id=vehicle_id,
        opened_ms=OLD,
        reported_ms=OLD,
        started_ms=OLD,
    )
    await store.theft_cases.create(case, LegalHold(case.id, fleet_id, vehicle_id, OLD))


async def second_vehicle(store: Store, fleet_id: str) -> str:
    return (await store.vehicles.create(fleet_id, vin="VIN2", plate="P2", label="2")).id


async def test_rules_default_then_changed(store: Store, fleet: Fleet, other_fleet: Fleet) -> None:
    rules = await store.retention.get(fleet.id)
    assert rules.days == DEFAULT_RETENTION_DAYS
    assert rules.days[DataKind.POSITIONS] == 61
    assert rules.last_run is None

    changed = await store.retention.put(fleet.id, {DataKind.POSITIONS: 30}, at_ms=5, by="key_1")
    assert changed.days[DataKind.POSITIONS] == 30
    assert changed.days[DataKind.EVENTS] == 61
    assert await store.retention.get(fleet.id) == changed
    assert (await store.retention.get(other_fleet.id)).days == DEFAULT_RETENTION_DAYS

    run = PurgeRun(at_ms=9, deleted={"positions": 3})
    await store.retention.record_run(fleet.id, run)
    assert (await store.retention.get(fleet.id)).last_run == run
    with pytest.raises(NotFound):
        await store.retention.get("flt_missing")


async def test_purge_deletes_what_is_past_its_period_except_held(
    store: Store, fleet: Fleet, other_fleet: Fleet, vehicle: Vehicle
) -> None:
    held = await second_vehicle(store, fleet.id)
    await hold(store, fleet.id, held)
    await store.telemetry.store(
        [
            position(fleet.id, "dev_a", vehicle.id, OLD),
            position(fleet.id, "dev_a", vehicle.id, RECENT),
            position(fleet.id, "dev_h", held, OLD),
            position(other_fleet.id, "dev_o", None, OLD),
        ],
        [event(fleet.id, "dev_a", vehicle.id, OLD), event(fleet.id, "dev_h", held, OLD)],
    )
    await store.access_log.append(access_entry(fleet.id, OLD - 300 * DAY_MS))
    await store.access_log.append(access_entry(fleet.id, RECENT))
    await store.alerts.raise_alert(
        Alert(
            new_id("alr"),
            fleet.id,
            AlertKind.DUPLICATE_BOX,
            OLD - 300 * DAY_MS,
            vehicle_id=vehicle.id,
            cleared_ms=OLD,
            cleared_by="key",
        )
    )
    cutoffs = (await store.retention.get(fleet.id)).cutoffs(NOW)

    deleted = await store.retention.purge(fleet.id, cutoffs, at_ms=NOW)

    assert deleted["positions"] == 1
    assert deleted["events"] == 1
    assert deleted["access_log"] == 1
    assert deleted["alerts"] == 1
    track = await store.telemetry.positions(fleet.id, vehicle.id, from_ms=0, to_ms=NOW)
    assert [p.time_ms for p in track.items] == [RECENT]
    kept = await store.telemetry.positions(fleet.id, held, from_ms=0, to_ms=NOW)
    assert [p.time_ms for p in kept.items] == [OLD]  # under a theft case
    assert [e.vehicle_id for e in (await store.telemetry.events(fleet.id)).items] == [held]
    assert len(await store.telemetry.last_positions(other_fleet.id, bbox=None)) == 0
    assert await store.retention.purge(fleet.id, cutoffs, at_ms=NOW) == dict.fromkeys(deleted, 0)


async def test_purge_removes_a_last_position_past_its_period(
    store: Store, fleet: Fleet, vehicle: Vehicle
) -> None:
    await store.telemetry.store([position(fleet.id, "dev_a", vehicle.id, OLD)], [])
    cutoffs = (await store.retention.get(fleet.id)).cutoffs(NOW)
    deleted = await store.retention.purge(fleet.id, cutoffs, at_ms=NOW)
    assert (deleted["positions"], deleted["last_positions"]) == (1, 1)
    assert await store.telemetry.last_position(fleet.id, vehicle.id) is None


def job(fleet_id: str, created_ms: int = 1_000, **over: object) -> ExportJob:
    fields: dict[str, object] = {
        "id": new_id("exp"),
        "fleet_id": fleet_id,
        "vehicle_id": "veh_1",
        "driver_badge": None,
        "from_ms": 0,
        "to_ms": 10_000,
        "requested_by": "key_1",
        "created_ms": created_ms,
        "updated_ms": created_ms,
    }
    fields.update(over)
    return ExportJob(**fields)  # type: ignore[arg-type]


async def test_export_jobs_lifecycle(store: Store, fleet: Fleet, other_fleet: Fleet) -> None:
    first, second = job(fleet.id, 1_000), job(fleet.id, 2_000)
    await store.exports.create(first)
    await store.exports.create(second)
    assert await store.exports.get(fleet.id, first.id) == first
    with pytest.raises(NotFound):
        await store.exports.get(other_fleet.id, first.id)

    claimed = await store.exports.claim(5_000, 65_000)
    assert claimed is not None and claimed.id == first.id  # the oldest first
    assert claimed.status is ExportStatus.RUNNING and claimed.lease_ms == 65_000
    assert await store.exports.renew(first.id, 90_000)
    done = dataclasses.replace(
        claimed, status=ExportStatus.DONE, counts={"positions": 3}, file_name="f.zip"
    )
    assert await store.exports.finish(done)
    assert not await store.exports.finish(done)  # no longer running
    stored = await store.exports.get(fleet.id, first.id)
    assert (stored.status, stored.counts, stored.lease_ms) == (
        ExportStatus.DONE,
        {"positions": 3},
        None,
    )

    # A worker that died: its lease runs out and the job is failed, never left running.
    other = await store.exports.claim(6_000, 7_000)
    assert other is not None and other.id == second.id
    assert await store.exports.claim(6_000, 7_000) is None
    assert await store.exports.fail_stale(6_500) == 0
    assert await store.exports.fail_stale(7_001) == 1
    failed = await store.exports.get(fleet.id, second.id)
    assert failed.status is ExportStatus.FAILED and failed.error

    expired = await store.exports.expire(fleet.id, 1_500)
    assert [j.id for j in expired] == [first.id]
    with pytest.raises(NotFound):
        await store.exports.get(fleet.id, first.id)


async def test_driver_records_found_by_badge(store: Store, fleet: Fleet, vehicle: Vehicle) -> None:
    other = await second_vehicle(store, fleet.id)
    await store.telemetry.store(
        [position(fleet.id, "dev_a", vehicle.id, 1_000 + i, driver_badge=77) for i in range(5)]
        + [
            position(fleet.id, "dev_b", other, 1_002, driver_badge=77),
            position(fleet.id, "dev_b", other, 1_003, driver_badge=12),
        ],
        [event(fleet.id, "dev_a", vehicle.id, 1_001)],  # its position has badge 77
    )
    seen, cursor = [], None
    while True:
        page = await store.exports.driver_positions(
            fleet.id, 77, from_ms=0, to_ms=10_000, cursor=cursor, limit=2
        )
        seen += [(p.time_ms, p.device_id) for p in page.items]
        if (cursor := page.next_cursor) is None:
            break
    assert len(seen) == 6 and seen == sorted(seen)
    events = await store.exports.driver_events(fleet.id, 77, from_ms=0, to_ms=10_000)
    assert [e.time_ms for e in events.items] == [1_001]
    assert (await store.exports.driver_events(fleet.id, 12, from_ms=0, to_ms=10_000)).items == []


async def test_erase_vehicle(
    store: Store, fleet: Fleet, other_fleet: Fleet, vehicle: Vehicle
) -> None:
    await store.telemetry.store(
        [position(fleet.id, "dev_a", vehicle.id, t) for t in (1_000, 2_000)],
        [event(fleet.id, "dev_a", vehicle.id, 1_000)],
    )
    with pytest.raises(NotFound):
        await store.erasure.erase_vehicle(other_fleet.id, vehicle.id, NOW)
    counts = await store.erasure.erase_vehicle(fleet.id, vehicle.id, NOW)
    assert (counts["positions"], counts["events"], counts["last_positions"]) == (2, 1, 1)
    assert await store.telemetry.last_position(fleet.id, vehicle.id) is None
    assert (await store.telemetry.events(fleet.id)).items == []
    await store.vehicles.get(fleet.id, vehicle.id)  # the vehicle itself stays

    held = await second_vehicle(store, fleet.id)
    await hold(store, fleet.id, held)
    with pytest.raises(Conflict, match="legal hold"):
        await store.erasure.erase_vehicle(fleet.id, held, NOW)


async def test_erase_driver_recomputes_last_positions(
    store: Store, fleet: Fleet, vehicle: Vehicle
) -> None:
    await store.telemetry.store(
        [
            position(fleet.id, "dev_a", vehicle.id, 1_000, driver_badge=12),
            position(fleet.id, "dev_a", vehicle.id, 2_000, driver_badge=77),
        ],
        [event(fleet.id, "dev_a", vehicle.id, 2_000)],  # badge 77
    )
    counts = await store.erasure.erase_driver(fleet.id, 77, NOW)
    assert (counts["positions"], counts["events"]) == (1, 1)
    last = await store.telemetry.last_position(fleet.id, vehicle.id)
    assert last is not None and (last.time_ms, last.driver_badge) == (1_000, 12)
    assert (await store.exports.driver_positions(fleet.id, 77, from_ms=0, to_ms=NOW)).items == []


async def test_move_fitting(store: Store, fleet: Fleet, vehicle: Vehicle) -> None:
    right = await second_vehicle(store, fleet.id)
    device = await store.devices.create(
        fleet.id, imei="356938035643809", model=DeviceModel.GP8000, secret="s"
    )
    await store.telemetry.store(
        [position(fleet.id, device.id, vehicle.id, t) for t in (1_000, 2_000, 3_000)],
        [event(fleet.id, device.id, vehicle.id, 2_000)],
    )
    with pytest.raises(NotFound):
        await store.erasure.move_fitting(
            fleet.id, device.id, from_ms=0, to_ms=1, vehicle_id="veh_missing"
        )
    moved = await store.erasure.move_fitting(
        fleet.id, device.id, from_ms=1_500, to_ms=10_000, vehicle_id=right
    )
    assert moved == {"positions": 2, "events": 1}
    wrong = await store.telemetry.positions(fleet.id, vehicle.id, from_ms=0, to_ms=NOW)
    assert [p.time_ms for p in wrong.items] == [1_000]
    moved_track = await store.telemetry.positions(fleet.id, right, from_ms=0, to_ms=NOW)
    assert [(p.time_ms, p.vehicle_id) for p in moved_track.items] == [
        (2_000, right),
        (3_000, right),
    ]
    events = (await store.telemetry.events(fleet.id, vehicle_id=right)).items
    assert [(e.vehicle_id, e.position.vehicle_id) for e in events] == [(right, right)]
    last_wrong = await store.telemetry.last_position(fleet.id, vehicle.id)
    last_right = await store.telemetry.last_position(fleet.id, right)
    assert last_wrong is not None and last_wrong.time_ms == 1_000
    assert last_right is not None and last_right.time_ms == 3_000


async def test_offboarding_erases_the_fleet_and_keeps_a_report(
    store: Store, fleet: Fleet, other_fleet: Fleet, vehicle: Vehicle
) -> None:
    kept = await store.vehicles.create(other_fleet.id, vin="VINO", plate="O", label="O")
    await store.telemetry.store(
        [
            position(fleet.id, "dev_a", vehicle.id, 1_000),
            position(other_fleet.id, "dev_o", kept.id, 1_000),
        ],
        [],
    )
    await store.exports.create(job(fleet.id))
    started = Offboarding(fleet.id, fleet.name, started_ms=1_000, ends_ms=5_000, started_by="k")
    assert await store.retention.start_offboarding(started) == started
    with pytest.raises(Conflict):
        await store.retention.start_offboarding(started)
    assert await store.retention.offboarding(fleet.id) == started
    assert await store.retention.due_offboardings(4_999) == []
    assert await store.retention.due_offboardings(5_000) == [started]

    report = await store.retention.erase_offboarded(fleet.id, 5_001)

    assert report.erased_ms == 5_001
    assert report.deleted["positions"] == 1 and report.deleted["vehicles"] == 1
    assert report.deleted["exports"] == 1 and report.deleted["fleets"] == 1
    with pytest.raises(NotFound):
        await store.fleets.get(fleet.id)
    assert await store.retention.offboarding(fleet.id) == report  # outlives the fleet
    assert await store.retention.due_offboardings(10_000) == []
    assert await store.retention.erase_offboarded(fleet.id, 6_000) == report  # done once
    await store.fleets.get(other_fleet.id)
    assert len(await store.telemetry.last_positions(other_fleet.id)) == 1


async def test_purge_service_runs_by_itself_and_expires_export_files(
    store: Store, fleet: Fleet, vehicle: Vehicle, db_dir: Path
) -> None:
    """The service of gp8 serve (retention/purge.py) on this engine, with an injected clock."""
    await store.telemetry.store([position(fleet.id, "dev_a", vehicle.id, OLD)], [])
    old_export = await store.exports.create(job(fleet.id, created_ms=NOW - 8 * DAY_MS))
    fresh_export = await store.exports.create(job(fleet.id, created_ms=NOW - DAY_MS))
    exports_dir = db_dir / "exports"
    for j in (old_export, fresh_export):
        export_file(exports_dir, j).parent.mkdir(parents=True, exist_ok=True)
        export_file(exports_dir, j).write_bytes(b"zip")
    service = RetentionService(store, exports_dir=exports_dir, interval_s=0.01, clock=lambda: NOW)
    await service.start()
    try:
        deadline = time.monotonic() + 10
        while (await store.retention.get(fleet.id)).last_run is None:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
    finally:
        await service.stop()
    run = (await store.retention.get(fleet.id)).last_run
    assert run is not None and run.at_ms == NOW
    assert (run.deleted["positions"], run.deleted["exports"]) == (1, 1)
    assert not export_file(exports_dir, old_export).exists()
    assert export_file(exports_dir, fresh_export).exists()
    await store.exports.get(fleet.id, fresh_export.id)
