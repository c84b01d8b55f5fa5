"""Properties of simulated driving: plausible speeds, an odometer that adds up, positions in
the city, determinism, and the happenings a box reports."""

from __future__ import annotations

import itertools
import math
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.gp8 import EventCode
from simulator.geo import LatLon, haversine_m, local_hour
from simulator.trajectory import (
    MAX_SPEED_FACTOR,
    SPEED_LIMITS_KMH,
    TOW_SPEED_KMH,
    Action,
    Motion,
    Sample,
    StreetGrid,
    TrackPoint,
    TrackRoute,
    Vehicle,
    speed_profile,
)

# 2026-03-02T08:00:00Z: a Monday morning in Paris.
MORNING_MS = 1_772_438_400_000
_SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

centres = st.builds(
    LatLon,
    st.floats(min_value=-60, max_value=60, allow_nan=False),
    st.floats(min_value=-179, max_value=179, allow_nan=False),
)


def _samples(vehicle: Vehicle, start_ms: int, step_s: float, n: int) -> list[Sample]:
    out = []
    for i in range(1, n + 1):
        vehicle.advance(start_ms + round(i * step_s * 1000))
        out.append(vehicle.sample())
    return out


@_SETTINGS
@given(
    seed=st.integers(0, 10**6),
    centre=centres,
    radius_km=st.floats(min_value=0.5, max_value=20),
    step_s=st.sampled_from([1.0, 5.0, 30.0, 120.0]),
    start=st.integers(0, 86_400_000),
)
def test_speeds_odometer_and_place_are_plausible(
    seed: int, centre: LatLon, radius_km: float, step_s: float, start: int
) -> None:
    grid = StreetGrid(centre, radius_km * 1000, seed=seed)
    t0 = MORNING_MS + start
    vehicle = Vehicle(grid, seed=seed, start_ms=t0)
    samples = _samples(vehicle, t0, step_s, 300)
    top = max(SPEED_LIMITS_KMH.values()) * MAX_SPEED_FACTOR
    previous = None
    for s in samples:
        # Within the limit of the road (by the driver's factor), and never negative.
        assert 0 <= s.speed_kmh <= s.limit_kmh * MAX_SPEED_FACTOR + 0.05 <= top + 0.05
        if not s.ignition:
            assert s.speed_kmh == 0 or s.towed
        # In the city: inside the radius, give or take one block's jitter.
        assert haversine_m(centre, LatLon(s.lat, s.lon)) <= radius_km * 1000 + grid.spacing_m
        assert 0 <= s.heading_deg < 360
        if previous is not None:
            travelled = s.odometer_m - previous.odometer_m
            # Monotonic, at least the straight line between the fixes (±1 m of rounding), at
            # most what the top speed allows in the time.
            assert travelled >= 0
            straight = haversine_m(LatLon(previous.lat, previous.lon), LatLon(s.lat, s.lon))
            assert travelled >= straight - 1.5
            assert travelled <= top / 3.6 * step_s + 1.5
        previous = s


def test_odometer_matches_the_distance_driven() -> None:
    # Sampled every second, the sum of the straight lines between fixes is the distance
    # driven (corners cut at most a few metres each).
    grid = StreetGrid(LatLon(48.8566, 2.3522), 5000, seed=3)
    vehicle = Vehicle(grid, seed=3, start_ms=MORNING_MS, motion=Motion.DRIVE)
    samples = _samples(vehicle, MORNING_MS, 1.0, 3 * 3600)
    path = sum(
        haversine_m(LatLon(a.lat, a.lon), LatLon(b.lat, b.lon))
        for a, b in itertools.pairwise(samples)
    )
    odometer = samples[-1].odometer_m - samples[0].odometer_m
    assert odometer > 20_000  # three hours of city driving
    assert path <= odometer + 2
    assert path >= odometer * 0.99


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10**6), start=st.integers(0, 86_400_000))
def test_deterministic_for_a_seed_whatever_the_cadence(seed: int, start: int) -> None:
    grid = StreetGrid(LatLon(45.76, 4.84), 4000, seed=seed)
    t0 = MORNING_MS + start

    def trip(step_s: float, n: int) -> list[tuple[float, float, float, int]]:
        v = Vehicle(grid, seed=seed, start_ms=t0)
        return [(s.lat, s.lon, s.speed_kmh, s.odometer_m) for s in _samples(v, t0, step_s, n)]

    assert trip(30, 100) == trip(30, 100)
    # The path depends on the seed, not on how often it is sampled.
    assert trip(10, 300)[2::3] == trip(30, 100)


def test_other_seeds_drive_elsewhere() -> None:
    grid = StreetGrid(LatLon(45.76, 4.84), 4000, seed=1)
    tracks = {
        tuple(
            (round(s.lat, 5), round(s.lon, 5))
            for s in _samples(
                Vehicle(grid, seed=seed, start_ms=MORNING_MS, motion=Motion.DRIVE),
                MORNING_MS,
                30,
                20,
            )
        )
        for seed in range(5)
    }
    assert len(tracks) == 5


def test_a_day_has_trips_badges_and_quiet_nights() -> None:
    centre = LatLon(48.8566, 2.3522)
    vehicle = Vehicle(StreetGrid(centre, 10_000, seed=7), seed=7, start_ms=MORNING_MS)
    kinds: list[EventCode | Action] = []
    night_moving = 0
    t = MORNING_MS
    for _ in range(3 * 24 * 60):  # three days, a fix a minute
        t += 60_000
        kinds += [h.kind for h in vehicle.advance(t)]
        s = vehicle.sample()
        hour = local_hour(t, centre.lon)
        if (hour >= 22.5 or hour < 6) and (s.ignition or s.speed_kmh):
            night_moving += 1
    assert night_moving == 0
    starts = kinds.count(EventCode.IGNITION_ON)
    assert starts >= 6 and abs(starts - kinds.count(EventCode.IGNITION_OFF)) <= 1
    assert kinds.count(EventCode.DRIVER_BADGE) >= starts // 2
    assert Action.LOCK in kinds and Action.UNLOCK in kinds


def test_events_carry_the_state_of_their_moment() -> None:
    vehicle = Vehicle(
        StreetGrid(LatLon(40.4168, -3.7038), 5000, seed=11), seed=11, start_ms=MORNING_MS
    )
    happenings = vehicle.advance(MORNING_MS + 48 * 3_600_000)
    events = [h for h in happenings if isinstance(h.kind, EventCode)]
    assert events
    for h in events:
        assert h.sample is not None and h.sample.time_ms == h.time_ms
        if h.kind is EventCode.IGNITION_ON:
            assert h.sample.ignition
        if h.kind is EventCode.IGNITION_OFF:
            assert not h.sample.ignition and h.sample.speed_kmh == 0
        if h.kind is EventCode.DRIVER_BADGE:
            assert h.sample.badge in vehicle.driver_badges
    times = [h.time_ms for h in happenings]
    assert times == sorted(times)


def test_towing_moves_without_ignition() -> None:
    vehicle = Vehicle(
        StreetGrid(LatLon(52.52, 13.405), 5000, seed=5),
        seed=5,
        start_ms=MORNING_MS,
        motion=Motion.DRIVE,
    )
    vehicle.advance(MORNING_MS + 600_000)
    vehicle.set_motion(Motion.TOW, MORNING_MS + 600_000)
    samples = _samples(vehicle, MORNING_MS + 600_000, 10, 120)
    towed = [s for s in samples if s.towed and s.speed_kmh > 0]
    assert len(towed) > 60
    assert all(not s.ignition and s.speed_kmh <= TOW_SPEED_KMH for s in towed)
    assert not any(s.ignition for s in samples[30:])


def test_towing_event_once_per_tow() -> None:
    vehicle = Vehicle(
        StreetGrid(LatLon(52.52, 13.405), 5000, seed=6),
        seed=6,
        start_ms=MORNING_MS,
        motion=Motion.PARK,
    )
    vehicle.set_motion(Motion.TOW, MORNING_MS + 1000)
    kinds = [h.kind for h in vehicle.advance(MORNING_MS + 3_600_000)]
    assert kinds.count(EventCode.TOWING) == 1
    assert EventCode.IGNITION_ON not in kinds


def test_engine_start_inhibit_keeps_it_parked() -> None:
    inhibited = True
    vehicle = Vehicle(
        StreetGrid(LatLon(48.8566, 2.3522), 5000, seed=9),
        seed=9,
        start_ms=MORNING_MS,
        motion=Motion.PARK,
        can_start=lambda: not inhibited,
    )
    vehicle.set_motion(Motion.DRIVE, MORNING_MS + 1000)
    samples = _samples(vehicle, MORNING_MS + 1000, 30, 60)
    assert not any(s.ignition or s.speed_kmh for s in samples)
    inhibited = False
    samples = _samples(vehicle, MORNING_MS + 1000 + 30 * 60_000, 30, 60)
    assert any(s.ignition and s.speed_kmh > 0 for s in samples)


def test_parking_stops_the_vehicle_and_switches_off() -> None:
    vehicle = Vehicle(
        StreetGrid(LatLon(48.8566, 2.3522), 5000, seed=4),
        seed=4,
        start_ms=MORNING_MS,
        motion=Motion.DRIVE,
    )
    vehicle.advance(MORNING_MS + 300_000)
    vehicle.set_motion(Motion.PARK, MORNING_MS + 300_000)
    kinds = [h.kind for h in vehicle.advance(MORNING_MS + 360_000)]
    assert EventCode.IGNITION_OFF in kinds
    s = vehicle.sample()
    assert not s.ignition and s.speed_kmh == 0


def test_time_only_goes_forward() -> None:
    vehicle = Vehicle(StreetGrid(LatLon(0, 0), 1000), seed=1, start_ms=MORNING_MS)
    vehicle.advance(MORNING_MS + 10)
    with pytest.raises(ValueError):
        vehicle.advance(MORNING_MS)


@given(
    length=st.floats(min_value=1, max_value=2000),
    v_in=st.floats(min_value=0, max_value=35),
    v_cruise=st.floats(min_value=1, max_value=35),
    v_out=st.floats(min_value=0, max_value=35),
)
def test_speed_profile_covers_the_leg(
    length: float, v_in: float, v_cruise: float, v_out: float
) -> None:
    pieces, v_end = speed_profile(length, v_in, v_cruise, v_out, 2.0, 2.5)
    covered = sum(p.distance for p in pieces)
    assert math.isclose(covered, length, rel_tol=1e-6, abs_tol=1e-6)
    assert v_end <= max(v_in, v_cruise) + 1e-9
    v = v_in
    for p in pieces:
        assert p.duration_s >= 0
        assert math.isclose(p.v0, v, rel_tol=1e-6, abs_tol=1e-6)
        v = p.v0 + p.accel * p.duration_s
        assert v >= -1e-6
        if p.accel > 0:
            assert p.accel == 2.0  # acceleration is never harder than asked
    assert math.isclose(v, v_end, rel_tol=1e-6, abs_tol=1e-6)


def test_track_replay_stays_on_the_track() -> None:
    points = [TrackPoint(48.85 + i * 0.001, 2.35 + (i % 2) * 0.0005) for i in range(30)]
    route = TrackRoute(points)
    vehicle = Vehicle(route, seed=2, start_ms=MORNING_MS, motion=Motion.DRIVE)
    lats = [p.lat for p in points]
    lons = [p.lon for p in points]
    for s in _samples(vehicle, MORNING_MS, 5, 400):
        assert min(lats) - 1e-9 <= s.lat <= max(lats) + 1e-9
        assert min(lons) - 1e-9 <= s.lon <= max(lons) + 1e-9
        assert s.speed_kmh <= 50 * MAX_SPEED_FACTOR + 0.05


def test_track_speeds_follow_its_timestamps() -> None:
    # About 100 m every 10 s along the equator: 36 km/h.
    points = [TrackPoint(0.0, i * 0.0008993, MORNING_MS + i * 10_000) for i in range(50)]
    route = TrackRoute(points)
    rng = random.Random(1)
    leg = route.first_leg(rng)
    for _ in range(10):
        assert leg.limit_kmh == pytest.approx(36.0, rel=0.01)
        leg = route.next_leg(leg, rng)


def test_a_track_needs_two_points() -> None:
    with pytest.raises(ValueError):
        TrackRoute([TrackPoint(1.0, 1.0), TrackPoint(1.0, 1.0)])
