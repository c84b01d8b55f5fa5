"""The alert rules handler on a real store: default rules, one alert per incident, closing when
the condition clears, late replays, muted vehicles, and the live stream."""

from __future__ import annotations

import dataclasses
from typing import Any

from processing import Signal
from storage.models import (
    AlertKind,
    AlertRule,
    AlertRuleType,
    AlertState,
    Severity,
    StreamKind,
    alert_state,
    new_id,
)
from tests.tracking.alerts_world import T0, World, store, world  # noqa: F401
from tracking.alerts import AlertRulesHandler
from tracking.rules import RuleBook


def handler_for(w: World) -> AlertRulesHandler:
    return AlertRulesHandler(w.store, RuleBook(w.store.alert_rules, ttl_s=0.0))


async def add_rule(w: World, type_: AlertRuleType, **over: object) -> AlertRule:
    fields: dict[str, object] = {
        "id": new_id("arl"),
        "fleet_id": w.fleet_id,
        "type": type_,
        "name": type_.value,
        "created_ms": T0,
        "updated_ms": T0,
    }
    fields.update(over)
    return await w.store.alert_rules.create(AlertRule(**fields))  # type: ignore[arg-type]


async def test_a_new_fleet_reports_box_alarms_out_of_the_box(world: World) -> None:  # noqa: F811
    handler = handler_for(world)
    await handler.handle(world.batch([], [world.event(T0, "tamper")]))
    (alert,) = await world.alerts()
    assert (alert.kind, alert.severity, alert.count) == (AlertKind.TAMPER, Severity.CRITICAL, 1)
    assert alert.rule_id is not None
    rules = await world.store.alert_rules.list(world.fleet_id)
    assert {r.type for r in rules} == {
        AlertRuleType.PARKED_GUARD,
        AlertRuleType.BOX_ALARM,
        AlertRuleType.BOX_OFFLINE,
    }
    # Repeated: the same alert, counted, with the latest position.
    repeat = world.event(T0 + 60_000, "tamper", lat=48.9)
    await handler.handle(world.batch([], [repeat, world.event(T0 + 61_000, "tamper")]))
    (alert,) = await world.alerts()
    assert (alert.count, alert.first_ms, alert.last_ms) == (3, T0, T0 + 61_000)
    # A late replay (no live fix) of an alarm is still reported.
    late = world.event(T0 - 3_600_000, "sos")
    await handler.handle(world.batch([world.fix(T0 - 3_600_000)], [late], live=False))
    assert [a.kind for a in await world.alerts(AlertKind.SOS)] == [AlertKind.SOS]


async def test_overspeed_opens_once_and_closes_under_the_limit(world: World) -> None:  # noqa: F811
    await add_rule(world, AlertRuleType.OVERSPEED, speed_limit_kmh=90.0, min_duration_s=20)
    handler = handler_for(world)
    drive: dict[str, Any] = {"ignition": True, "driver_badge": 7}
    for i, speed in enumerate([100, 110, 120, 115]):
        fix = world.fix(T0 + i * 10_000, speed_kmh=float(speed), **drive)
        await handler.handle(world.batch([fix]))
    (alert,) = await world.alerts(AlertKind.OVERSPEED)
    assert alert_state(alert) is AlertState.OPEN
    assert (alert.first_ms, alert.last_ms, alert.count, alert.speed_kmh) == (
        T0 + 20_000,
        T0 + 30_000,
        2,
        115.0,
    )
    # A late replay of a slow fix closes nothing.
    slow_late = world.fix(T0 + 5_000, speed_kmh=30.0, **drive)
    await handler.handle(world.batch([slow_late], live=False))
    (alert,) = await world.alerts(AlertKind.OVERSPEED)
    assert alert.cleared_ms is None
    await handler.handle(world.batch([world.fix(T0 + 40_000, speed_kmh=80.0, **drive)]))
    (alert,) = await world.alerts(AlertKind.OVERSPEED)
    assert alert_state(alert) is AlertState.CLOSED
    assert (alert.cleared_by, alert.close_reason) == ("system", "speed back within the limit")
    # Speeding again is a new incident.
    for i in range(3):
        fast = world.fix(T0 + 50_000 + i * 10_000, speed_kmh=130.0, **drive)
        await handler.handle(world.batch([fast]))
    assert [alert_state(a) for a in await world.alerts(AlertKind.OVERSPEED)] == [
        AlertState.CLOSED,
        AlertState.OPEN,
    ]


async def test_geofence_exit_closed_on_reentry(world: World) -> None:  # noqa: F811
    await add_rule(world, AlertRuleType.GEOFENCE_EXIT, severity=Severity.CRITICAL)
    handler = handler_for(world)
    fix = world.fix(T0)
    left = Signal(
        "geofence_exit",
        world.fleet_id,
        world.device_id,
        world.vehicle_id,
        T0,
        fix,
        "gfn_depot",
        {"name": "Depot", "speed_limit_kmh": None, "schedule": None},
    )
    await handler.handle(world.batch([fix], signals=[left]))
    (alert,) = await world.alerts(AlertKind.GEOFENCE_EXIT)
    assert (alert.ref, alert.detail, alert.severity) == ("gfn_depot", "left Depot", "critical")
    back = dataclasses.replace(left, kind="geofence_enter", time_ms=T0 + 1000)
    await handler.handle(world.batch([world.fix(T0 + 1000)], signals=[back]))
    (alert,) = await world.alerts(AlertKind.GEOFENCE_EXIT)
    assert alert.cleared_ms is not None and alert.close_reason == "entered Depot again"


async def test_muted_vehicle_raises_nothing(world: World) -> None:  # noqa: F811
    handler = handler_for(world)
    await handler.handle(world.batch([], [world.event(T0, "sos")]))  # creates the defaults
    (alarms,) = [
        r
        for r in await world.store.alert_rules.list(world.fleet_id)
        if r.type is AlertRuleType.BOX_ALARM
    ]
    muted = dataclasses.replace(alarms, muted_vehicle_ids=(world.vehicle_id,))
    await world.store.alert_rules.replace(muted)
    await handler.handle(world.batch([], [world.event(T0 + 1, "crash")]))
    assert [a.kind for a in await world.alerts()] == [AlertKind.SOS]


async def test_alerts_reach_the_stream(world: World) -> None:  # noqa: F811
    handler = handler_for(world)
    head = await world.store.stream.head(world.fleet_id)
    await handler.handle(world.batch([], [world.event(T0, "crash")]))
    await handler.handle(world.batch([], [world.event(T0 + 1, "crash")]))
    page = await world.store.stream.after(world.fleet_id, head, kinds=[StreamKind.ALERT])
    assert [e.item.count for e in page.entries] == [1, 2]  # type: ignore[attr-defined]


async def test_unfitted_box_raises_nothing(world: World) -> None:  # noqa: F811
    handler = handler_for(world)
    loose = dataclasses.replace(world.event(T0, "sos"), vehicle_id=None)
    await handler.handle(world.batch([], [loose]))
    assert await world.alerts() == []
