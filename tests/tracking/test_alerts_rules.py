"""Each alert rule's pure decision (tracking/rules_logic.py), with hand-made fixes."""

from __future__ import annotations

from typing import Any

from processing import Signal
from storage.models import (
    AlertKind,
    AlertRule,
    AlertRuleType,
    Event,
    GeofenceSchedule,
    Position,
    Severity,
    TrackingPolicy,
)
from tracking.rules_logic import (
    Action,
    Clear,
    Trigger,
    VehicleContext,
    coalesce,
    default_rules,
    effective,
    evaluate,
)

T0 = 1_714_564_800_000  # 2024-05-01T12:00:00Z, a Wednesday (14:00 in Paris)
FLEET, VEHICLE, DEVICE = "flt_1", "veh_1", "dev_1"
NO_POLICY = TrackingPolicy(FLEET)


def fix(t: int, **over: Any) -> Position:
    fields: dict[str, Any] = {
        "fleet_id": FLEET,
        "device_id": DEVICE,
        "vehicle_id": VEHICLE,
        "time_ms": t,
        "received_ms": t + 500,
        "lat": 48.8566,
        "lon": 2.3522,
        "altitude_m": 35,
        "speed_kmh": 50.0,
        "heading_deg": 90.0,
        "satellites": 9,
        "hdop": 0.9,
        "fix_valid": True,
        "ignition": True,
        "doors_locked": False,
        "engine_start_inhibited": False,
        "external_power": True,
        "odometer_m": 1000,
        "external_power_mv": 14_100,
        "battery_mv": 4_100,
        "gsm_signal": 20,
        "warnings": 0,
        "driver_badge": 77,
    }
    fields.update(over)
    return Position(**fields)


def event(t: int, code: str, **over: Any) -> Event:
    return Event(FLEET, DEVICE, VEHICLE, t, t + 500, code, 0, fix(t, **over))


def rule(type_: AlertRuleType, **over: Any) -> AlertRule:
    fields: dict[str, Any] = {
        "id": f"arl_{type_.value}",
        "fleet_id": FLEET,
        "type": type_,
        "name": type_.value,
        "created_ms": 0,
        "updated_ms": 0,
    }
    fields.update(over)
    return AlertRule(**fields)


def run(
    rules: list[AlertRule],
    fixes: list[Position] = (),  # type: ignore[assignment]
    *,
    events: list[Event] = (),  # type: ignore[assignment]
    signals: list[Signal] = (),  # type: ignore[assignment]
    ctx: VehicleContext | None = None,
    policy: TrackingPolicy = NO_POLICY,
) -> tuple[list[Action], VehicleContext]:
    return evaluate(
        rules,
        policy,
        ctx or VehicleContext(),
        VEHICLE,
        fresh=fixes,
        events=events,
        signals=signals,
    )


def triggers(actions: list[Action]) -> list[tuple[AlertKind, str | None, int]]:
    return [(a.kind, a.ref, a.time_ms) for a in actions if isinstance(a, Trigger)]


def clears(
    actions: list[Action], kind: AlertKind | None = None
) -> list[tuple[AlertKind, str | None, int]]:
    """The clears (of ``kind``): every fix also clears the conditions it does not show."""
    return [
        (a.kind, a.ref, a.time_ms)
        for a in actions
        if isinstance(a, Clear) and (kind is None or a.kind is kind)
    ]


def test_default_rules_protect_a_new_fleet() -> None:
    made = {r.type: effective(r) for r in default_rules(FLEET, T0)}
    assert set(made) == {
        AlertRuleType.PARKED_GUARD,
        AlertRuleType.BOX_ALARM,
        AlertRuleType.BOX_OFFLINE,
    }
    assert all(r.enabled and r.default for r in made.values())
    assert made[AlertRuleType.PARKED_GUARD].radius_m == 150.0
    assert made[AlertRuleType.PARKED_GUARD].severity is Severity.CRITICAL
    assert made[AlertRuleType.BOX_OFFLINE].offline_minutes == 24 * 60
    assert "towing" in (made[AlertRuleType.BOX_ALARM].codes or ())


def test_box_alarms_raise_their_own_type_even_when_late() -> None:
    alarms = rule(AlertRuleType.BOX_ALARM, severity=Severity.CRITICAL)
    actions, _ = run(
        [alarms],
        events=[event(T0, "sos"), event(T0 + 1, "harsh_braking"), event(T0 + 2, "towing")],
    )
    # No fresh fix (a late replay): the alarms are still incidents.
    assert triggers(actions) == [(AlertKind.SOS, None, T0), (AlertKind.TOWING, None, T0 + 2)]
    only_sos = rule(AlertRuleType.BOX_ALARM, codes=("sos",))
    actions, _ = run([only_sos], events=[event(T0, "towing")])
    assert triggers(actions) == []


def test_power_cut_is_cleared_by_power_restored() -> None:
    actions, _ = run(
        [rule(AlertRuleType.BOX_ALARM)],
        events=[event(T0, "power_cut"), event(T0 + 60_000, "power_restored")],
    )
    assert triggers(actions) == [(AlertKind.POWER_CUT, None, T0)]
    assert clears(actions) == [(AlertKind.POWER_CUT, None, T0 + 60_000)]


def test_dashboard_warning_lights_from_the_bitmask() -> None:
    lights = rule(AlertRuleType.BOX_ALARM, codes=("dashboard_warning",))
    actions, _ = run([lights], [fix(T0, warnings=0b1), fix(T0 + 1000, warnings=0)])
    (trigger,) = [a for a in actions if isinstance(a, Trigger)]
    assert trigger.kind is AlertKind.DASHBOARD_WARNING and "engine" in trigger.detail
    assert clears(actions, AlertKind.DASHBOARD_WARNING) == [
        (AlertKind.DASHBOARD_WARNING, None, T0 + 1000)
    ]
    # The security alarms' default rule does not watch the lights.
    actions, _ = run([rule(AlertRuleType.BOX_ALARM)], [fix(T0, warnings=0b1)])
    assert triggers(actions) == []


def test_overspeed_needs_the_minimum_duration_and_clears_under_the_limit() -> None:
    speeding = rule(AlertRuleType.OVERSPEED, speed_limit_kmh=90.0, min_duration_s=30)
    fixes = [
        fix(T0, speed_kmh=100.0),
        fix(T0 + 20_000, speed_kmh=110.0),  # 20 s over: not yet
        fix(T0 + 30_000, speed_kmh=105.0),  # 30 s: raised
        fix(T0 + 40_000, speed_kmh=80.0),  # back under: cleared
    ]
    actions, ctx = run([speeding], fixes)
    assert triggers(actions) == [(AlertKind.OVERSPEED, None, T0 + 30_000)]
    assert (AlertKind.OVERSPEED, None, T0 + 40_000) in clears(actions)
    assert ctx.checked_ms == T0 + 40_000
    # A dip under the limit starts the duration again.
    actions, _ = run(
        [speeding],
        [
            fix(T0, speed_kmh=100.0),
            fix(T0 + 20_000, speed_kmh=85.0),
            fix(T0 + 40_000, speed_kmh=99),
        ],
    )
    assert triggers(actions) == []


def test_overspeed_carries_its_duration_across_batches() -> None:
    speeding = rule(AlertRuleType.OVERSPEED, speed_limit_kmh=90.0, min_duration_s=30)
    _, ctx = run([speeding], [fix(T0, speed_kmh=100.0)])
    actions, _ = run([speeding], [fix(T0 + 30_000, speed_kmh=100.0)], ctx=ctx)
    assert triggers(actions) == [(AlertKind.OVERSPEED, None, T0 + 30_000)]


def test_a_fence_speed_limit_applies_inside_it() -> None:
    speeding = rule(AlertRuleType.OVERSPEED, speed_limit_kmh=90.0, min_duration_s=0)
    enter = Signal(
        "geofence_enter",
        FLEET,
        DEVICE,
        VEHICLE,
        T0 + 1,
        ref="geo_depot",
        data={"name": "Depot", "speed_limit_kmh": 20.0, "schedule": None},
    )
    exit_ = Signal("geofence_exit", FLEET, DEVICE, VEHICLE, T0 + 3, ref="geo_depot", data={})
    actions, ctx = run(
        [speeding],
        [fix(T0, speed_kmh=40.0), fix(T0 + 2, speed_kmh=40.0), fix(T0 + 4, speed_kmh=40.0)],
        signals=[enter, exit_],
    )
    (trigger,) = [a for a in actions if isinstance(a, Trigger)]
    assert (trigger.time_ms, trigger.detail) == (T0 + 2, "40 km/h, limit 20 km/h in Depot")
    assert (AlertKind.OVERSPEED, None, T0 + 4) in clears(actions)
    assert ctx.inside == {}
    # Without any limit (no fleet limit, not in a fence with one) there is nothing to check.
    actions, _ = run([rule(AlertRuleType.OVERSPEED)], [fix(T0, speed_kmh=200.0)])
    assert triggers(actions) == []


def test_ignition_off_movement() -> None:
    towed = rule(AlertRuleType.IGNITION_OFF_MOVEMENT)
    actions, _ = run(
        [towed],
        [
            fix(T0, ignition=False, speed_kmh=3.0),  # GPS drift of a parked box
            fix(T0 + 1, ignition=False, speed_kmh=25.0),
            fix(T0 + 2, ignition=False, speed_kmh=0.0),
        ],
    )
    assert triggers(actions) == [(AlertKind.IGNITION_OFF_MOVEMENT, None, T0 + 1)]
    assert (AlertKind.IGNITION_OFF_MOVEMENT, None, T0 + 2) in clears(actions)


def test_no_badge_until_the_end_of_the_trip() -> None:
    badge = rule(AlertRuleType.NO_BADGE, severity=Severity.CRITICAL)
    policy = TrackingPolicy(FLEET, badges=(77,))
    actions, _ = run(
        [badge],
        [
            fix(T0, driver_badge=None, speed_kmh=0.0),  # ignition on, not moving yet
            fix(T0 + 1, driver_badge=None),
            fix(T0 + 2, driver_badge=None, speed_kmh=0.0),  # a red light: still the trip
            fix(T0 + 3, driver_badge=99),  # an unknown badge: still no recognised one
            fix(T0 + 4, driver_badge=None, ignition=False, speed_kmh=0.0),
        ],
        policy=policy,
    )
    assert triggers(actions) == [
        (AlertKind.NO_BADGE, None, T0 + 1),
        (AlertKind.NO_BADGE, None, T0 + 2),
        (AlertKind.NO_BADGE, None, T0 + 3),
    ]
    assert clears(actions, AlertKind.NO_BADGE) == [(AlertKind.NO_BADGE, None, T0 + 4)]
    actions, _ = run([badge], [fix(T0, driver_badge=77)], policy=policy)
    assert triggers(actions) == []
    assert clears(actions, AlertKind.NO_BADGE) == [(AlertKind.NO_BADGE, None, T0)]


WORKING_HOURS = GeofenceSchedule("Europe/Paris", (1, 2, 3, 4, 5), "07:00", "19:00")
NIGHT = T0 + 10 * 3_600_000  # 22:00 in Paris


def test_outside_hours_with_the_rule_schedule() -> None:
    hours = rule(AlertRuleType.OUTSIDE_HOURS, schedule=WORKING_HOURS)
    actions, _ = run([hours], [fix(T0)])
    assert triggers(actions) == []
    assert clears(actions, AlertKind.OUTSIDE_HOURS) == [(AlertKind.OUTSIDE_HOURS, None, T0)]
    actions, _ = run(
        [hours],
        [fix(NIGHT), fix(NIGHT + 1, speed_kmh=0.0), fix(NIGHT + 2, ignition=False, speed_kmh=0)],
    )
    assert triggers(actions) == [
        (AlertKind.OUTSIDE_HOURS, None, NIGHT),
        (AlertKind.OUTSIDE_HOURS, None, NIGHT + 1),  # stopped at a light: still on
    ]
    assert clears(actions, AlertKind.OUTSIDE_HOURS) == [(AlertKind.OUTSIDE_HOURS, None, NIGHT + 2)]


def test_outside_hours_with_a_fence_schedule() -> None:
    hours = rule(AlertRuleType.OUTSIDE_HOURS)
    enter = Signal(
        "geofence_enter",
        FLEET,
        DEVICE,
        VEHICLE,
        NIGHT,
        ref="geo_site",
        data={"name": "Site", "speed_limit_kmh": None, "schedule": WORKING_HOURS},
    )
    exit_ = Signal("geofence_exit", FLEET, DEVICE, VEHICLE, NIGHT + 5, ref="geo_site", data={})
    actions, _ = run([hours], [fix(NIGHT + 1), fix(NIGHT + 10)], signals=[enter, exit_])
    assert triggers(actions) == [(AlertKind.OUTSIDE_HOURS, "geo_site", NIGHT + 1)]
    assert (AlertKind.OUTSIDE_HOURS, "geo_site", NIGHT + 5) in clears(actions)


def test_geofence_crossings_raise_and_clear_each_other() -> None:
    exits = rule(AlertRuleType.GEOFENCE_EXIT, geofence_ids=("geo_depot",))
    exit_ = Signal("geofence_exit", FLEET, DEVICE, VEHICLE, T0, ref="geo_depot", data={"name": "D"})
    other = Signal("geofence_exit", FLEET, DEVICE, VEHICLE, T0 + 1, ref="geo_x", data={})
    back = Signal("geofence_enter", FLEET, DEVICE, VEHICLE, T0 + 2, ref="geo_depot", data={})
    actions, _ = run([exits], signals=[exit_, other, back])
    assert triggers(actions) == [(AlertKind.GEOFENCE_EXIT, "geo_depot", T0)]
    assert (AlertKind.GEOFENCE_EXIT, "geo_depot", T0 + 2) in clears(actions)


def test_muted_and_disabled_rules_raise_nothing() -> None:
    alarms = [
        rule(AlertRuleType.BOX_ALARM, muted_vehicle_ids=(VEHICLE,)),
        rule(AlertRuleType.BOX_ALARM, id="arl_off", enabled=False),
    ]
    actions, _ = run(alarms, events=[event(T0, "sos")])
    assert triggers(actions) == []
    other_vehicle = rule(AlertRuleType.BOX_ALARM, muted_vehicle_ids=("veh_other",))
    actions, _ = run([other_vehicle], events=[event(T0, "sos")])
    assert triggers(actions) == [(AlertKind.SOS, None, T0)]


def test_the_most_severe_matching_rule_wins() -> None:
    low = rule(AlertRuleType.BOX_ALARM, id="arl_low", severity=Severity.INFO)
    high = rule(AlertRuleType.BOX_ALARM, id="arl_high", severity=Severity.CRITICAL)
    actions, _ = run([low, high], events=[event(T0, "crash")])
    (trigger,) = actions
    assert isinstance(trigger, Trigger) and trigger.rule.id == "arl_high"


def test_coalesce_folds_one_incidents_triggers_between_clears() -> None:
    speeding = rule(AlertRuleType.OVERSPEED, speed_limit_kmh=50.0, min_duration_s=0)
    fixes = [fix(T0 + i, speed_kmh=s) for i, s in enumerate([60, 70, 40, 80, 90])]
    actions, _ = run([speeding], fixes)
    folded = [a for a in coalesce(actions) if a.kind is AlertKind.OVERSPEED]
    assert [(type(a).__name__, a.time_ms) for a in folded] == [
        ("Trigger", T0 + 1),
        ("Clear", T0 + 2),
        ("Trigger", T0 + 4),
    ]
    first, _, second = folded
    assert isinstance(first, Trigger) and isinstance(second, Trigger)
    assert (first.count, first.first_ms, first.position and first.position.speed_kmh) == (
        2,
        T0,
        70.0,
    )
    assert (second.count, second.first_ms) == (2, T0 + 3)
