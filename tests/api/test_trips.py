"""Trips and daily mileage: the pure segmentation (property-based) and the endpoints."""

from __future__ import annotations

import itertools
from datetime import date

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.services.trips import MileageCounter, TripBuilder, segment_trips
from api.times import iso_ms
from storage.models import Position
from storage.repository import Store
from tests.api.helpers import T0, FleetFixture, make_position

DAY = 86_400_000


def track(
    steps: list[tuple[bool, int, float]], *, start_ms: int = T0, step_ms: int = 60_000
) -> list[Position]:
    """Positions from (ignition, odometer metres driven since previous, speed) steps."""
    out = []
    odometer = 10_000
    for i, (ignition, driven, speed) in enumerate(steps):
        odometer += driven
        out.append(
            make_position(
                "flt",
                "dev",
                "veh",
                start_ms + i * step_ms,
                ignition=ignition,
                odometer_m=odometer,
                speed_kmh=speed,
                lat=45.0 + i * 0.01,
                lon=5.0,
            )
        )
    return out


def test_segment_trips_two_trips_with_stats() -> None:
    positions = track(
        [
            (False, 0, 0),
            (True, 0, 0),
            (True, 500, 30),
            (True, 700, 90),
            (False, 100, 0),
            (False, 0, 0),
            (True, 0, 5),
            (True, 1000, 60),
            (False, 0, 0),
        ]
    )
    trips = segment_trips(positions)
    assert len(trips) == 2
    first, second = trips
    assert first.start.time_ms == positions[1].time_ms and first.end.time_ms == positions[4].time_ms
    assert first.distance_m == 1300 and first.max_speed_kmh == 90
    assert first.duration_s == 180
    assert first.avg_speed_kmh == pytest.approx(1300 / 180 * 3.6)
    assert (first.start.lat, first.end.lat) == (positions[1].lat, positions[4].lat)
    assert first.complete and second.complete
    assert second.distance_m == 1000


def test_segment_trips_cut_by_range_incomplete() -> None:
    trips = segment_trips(
        track([(True, 0, 50), (True, 300, 50), (False, 0, 0), (True, 0, 0), (True, 200, 20)])
    )
    assert [(t.complete, t.distance_m) for t in trips] == [(False, 300), (False, 200)]


def test_segment_trips_end_without_valid_fix_uses_last_valid_place() -> None:
    positions = track([(True, 0, 10), (True, 100, 10), (False, 50, 0)])
    positions[2] = make_position(
        "flt",
        "dev",
        "veh",
        positions[2].time_ms,
        ignition=False,
        fix_valid=False,
        lat=0.0,
        lon=0.0,
        odometer_m=positions[2].odometer_m,
    )
    trip = segment_trips(
        [make_position("flt", "dev", "veh", T0 - 60_000, ignition=False), *positions]
    )[0]
    assert trip.end.lat == positions[1].lat
    assert trip.end.time_ms == positions[2].time_ms


def test_segment_trips_box_swap_no_bogus_distance() -> None:
    positions = track([(False, 0, 0), (True, 0, 10), (True, 400, 10)])
    swapped = make_position(
        "flt", "dev2", "veh", positions[-1].time_ms + 60_000, ignition=True, odometer_m=9_999_999
    )
    after = make_position(
        "flt", "dev2", "veh", swapped.time_ms + 60_000, ignition=False, odometer_m=10_000_150
    )
    trip = segment_trips([*positions, swapped, after])[0]
    assert trip.distance_m == 400 + 151


steps = st.lists(
    st.tuples(st.booleans(), st.integers(0, 2000), st.floats(0, 250, allow_nan=False)),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(steps, st.lists(st.integers(1, 10), max_size=10))
def test_trip_builder_pages_same_as_whole(
    raw: list[tuple[bool, int, float]], cuts: list[int]
) -> None:
    positions = track(raw)
    builder = TripBuilder()
    rest = positions
    for size in cuts:
        builder.feed(rest[:size])
        rest = rest[size:]
    builder.feed(rest)
    assert builder.finish() == segment_trips(positions)


@settings(max_examples=200, deadline=None)
@given(steps)
def test_segment_trips_properties(raw: list[tuple[bool, int, float]]) -> None:
    positions = track(raw)
    trips = segment_trips(positions)
    total = sum(d for _, d, _ in raw[1:])
    # Trips are ordered and disjoint, start with the ignition on, and do not exceed the total.
    for earlier, later in itertools.pairwise(trips):
        assert earlier.end.time_ms < later.start.time_ms
    assert sum(t.distance_m for t in trips) <= total
    by_time = {p.time_ms: p for p in positions}
    for trip in trips:
        assert by_time[trip.start.time_ms].ignition
        assert trip.distance_m >= 0 and trip.duration_s >= 0
        if trip.complete:
            assert not by_time[trip.end.time_ms].ignition
    # Every switch-off after a switch-on inside the range closes exactly one complete trip.
    offs = sum(
        1 for prev, cur in itertools.pairwise(positions) if prev.ignition and not cur.ignition
    )
    leading_on = bool(positions) and positions[0].ignition
    assert sum(t.complete for t in trips) == offs - (1 if leading_on and offs else 0)
    # Every fix with the ignition on lies inside some trip.
    for p in positions:
        if p.ignition:
            assert any(t.start.time_ms <= p.time_ms <= t.end.time_ms for t in trips)


@settings(max_examples=200, deadline=None)
@given(steps, st.integers(1, 600_000))
def test_mileage_sums_to_odometer_distance(raw: list[tuple[bool, int, float]], step: int) -> None:
    positions = track(raw, start_ms=T0 - 10 * step, step_ms=step * 100)
    counter = MileageCounter()
    counter.feed(positions)
    if not positions:
        return
    days = counter.days(positions[0].time_ms, positions[-1].time_ms + 1)
    assert sum(d for _, d in days) == sum(d for _, d, _ in raw[1:])
    assert [day for day, _ in days] == sorted({day for day, _ in days})


def test_mileage_days_split_at_utc_midnight() -> None:
    midnight = 1_714_608_000_000  # 2024-05-02T00:00:00Z
    positions = [
        make_position("f", "d", "v", midnight - 120_000, odometer_m=1000),
        make_position("f", "d", "v", midnight - 60_000, odometer_m=1500),
        make_position("f", "d", "v", midnight + 60_000, odometer_m=1800),
        make_position("f", "d", "v", midnight + DAY + 60_000, odometer_m=2800),
    ]
    counter = MileageCounter()
    counter.feed(positions)
    assert counter.days(midnight - DAY, midnight + 3 * DAY) == [
        (date(2024, 5, 1), 500),
        (date(2024, 5, 2), 300),
        (date(2024, 5, 3), 1000),
        (date(2024, 5, 4), 0),
    ]


# --- endpoints ------------------------------------------------------------------------------


async def seed_day(store: Store, fleet: FleetFixture) -> None:
    raw = [(False, 0, 0.0), (True, 0, 10.0), (True, 800, 72.0), (True, 1200, 80.0), (False, 0, 0.0)]
    positions = [
        make_position(
            fleet.id,
            fleet.device_id,
            fleet.vehicle_id,
            p.time_ms,
            ignition=p.ignition,
            odometer_m=p.odometer_m,
            speed_kmh=p.speed_kmh,
            lat=p.lat,
            lon=p.lon,
        )
        for p in track(raw)
    ]
    await store.telemetry.store(positions, [])


async def test_get_trips_computed_from_stored_positions(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture
) -> None:
    await seed_day(store, fleet_a)
    r = await client.get(
        f"/v1/vehicles/{fleet_a.vehicle_id}/trips",
        params={"from": iso_ms(T0 - 60_000), "to": iso_ms(T0 + 3_600_000)},
        headers=fleet_a.h("viewer"),
    )
    assert r.status_code == 200
    body = r.json()
    assert body["total_distance_m"] == 2000
    (trip,) = body["data"]
    assert trip["start"] == {"time": iso_ms(T0 + 60_000), "lat": 45.01, "lon": 5.0}
    assert trip["end"]["time"] == iso_ms(T0 + 240_000)
    assert trip["distance_m"] == 2000 and trip["duration_s"] == 180
    assert trip["max_speed_kmh"] == 80 and trip["avg_speed_kmh"] == 40.0
    assert trip["complete"] is True


async def test_get_mileage_per_day(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture
) -> None:
    await seed_day(store, fleet_a)
    r = await client.get(
        f"/v1/vehicles/{fleet_a.vehicle_id}/mileage",
        params={"from": "2024-04-30T00:00:00Z", "to": "2024-05-02T00:00:00Z"},
        headers=fleet_a.h("viewer"),
    )
    assert r.status_code == 200
    assert r.json()["days"] == [
        {"date": "2024-04-30", "distance_m": 0},
        {"date": "2024-05-01", "distance_m": 2000},
    ]
    assert r.json()["total_distance_m"] == 2000


async def test_get_trips_range_too_long_422(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    r = await client.get(
        f"/v1/vehicles/{fleet_a.vehicle_id}/trips",
        params={"from": "2024-01-01", "to": "2024-06-01"},
        headers=fleet_a.h(),
    )
    assert r.status_code == 422
