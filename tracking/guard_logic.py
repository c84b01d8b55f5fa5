"""The parked guard's state machine (docs/theft.md, "The parked guard"). Pure: no I/O, no
clock; tracking/guard.py feeds it and stores what it decides.

    DISARMED --(ignition off, stopped for park_minutes)--> ARMED around where it stopped
    ARMED --(moved beyond radius_m with the ignition off)--------------> TRIGGERED
    ARMED --(a towing / tamper / power_cut alarm)-----------------------> TRIGGERED
    ARMED --(ignition on, no recognised badge, the fleet requires one)--> TRIGGERED
    ARMED --(ignition on: a recognised badge, or none required)---------> DISARMED
    TRIGGERED --(ignition on with a recognised badge, badges required)--> DISARMED (resolved)
    any --(a manager: POST /v1/vehicles/{id}/guard {"armed": false})----> DISARMED, held

TRIGGERED opens the vehicle's suspected_theft alert; while triggered, every suspicious record
(beyond the radius, moving, the ignition on, another alarm) updates it with the latest position.
A start without the badge requirement does not disarm a triggered guard: a thief who towed the
vehicle away can start it too. A manager's disarm is ``held``: the guard does not arm again
before the next start (a mechanic may move the vehicle with the ignition off).

Inputs and their time (processing/stage.py): fixes change the state only when fresh (newer
than every fix decided before); an alarm is an incident whatever its age, so a late one counts
when it happened while the guard was armed (at or after ``since_ms``), never before.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from storage.models import (
    AlertRule,
    Event,
    GuardState,
    GuardStatus,
    Position,
    TrackingPolicy,
)
from tracking.rules_logic import STOPPED_KMH, effective, recognised

# The alarms that, while armed, mean someone is taking the vehicle.
ALARM_CODES = frozenset({"towing", "tamper", "power_cut"})
_EARTH_RADIUS_M = 6_371_008.8


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine): exact enough at a few hundred metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * _EARTH_RADIUS_M * math.asin(math.sqrt(min(1.0, a)))


@dataclass(frozen=True, slots=True)
class GuardParams:
    radius_m: float
    park_ms: int
    require_badge: bool
    badges: frozenset[int]

    @classmethod
    def of(cls, rule: AlertRule, policy: TrackingPolicy) -> GuardParams:
        full = effective(rule)
        return cls(
            radius_m=full.radius_m or 150.0,
            park_ms=(full.park_minutes or 5) * 60_000,
            require_badge=policy.require_badge,
            badges=frozenset(policy.badges),
        )

    def recognised(self, badge: int | None) -> bool:
        return recognised(badge, TrackingPolicy("", badges=tuple(self.badges)))


@dataclass(frozen=True, slots=True)
class Suspicion:
    """A record that shows the vehicle being taken: opens or updates suspected_theft."""

    time_ms: int
    detail: str
    position: Position


@dataclass(frozen=True, slots=True)
class Step:
    state: GuardState
    suspicion: Suspicion | None = None
    resolved: str | None = None  # the guard was disarmed while triggered: why


def _moved(state: GuardState, fix: Position) -> float:
    if state.lat is None or state.lon is None:
        return 0.0
    return distance_m(state.lat, state.lon, fix.lat, fix.lon)


def _disarmed(state: GuardState, t: int, reason: str) -> GuardState:
    return dataclasses.replace(
        state,
        status=GuardStatus.DISARMED,
        since_ms=t,
        lat=None,
        lon=None,
        parked_ms=None,
        held=False,
        alert_id=None,
        reason=reason,
    )


def on_fix(state: GuardState, fix: Position, params: GuardParams) -> Step:
    """Decide one fresh, valid fix."""
    t = fix.time_ms
    state = dataclasses.replace(state, checked_ms=max(state.checked_ms, t))
    stopped = not fix.ignition and fix.speed_kmh < STOPPED_KMH
    badge_ok = fix.driver_badge is not None and params.recognised(fix.driver_badge)
    if state.status is GuardStatus.DISARMED:
        if fix.ignition:
            if state.held or state.parked_ms is not None:
                state = dataclasses.replace(state, held=False, parked_ms=None, lat=None, lon=None)
            return Step(state)
        if state.held:
            return Step(state)
        if not stopped:  # towed or rolling before the guard armed: not parked yet
            if state.parked_ms is not None:
                state = dataclasses.replace(state, parked_ms=None, lat=None, lon=None)
            return Step(state)
        if state.parked_ms is None:
            return Step(dataclasses.replace(state, parked_ms=t, lat=fix.lat, lon=fix.lon))
        if t - state.parked_ms >= params.park_ms:
            minutes = (t - state.parked_ms) // 60_000
            armed = dataclasses.replace(
                state,
                status=GuardStatus.ARMED,
                since_ms=t,
                reason=f"parked for {minutes} min with the ignition off",
            )
            return Step(armed)
        return Step(state)

    moved = _moved(state, fix)
    if state.status is GuardStatus.ARMED:
        if fix.ignition:
            if params.require_badge and not badge_ok:
                who = "no badge" if fix.driver_badge is None else f"badge {fix.driver_badge}"
                detail = f"ignition on while parked, {who} (not recognised)"
                return _trigger(state, fix, detail)
            how = f"with badge {fix.driver_badge}" if fix.driver_badge is not None else ""
            return Step(_disarmed(state, t, f"started {how}".strip()))
        if moved > params.radius_m:
            detail = f"moved {moved:.0f} m from where it was parked, ignition off"
            return _trigger(state, fix, detail)
        return Step(state)

    # TRIGGERED
    if fix.ignition and params.require_badge and badge_ok:
        reason = f"started with recognised badge {fix.driver_badge}"
        return Step(_disarmed(state, t, reason), resolved=reason)
    if moved > params.radius_m or fix.ignition or not stopped:
        where = f"{moved:.0f} m from where it was parked"
        doing = f"moving at {fix.speed_kmh:.0f} km/h" if not stopped else "stopped"
        ignition = "ignition on" if fix.ignition else "ignition off"
        return Step(state, Suspicion(t, f"{where}, {doing}, {ignition}", fix))
    return Step(state)


def on_alarm(state: GuardState, event: Event) -> Step:
    """Decide one alarm event (late ones too: see the module docstring)."""
    if event.code not in ALARM_CODES or state.status is GuardStatus.DISARMED:
        return Step(state)
    if event.time_ms < state.since_ms:  # before the guard armed (a late replay)
        return Step(state)
    detail = f"{event.code.replace('_', ' ')} alarm while parked"
    if state.status is GuardStatus.ARMED:
        return _trigger(state, event.position, detail, time_ms=event.time_ms)
    return Step(state, Suspicion(event.time_ms, detail, event.position))


def _trigger(
    state: GuardState, position: Position, detail: str, *, time_ms: int | None = None
) -> Step:
    t = position.time_ms if time_ms is None else time_ms
    triggered = dataclasses.replace(state, status=GuardStatus.TRIGGERED, since_ms=t, reason=detail)
    return Step(triggered, Suspicion(t, detail, position))


def manual(
    state: GuardState, *, armed: bool, at_ms: int, by: str, where: Position | None
) -> GuardState:
    """A manager arms (at the vehicle's last position) or disarms (held) the guard."""
    if armed:
        if where is None:
            raise ValueError("the vehicle has no known position to arm the guard around")
        return dataclasses.replace(
            state,
            status=GuardStatus.ARMED,
            since_ms=at_ms,
            lat=where.lat,
            lon=where.lon,
            parked_ms=None,
            held=False,
            alert_id=None,
            reason=f"armed by {by}",
            updated_ms=at_ms,
            updated_by=by,
        )
    disarmed = _disarmed(state, at_ms, f"disarmed by {by}")
    return dataclasses.replace(disarmed, held=True, updated_ms=at_ms, updated_by=by)
