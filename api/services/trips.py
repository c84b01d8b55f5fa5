"""Trips and daily mileage computed from a vehicle's positions. Pure, incremental functions.

A trip runs from a fix with the ignition on, following a fix with it off (or the start of the
range), to the next fix with the ignition off. Distances come from the box odometer: the sum of
the forward steps between consecutive fixes of the same box. Summing steps instead of taking
``last - first`` keeps a box swap (a new box has its own odometer) or an odometer reset from
producing a bogus or negative distance.

Both computations take positions in time order, page after page, so a month of history never
has to be held in memory; feeding pages one by one gives the same result as feeding them all.

Privacy mode (docs/privacy.md): both take the spans the caller may not see (``hidden``, from
`api.services.privacy.PrivacyView.spans`; empty for an admin who stated a reason or under a
theft case). A private fix is dropped and cuts the computation there, as the edge of the range
does: a trip running into private time ends at its last visible fix and one coming out of it
starts at its first, both ``complete: false``; a trip wholly in private time is not listed,
and no odometer step across private time is counted. Trips are not listed with their times
over the private part either: when a driver drove in private time is personal data of the
private sphere (the reason privacy mode exists), and /positions hides it; a trip reveals
nothing /positions would not. The answers say ``"privacy": "active"`` when something was left
out, never where or when.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta

from api.times import ms_to_datetime
from storage.models import Position
from tracking.privacy import PrivateSpans

_DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class Place:
    time_ms: int
    lat: float | None  # None when the trip had no valid fix at that end
    lon: float | None


@dataclass(frozen=True, slots=True)
class Trip:
    start: Place
    end: Place
    distance_m: int
    max_speed_kmh: float
    # False when the range cut the trip: it began before the first fix seen or was still going
    # at the last one.
    complete: bool

    @property
    def duration_s(self) -> float:
        return (self.end.time_ms - self.start.time_ms) / 1000

    @property
    def avg_speed_kmh(self) -> float:
        duration = self.duration_s
        return self.distance_m / duration * 3.6 if duration > 0 else 0.0


def odometer_step(previous: Position | None, current: Position) -> int:
    """Metres driven between two consecutive fixes: forward odometer steps of one box only."""
    if previous is None or previous.device_id != current.device_id:
        return 0
    return max(0, current.odometer_m - previous.odometer_m)


class _OpenTrip:
    __slots__ = ("distance_m", "last_valid", "max_speed_kmh", "start", "start_valid", "truncated")

    def __init__(self, start: Position, *, truncated: bool) -> None:
        self.start = start
        self.truncated = truncated
        self.distance_m = 0
        self.max_speed_kmh = start.speed_kmh if start.fix_valid else 0.0
        self.start_valid: Position | None = start if start.fix_valid else None
        self.last_valid: Position | None = self.start_valid

    def add(self, p: Position, step_m: int) -> None:
        self.distance_m += step_m
        if p.fix_valid:
            self.max_speed_kmh = max(self.max_speed_kmh, p.speed_kmh)
            self.last_valid = p
            if self.start_valid is None:
                self.start_valid = p

    def close(self, end: Position, *, complete: bool) -> Trip:
        # A place needs a valid fix: the end's own, else the last valid one during the trip.
        start_place = self.start_valid
        end_place = end if end.fix_valid else self.last_valid
        return Trip(
            start=Place(
                self.start.time_ms,
                start_place.lat if start_place else None,
                start_place.lon if start_place else None,
            ),
            end=Place(
                end.time_ms,
                end_place.lat if end_place else None,
                end_place.lon if end_place else None,
            ),
            distance_m=self.distance_m,
            max_speed_kmh=self.max_speed_kmh,
            complete=complete and not self.truncated,
        )


class TripBuilder:
    """Feed positions in time order; collect finished trips; `finish` closes the last one.
    Fixes ``hidden`` covers (private to the caller) are left out and cut trips there."""

    def __init__(self, hidden: PrivateSpans | None = None) -> None:
        self.trips: list[Trip] = []
        self._hidden = hidden or PrivateSpans()
        self._previous: Position | None = None
        self._open: _OpenTrip | None = None

    def feed(self, positions: Iterable[Position]) -> None:
        for p in positions:
            if self._hidden and self._hidden.covers(p.time_ms):
                self._cut()
                continue
            step = odometer_step(self._previous, p)
            if self._open is not None:
                self._open.add(p, step)
                if not p.ignition:
                    self.trips.append(self._open.close(p, complete=True))
                    self._open = None
            elif p.ignition:
                # The very first fix with the ignition on: the trip began before we can see.
                self._open = _OpenTrip(p, truncated=self._previous is None)
            self._previous = p

    def _cut(self) -> None:
        """Private time begins: what follows is seen as after the start of a range."""
        self.finish()
        self._previous = None

    def finish(self) -> list[Trip]:
        if self._open is not None and self._previous is not None:
            self.trips.append(self._open.close(self._previous, complete=False))
            self._open = None
        return self.trips


def segment_trips(positions: Iterable[Position]) -> list[Trip]:
    builder = TripBuilder()
    builder.feed(positions)
    return builder.finish()


def utc_day(ms: int) -> date:
    return ms_to_datetime(ms).date()


class MileageCounter:
    """Distance per UTC day: each odometer step counts on the day of the fix that ends it.
    Steps into, within or out of the spans ``hidden`` covers are not counted."""

    def __init__(self, hidden: PrivateSpans | None = None) -> None:
        self.by_day: dict[date, int] = {}
        self._hidden = hidden or PrivateSpans()
        self._previous: Position | None = None

    def feed(self, positions: Iterable[Position]) -> None:
        for p in positions:
            if self._hidden and self._hidden.covers(p.time_ms):
                self._previous = None
                continue
            step = odometer_step(self._previous, p)
            if step:
                day = utc_day(p.time_ms)
                self.by_day[day] = self.by_day.get(day, 0) + step
            self._previous = p

    def days(self, from_ms: int, to_ms: int) -> list[tuple[date, int]]:
        """Every UTC day touching [from_ms, to_ms), with 0 for days without driving."""
        if to_ms <= from_ms:
            return []
        first, last = utc_day(from_ms), utc_day(to_ms - 1)
        out = []
        day = first
        while day <= last:
            out.append((day, self.by_day.get(day, 0)))
            day += timedelta(days=1)
        return out
