"""The alert rules' decisions for one vehicle's batch: what triggers an incident, what clears
one. Pure: no I/O, no clock; the handler (tracking/alerts.py) stores what this decides.

Two kinds of input, treated differently (processing/stage.py):

- **alarms** (the box's events: SOS, power cut, tamper, jamming, towing, crash, dashboard
  warning): an alarm is an incident whatever its age, so a late replayed one is reported too;
- **state** (speed, ignition, badge, warning lights, where the vehicle is): decided only on the
  batch's *fresh* fixes, those newer than every fix decided before for the vehicle, so a record
  buffered offline and replayed hours later never raises "overspeed now" nor clears anything.

Each rule type's condition, and what clears its incident (docs/alerts.md has the same list):

- box_alarm: an event of one of its codes, or a fix with warning lights (dashboard_warning).
  Cleared: power_cut by a power_restored event, dashboard_warning by a fix with no light on;
  the others stay open until a user closes them.
- geofence_enter / geofence_exit: the geofence handler's signal for one of its fences. Cleared
  by the opposite crossing of that fence.
- overspeed: faster than the limit for min_duration_s, the limit being the lowest of the fences
  the vehicle is in, else the rule's. Cleared by a fix at or under the limit.
- ignition_off_movement: moving (min_speed_kmh) with the ignition off for min_duration_s.
  Cleared when stopped or the ignition is on.
- no_badge: moving with the ignition on without a recognised badge. Cleared by the ignition
  off or a recognised badge (a stop at a red light is no end of the trip).
- outside_hours: moving outside the rule's schedule, or outside that of a fence it is in.
  Cleared within the hours, parked (ignition off, stopped), or (a fence's) on leaving it.

box_offline (tracking/offline.py) and parked_guard (tracking/guard_logic.py) have their own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from processing import Signal
from protocol.gp8 import WarningLight
from storage.models import (
    SEVERITY_RANK,
    AlertKind,
    AlertRule,
    AlertRuleType,
    Event,
    GeofenceSchedule,
    Position,
    Severity,
    TrackingPolicy,
    new_id,
)
from tracking.geofence_schedule import within_schedule

# The box alarms a box_alarm rule may name (event codes, protocol.EventCode lower case).
BOX_ALARM_CODES = (
    "sos",
    "power_cut",
    "tamper",
    "gps_jamming",
    "gsm_jamming",
    "towing",
    "crash",
    "dashboard_warning",
)
# What a box_alarm rule without codes watches: the security alarms. Warning lights come on
# for a tyre pressure or a service due: a fleet asks for them with a rule of its own.
DEFAULT_ALARM_CODES = tuple(c for c in BOX_ALARM_CODES if c != "dashboard_warning")
# An alarm whose incident a later event ends.
CLEARED_BY_EVENT = {"power_restored": "power_cut"}
# Below this a fix counts as stopped: a parked box's GPS drifts at 1-3 km/h.
STOPPED_KMH = 5.0

# The parameters each rule type takes, and the defaults of those a rule leaves None.
PARAMETERS: dict[AlertRuleType, frozenset[str]] = {
    AlertRuleType.BOX_ALARM: frozenset({"codes"}),
    AlertRuleType.GEOFENCE_ENTER: frozenset({"geofence_ids"}),
    AlertRuleType.GEOFENCE_EXIT: frozenset({"geofence_ids"}),
    AlertRuleType.OVERSPEED: frozenset({"speed_limit_kmh", "min_duration_s", "geofence_ids"}),
    AlertRuleType.BOX_OFFLINE: frozenset({"offline_minutes"}),
    AlertRuleType.IGNITION_OFF_MOVEMENT: frozenset({"min_speed_kmh", "min_duration_s"}),
    AlertRuleType.OUTSIDE_HOURS: frozenset(
        {"schedule", "geofence_ids", "min_speed_kmh", "min_duration_s"}
    ),
    AlertRuleType.NO_BADGE: frozenset({"min_speed_kmh", "min_duration_s"}),
    AlertRuleType.PARKED_GUARD: frozenset({"radius_m", "park_minutes"}),
}
DEFAULTS: dict[AlertRuleType, dict[str, object]] = {
    AlertRuleType.BOX_ALARM: {"codes": DEFAULT_ALARM_CODES},
    # 30 s over the limit: an overtaking manoeuvre is not an incident.
    AlertRuleType.OVERSPEED: {"min_duration_s": 30},
    AlertRuleType.BOX_OFFLINE: {"offline_minutes": 24 * 60},
    AlertRuleType.IGNITION_OFF_MOVEMENT: {"min_speed_kmh": 10.0, "min_duration_s": 0},
    AlertRuleType.OUTSIDE_HOURS: {"min_speed_kmh": STOPPED_KMH, "min_duration_s": 0},
    AlertRuleType.NO_BADGE: {"min_speed_kmh": STOPPED_KMH, "min_duration_s": 0},
    # 150 m: well beyond the drift of a parked box's fixes (a bad one is off by 30-50 m), well
    # short of where a tow truck is after one report interval.
    AlertRuleType.PARKED_GUARD: {"radius_m": 150.0, "park_minutes": 5},
}
# The alert each type raises (box_alarm: the alarm's own code).
KIND_OF: dict[AlertRuleType, AlertKind] = {
    AlertRuleType.GEOFENCE_ENTER: AlertKind.GEOFENCE_ENTER,
    AlertRuleType.GEOFENCE_EXIT: AlertKind.GEOFENCE_EXIT,
    AlertRuleType.OVERSPEED: AlertKind.OVERSPEED,
    AlertRuleType.BOX_OFFLINE: AlertKind.BOX_OFFLINE,
    AlertRuleType.IGNITION_OFF_MOVEMENT: AlertKind.IGNITION_OFF_MOVEMENT,
    AlertRuleType.OUTSIDE_HOURS: AlertKind.OUTSIDE_HOURS,
    AlertRuleType.NO_BADGE: AlertKind.NO_BADGE,
    AlertRuleType.PARKED_GUARD: AlertKind.SUSPECTED_THEFT,
}


def effective(rule: AlertRule) -> AlertRule:
    """``rule`` with its type's defaults in the parameters it left None."""
    defaults = {k: v for k, v in DEFAULTS.get(rule.type, {}).items() if getattr(rule, k) is None}
    return dataclasses.replace(rule, **defaults) if defaults else rule  # type: ignore[arg-type]


def default_rules(fleet_id: str, now_ms: int) -> list[AlertRule]:
    """The rules a fleet starts with, so it is protected before anyone configures anything."""
    made = [
        (AlertRuleType.PARKED_GUARD, "Parked guard: suspected theft", Severity.CRITICAL),
        (AlertRuleType.BOX_ALARM, "Box alarms", Severity.CRITICAL),
        (AlertRuleType.BOX_OFFLINE, "Box offline for a day", Severity.WARNING),
    ]
    return [
        AlertRule(
            id=new_id("arl"),
            fleet_id=fleet_id,
            type=rule_type,
            name=name,
            created_ms=now_ms + i,  # keeps them in this order
            updated_ms=now_ms,
            severity=severity,
            default=True,
            updated_by="system",
        )
        for i, (rule_type, name, severity) in enumerate(made)
    ]


def applies(rule: AlertRule, vehicle_id: str) -> bool:
    return rule.enabled and vehicle_id not in rule.muted_vehicle_ids


def recognised(badge: int | None, policy: TrackingPolicy) -> bool:
    """A badge the fleet knows (any badge when its list is empty). Both sides are pseudonyms
    (storage/pseudonyms.py): the pipeline hashed the box's, the API the policy's."""
    return badge is not None and (not policy.badges or badge in policy.badges)


def warning_names(mask: int) -> list[str]:
    return [(light.name or "").lower() for light in WarningLight if mask & light]


@dataclass(frozen=True, slots=True)
class FenceInfo:
    """A fence the vehicle is inside, as the rules need it."""

    id: str
    name: str
    speed_limit_kmh: float | None = None
    schedule: GeofenceSchedule | None = None


@dataclass(frozen=True, slots=True)
class VehicleContext:
    """What the rules remember of a vehicle between batches (in memory: after a restart a
    min_duration starts again, and the fences it is in are read back from the geofence
    states)."""

    checked_ms: int = 0  # device time of the newest fix decided on
    inside: Mapping[str, FenceInfo] = field(default_factory=dict)
    # When each sustained condition began: (rule id, ref) -> device time.
    since: Mapping[tuple[str, str | None], int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Trigger:
    """An incident seen at ``time_ms``: opens its alert, or updates the open one."""

    kind: AlertKind
    ref: str | None
    rule: AlertRule
    time_ms: int
    detail: str
    position: Position | None = None
    count: int = 1
    first_ms: int | None = None  # a coalesced trigger's first record (else time_ms)


@dataclass(frozen=True, slots=True)
class Clear:
    """The condition of an incident ended at ``time_ms``: its open alert closes."""

    kind: AlertKind
    ref: str | None
    time_ms: int
    reason: str


Action = Trigger | Clear


def evaluate(
    rules: Sequence[AlertRule],
    policy: TrackingPolicy,
    ctx: VehicleContext,
    vehicle_id: str,
    *,
    fresh: Sequence[Position],
    events: Sequence[Event] = (),
    signals: Sequence[Signal] = (),
) -> tuple[list[Action], VehicleContext]:
    """The actions for one batch, in device time order, and the vehicle's new context.

    ``fresh``: the batch's valid fixes newer than ``ctx.checked_ms`` (empty for a late
    replay); ``events`` all the batch's events; ``signals`` the geofence handler's.
    """
    active = [effective(r) for r in rules if applies(r, vehicle_id)]
    by_type: dict[AlertRuleType, list[AlertRule]] = {}
    for rule in active:
        by_type.setdefault(rule.type, []).append(rule)
    timed: list[tuple[int, int, Action]] = []  # (time, order, action): a stable time sort

    def add(actions: Iterable[Action]) -> None:
        for action in actions:
            timed.append((action.time_ms, len(timed), action))

    add(_alarms(by_type.get(AlertRuleType.BOX_ALARM, []), events))
    inside = dict(ctx.inside)
    since = dict(ctx.since)
    # Crossings and fixes interleaved in time: a fix is judged against the fences it was in.
    crossings = sorted((s for s in signals if s.kind in _CROSSINGS), key=lambda s: s.time_ms)
    stream: list[tuple[int, int, Signal | Position]] = [
        *((s.time_ms, 0, s) for s in crossings),
        *((p.time_ms, 1, p) for p in fresh),
    ]
    stream.sort(key=lambda item: (item[0], item[1]))
    for _, _, item in stream:
        if isinstance(item, Signal):
            add(_crossing(by_type, item, inside))
        else:
            add(_warning_lights(by_type.get(AlertRuleType.BOX_ALARM, []), item))
            add(_overspeed(by_type.get(AlertRuleType.OVERSPEED, []), item, inside, since))
            add(_ignition_off(by_type.get(AlertRuleType.IGNITION_OFF_MOVEMENT, []), item, since))
            add(_no_badge(by_type.get(AlertRuleType.NO_BADGE, []), item, policy, since))
            add(_outside_hours(by_type.get(AlertRuleType.OUTSIDE_HOURS, []), item, inside, since))
    timed.sort(key=lambda t: (t[0], t[1]))
    checked = max([ctx.checked_ms, *(p.time_ms for p in fresh)])
    live_rules = {r.id for r in active}
    since = {k: v for k, v in since.items() if k[0] in live_rules}
    return [a for _, _, a in timed], VehicleContext(checked, inside, since)


def coalesce(actions: Sequence[Action]) -> list[Action]:
    """Fold the triggers of one incident that no clear separates into one (the newest's
    position and texts, the count of all, the first's time), keeping the order of the rest:
    one storage write per incident per batch."""
    out: list[Action] = []
    pending: dict[tuple[AlertKind, str | None], int] = {}  # incident -> index in out
    for action in actions:
        key = (action.kind, action.ref)
        if isinstance(action, Clear):
            pending.pop(key, None)
            out.append(action)
            continue
        index = pending.get(key)
        if index is None:
            pending[key] = len(out)
            out.append(action)
            continue
        held = out[index]
        assert isinstance(held, Trigger)
        first = min(held.first_ms or held.time_ms, action.first_ms or action.time_ms)
        newest = action if action.time_ms >= held.time_ms else held
        rule = max((held.rule, action.rule), key=lambda r: SEVERITY_RANK[r.severity])
        out[index] = dataclasses.replace(
            newest, rule=rule, count=held.count + action.count, first_ms=first
        )
    return out


# --- one function per rule type -------------------------------------------------------------

_CROSSINGS = {"geofence_enter", "geofence_exit"}


def _strongest(rules: Sequence[AlertRule]) -> AlertRule:
    return max(rules, key=lambda r: SEVERITY_RANK[r.severity])


def _alarms(rules: Sequence[AlertRule], events: Sequence[Event]) -> list[Action]:
    out: list[Action] = []
    for event in events:
        cleared = CLEARED_BY_EVENT.get(event.code)
        if cleared is not None:
            out.append(Clear(AlertKind(cleared), None, event.time_ms, f"{event.code} reported"))
            continue
        matching = [r for r in rules if event.code in (r.codes or ())]
        if not matching:
            continue
        detail = f"{event.code.replace('_', ' ')} reported by the box"
        if event.code == "dashboard_warning" and event.position.warnings:
            detail += ": " + ", ".join(warning_names(event.position.warnings))
        out.append(
            Trigger(
                AlertKind(event.code),
                None,
                _strongest(matching),
                event.time_ms,
                detail,
                event.position,
            )
        )
    return out


def _warning_lights(rules: Sequence[AlertRule], fix: Position) -> list[Action]:
    if not fix.warnings:
        return [Clear(AlertKind.DASHBOARD_WARNING, None, fix.time_ms, "no warning light on")]
    matching = [r for r in rules if "dashboard_warning" in (r.codes or ())]
    if not matching:
        return []
    lights = ", ".join(warning_names(fix.warnings))
    return [
        Trigger(
            AlertKind.DASHBOARD_WARNING,
            None,
            _strongest(matching),
            fix.time_ms,
            f"warning lights on: {lights}",
            fix,
        )
    ]


def _crossing(
    by_type: Mapping[AlertRuleType, Sequence[AlertRule]],
    signal: Signal,
    inside: dict[str, FenceInfo],
) -> list[Action]:
    fence_id = signal.ref
    if fence_id is None:
        return []
    data = signal.data
    name = str(data.get("name") or fence_id)
    entered = signal.kind == "geofence_enter"
    if entered:
        limit = data.get("speed_limit_kmh")
        schedule = data.get("schedule")
        inside[fence_id] = FenceInfo(
            fence_id,
            name,
            float(limit) if isinstance(limit, int | float) else None,
            schedule if isinstance(schedule, GeofenceSchedule) else None,
        )
    else:
        inside.pop(fence_id, None)
    kind = AlertKind.GEOFENCE_ENTER if entered else AlertKind.GEOFENCE_EXIT
    rule_type = AlertRuleType.GEOFENCE_ENTER if entered else AlertRuleType.GEOFENCE_EXIT
    t = signal.time_ms
    out: list[Action] = [
        Clear(
            AlertKind.GEOFENCE_EXIT if entered else AlertKind.GEOFENCE_ENTER,
            fence_id,
            t,
            f"{'entered' if entered else 'left'} {name} again",
        )
    ]
    if not entered:
        out.append(Clear(AlertKind.OUTSIDE_HOURS, fence_id, t, f"left {name}"))
    matching = [
        r
        for r in by_type.get(rule_type, [])
        if r.geofence_ids is None or fence_id in r.geofence_ids
    ]
    if matching:
        verb = "entered" if entered else "left"
        out.append(
            Trigger(kind, fence_id, _strongest(matching), t, f"{verb} {name}", signal.position)
        )
    return out


def _sustained(
    since: dict[tuple[str, str | None], int],
    key: tuple[str, str | None],
    active: bool,
    t: int,
    min_duration_s: int | None,
) -> bool:
    """Whether a condition has held for ``min_duration_s`` at ``t`` (remembering its start)."""
    if not active:
        since.pop(key, None)
        return False
    start = since.setdefault(key, t)
    return t - start >= (min_duration_s or 0) * 1000


def _limit(
    rule: AlertRule, inside: Mapping[str, FenceInfo]
) -> tuple[float | None, FenceInfo | None]:
    fenced = [
        f
        for f in inside.values()
        if f.speed_limit_kmh is not None
        and (rule.geofence_ids is None or f.id in rule.geofence_ids)
    ]
    if fenced:
        fence = min(fenced, key=lambda f: f.speed_limit_kmh or 0.0)
        return fence.speed_limit_kmh, fence
    return rule.speed_limit_kmh, None


def _overspeed(
    rules: Sequence[AlertRule],
    fix: Position,
    inside: Mapping[str, FenceInfo],
    since: dict[tuple[str, str | None], int],
) -> list[Action]:
    raised: list[tuple[AlertRule, float, FenceInfo | None]] = []
    over_any = False
    for rule in rules:
        limit, fence = _limit(rule, inside)
        over = limit is not None and fix.speed_kmh > limit
        over_any = over_any or over
        if _sustained(since, (rule.id, None), over, fix.time_ms, rule.min_duration_s):
            assert limit is not None
            raised.append((rule, limit, fence))
    if not over_any:
        return [Clear(AlertKind.OVERSPEED, None, fix.time_ms, "speed back within the limit")]
    if not raised:
        return []
    rule, limit, fence = max(raised, key=lambda r: SEVERITY_RANK[r[0].severity])
    where = f" in {fence.name}" if fence is not None else ""
    detail = f"{fix.speed_kmh:.0f} km/h, limit {limit:.0f} km/h{where}"
    return [Trigger(AlertKind.OVERSPEED, None, rule, fix.time_ms, detail, fix)]


def _ignition_off(
    rules: Sequence[AlertRule], fix: Position, since: dict[tuple[str, str | None], int]
) -> list[Action]:
    raised = []
    moving_any = False
    for rule in rules:
        moving = not fix.ignition and fix.speed_kmh >= (rule.min_speed_kmh or 0.0)
        moving_any = moving_any or moving
        if _sustained(since, (rule.id, None), moving, fix.time_ms, rule.min_duration_s):
            raised.append(rule)
    if not moving_any:
        reason = "ignition on" if fix.ignition else "stopped"
        return [Clear(AlertKind.IGNITION_OFF_MOVEMENT, None, fix.time_ms, reason)]
    if not raised:
        return []
    detail = f"moving at {fix.speed_kmh:.0f} km/h with the ignition off"
    return [
        Trigger(AlertKind.IGNITION_OFF_MOVEMENT, None, _strongest(raised), fix.time_ms, detail, fix)
    ]


def _no_badge(
    rules: Sequence[AlertRule],
    fix: Position,
    policy: TrackingPolicy,
    since: dict[tuple[str, str | None], int],
) -> list[Action]:
    # Cleared only at the end of the trip or by a badge: a stop at a red light is no end.
    if not fix.ignition or recognised(fix.driver_badge, policy):
        for rule in rules:
            since.pop((rule.id, None), None)
        reason = "ignition off" if not fix.ignition else f"badge {fix.driver_badge} presented"
        return [Clear(AlertKind.NO_BADGE, None, fix.time_ms, reason)]
    raised = []
    for rule in rules:
        moving = fix.speed_kmh >= (rule.min_speed_kmh or 0.0)
        if moving:
            since.setdefault((rule.id, None), fix.time_ms)
        start = since.get((rule.id, None))
        if start is not None and fix.time_ms - start >= (rule.min_duration_s or 0) * 1000:
            raised.append(rule)
    if not raised:
        return []
    who = "no badge" if fix.driver_badge is None else f"unknown badge {fix.driver_badge}"
    detail = f"driving with {who}"
    return [Trigger(AlertKind.NO_BADGE, None, _strongest(raised), fix.time_ms, detail, fix)]


def _outside_hours(
    rules: Sequence[AlertRule],
    fix: Position,
    inside: Mapping[str, FenceInfo],
    since: dict[tuple[str, str | None], int],
) -> list[Action]:
    parked = not fix.ignition and fix.speed_kmh < STOPPED_KMH
    over: dict[str | None, bool] = {}  # per ref: is any rule's condition still on?
    raised: dict[str | None, tuple[AlertRule, str]] = {}
    for rule in rules:
        for ref, schedule, why in _windows(rule, inside):
            key = (rule.id, ref)
            if parked or within_schedule(schedule, fix.time_ms):
                since.pop(key, None)
                over.setdefault(ref, False)
                continue
            if fix.speed_kmh >= (rule.min_speed_kmh or 0.0):
                since.setdefault(key, fix.time_ms)
            start = since.get(key)
            over[ref] = over.get(ref, False) or start is not None
            if start is None or fix.time_ms - start < (rule.min_duration_s or 0) * 1000:
                continue
            held = raised.get(ref)
            if held is None or SEVERITY_RANK[rule.severity] > SEVERITY_RANK[held[0].severity]:
                raised[ref] = (rule, why)
    reason = "parked" if parked else "within the allowed hours"
    out: list[Action] = [
        Clear(AlertKind.OUTSIDE_HOURS, ref, fix.time_ms, reason)
        for ref, on in over.items()
        if not on
    ]
    for ref, (rule, why) in raised.items():
        detail = f"moving at {fix.speed_kmh:.0f} km/h {why}"
        out.append(Trigger(AlertKind.OUTSIDE_HOURS, ref, rule, fix.time_ms, detail, fix))
    return out


def _windows(
    rule: AlertRule, inside: Mapping[str, FenceInfo]
) -> list[tuple[str | None, GeofenceSchedule, str]]:
    """The allowed hours a rule checks: its own schedule everywhere (ref None), else those of
    the fences the vehicle is in (ref: the fence)."""
    if rule.schedule is not None:
        return [(None, rule.schedule, "outside the allowed hours")]
    return [
        (f.id, f.schedule, f"outside the allowed hours of {f.name}")
        for f in inside.values()
        if f.schedule is not None and (rule.geofence_ids is None or f.id in rule.geofence_ids)
    ]
