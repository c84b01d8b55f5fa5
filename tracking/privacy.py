"""Privacy mode, decided (pure): which of a vehicle's fixes are private (docs/privacy.md).

A fix at time t is private when, at t, the vehicle's schedule then in effect has a private
window covering t, or the privacy badge was presented an odd number of times up to t; and the
vehicle has no open theft case now (the override: a stolen vehicle is tracked, whatever its
driver asked for, and the answer says so).

Read paths decide by intervals, not per row: `VehiclePrivacy.intervals` turns the schedule
history and the toggles into sorted UTC intervals over the range being read, once, and
`PrivateSpans.covers` is then a bisection per fix. Schedule windows are local wall-clock times
in the schedule's IANA zone (the same convention as a geofence's allowed hours,
tracking/geofence_schedule.py, whose parsing this reuses), so 19:00-07:00 stays 19:00-07:00
across daylight-saving changes.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from enum import StrEnum

from storage.models import Event, GeofenceSchedule
from storage.privacy import FleetPrivacy, PrivacySchedule, ScheduleChange
from tracking.geofence_schedule import DAY_MINUTES, minutes, schedule_problem, zone

# A window belongs to its start day and lasts under 24 h: a range is widened by this much
# before its local days are walked, so a window started the day before is not missed.
_DAY_MS = 86_400_000
# Reading a range longer than this (years of history) walks this many days at most per
# schedule change; beyond it the windows of the change's last days repeat weekly anyway, but
# walking them stays linear and bounded (a 5-year export: ~1,800 days, microseconds each).
MAX_WINDOWS_PER_SCHEDULE = 20


class PrivacyState(StrEnum):
    """What a read says about the vehicle's privacy (``"privacy"`` in the answers)."""

    OFF = "off"  # no schedule, no toggle: nothing of it is private
    ACTIVE = "active"  # some of its fixes are private (hidden from this caller)
    REVEALED = "revealed"  # private fixes shown: an admin stated a reason (logged)
    OVERRIDDEN = "overridden_by_theft_case"  # an open theft case: nothing is private


def schedule_error(schedule: PrivacySchedule) -> str | None:
    """Why ``schedule`` cannot be used, or None."""
    if not schedule.windows:
        return "a schedule needs at least one private window (or send null to remove it)"
    if len(schedule.windows) > MAX_WINDOWS_PER_SCHEDULE:
        return f"at most {MAX_WINDOWS_PER_SCHEDULE} private windows"
    for window in schedule.windows:
        problem = schedule_problem(
            GeofenceSchedule(schedule.timezone, window.days, window.start, window.end)
        )
        if problem is not None:
            return problem
    return None


@dataclass(frozen=True, slots=True)
class PrivateSpans:
    """Sorted, disjoint [start, end) intervals in UTC ms."""

    starts: tuple[int, ...] = ()
    ends: tuple[int, ...] = ()

    def covers(self, time_ms: int) -> bool:
        i = bisect_right(self.starts, time_ms) - 1
        return i >= 0 and time_ms < self.ends[i]

    def __bool__(self) -> bool:
        return bool(self.starts)


def merge(spans: Iterable[tuple[int, int]]) -> PrivateSpans:
    starts: list[int] = []
    ends: list[int] = []
    for start, end in sorted(s for s in spans if s[0] < s[1]):
        if ends and start <= ends[-1]:
            ends[-1] = max(ends[-1], end)
        else:
            starts.append(start)
            ends.append(end)
    return PrivateSpans(tuple(starts), tuple(ends))


def _local_ms(day: date, minute: int, tz: str) -> int:
    # Aware + timedelta is wall-clock arithmetic in Python; timestamp() then applies the
    # zone's offset at that wall time, so DST days are right.
    local = datetime.combine(day, time(), tzinfo=zone(tz)) + timedelta(minutes=minute)
    return int(local.timestamp() * 1000)


def schedule_spans(schedule: PrivacySchedule, from_ms: int, to_ms: int) -> list[tuple[int, int]]:
    """The schedule's private windows overlapping [from_ms, to_ms), in UTC ms."""
    tz = zone(schedule.timezone)
    first = datetime.fromtimestamp((from_ms - _DAY_MS) / 1000, tz=tz).date()
    last = datetime.fromtimestamp(to_ms / 1000, tz=tz).date()
    spans: list[tuple[int, int]] = []
    day = first
    while day <= last:
        weekday = day.isoweekday()
        for window in schedule.windows:
            if weekday not in window.days:
                continue
            start, end = minutes(window.start), minutes(window.end)
            if end <= start:
                end += DAY_MINUTES  # past midnight: ends the next day
            span = (
                _local_ms(day, start, schedule.timezone),
                _local_ms(day, end, schedule.timezone),
            )
            if span[1] > from_ms and span[0] < to_ms:
                spans.append(span)
        day += timedelta(days=1)
    return spans


@dataclass(frozen=True, slots=True)
class VehiclePrivacy:
    """One vehicle's privacy facts; ``theft_case``: it has an open theft case (override)."""

    changes: tuple[ScheduleChange, ...] = ()
    toggles: tuple[int, ...] = ()
    theft_case: bool = False

    @property
    def configured(self) -> bool:
        return bool(self.toggles) or any(c.schedule is not None for c in self.changes)

    def spans(self, from_ms: int, to_ms: int) -> PrivateSpans:
        """The private intervals within [from_ms, to_ms); none under a theft case."""
        if self.theft_case or not self.configured or from_ms >= to_ms:
            return PrivateSpans()
        found: list[tuple[int, int]] = []
        for i, change in enumerate(self.changes):
            if change.schedule is None:
                continue
            until = self.changes[i + 1].effective_ms if i + 1 < len(self.changes) else to_ms
            lo, hi = max(from_ms, change.effective_ms), min(to_ms, until)
            if lo < hi:
                found.extend(
                    (max(a, lo), min(b, hi)) for a, b in schedule_spans(change.schedule, lo, hi)
                )
        # Toggles pair up: [t0, t1), [t2, t3), ...; an odd last one is private from then on.
        toggles = self.toggles
        for j in range(0, len(toggles), 2):
            end = toggles[j + 1] if j + 1 < len(toggles) else to_ms
            found.append((max(toggles[j], from_ms), min(end, to_ms)))
        return merge(found)

    def private_at(self, time_ms: int) -> bool:
        """Whether a fix at ``time_ms`` is private: ``spans(time_ms, time_ms + 1)`` without
        building them (the map asks this of every private vehicle at one instant, and of each
        vehicle's own fix): a bisection in the toggles, then the one schedule in effect."""
        if self.theft_case:
            return False
        # An odd number of presentations up to t: inside one of the pairs [t0, t1), ...
        if bisect_right(self.toggles, time_ms) % 2:
            return True
        changes = self.changes
        i = bisect_right(changes, time_ms, key=_effective_ms) - 1
        if i < 0 or (schedule := changes[i].schedule) is None:
            return False
        return bool(schedule_spans(schedule, time_ms, time_ms + 1))

    def state(self, from_ms: int, to_ms: int) -> PrivacyState:
        if self.theft_case and self.configured:
            return PrivacyState.OVERRIDDEN
        return PrivacyState.ACTIVE if self.spans(from_ms, to_ms) else PrivacyState.OFF


def _effective_ms(change: ScheduleChange) -> int:
    return change.effective_ms


def vehicle_privacy(
    fleet: FleetPrivacy, vehicle_id: str, *, theft_case: bool = False
) -> VehiclePrivacy:
    return VehiclePrivacy(
        changes=tuple(fleet.changes.get(vehicle_id, ())),
        toggles=tuple(fleet.toggles.get(vehicle_id, ())),
        theft_case=theft_case,
    )


# The event a GP8 box sends when a badge is presented (protocol EventCode.DRIVER_BADGE).
BADGE_EVENT = "driver_badge"


def toggle_times(badge: int | None, events: Iterable[Event]) -> list[int]:
    """The times at which ``events`` present the privacy ``badge`` (its pseudonym): each is one
    toggle. Presentations are events, not the badge repeated on every fix, so a resend (the
    same event, stored once) or a restart cannot count one twice."""
    if badge is None:
        return []
    return [e.time_ms for e in events if e.code == BADGE_EVENT and e.position.driver_badge == badge]
