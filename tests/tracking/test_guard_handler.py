"""The parked guard handler on a real store: towing and a start without a badge raise one
suspected_theft alert on the first record that shows them; the state survives a restart; a
manager's disarm wins over the handler and closes the alert."""

from __future__ import annotations

import dataclasses

from storage.models import (
    AlertKind,
    AlertRuleType,
    AlertState,
    GuardStatus,
    TrackingPolicy,
    alert_state,
)
from tests.tracking.alerts_world import HOME, T0, World, north_of, store, world  # noqa: F401
from tracking.guard import GuardHandler, get_guard, set_guard
from tracking.rules import RuleBook

MIN = 60_000


def guard_for(w: World) -> GuardHandler:
    return GuardHandler(w.store, RuleBook(w.store.alert_rules, ttl_s=0.0), ttl_s=0.0)


async def park(w: World, handler: GuardHandler) -> None:
    """Arrive, stop with the ignition off, stay for 6 minutes: armed."""
    await handler.handle(w.batch([w.fix(T0 - MIN, ignition=True, speed_kmh=30.0)]))
    for minutes in (0, 3, 6):
        await handler.handle(w.batch([w.fix(T0 + minutes * MIN)]))
    assert (await get_guard(w.store, w.fleet_id, w.vehicle_id)).status is GuardStatus.ARMED


async def test_towing_raises_one_suspected_theft_on_the_first_record(
    world: World,  # noqa: F811
) -> None:
    handler = guard_for(world)
    await park(world, handler)
    # The tow truck: the box's towing alarm, then fixes moving away with the ignition off.
    towing = world.event(T0 + 10 * MIN, "towing")
    await handler.handle(world.batch([], [towing]))
    (alert,) = await world.alerts(AlertKind.SUSPECTED_THEFT)
    assert (alert.first_ms, alert.count, alert.severity) == (T0 + 10 * MIN, 1, "critical")
    assert alert.detail == "towing alarm while parked"
    guard = await get_guard(world.store, world.fleet_id, world.vehicle_id)
    assert (guard.status, guard.alert_id) == (GuardStatus.TRIGGERED, alert.id)  # linked at once
    for i, metres in enumerate((200, 600, 1200)):
        at = north_of(*HOME, float(metres))
        fix = world.fix(T0 + (11 + i) * MIN, at, speed_kmh=30.0)
        await handler.handle(world.batch([fix]))
    (alert,) = await world.alerts(AlertKind.SUSPECTED_THEFT)
    assert (alert.count, alert.first_ms, alert.last_ms) == (4, T0 + 10 * MIN, T0 + 13 * MIN)
    assert alert.lat == north_of(*HOME, 1200.0)[0]
    guard = await get_guard(world.store, world.fleet_id, world.vehicle_id)
    assert (guard.status, guard.alert_id) == (GuardStatus.TRIGGERED, alert.id)


async def test_moving_away_without_an_alarm_triggers_on_that_fix(
    world: World,  # noqa: F811
) -> None:
    handler = guard_for(world)
    await park(world, handler)
    near = world.fix(T0 + 10 * MIN, north_of(*HOME, 80.0), speed_kmh=8.0)
    far = world.fix(T0 + 10 * MIN + 30_000, north_of(*HOME, 260.0), speed_kmh=25.0)
    await handler.handle(world.batch([near]))
    assert await world.alerts(AlertKind.SUSPECTED_THEFT) == []
    await handler.handle(world.batch([far]))
    (alert,) = await world.alerts(AlertKind.SUSPECTED_THEFT)
    assert alert.first_ms == far.time_ms


async def test_start_without_badge_when_the_fleet_requires_one(
    world: World,  # noqa: F811
) -> None:
    await world.store.alert_rules.put_policy(
        TrackingPolicy(world.fleet_id, require_badge=True, badges=(4711,))
    )
    handler = guard_for(world)
    await park(world, handler)
    start = world.fix(T0 + 30 * MIN, ignition=True, driver_badge=None)
    await handler.handle(world.batch([start]))
    (alert,) = await world.alerts(AlertKind.SUSPECTED_THEFT)
    assert alert.first_ms == start.time_ms and "not recognised" in alert.detail
    # The owner comes with a recognised badge: the guard disarms and the alert closes.
    owner = world.fix(T0 + 40 * MIN, ignition=True, driver_badge=4711)
    await handler.handle(world.batch([owner]))
    (alert,) = await world.alerts(AlertKind.SUSPECTED_THEFT)
    assert alert_state(alert) is AlertState.CLOSED
    assert "recognised badge 4711" in alert.close_reason


async def test_late_records_change_no_state(world: World) -> None:  # noqa: F811
    handler = guard_for(world)
    await park(world, handler)
    far_late = world.fix(T0 + 2 * MIN, north_of(*HOME, 900.0), speed_kmh=30.0)
    await handler.handle(world.batch([far_late], live=False))
    assert await world.alerts(AlertKind.SUSPECTED_THEFT) == []


async def test_state_survives_a_restart(world: World) -> None:  # noqa: F811
    await park(world, guard_for(world))
    restarted = guard_for(world)
    towing = world.event(T0 + 10 * MIN, "tamper")
    await restarted.handle(world.batch([], [towing]))
    assert [a.kind for a in await world.alerts()] == [AlertKind.SUSPECTED_THEFT]


async def test_manager_disarm_wins_and_closes_the_alert(world: World) -> None:  # noqa: F811
    handler = GuardHandler(world.store, RuleBook(world.store.alert_rules), ttl_s=3600.0)
    await park(world, handler)
    await handler.handle(world.batch([], [world.event(T0 + 10 * MIN, "towing")]))
    disarmed = await set_guard(
        world.store, world.fleet_id, world.vehicle_id, armed=False, by="key_1", at_ms=T0 + 11 * MIN
    )
    assert (disarmed.status, disarmed.held) == (GuardStatus.DISARMED, True)
    (alert,) = await world.alerts(AlertKind.SUSPECTED_THEFT)
    assert alert_state(alert) is AlertState.CLOSED and "key_1" in alert.close_reason
    # The handler still holds the triggered state in memory (a long TTL): its save loses,
    # it reads the manager's state and decides on it: no new alert.
    far = world.fix(T0 + 12 * MIN, north_of(*HOME, 2000.0), speed_kmh=30.0)
    await handler.handle(world.batch([far]))
    assert len(await world.alerts(AlertKind.SUSPECTED_THEFT)) == 1
    guard = await get_guard(world.store, world.fleet_id, world.vehicle_id)
    assert guard.status is GuardStatus.DISARMED


async def test_disabled_or_muted_guard_does_nothing(world: World) -> None:  # noqa: F811
    handler = guard_for(world)
    await handler.handle(world.batch([world.fix(T0)]))  # creates the defaults
    (rule,) = [
        r
        for r in await world.store.alert_rules.list(world.fleet_id)
        if r.type is AlertRuleType.PARKED_GUARD
    ]
    await world.store.alert_rules.replace(
        dataclasses.replace(rule, muted_vehicle_ids=(world.vehicle_id,))
    )
    for minutes in (1, 10, 20):
        await handler.handle(world.batch([world.fix(T0 + minutes * MIN)]))
    assert (await get_guard(world.store, world.fleet_id, world.vehicle_id)).status is (
        GuardStatus.DISARMED
    )
