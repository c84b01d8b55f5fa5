"""The parked guard's state machine alone (tracking/guard_logic.py)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from storage.models import Event, GuardState, GuardStatus, Position
from tests.tracking.alerts_world import HOME, T0, north_of
from tracking.guard import run
from tracking.guard_logic import GuardParams, distance_m, manual, on_alarm, on_fix

MIN = 60_000
PARAMS = GuardParams(radius_m=150.0, park_ms=5 * MIN, require_badge=False, badges=frozenset())
BADGES = dataclasses.replace(PARAMS, require_badge=True, badges=frozenset({4711}))


def fix(t: int, at: tuple[float, float] = HOME, **over: Any) -> Position:
    fields: dict[str, Any] = {
        "fleet_id": "flt",
        "device_id": "dev",
        "vehicle_id": "veh",
        "time_ms": t,
        "received_ms": t,
        "lat": at[0],
        "lon": at[1],
        "altitude_m": 0,
        "speed_kmh": 0.0,
        "heading_deg": 0.0,
        "satellites": 9,
        "hdop": 1.0,
        "fix_valid": True,
        "ignition": False,
        "doors_locked": True,
        "engine_start_inhibited": False,
        "external_power": True,
        "odometer_m": 0,
        "external_power_mv": 12_500,
        "battery_mv": 4_000,
        "gsm_signal": 20,
        "warnings": 0,
        "driver_badge": None,
    }
    fields.update(over)
    return Position(**fields)


def alarm(t: int, code: str) -> Event:
    return Event("flt", "dev", "veh", t, t, code, 0, fix(t))


def armed_state() -> GuardState:
    state = GuardState("flt", "veh")
    state = on_fix(state, fix(T0), PARAMS).state
    return on_fix(state, fix(T0 + 5 * MIN), PARAMS).state


def test_distance() -> None:
    assert distance_m(*HOME, *north_of(*HOME, 1000.0)) == pytest.approx(1000.0, rel=5e-3)


def test_arms_after_parking_for_park_minutes() -> None:
    state = GuardState("flt", "veh")
    step = on_fix(state, fix(T0, ignition=True, speed_kmh=30.0), PARAMS)
    assert step.state.status is GuardStatus.DISARMED and step.state.parked_ms is None
    state = on_fix(step.state, fix(T0 + MIN), PARAMS).state  # stopped, ignition off
    assert (state.status, state.parked_ms, state.lat) == (GuardStatus.DISARMED, T0 + MIN, HOME[0])
    state = on_fix(state, fix(T0 + 5 * MIN), PARAMS).state
    assert state.status is GuardStatus.DISARMED  # 4 minutes
    state = on_fix(state, fix(T0 + 6 * MIN, north_of(*HOME, 10.0)), PARAMS).state
    assert (state.status, state.since_ms, state.lat) == (GuardStatus.ARMED, T0 + 6 * MIN, HOME[0])
    assert state.checked_ms == T0 + 6 * MIN and "parked for 5 min" in state.reason


def test_moving_before_it_arms_is_no_theft() -> None:
    state = on_fix(GuardState("flt", "veh"), fix(T0), PARAMS).state
    step = on_fix(state, fix(T0 + MIN, north_of(*HOME, 500.0), speed_kmh=20.0), PARAMS)
    assert step.suspicion is None and step.state.parked_ms is None


def test_towed_beyond_the_radius_triggers() -> None:
    state = armed_state()
    step = on_fix(state, fix(T0 + 6 * MIN, north_of(*HOME, 100.0), speed_kmh=10.0), PARAMS)
    assert step.suspicion is None  # within 150 m: GPS drift, or a few metres of pushing
    step = on_fix(step.state, fix(T0 + 7 * MIN, north_of(*HOME, 400.0), speed_kmh=30.0), PARAMS)
    assert step.state.status is GuardStatus.TRIGGERED and step.suspicion is not None
    assert step.suspicion.time_ms == T0 + 7 * MIN
    assert step.suspicion.detail == "moved 400 m from where it was parked, ignition off"
    # Triggered: every suspicious fix updates the alert.
    step = on_fix(step.state, fix(T0 + 8 * MIN, north_of(*HOME, 900.0), speed_kmh=30.0), PARAMS)
    assert step.suspicion is not None and step.state.status is GuardStatus.TRIGGERED


def test_alarms_while_armed_trigger_even_when_late() -> None:
    state = armed_state()
    assert on_alarm(state, alarm(T0 + 6 * MIN, "sos")).suspicion is None  # not a theft alarm
    before = on_alarm(state, alarm(T0 + MIN, "towing"))  # replayed from before it armed
    assert before.suspicion is None and before.state.status is GuardStatus.ARMED
    step = on_alarm(state, alarm(T0 + 6 * MIN, "towing"))
    assert step.state.status is GuardStatus.TRIGGERED
    assert step.suspicion is not None and step.suspicion.detail == "towing alarm while parked"
    again = on_alarm(step.state, alarm(T0 + 7 * MIN, "power_cut"))
    assert again.suspicion is not None and again.state.status is GuardStatus.TRIGGERED
    assert on_alarm(GuardState("flt", "veh"), alarm(T0, "towing")).suspicion is None


def test_start_disarms_when_no_badge_is_required() -> None:
    step = on_fix(armed_state(), fix(T0 + 9 * MIN, ignition=True), PARAMS)
    assert step.suspicion is None and step.state.status is GuardStatus.DISARMED


def test_start_without_a_recognised_badge_triggers_when_required() -> None:
    state = armed_state()
    for badge in (None, 99):
        step = on_fix(state, fix(T0 + 9 * MIN, ignition=True, driver_badge=badge), BADGES)
        assert step.state.status is GuardStatus.TRIGGERED and step.suspicion is not None
    ok = on_fix(state, fix(T0 + 9 * MIN, ignition=True, driver_badge=4711), BADGES)
    assert ok.state.status is GuardStatus.DISARMED and ok.suspicion is None


def test_triggered_resolved_only_by_a_recognised_badge_or_a_manager() -> None:
    state = on_alarm(armed_state(), alarm(T0 + 6 * MIN, "tamper")).state
    # No badge list in force: a start does not disarm a triggered guard.
    step = on_fix(state, fix(T0 + 7 * MIN, ignition=True, speed_kmh=20.0), PARAMS)
    assert step.state.status is GuardStatus.TRIGGERED and step.suspicion is not None
    step = on_fix(state, fix(T0 + 7 * MIN, ignition=True, driver_badge=4711), BADGES)
    assert step.state.status is GuardStatus.DISARMED and step.resolved is not None
    assert step.state.alert_id is None


def test_manager_disarm_holds_until_the_next_start() -> None:
    state = manual(armed_state(), armed=False, at_ms=T0 + 7 * MIN, by="key_1", where=None)
    assert (state.status, state.held, state.updated_by) == (GuardStatus.DISARMED, True, "key_1")
    # Towed by the garage, parked for long: no arming, no theft.
    state = on_fix(state, fix(T0 + 8 * MIN, north_of(*HOME, 500.0), speed_kmh=20.0), PARAMS).state
    state = on_fix(state, fix(T0 + 30 * MIN, north_of(*HOME, 900.0)), PARAMS).state
    assert state.status is GuardStatus.DISARMED
    state = on_fix(state, fix(T0 + 40 * MIN, ignition=True), PARAMS).state
    assert not state.held
    state = on_fix(state, fix(T0 + 41 * MIN), PARAMS).state
    state = on_fix(state, fix(T0 + 46 * MIN), PARAMS).state
    assert state.status is GuardStatus.ARMED


def test_manager_arm_around_the_last_position() -> None:
    where = fix(T0, north_of(*HOME, 50.0))
    state = manual(GuardState("flt", "veh"), armed=True, at_ms=T0 + 1, by="key_1", where=where)
    assert (state.status, state.lat, state.since_ms) == (GuardStatus.ARMED, where.lat, T0 + 1)
    with pytest.raises(ValueError):
        manual(GuardState("flt", "veh"), armed=True, at_ms=T0, by="key_1", where=None)


def test_run_orders_alarms_and_fixes_by_device_time() -> None:
    state = armed_state()
    fixes = [fix(T0 + 7 * MIN, north_of(*HOME, 600.0), speed_kmh=30.0)]
    events = [alarm(T0 + 6 * MIN, "towing")]
    final, suspicions, resolved = run(state, PARAMS, fixes, events)
    assert final.status is GuardStatus.TRIGGERED and resolved is None
    assert [s.time_ms for s in suspicions] == [T0 + 6 * MIN, T0 + 7 * MIN]
