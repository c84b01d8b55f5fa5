"""Fence shapes in metres (tracking/geofence_geometry.py), the spatial index against the naive
loop (tracking/geofence_index.py), and allowed hours (tracking/geofence_schedule.py)."""

from __future__ import annotations

import math
import random
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage.models import FenceSide, GeofenceSchedule, GeofenceState
from tests.tracking.helpers import ORIGIN, T0, VEHICLE, circle_fence, fix, ring, square_fence
from tracking import (
    CompiledFence,
    FleetFences,
    LocalFrame,
    fence_problem,
    observe,
    observe_naive,
    schedule_problem,
    within_schedule,
)


def haversine_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    r = 6_371_008.8
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * r * math.asin(math.sqrt(a))


@pytest.mark.parametrize("lat0", [0.0, 48.85, 60.0, 70.0])
def test_local_frame_distances_close_to_great_circle(lat0: float) -> None:
    """The documented approximation: well under 1 % within 10 km of the frame's centre."""
    frame = LocalFrame.around(10.0, lat0)
    rng = random.Random(lat0)
    for _ in range(200):
        x, y = rng.uniform(-7000, 7000), rng.uniform(-7000, 7000)
        lon, lat = frame.lonlat(x, y)
        exact = haversine_m(10.0, lat0, lon, lat)
        assert math.hypot(*frame.xy(lon, lat)) == pytest.approx(exact, rel=0.01)


def test_polygon_with_hole_and_multipolygon_classify() -> None:
    outer = [(-500, -500), (500, -500), (500, 500), (-500, 500)]
    hole = [(-100, -100), (-100, 100), (100, 100), (100, -100)]
    far = [(2000, 0), (2400, 0), (2400, 400), (2000, 400)]
    geometry = {"type": "MultiPolygon", "coordinates": [[ring(outer), ring(hole)], [ring(far)]]}
    shape = CompiledFence.of(square_fence(geometry=geometry, margin_m=25.0)).shape
    cases = {
        (300.0, 0.0): FenceSide.INSIDE,
        (0.0, 0.0): FenceSide.OUTSIDE,  # in the hole, 100 m from its edge
        (110.0, 0.0): None,  # 10 m from the hole's edge
        (2200.0, 200.0): FenceSide.INSIDE,  # the second polygon
        (1200.0, 0.0): FenceSide.OUTSIDE,
    }
    for (x, y), expected in cases.items():
        assert shape.classify(*ORIGIN.lonlat(x, y)) is expected, (x, y)


def test_fence_bounds_cover_the_margin() -> None:
    shape = CompiledFence.of(square_fence(margin_m=40.0)).shape
    min_lon, min_lat, max_lon, max_lat = shape.bounds
    lon, lat = ORIGIN.lonlat(539.0, 0.0)  # in the band, 39 m out
    assert min_lon <= lon <= max_lon and min_lat <= lat <= max_lat
    assert shape.classify(lon, lat) is None


@pytest.mark.parametrize(
    ("geometry", "radius_m", "margin_m", "needle"),
    [
        ({"type": "Point", "coordinates": [2.35, 48.85]}, None, 25.0, "needs radius_m"),
        ({"type": "Point", "coordinates": [2.35, 48.85]}, 5.0, 0.0, "radius_m must be within"),
        ({"type": "Point", "coordinates": [2.35, 48.85]}, 900_000.0, 25.0, "within"),
        ({"type": "Point", "coordinates": [2.35, 48.85]}, 20.0, 25.0, "smaller than radius_m"),
        ({"type": "Point", "coordinates": [2.35, 89.0]}, 100.0, 25.0, "latitude"),
        (
            {"type": "Polygon", "coordinates": [ring([(0, 0), (5, 0), (5, 5), (0, 5)])]},
            None,
            0.0,
            "at least 100 m²",
        ),
        (
            {
                "type": "Polygon",
                "coordinates": [[[-10, 35], [40, 35], [40, 70], [-10, 70], [-10, 35]]],
            },
            None,
            25.0,
            "km across",
        ),
        (
            {
                "type": "Polygon",
                "coordinates": [[[-179, 0], [179, 0], [179, 1], [-179, 1], [-179, 0]]],
            },
            None,
            25.0,
            "antimeridian",
        ),
        (
            {"type": "Polygon", "coordinates": [ring([(0, 0), (40, 0), (40, 40), (0, 40)])]},
            None,
            25.0,
            "margin_m (25 m) is too large",
        ),
        (
            {"type": "Polygon", "coordinates": [ring([(0, 0), (400, 0), (400, 400), (0, 400)])]},
            50.0,
            25.0,
            "only for a Point",
        ),
    ],
)
def test_fence_problem_rejects_insane_fences(
    geometry: dict[str, object], radius_m: float | None, margin_m: float, needle: str
) -> None:
    problem = fence_problem(geometry, radius_m, margin_m)
    assert problem is not None and needle in problem.message


def test_fence_problem_accepts_sane_fences() -> None:
    assert fence_problem(square_fence().geometry, None, 25.0) is None
    assert fence_problem(circle_fence().geometry, 300.0, 25.0) is None


# --- the index decides as the naive loop does --------------------------------------------------


def random_fences(rng: random.Random, count: int) -> list[CompiledFence]:
    fences = []
    for i in range(count):
        cx, cy = rng.uniform(-5000, 5000), rng.uniform(-5000, 5000)
        r = rng.uniform(80, 600)
        margin = rng.choice([0.0, 10.0, 25.0])
        if i % 3 == 0:
            lon, lat = ORIGIN.lonlat(cx, cy)
            fence = square_fence(
                geometry={"type": "Point", "coordinates": [lon, lat]},
                radius_m=r,
                margin_m=margin,
                dwell_s=rng.choice([0, 10]),
            )
        else:
            corners = [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in (0, 2.1, 4.2)]
            geometry = {"type": "Polygon", "coordinates": [ring(corners)]}
            fence = square_fence(geometry=geometry, margin_m=margin, dwell_s=rng.choice([0, 10]))
        fences.append(CompiledFence.of(fence))
    return fences


def by_fence(states: list[GeofenceState]) -> list[GeofenceState]:
    return sorted(states, key=lambda state: state.geofence_id)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000))
def test_observe_with_index_decides_like_the_naive_loop(seed: int) -> None:
    rng = random.Random(seed)
    fences = random_fences(rng, 40)
    fleet = FleetFences(fences)
    fast: dict[str, GeofenceState] = {}
    slow: dict[str, GeofenceState] = {}
    x, y = rng.uniform(-5000, 5000), rng.uniform(-5000, 5000)
    for i in range(150):
        x += rng.uniform(-300, 300)
        y += rng.uniform(-300, 300)
        position = fix(T0 + i * 5_000, ORIGIN.lonlat(x, y))
        a = observe(fleet, fast, "flt_test", VEHICLE, position)
        b = observe_naive(fences, slow, "flt_test", VEHICLE, position)

        assert by_fence(a.changed) == by_fence(b.changed)
        assert sorted((c.fence.id, c.kind) for c in a.crossings) == sorted(
            (c.fence.id, c.kind) for c in b.crossings
        )
        for states, seen in ((fast, a), (slow, b)):
            for s in (*seen.touched, *seen.changed):
                states[s.geofence_id] = s
    assert {k: s.side for k, s in fast.items()} == {k: s.side for k, s in slow.items()}


# --- allowed hours -------------------------------------------------------------------------------

PARIS = ZoneInfo("Europe/Paris")


def paris_ms(year: int, month: int, day: int, hour: int, minute: int) -> int:
    return int(datetime(year, month, day, hour, minute, tzinfo=PARIS).timestamp() * 1000)


def test_within_schedule_local_hours_across_dst() -> None:
    office = GeofenceSchedule("Europe/Paris", (1, 2, 3, 4, 5), "07:00", "19:00")
    assert within_schedule(office, paris_ms(2024, 3, 29, 7, 0))  # Friday, winter time
    assert within_schedule(office, paris_ms(2024, 4, 1, 18, 59))  # Monday, summer time
    assert not within_schedule(office, paris_ms(2024, 4, 1, 19, 0))
    assert not within_schedule(office, paris_ms(2024, 4, 1, 6, 59))
    assert not within_schedule(office, paris_ms(2024, 3, 30, 12, 0))  # Saturday


def test_within_schedule_overnight_window_belongs_to_its_first_day() -> None:
    nights = GeofenceSchedule("Europe/Paris", (5,), "22:00", "06:00")  # Friday night
    assert within_schedule(nights, paris_ms(2024, 5, 3, 23, 0))  # Friday 23:00
    assert within_schedule(nights, paris_ms(2024, 5, 4, 5, 59))  # Saturday 05:59
    assert not within_schedule(nights, paris_ms(2024, 5, 4, 22, 30))  # Saturday night
    assert not within_schedule(nights, paris_ms(2024, 5, 3, 5, 0))  # Friday morning


def test_within_schedule_whole_day() -> None:
    weekend = GeofenceSchedule("UTC", (6, 7), "00:00", "24:00")
    assert within_schedule(weekend, paris_ms(2024, 5, 4, 23, 59))


@pytest.mark.parametrize(
    ("schedule", "needle"),
    [
        (GeofenceSchedule("Mars/Olympus", (1,), "07:00", "19:00"), "unknown time zone"),
        (GeofenceSchedule("UTC", (1,), "7:00", "19:00"), "HH:MM"),
        (GeofenceSchedule("UTC", (1,), "07:00", "24:01"), "HH:MM"),
        (GeofenceSchedule("UTC", (1,), "24:00", "07:00"), "cannot be 24:00"),
        (GeofenceSchedule("UTC", (1,), "07:00", "07:00"), "same time"),
        (GeofenceSchedule("UTC", (0, 1), "07:00", "19:00"), "ISO weekdays"),
        (GeofenceSchedule("UTC", (), "07:00", "19:00"), "ISO weekdays"),
    ],
)
def test_schedule_problem(schedule: GeofenceSchedule, needle: str) -> None:
    problem = schedule_problem(schedule)
    assert problem is not None and needle in problem
