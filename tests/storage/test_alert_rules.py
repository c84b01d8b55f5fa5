"""Contract: alert incidents (one open alert per incident, ack, close, filters), alert rules and
badge policies with their lazy defaults, parked guards (compare-and-set), erasure."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from pathlib import Path

import pytest
from pymongo_async_mock import AsyncMongoMockClient

from storage.errors import NotFound
from storage.models import (
    Alert,
    AlertKind,
    AlertRule,
    AlertRuleType,
    AlertState,
    Fleet,
    GeofenceSchedule,
    GuardState,
    GuardStatus,
    Severity,
    StreamKind,
    TrackingPolicy,
    Vehicle,
    alert_state,
    new_id,
)
from storage.mongo import MongoStore
from storage.repository import Store
from storage.sqlite import SqliteStore

T0 = 1_714_564_800_000


def incident(fleet_id: str, vehicle_id: str, kind: AlertKind, t: int, **over: object) -> Alert:
    fields: dict[str, object] = {
        "id": new_id("alr"),
        "fleet_id": fleet_id,
        "kind": kind,
        "raised_ms": t,
        "device_id": "dev_1",
        "vehicle_id": vehicle_id,
        "detail": f"{kind.value} at {t}",
        "severity": Severity.CRITICAL,
        "first_ms": t,
        "last_ms": t,
        "lat": 48.85,
        "lon": 2.35,
        "speed_kmh": 12.0,
        "updated_ms": t,
    }
    fields.update(over)
    return Alert(**fields)  # type: ignore[arg-type]


async def test_trigger_folds_repeats_into_one_alert_until_closed(
    store: Store, fleet: Fleet, vehicle: Vehicle
) -> None:
    first, new = await store.alerts.trigger(incident(fleet.id, vehicle.id, AlertKind.OVERSPEED, T0))
    assert new and first.count == 1
    again, new = await store.alerts.trigger(
        incident(fleet.id, vehicle.id, AlertKind.OVERSPEED, T0 + 5_000, count=3, lat=48.9)
    )
    assert not new and again.id == first.id
    assert (again.count, again.first_ms, again.last_ms, again.lat) == (4, T0, T0 + 5_000, 48.9)
    # A late trigger adds to the count and may move first_ms back, not the latest position.
    late, _ = await store.alerts.trigger(
        incident(fleet.id, vehicle.id, AlertKind.OVERSPEED, T0 - 1_000, lat=1.0)
    )
    assert (late.id, late.count, late.first_ms, late.last_ms, late.lat) == (
        first.id,
        5,
        T0 - 1_000,
        T0 + 5_000,
        48.9,
    )
    # Another ref, kind or vehicle is another incident.
    fenced, new = await store.alerts.trigger(
        incident(fleet.id, vehicle.id, AlertKind.OVERSPEED, T0, ref="geo_1")
    )
    assert new and fenced.id != first.id

    closed = await store.alerts.close_incident(
        fleet.id,
        vehicle_id=vehicle.id,
        device_id="dev_1",
        kind=AlertKind.OVERSPEED,
        ref=None,
        at_ms=T0 + 9_000,
        reason="speed back under the limit",
    )
    assert closed is not None and closed.id == first.id
    assert (closed.cleared_ms, closed.cleared_by, closed.close_reason) == (
        T0 + 9_000,
        "system",
        "speed back under the limit",
    )
    assert alert_state(closed) is AlertState.CLOSED
    assert (
        await store.alerts.close_incident(
            fleet.id,
            vehicle_id=vehicle.id,
            device_id="dev_1",
            kind=AlertKind.OVERSPEED,
            ref=None,
            at_ms=T0 + 9_500,
            reason="again",
        )
        is None
    )
    # The next trigger opens a new incident.
    reopened, new = await store.alerts.trigger(
        incident(fleet.id, vehicle.id, AlertKind.OVERSPEED, T0 + 60_000)
    )
    assert new and reopened.id != first.id


async def test_concurrent_triggers_make_one_alert(
    store: Store, fleet: Fleet, vehicle: Vehicle
) -> None:
    results = await asyncio.gather(
        *(
            store.alerts.trigger(incident(fleet.id, vehicle.id, AlertKind.TOWING, T0 + i))
            for i in range(5)
        )
    )
    assert len({alert.id for alert, _ in results}) == 1
    assert sum(new for _, new in results) == 1
    (alert,) = (await store.alerts.list(fleet.id, kinds=[AlertKind.TOWING])).items
    assert alert.count == 5


async def test_manual_clear_ends_the_incident(store: Store, fleet: Fleet, vehicle: Vehicle) -> None:
    alert, _ = await store.alerts.trigger(incident(fleet.id, vehicle.id, AlertKind.SOS, T0))
    await store.alerts.clear(fleet.id, alert.id, by="key_admin", at_ms=T0 + 1)
    again, new = await store.alerts.trigger(incident(fleet.id, vehicle.id, AlertKind.SOS, T0 + 2))
    assert new and again.id != alert.id


async def test_acknowledge_keeps_the_first(
    store: Store, fleet: Fleet, other_fleet: Fleet, vehicle: Vehicle
) -> None:
    alert, _ = await store.alerts.trigger(incident(fleet.id, vehicle.id, AlertKind.TAMPER, T0))
    with pytest.raises(NotFound):
        await store.alerts.acknowledge(other_fleet.id, alert.id, by="k", at_ms=T0, note="x")
    acked = await store.alerts.acknowledge(
        fleet.id, alert.id, by="key_1", at_ms=T0 + 10, note="called the driver"
    )
    assert (acked.acked_ms, acked.acked_by, acked.ack_note) == (
        T0 + 10,
        "key_1",
        "called the driver",
    )
    assert alert_state(acked) is AlertState.ACKNOWLEDGED
    second = await store.alerts.acknowledge(fleet.id, alert.id, by="key_2", at_ms=T0 + 20, note="")
    assert second == acked
    # Still the open incident: a repeat updates it.
    bumped, new = await store.alerts.trigger(
        incident(fleet.id, vehicle.id, AlertKind.TAMPER, T0 + 30)
    )
    assert not new and bumped.id == alert.id and bumped.acked_by == "key_1"
    with pytest.raises(NotFound):
        await store.alerts.acknowledge(fleet.id, "alr_missing", by="k", at_ms=T0, note="")


async def test_list_filters_and_newest_first(
    store: Store, fleet: Fleet, other_fleet: Fleet, vehicle: Vehicle
) -> None:
    made = []
    for i, kind in enumerate([AlertKind.SOS, AlertKind.OVERSPEED, AlertKind.TOWING]):
        alert, _ = await store.alerts.trigger(incident(fleet.id, vehicle.id, kind, T0 + i * 1000))
        made.append(alert)
    other, _ = await store.alerts.trigger(incident(fleet.id, "veh_other", AlertKind.SOS, T0 + 5000))
    await store.alerts.trigger(incident(other_fleet.id, "veh_x", AlertKind.SOS, T0))
    await store.alerts.acknowledge(fleet.id, made[1].id, by="k", at_ms=T0 + 9, note="")
    await store.alerts.clear(fleet.id, made[2].id, by="k", at_ms=T0 + 9)
    all_ids = [a.id for a in (await store.alerts.list(fleet.id)).items]
    assert all_ids == [*(a.id for a in made), other.id]

    async def ids(**filters: object) -> list[str]:
        page = await store.alerts.list(fleet.id, **filters)  # type: ignore[arg-type]
        return [a.id for a in page.items]

    assert await ids(newest_first=True) == list(reversed(all_ids))
    assert await ids(kinds=[AlertKind.SOS]) == [made[0].id, other.id]
    assert await ids(kinds=[]) == []
    assert await ids(vehicle_id=vehicle.id, state=AlertState.OPEN) == [made[0].id]
    assert await ids(state=AlertState.ACKNOWLEDGED) == [made[1].id]
    assert await ids(state=AlertState.CLOSED) == [made[2].id]
    assert await ids(open_only=True) == [made[0].id, made[1].id, other.id]
    assert await ids(from_ms=T0 + 1000, to_ms=T0 + 2001) == [made[1].id, made[2].id]
    # Pages in both directions, no gaps or repeats.
    for newest_first in (False, True):
        seen: list[str] = []
        cursor = None
        while True:
            page = await store.alerts.list(
                fleet.id, limit=1, cursor=cursor, newest_first=newest_first
            )
            seen += [a.id for a in page.items]
            cursor = page.next_cursor
            if cursor is None:
                break
        assert seen == (list(reversed(all_ids)) if newest_first else all_ids)


async def test_incident_changes_reach_the_stream(
    store: Store, fleet: Fleet, vehicle: Vehicle
) -> None:
    head = await store.stream.head(fleet.id)
    alert, _ = await store.alerts.trigger(incident(fleet.id, vehicle.id, AlertKind.CRASH, T0))
    await store.alerts.trigger(incident(fleet.id, vehicle.id, AlertKind.CRASH, T0 + 1))
    await store.alerts.acknowledge(fleet.id, alert.id, by="k", at_ms=T0 + 2, note="seen")
    await store.alerts.close_incident(
        fleet.id,
        vehicle_id=vehicle.id,
        device_id="dev_1",
        kind=AlertKind.CRASH,
        ref=None,
        at_ms=T0 + 3,
        reason="done",
    )
    page = await store.stream.after(fleet.id, head)
    alerts = [e.item for e in page.entries if e.kind is StreamKind.ALERT]
    assert [(a.count, a.acked_by, a.cleared_ms) for a in alerts] == [  # type: ignore[attr-defined]
        (1, None, None),
        (2, None, None),
        (2, "k", None),
        (2, "k", T0 + 3),
    ]


async def test_command_alerts_read_with_the_defaults(
    store: Store, fleet: Fleet, vehicle: Vehicle
) -> None:
    dup = Alert(new_id("alr"), fleet.id, AlertKind.DUPLICATE_BOX, T0, "dev_1", vehicle.id)
    await store.alerts.raise_alert(dup)
    got = await store.alerts.get(fleet.id, dup.id)
    assert got == dup
    assert (got.severity, got.count, got.ack_note, got.ref) == (Severity.WARNING, 1, "", None)


def rule(fleet_id: str, type_: AlertRuleType, t: int = T0, **over: object) -> AlertRule:
    fields: dict[str, object] = {
        "id": new_id("arl"),
        "fleet_id": fleet_id,
        "type": type_,
        "name": type_.value,
        "created_ms": t,
        "updated_ms": t,
    }
    fields.update(over)
    return AlertRule(**fields)  # type: ignore[arg-type]


async def test_rules_crud(store: Store, fleet: Fleet, other_fleet: Fleet) -> None:
    overspeed = rule(
        fleet.id,
        AlertRuleType.OVERSPEED,
        severity=Severity.CRITICAL,
        speed_limit_kmh=90.0,
        min_duration_s=30,
        geofence_ids=("geo_1",),
        muted_vehicle_ids=("veh_1", "veh_2"),
    )
    hours = rule(
        fleet.id,
        AlertRuleType.OUTSIDE_HOURS,
        T0 + 1,
        schedule=GeofenceSchedule("Europe/Paris", (1, 2, 3), "07:00", "19:00"),
    )
    await store.alert_rules.create(overspeed)
    await store.alert_rules.create(hours)
    assert await store.alert_rules.list(fleet.id) == [overspeed, hours]
    assert await store.alert_rules.get(fleet.id, hours.id) == hours
    assert await store.alert_rules.list(other_fleet.id) == []
    with pytest.raises(NotFound):
        await store.alert_rules.get(other_fleet.id, hours.id)
    with pytest.raises(NotFound):
        await store.alert_rules.create(rule("flt_missing", AlertRuleType.NO_BADGE))

    changed = dataclasses.replace(overspeed, enabled=False, muted_vehicle_ids=())
    assert await store.alert_rules.replace(changed) == changed
    assert await store.alert_rules.get(fleet.id, overspeed.id) == changed
    with pytest.raises(NotFound):
        await store.alert_rules.replace(dataclasses.replace(changed, fleet_id=other_fleet.id))
    with pytest.raises(NotFound):
        await store.alert_rules.delete(other_fleet.id, hours.id)
    await store.alert_rules.delete(fleet.id, hours.id)
    assert await store.alert_rules.list(fleet.id) == [changed]


async def test_defaults_are_made_once(store: Store, fleet: Fleet) -> None:
    defaults = [rule(fleet.id, AlertRuleType.BOX_ALARM, default=True)]
    assert (await store.alert_rules.policy(fleet.id)).defaults_ms is None
    results = await asyncio.gather(
        *(store.alert_rules.ensure_defaults(fleet.id, defaults, T0) for _ in range(3))
    )
    assert sorted(results) == [False, False, True]
    assert await store.alert_rules.list(fleet.id) == defaults
    # Deleted defaults stay deleted.
    await store.alert_rules.delete(fleet.id, defaults[0].id)
    again = [rule(fleet.id, AlertRuleType.BOX_ALARM, default=True)]
    assert not await store.alert_rules.ensure_defaults(fleet.id, again, T0 + 1)
    assert await store.alert_rules.list(fleet.id) == []
    assert (await store.alert_rules.policy(fleet.id)).defaults_ms == T0
    with pytest.raises(NotFound):
        await store.alert_rules.ensure_defaults("flt_missing", [], T0)


async def test_badge_policy(store: Store, fleet: Fleet, other_fleet: Fleet) -> None:
    assert await store.alert_rules.policy(fleet.id) == TrackingPolicy(fleet.id)
    policy = TrackingPolicy(fleet.id, True, (77, 2**62), updated_ms=T0, updated_by="key_1")
    assert await store.alert_rules.put_policy(policy) == policy
    assert await store.alert_rules.policy(fleet.id) == policy
    assert await store.alert_rules.policy(other_fleet.id) == TrackingPolicy(other_fleet.id)
    # The defaults mark survives a policy change, and the policy the defaults.
    await store.alert_rules.ensure_defaults(fleet.id, [], T0 + 5)
    stored = await store.alert_rules.put_policy(dataclasses.replace(policy, badges=(1,)))
    assert (stored.badges, stored.defaults_ms) == ((1,), T0 + 5)
    assert (await store.alert_rules.policy(fleet.id)).require_badge


async def test_guard_states_compare_and_set(
    store: Store, fleet: Fleet, other_fleet: Fleet, vehicle: Vehicle
) -> None:
    assert await store.guards.get(fleet.id, vehicle.id) is None
    armed = GuardState(
        fleet.id,
        vehicle.id,
        GuardStatus.ARMED,
        since_ms=T0,
        device_id="dev_1",
        lat=48.85,
        lon=2.35,
        parked_ms=T0 - 300_000,
        checked_ms=T0,
        reason="parked",
        updated_ms=T0,
        updated_by="system",
    )
    saved = await store.guards.save(armed, expected_revision=0)
    assert saved == dataclasses.replace(armed, revision=1)
    assert await store.guards.save(armed, expected_revision=0) is None  # someone came first
    assert await store.guards.get(fleet.id, vehicle.id) == saved
    assert await store.guards.get(other_fleet.id, vehicle.id) is None
    triggered = dataclasses.replace(saved, status=GuardStatus.TRIGGERED, alert_id="alr_1")
    assert await store.guards.save(triggered, expected_revision=2) is None
    done = await store.guards.save(triggered, expected_revision=1)
    assert done is not None and done.revision == 2
    assert await store.guards.list(fleet.id) == [done]


async def test_erasure_removes_rules_guards_and_incidents(
    store: Store, fleet: Fleet, other_fleet: Fleet, vehicle: Vehicle
) -> None:
    for f in (fleet, other_fleet):
        await store.alert_rules.ensure_defaults(f.id, [rule(f.id, AlertRuleType.NO_BADGE)], T0)
        await store.alert_rules.put_policy(TrackingPolicy(f.id, True, (1,)))
        await store.guards.save(GuardState(f.id, f"veh_{f.id}"), expected_revision=0)
        await store.alerts.trigger(incident(f.id, f"veh_{f.id}", AlertKind.SOS, T0))
    await store.fleets.delete(fleet.id)
    assert await store.alert_rules.list(fleet.id) == []
    assert await store.alert_rules.policy(fleet.id) == TrackingPolicy(fleet.id)
    assert await store.guards.list(fleet.id) == []
    assert len(await store.alert_rules.list(other_fleet.id)) == 1
    assert (await store.alert_rules.policy(other_fleet.id)).require_badge
    assert len(await store.guards.list(other_fleet.id)) == 1
    assert len((await store.alerts.list(other_fleet.id)).items) == 1


# The alerts table as gp8 made it before the incidents existed (storage/sqlite/command_schema.py
# at that time), with one duplicate-box alert in it.
_OLD_ALERTS = """
CREATE TABLE alerts (
    id TEXT PRIMARY KEY,
    fleet_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    raised_ms INTEGER NOT NULL,
    device_id TEXT,
    vehicle_id TEXT,
    detail TEXT NOT NULL,
    freezes_commands INTEGER NOT NULL,
    cleared_ms INTEGER,
    cleared_by TEXT
) WITHOUT ROWID;
INSERT INTO alerts VALUES ('alr_old', 'flt_1', 'duplicate_box', 1000, 'dev_1', 'veh_1',
    'IMEI logged in twice', 1, NULL, NULL);
"""


async def test_sqlite_adds_the_incident_columns_to_an_older_file(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.executescript(_OLD_ALERTS)
    # An unstamped file of the first release: `gp8 migrate` upgrades it, then a plain start
    # serves it.
    for migrate in (True, False):
        store = SqliteStore(path, migrate=migrate)
        await store.start()
        try:
            old = await store.alerts.get("flt_1", "alr_old")
            assert old == Alert(
                "alr_old",
                "flt_1",
                AlertKind.DUPLICATE_BOX,
                1000,
                "dev_1",
                "veh_1",
                "IMEI logged in twice",
                True,
            )
            assert [a.id for a in await store.alerts.open_alerts(device_id="dev_1")] == ["alr_old"]
        finally:
            await store.close()


async def test_mongo_reads_alert_documents_stored_before_the_incident_fields() -> None:
    client = AsyncMongoMockClient()
    store = MongoStore(client, "gp8_old")
    await store.start()
    try:
        await (
            client.get_database("gp8_old")
            .get_collection("alerts")
            .insert_one(
                {
                    "_id": "alr_old",
                    "fleet_id": "flt_1",
                    "kind": "engine_start_cap",
                    "raised_ms": 1000,
                    "device_id": None,
                    "vehicle_id": "veh_1",
                    "detail": "cap reached",
                    "freezes_commands": False,
                    "cleared_ms": None,
                    "cleared_by": None,
                }
            )
        )
        old = await store.alerts.get("flt_1", "alr_old")
        assert old == Alert(
            "alr_old", "flt_1", AlertKind.ENGINE_START_CAP, 1000, None, "veh_1", "cap reached"
        )
        assert [a.id for a in (await store.alerts.list("flt_1", open_only=True)).items] == [
            "alr_old"
        ]
    finally:
        await store.close()
