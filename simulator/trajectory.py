"""Where a simulated vehicle is and what it does: pure, seeded, no I/O and no wall clock.

A vehicle moves along *legs*: straight road segments between two intersections of a road
network (a jittered grid of streets around a centre, or a replayed GPX/GeoJSON track). On each
leg its speed follows a trapezoid: accelerate from the entry speed, cruise just under the road's
limit, brake for the next turn, a red light or the end of the trip. Positions between samples
are computed in closed form, so sampling every second or every hour costs the same and gives
the same path.

Around the driving, a day: trips of a few minutes to most of an hour, stops with the ignition
off, parking through the night, a driver badge at each start, a dashboard warning now and then,
the odometer adding up every metre. What the box should report about that comes out of
`Vehicle.advance` as `Happening`s (IGNITION_ON, DRIVER_BADGE, TOWING, ...), and the state at the
current time from `Vehicle.sample`.

Two random streams per vehicle: one decides the path and the plan, the other only the sensor
noise of samples, so the same seed gives the same trip whatever the sampling cadence.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import NamedTuple, Protocol

from protocol.gp8 import EventCode, WarningLight
from simulator.geo import (
    LatLon,
    bearing_deg,
    haversine_m,
    interpolate,
    local_hour,
    offset,
    turn_angle_deg,
)


class RoadClass(Enum):
    RESIDENTIAL = "residential"
    ARTERIAL = "arterial"
    EXPRESSWAY = "expressway"


SPEED_LIMITS_KMH: dict[RoadClass, float] = {
    RoadClass.RESIDENTIAL: 50.0,
    RoadClass.ARTERIAL: 70.0,
    RoadClass.EXPRESSWAY: 110.0,
}
# Drivers cruise between 80 % and 105 % of the limit (a trip's own factor); nobody in the
# simulated fleet drives faster than this fraction of the limit of the road they are on.
SPEED_FACTOR_RANGE = (0.80, 1.05)
MAX_SPEED_FACTOR = SPEED_FACTOR_RANGE[1]
# A tow truck with a car on its back stays under this, whatever the road.
TOW_SPEED_KMH = 40.0
ACCEL_RANGE_MS2 = (1.2, 2.4)  # ordinary driving; a sports start is ~4
DECEL_MS2 = 2.5  # comfortable braking
# Braking harder than this (≈0.4 g) is what the box reports as HARSH_BRAKING.
HARSH_DECEL_MS2 = 4.0
EMERGENCY_DECEL_MS2 = (5.0, 7.5)
EMERGENCY_STOP_PROBABILITY = 0.01  # per leg
TURN_SPEED_KMH = 20.0
UTURN_SPEED_KMH = 8.0
# Probability of stopping at the end of a leg (lights, stop signs, traffic), by road class.
STOP_PROBABILITY: dict[RoadClass, float] = {
    RoadClass.RESIDENTIAL: 0.25,
    RoadClass.ARTERIAL: 0.20,
    RoadClass.EXPRESSWAY: 0.0,
}
DWELL_S = (5.0, 45.0)
TRIP_S = (5 * 60.0, 45 * 60.0)
PARK_S = (3 * 60.0, 90 * 60.0)
# Local solar hours of the night: a vehicle that stops then stays until the morning.
NIGHT_START_H = 21.5
NIGHT_END_H = 6.0
MORNING_SPREAD_H = 2.5
BADGE_PROBABILITY = 0.9
LOCK_PROBABILITY = 0.9
WARNING_PROBABILITY = 0.03  # per trip: a dashboard warning light comes on
WARNING_TRIPS = (1, 6)  # trips a warning stays lit
# Lights that come on by themselves in ordinary use (the others mean an accident or worse).
EVERYDAY_WARNINGS = (
    WarningLight.ENGINE,
    WarningLight.TYRE_PRESSURE,
    WarningLight.FUEL_LOW,
    WarningLight.SERVICE_DUE,
    WarningLight.OIL_PRESSURE,
    WarningLight.EMISSIONS,
)
# After the ignition went off, the box notices it moves after this long and reports TOWING.
TOWING_DETECTION_S = 10.0
# Hooking a car onto a tow truck takes a moment.
TOW_HOOKUP_S = 90.0
# Retry of an engine start prevented by the inhibit relay.
START_RETRY_S = (10 * 60.0, 30 * 60.0)
DRIVE_START_RETRY_S = 60.0
# Legs shorter than this (repeated track points) are skipped.
MIN_LEG_M = 1.0
_GRAVITY = 9.80665


class Action(Enum):
    """What the driver does to the vehicle that the box sees as state, not as an event."""

    LOCK = "lock"
    UNLOCK = "unlock"


class Happening(NamedTuple):
    """Something that happened at ``time_ms``: a protocol event (with the vehicle's state at
    that moment, for the event's record), or a driver action."""

    time_ms: int
    kind: EventCode | Action
    detail: int = 0
    sample: Sample | None = None


class Motion(StrEnum):
    NORMAL = "normal"  # a day: trips, stops, night parking
    DRIVE = "drive"  # keep driving
    PARK = "park"  # stop and stay parked, ignition off
    TOW = "tow"  # ignition off, moved by a tow truck


@dataclass(frozen=True, slots=True)
class Leg:
    """A straight road segment from one intersection to the next."""

    start: LatLon
    end: LatLon
    length_m: float
    heading_deg: float
    limit_kmh: float
    road: RoadClass
    from_node: Hashable
    to_node: Hashable

    @classmethod
    def between(
        cls,
        start: LatLon,
        end: LatLon,
        limit_kmh: float,
        road: RoadClass,
        from_node: Hashable,
        to_node: Hashable,
    ) -> Leg:
        return cls(
            start,
            end,
            haversine_m(start, end),
            bearing_deg(start, end),
            limit_kmh,
            road,
            from_node,
            to_node,
        )


class RoadNetwork(Protocol):
    """Where a vehicle may drive: a first leg, and the leg after each leg."""

    def first_leg(self, rng: random.Random) -> Leg: ...
    def next_leg(self, leg: Leg, rng: random.Random) -> Leg: ...


# --- a city of jittered streets ---------------------------------------------------------------

# Street spacing: a block of 250 m is typical of European and American cities alike.
GRID_SPACING_M = 250.0
# Every ARTERIAL_EVERY-th street is an arterial; the two through the centre are expressways.
ARTERIAL_EVERY = 6
# Intersections are moved by up to this fraction of the spacing, so streets are not ruled lines.
GRID_JITTER = 0.25
# Preference at an intersection: straight on, left, right (a U-turn only at a dead end).
TURN_WEIGHTS = (6.0, 2.0, 2.0)
# Staying on a bigger road is more likely than leaving it.
STAY_ON_MAIN_ROAD = 2.0

_Node = tuple[int, int]
_DIRECTIONS: tuple[_Node, ...] = ((1, 0), (0, 1), (-1, 0), (0, -1))


class StreetGrid:
    """A road network of streets on a jittered grid inside a circle around ``centre``.

    Shared by every vehicle of a fleet (it is the city); deterministic for a seed.
    """

    def __init__(
        self,
        centre: LatLon,
        radius_m: float,
        *,
        seed: int | str = 0,
        spacing_m: float = GRID_SPACING_M,
    ) -> None:
        if radius_m <= 0:
            raise ValueError("radius must be positive")
        self.centre = centre
        self.radius_m = radius_m
        # At least two blocks each way, however small the radius.
        self.spacing_m = min(spacing_m, radius_m / 2)
        self.seed = seed
        self._extent = max(1, int(radius_m // self.spacing_m))
        self._points: dict[_Node, LatLon] = {}

    def inside(self, node: _Node) -> bool:
        i, j = node
        return math.hypot(i, j) * self.spacing_m <= self.radius_m

    def point(self, node: _Node) -> LatLon:
        found = self._points.get(node)
        if found is None:
            i, j = node
            jitter = random.Random(f"{self.seed}:{i}:{j}")
            amplitude = GRID_JITTER * self.spacing_m
            east = i * self.spacing_m + jitter.uniform(-amplitude, amplitude)
            north = j * self.spacing_m + jitter.uniform(-amplitude, amplitude)
            found = self._points[node] = offset(self.centre, east, north)
        return found

    @staticmethod
    def road_class(a: _Node, b: _Node) -> RoadClass:
        # A street is a row (constant j) or a column (constant i) of the grid.
        line = a[1] if a[1] == b[1] else a[0]
        if line == 0:
            return RoadClass.EXPRESSWAY
        if line % ARTERIAL_EVERY == 0:
            return RoadClass.ARTERIAL
        return RoadClass.RESIDENTIAL

    def _leg(self, a: _Node, b: _Node) -> Leg:
        road = self.road_class(a, b)
        return Leg.between(self.point(a), self.point(b), SPEED_LIMITS_KMH[road], road, a, b)

    def first_leg(self, rng: random.Random) -> Leg:
        extent = self._extent
        while True:
            node = (rng.randint(-extent, extent), rng.randint(-extent, extent))
            if not self.inside(node):
                continue
            options = [
                (node[0] + di, node[1] + dj)
                for di, dj in _DIRECTIONS
                if self.inside((node[0] + di, node[1] + dj))
            ]
            if options:
                return self._leg(node, rng.choice(options))

    def next_leg(self, leg: Leg, rng: random.Random) -> Leg:
        a = leg.from_node
        b = leg.to_node
        assert isinstance(a, tuple) and isinstance(b, tuple)
        di, dj = b[0] - a[0], b[1] - a[1]
        straight = (b[0] + di, b[1] + dj)
        left = (b[0] - dj, b[1] + di)
        right = (b[0] + dj, b[1] - di)
        current = self.road_class(a, b)
        options: list[_Node] = []
        weights: list[float] = []
        for node, weight in zip((straight, left, right), TURN_WEIGHTS, strict=True):
            if not self.inside(node):
                continue
            road = self.road_class(b, node)
            if road is not RoadClass.RESIDENTIAL and road is current:
                weight *= STAY_ON_MAIN_ROAD
            options.append(node)
            weights.append(weight)
        if not options:
            return self._leg(b, a)  # the edge of the city: turn back
        return self._leg(b, rng.choices(options, weights)[0])


# --- a replayed track -------------------------------------------------------------------------

DEFAULT_TRACK_LIMIT_KMH = 50.0
# Speeds read from a track's timestamps are clamped to this range: GPS noise at a standstill
# gives absurd values either way.
TRACK_LIMIT_RANGE_KMH = (10.0, 130.0)


class TrackPoint(NamedTuple):
    lat: float
    lon: float
    time_ms: int | None = None


class TrackRoute:
    """A road network that is one recorded track: vehicles drive it to its end, then back.

    The limit of each leg is the speed the track was recorded at when it has timestamps,
    otherwise ``limit_kmh``.
    """

    def __init__(
        self, points: Sequence[TrackPoint], *, limit_kmh: float = DEFAULT_TRACK_LIMIT_KMH
    ) -> None:
        kept: list[TrackPoint] = []
        for p in points:
            if kept and haversine_m(LatLon(*kept[-1][:2]), LatLon(p.lat, p.lon)) < MIN_LEG_M:
                continue
            kept.append(p)
        if len(kept) < 2:
            raise ValueError("a track needs at least two distinct points")
        self.points = kept
        self.default_limit_kmh = limit_kmh

    def _limit(self, a: TrackPoint, b: TrackPoint, length_m: float) -> float:
        if a.time_ms is None or b.time_ms is None or b.time_ms == a.time_ms:
            return self.default_limit_kmh
        kmh = length_m / (abs(b.time_ms - a.time_ms) / 1000) * 3.6
        low, high = TRACK_LIMIT_RANGE_KMH
        return min(high, max(low, kmh))

    def _leg(self, i: int, j: int) -> Leg:
        a, b = self.points[i], self.points[j]
        start, end = LatLon(a.lat, a.lon), LatLon(b.lat, b.lon)
        length = haversine_m(start, end)
        return Leg(
            start,
            end,
            length,
            bearing_deg(start, end),
            self._limit(a, b, length),
            RoadClass.RESIDENTIAL,
            i,
            j,
        )

    def first_leg(self, rng: random.Random) -> Leg:
        i = rng.randrange(len(self.points) - 1)
        return self._leg(i, i + 1)

    def next_leg(self, leg: Leg, rng: random.Random) -> Leg:
        i, j = leg.from_node, leg.to_node
        assert isinstance(i, int) and isinstance(j, int)
        step = j - i
        k = j + step
        if not 0 <= k < len(self.points):
            k = i  # the end of the track: drive it back
        return self._leg(j, k)


# --- motion on a leg --------------------------------------------------------------------------


class Piece(NamedTuple):
    """Constant acceleration for ``duration_s`` from speed ``v0`` (m/s)."""

    duration_s: float
    v0: float
    accel: float

    @property
    def distance(self) -> float:
        return self.v0 * self.duration_s + 0.5 * self.accel * self.duration_s**2


def speed_profile(
    length_m: float, v_in: float, v_cruise: float, v_out: float, accel: float, decel: float
) -> tuple[list[Piece], float]:
    """The pieces that cover ``length_m`` from ``v_in``, cruising at ``v_cruise`` at most and
    arriving at ``v_out`` (or as close as the distance allows); returns them and the exit speed.

    Braking is ``decel`` unless the distance is too short for it, in which case it is as hard as
    needed (the caller reports that as harsh braking).
    """
    v_in = max(0.0, v_in)
    v_cruise = max(v_cruise, 0.1)
    v_out = max(0.0, min(v_out, v_cruise))
    if length_m <= 0:
        return [], v_in
    if v_in > v_cruise:
        v_cruise = v_in  # entered a slower road: brake along the leg, below
    # The distance does not allow to get down to v_out comfortably: brake as hard as needed.
    if v_in > v_out and (v_in**2 - v_out**2) / (2 * decel) >= length_m:
        hard = (v_in**2 - v_out**2) / (2 * length_m)
        return [Piece((v_in - v_out) / hard, v_in, -hard)], v_out
    # Nor to reach v_out accelerating: arrive at what the distance allows.
    if v_out > v_in and (v_out**2 - v_in**2) / (2 * accel) >= length_m:
        v_end = math.sqrt(v_in**2 + 2 * accel * length_m)
        return [Piece((v_end - v_in) / accel, v_in, accel)], v_end
    up = (v_cruise**2 - v_in**2) / (2 * accel) if v_cruise >= v_in else 0.0
    down = (v_cruise**2 - v_out**2) / (2 * decel)
    if up + down > length_m:
        # No room to cruise: accelerate to the peak that still leaves room to brake.
        peak_sq = (2 * length_m + v_in**2 / accel + v_out**2 / decel) / (1 / accel + 1 / decel)
        v_cruise = math.sqrt(max(peak_sq, v_in**2, v_out**2))
        up = (v_cruise**2 - v_in**2) / (2 * accel)
        down = max(0.0, length_m - up)
    pieces: list[Piece] = []
    if v_cruise > v_in:
        pieces.append(Piece((v_cruise - v_in) / accel, v_in, accel))
    cruise = length_m - up - down
    if cruise > 1e-6:
        pieces.append(Piece(cruise / v_cruise, v_cruise, 0.0))
    if v_cruise > v_out:
        pieces.append(Piece((v_cruise - v_out) / decel, v_cruise, -decel))
    return pieces, v_out


def _position_on(pieces: Sequence[Piece], elapsed_s: float) -> tuple[float, float]:
    """Distance covered and speed ``elapsed_s`` into ``pieces``."""
    covered = 0.0
    for piece in pieces:
        if elapsed_s <= piece.duration_s:
            v = piece.v0 + piece.accel * elapsed_s
            return covered + piece.v0 * elapsed_s + 0.5 * piece.accel * elapsed_s**2, max(0.0, v)
        covered += piece.distance
        elapsed_s -= piece.duration_s
    last = pieces[-1] if pieces else None
    return covered, 0.0 if last is None else max(0.0, last.v0 + last.accel * last.duration_s)


class _Then(Enum):
    NEXT_LEG = "next"  # reached the intersection: go on
    DWELL = "dwell"  # stop at the intersection with the engine running
    PARK = "park"  # end of trip: park here
    STOPPED = "stopped"  # a stop asked for mid-leg (new motion): apply the motion


@dataclass(slots=True)
class _Move:
    start_ms: int
    s0: float
    pieces: list[Piece]
    end_ms: int
    v_end: float
    then: _Then


@dataclass(slots=True)
class _Still:
    end_ms: int | None  # None: until something else is decided
    then: str  # "start", "tow", "move", "" (nothing)


@dataclass(frozen=True, slots=True)
class Sample:
    """The vehicle at one instant, in physical units."""

    time_ms: int
    lat: float
    lon: float
    altitude_m: int
    speed_kmh: float
    heading_deg: float
    ignition: bool
    towed: bool
    odometer_m: int
    badge: int
    warnings: int
    ext_power_mv: int
    battery_mv: int
    satellites: int
    hdop: float
    limit_kmh: float


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


@dataclass(frozen=True, slots=True)
class DriveOptions:
    """What a scenario phase may change about the driving."""

    speed_factor: tuple[float, float] = SPEED_FACTOR_RANGE
    badge_probability: float = BADGE_PROBABILITY
    lock_probability: float = LOCK_PROBABILITY
    warning_probability: float = WARNING_PROBABILITY
    night_parking: bool = True
    stops: bool = True  # lights and intersections


# Scheduled happenings that only make sense if the vehicle is still doing what it was doing
# when they were planned (a motion change cancels them).
_CANCELLABLE = frozenset({EventCode.HARSH_BRAKING, EventCode.TOWING})


class Vehicle:
    """One simulated vehicle. Call `advance(t)` with non-decreasing times, then `sample()`."""

    def __init__(
        self,
        network: RoadNetwork,
        *,
        seed: int | str,
        start_ms: int,
        motion: Motion = Motion.NORMAL,
        options: DriveOptions | None = None,
        can_start: Callable[[], bool] = lambda: True,
        drivers: int | None = None,
    ) -> None:
        self.network = network
        self.rng = random.Random(f"plan:{seed}")
        self._noise = random.Random(f"noise:{seed}")
        self.options = options or DriveOptions()
        self.can_start = can_start
        self.motion = motion
        self.time_ms = start_ms
        self.leg = network.first_leg(self.rng)
        self._next = network.next_leg(self.leg, self.rng)
        self.s = self.rng.uniform(0, self.leg.length_m)
        self.v = 0.0
        # Vehicles are not new: somewhere between 5,000 and 150,000 km on the clock.
        self._odo_base = self.rng.uniform(5_000, 150_000) * 1000 - self.s
        self.ignition = False
        self.towed = False
        self.badge = 0
        self.warnings = 0
        self._warning_trips = 0
        self._factor = 1.0
        self._accel = 2.0
        self._trip_end_ms: int | None = None
        self._scheduled: list[tuple[int, int, int, EventCode | Action, int]] = []
        self._order = 0
        self._epoch = 0
        self._pending: list[Happening] = []
        n_drivers = drivers if drivers is not None else self.rng.randint(1, 3)
        self.driver_badges = [self.rng.randrange(10**9, 10**12) for _ in range(n_drivers)]
        self._sats = self._noise.randint(7, 12)
        self._activity: _Move | _Still = _Still(None, "")
        self._initial(motion, start_ms)

    # --- public ------------------------------------------------------------------------------

    @property
    def odometer_m(self) -> float:
        return self._odo_base + self.s

    @property
    def position(self) -> LatLon:
        leg = self.leg
        return interpolate(leg.start, leg.end, min(1.0, self.s / leg.length_m))

    @property
    def moving(self) -> bool:
        return self.v > 0.05

    def set_motion(self, motion: Motion, at_ms: int, options: DriveOptions | None = None) -> None:
        """From ``at_ms`` on, do ``motion`` (the vehicle first stops if it has to). What happens
        on the way is returned by the next `advance`."""
        self._advance(at_ms)
        if options is not None:
            self.options = options
        if motion is self.motion:
            return
        self.motion = motion
        self._epoch += 1
        self._trip_end_ms = None
        self._begin(motion, at_ms)

    def advance(self, t_ms: int) -> list[Happening]:
        """Move on to ``t_ms``; what happened since the last call, oldest first."""
        self._advance(t_ms)
        happened, self._pending = self._pending, []
        return happened

    def sample(self) -> Sample:
        """The state at the current time (the last `advance`)."""
        noise = self._noise
        position = self.position
        self._sats = min(14, max(4, self._sats + noise.choice((-1, 0, 0, 0, 1))))
        # With the engine running the alternator charges the battery.
        ext = (14_100 if self.ignition else 12_500) + noise.randint(-120, 120)
        # Gentle hills: a function of the place, so a place always has the same altitude.
        altitude = 60 + 25 * math.sin(position.lat * 900) + 15 * math.cos(position.lon * 700)
        return Sample(
            time_ms=self.time_ms,
            lat=position.lat,
            lon=position.lon,
            altitude_m=round(altitude),
            speed_kmh=round(self.v * 3.6, 1),
            heading_deg=round(self.leg.heading_deg, 1) % 360.0,
            ignition=self.ignition,
            towed=self.towed,
            odometer_m=int(self.odometer_m),
            badge=self.badge if self.ignition else 0,
            warnings=self.warnings,
            ext_power_mv=ext,
            battery_mv=4_150 + noise.randint(-30, 30),
            satellites=self._sats,
            hdop=round(0.6 + 8.0 / self._sats + noise.uniform(-0.1, 0.1), 1),
            limit_kmh=self.leg.limit_kmh,
        )

    # --- time --------------------------------------------------------------------------------

    def _advance(self, t_ms: int) -> None:
        if t_ms < self.time_ms:
            raise ValueError("time goes forward only")
        while True:
            end = self._activity.end_ms
            due = self._scheduled[0][0] if self._scheduled else None
            if due is not None and due <= t_ms and (end is None or due <= end):
                when, _, epoch, kind, detail = heapq.heappop(self._scheduled)
                if kind in _CANCELLABLE and epoch != self._epoch:
                    continue
                self._settle(when)
                if kind is EventCode.DASHBOARD_WARNING:
                    self.warnings |= detail
                self._emit(when, kind, detail)
                continue
            if end is None or end > t_ms:
                break
            self._settle(end)
            self._finish(end)
        self._settle(t_ms)

    def _settle(self, t_ms: int) -> None:
        """Bring position and speed to ``t_ms`` within the current activity."""
        activity = self._activity
        if isinstance(activity, _Move) and activity.pieces:
            elapsed = (min(t_ms, activity.end_ms) - activity.start_ms) / 1000
            covered, v = _position_on(activity.pieces, elapsed)
            self.s = min(self.leg.length_m, activity.s0 + covered)
            self.v = v
        self.time_ms = max(self.time_ms, t_ms)

    def _emit(self, when: int, kind: EventCode | Action, detail: int = 0) -> None:
        sample = self.sample() if isinstance(kind, EventCode) else None
        self._pending.append(Happening(when, kind, detail, sample))

    def _schedule(self, when: int, kind: EventCode | Action, detail: int = 0) -> None:
        self._order += 1
        heapq.heappush(self._scheduled, (when, self._order, self._epoch, kind, detail))

    # --- plan --------------------------------------------------------------------------------

    def _initial(self, motion: Motion, now: int) -> None:
        """The state at the start: a day already under way."""
        if motion is Motion.NORMAL:
            if self.rng.random() < 0.5 or self._is_night(now):
                self._park(now, initial=True)
            else:
                self._try_start(now, quiet=True)
        elif motion is Motion.DRIVE:
            self._try_start(now, quiet=True)
        elif motion is Motion.TOW:
            self._activity = _Still(now + _ms(TOW_HOOKUP_S), "tow")
        else:
            self._activity = _Still(None, "")

    def _begin(self, motion: Motion, now: int) -> None:
        """Start doing ``motion`` at ``now`` from whatever the vehicle is doing."""
        if self.moving and (motion in (Motion.PARK, Motion.TOW) or self.towed):
            if not (self.towed and motion is Motion.TOW):
                self._stop_here(now)  # `_stopped` carries out the motion once stopped
            return
        if motion is Motion.PARK:
            if self.ignition:
                self._end_trip(now)
            self.towed = False
            self.v = 0.0
            self._activity = _Still(None, "")
        elif motion is Motion.TOW:
            if self.ignition:
                self._end_trip(now)
            if not self.towed:
                self.v = 0.0
                self._activity = _Still(now + _ms(TOW_HOOKUP_S), "tow")
        elif motion is Motion.DRIVE:
            self.towed = False
            if not self.ignition:
                self._try_start(now)
        else:
            self.towed = False
            if self.ignition:
                self._trip_end_ms = now + _ms(self.rng.uniform(*TRIP_S))
            else:
                self._park(now)

    def _is_night(self, t_ms: int) -> bool:
        if not self.options.night_parking:
            return False
        hour = local_hour(t_ms, self.position.lon)
        return hour >= NIGHT_START_H or hour < NIGHT_END_H

    def _park(self, now: int, *, initial: bool = False) -> None:
        """Parked with the ignition off; in NORMAL motion, until the next trip."""
        self.v = 0.0
        if self.motion is not Motion.NORMAL:
            self._activity = _Still(None, "")
            return
        if self._is_night(now):
            hour = local_hour(now, self.position.lon)
            until_morning = (NIGHT_END_H - hour) % 24.0
            wait_s = (until_morning + self.rng.uniform(0, MORNING_SPREAD_H)) * 3600
        else:
            low, high = PARK_S
            wait_s = math.exp(self.rng.uniform(math.log(low), math.log(high)))
        if initial:
            wait_s *= self.rng.random()
        self._activity = _Still(now + _ms(wait_s), "start")

    def _try_start(self, now: int, *, quiet: bool = False) -> None:
        """The driver gets in and turns the key; the engine-start inhibit may say no.

        ``quiet``: the vehicle was already driving when the simulation began (no events).
        """
        if not quiet and not self.can_start():
            retry = (
                DRIVE_START_RETRY_S
                if self.motion is Motion.DRIVE
                else self.rng.uniform(*START_RETRY_S)
            )
            self._activity = _Still(now + _ms(retry), "start")
            self.v = 0.0
            return
        options = self.options
        rng = self.rng
        self._factor = rng.uniform(*options.speed_factor)
        self._accel = rng.uniform(*ACCEL_RANGE_MS2)
        self.ignition = True
        self.towed = False
        self.badge = 0
        if not quiet:
            self._emit(now, Action.UNLOCK)
            self._emit(now, EventCode.IGNITION_ON)
        if rng.random() < options.badge_probability:
            self.badge = rng.choice(self.driver_badges)
            if not quiet:
                self._emit(now, EventCode.DRIVER_BADGE)
        if self._warning_trips == 0 and rng.random() < options.warning_probability:
            light = int(rng.choice(EVERYDAY_WARNINGS))
            self._warning_trips = rng.randint(*WARNING_TRIPS)
            # The light comes on a little after the start, once the car has checked itself.
            self._schedule(now + _ms(rng.uniform(5, 120)), EventCode.DASHBOARD_WARNING, light)
        if self.motion is Motion.NORMAL:
            self._trip_end_ms = now + _ms(rng.uniform(*TRIP_S))
        self._plan_leg(now, from_s=self.s)

    def _stop_here(self, now: int) -> None:
        """Brake to a stop on the current leg (a new motion was asked for)."""
        remaining = self.leg.length_m - self.s
        v = self.v
        if remaining <= 0.01:
            self._activity = _Move(now, self.s, [], now, 0.0, _Then.STOPPED)
            return
        distance = min(remaining, v * v / (2 * DECEL_MS2))
        decel = v * v / (2 * distance)
        if decel > HARSH_DECEL_MS2 and self.ignition:
            self._emit(now, EventCode.HARSH_BRAKING, round(decel / _GRAVITY * 1000))
        duration = v / decel
        self._activity = _Move(
            now, self.s, [Piece(duration, v, -decel)], now + _ms(duration), 0.0, _Then.STOPPED
        )

    def _cruise_speed(self, leg: Leg) -> float:
        if self.towed:
            return min(leg.limit_kmh, TOW_SPEED_KMH) * 0.85 / 3.6
        return leg.limit_kmh * self._factor / 3.6

    def _next_leg(self) -> None:
        self._odo_base += self.leg.length_m
        self.leg, self._next = self._next, self.network.next_leg(self._next, self.rng)
        self.s = 0.0

    def _plan_leg(self, now: int, *, from_s: float = 0.0) -> None:
        """Drive (or be towed) from ``from_s`` on the current leg to its end."""
        if from_s >= self.leg.length_m - 0.01:
            self._next_leg()
            from_s = 0.0
        leg, nxt = self.leg, self._next
        rng = self.rng
        v_cruise = self._cruise_speed(leg)
        turn = turn_angle_deg(leg.heading_deg, nxt.heading_deg)
        if turn < 20:
            v_turn = self._cruise_speed(nxt)
        elif turn < 135:
            v_turn = TURN_SPEED_KMH / 3.6
        else:
            v_turn = UTURN_SPEED_KMH / 3.6
        v_out = min(v_cruise, v_turn)
        then = _Then.NEXT_LEG
        decel = DECEL_MS2
        remaining = leg.length_m - from_s
        if not self.towed and self.ignition:
            trip_end = self._trip_end_ms
            eta = now + _ms(remaining / max(v_cruise, 1.0))
            if trip_end is not None and eta >= trip_end:
                v_out, then = 0.0, _Then.PARK
            elif self.options.stops and rng.random() < STOP_PROBABILITY[leg.road]:
                v_out, then = 0.0, _Then.DWELL
            if self.v > 8 and rng.random() < EMERGENCY_STOP_PROBABILITY:
                decel = rng.uniform(*EMERGENCY_DECEL_MS2)
                v_out = 0.0
                if then is _Then.NEXT_LEG:
                    then = _Then.DWELL
        starting = self.v <= 0.05
        pieces, v_end = speed_profile(remaining, self.v, v_cruise, v_out, self._accel, decel)
        hardest = max((-p.accel for p in pieces), default=0.0)
        if self.ignition and hardest > HARSH_DECEL_MS2:
            # Reported when the braking starts, after the pieces before the last.
            braking_at = now + _ms(sum(p.duration_s for p in pieces[:-1]))
            self._schedule(braking_at, EventCode.HARSH_BRAKING, round(hardest / _GRAVITY * 1000))
        if self.towed and starting:
            self._schedule(now + _ms(TOWING_DETECTION_S), EventCode.TOWING)
        duration = sum(p.duration_s for p in pieces)
        self._activity = _Move(now, from_s, pieces, now + _ms(duration), v_end, then)

    def _finish(self, now: int) -> None:
        """The current activity ended at ``now``: decide the next."""
        activity = self._activity
        if isinstance(activity, _Still):
            self._activity = _Still(None, "")
            if activity.then == "start":
                if self.motion is Motion.DRIVE:
                    self._try_start(now)
                elif self.motion is Motion.NORMAL:
                    if self._is_night(now):
                        self._park(now)  # still night: the driver sleeps on
                    else:
                        self._try_start(now)
            elif activity.then == "tow":
                self.towed = True
                self._plan_leg(now, from_s=self.s)
            elif activity.then == "move":
                self._plan_leg(now, from_s=self.s)
            return
        self.v = activity.v_end
        if activity.then is _Then.STOPPED:
            self.v = 0.0
            if self.motion in (Motion.NORMAL, Motion.DRIVE) and self.ignition:
                self._plan_leg(now, from_s=self.s)  # the motion that asked to stop has passed
            else:
                self._begin(self.motion, now)
            return
        if activity.then is _Then.PARK:
            self._end_trip(now)
            return
        self._next_leg()
        if activity.then is _Then.DWELL:
            self.v = 0.0
            self._activity = _Still(now + _ms(self.rng.uniform(*DWELL_S)), "move")
            return
        self._plan_leg(now)

    def _end_trip(self, now: int) -> None:
        self.v = 0.0
        self.ignition = False
        self._emit(now, EventCode.IGNITION_OFF)
        self.badge = 0
        if self._warning_trips:
            self._warning_trips -= 1
            if self._warning_trips == 0:
                self.warnings = 0  # fixed at the garage
        if self.rng.random() < self.options.lock_probability:
            self._emit(now, Action.LOCK)
        self._trip_end_ms = None
        self._park(now)
