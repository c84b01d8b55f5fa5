"""Trips and mileage in privacy mode (docs/privacy.md, api/services/trips.py): private time is
left out for viewers and managers and cuts the trips at its edges; an admin who states a reason
sees it all (logged); an open theft case overrides privacy."""

from __future__ import annotations

import httpx

from api.services.trips import TripBuilder
from api.times import iso_ms
from storage.models import Position
from storage.repository import Store
from tests.api.helpers import T0, FleetFixture, make_position
from tracking.privacy import merge

_MIN = 60_000
# The vehicle is private from 5.5 to 9.5 minutes after T0 (two privacy-badge presentations).
PRIVATE_FROM, PRIVATE_TO = T0 + 5 * _MIN + 30_000, T0 + 9 * _MIN + 30_000
PRIVATE_LAT = 45.123456  # only the private fixes are there
# (minute, ignition, odometer_m): trip 1 public, trip 2 runs into private time, trip 3 is all
# private, trip 4 comes out of it.
TRACK = [
    (0, False, 0),
    (1, True, 0),
    (2, True, 1000),
    (3, False, 2000),
    (4, True, 2000),
    (5, True, 3000),
    (6, True, 4000),  # private from here
    (7, False, 5000),
    (8, True, 5000),
    (9, True, 6000),
    (10, True, 7000),  # public again
    (11, False, 8000),
]
RANGE = {"from": iso_ms(T0 - _MIN), "to": iso_ms(T0 + 20 * _MIN)}


def _track(fleet: FleetFixture) -> list[Position]:
    out = []
    for minute, ignition, odometer in TRACK:
        t = T0 + minute * _MIN
        private = PRIVATE_FROM <= t < PRIVATE_TO
        out.append(
            make_position(
                fleet.id,
                fleet.device_id,
                fleet.vehicle_id,
                t,
                ignition=ignition,
                odometer_m=odometer,
                lat=PRIVATE_LAT if private else 48.8566,
            )
        )
    return out


async def _seed(store: Store, fleet: FleetFixture) -> None:
    await store.telemetry.store(_track(fleet), [])
    await store.privacy.add_toggles(fleet.id, fleet.vehicle_id, [PRIVATE_FROM, PRIVATE_TO])


def _spans(body: dict[str, object]) -> list[tuple[str, str, int, bool]]:
    data = body["data"]
    assert isinstance(data, list)
    return [(t["start"]["time"], t["end"]["time"], t["distance_m"], t["complete"]) for t in data]


def _at(minute: int) -> str:
    return iso_ms(T0 + minute * _MIN)


ALL_TRIPS = [
    (_at(1), _at(3), 2000, True),
    (_at(4), _at(7), 3000, True),
    (_at(8), _at(11), 3000, True),
]
# Cut at the private span: the part before and after, each incomplete; the private trip gone.
VISIBLE_TRIPS = [
    (_at(1), _at(3), 2000, True),
    (_at(4), _at(5), 1000, False),
    (_at(10), _at(11), 1000, False),
]


async def test_list_trips_private_time_left_out_for_manager_and_viewer(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture
) -> None:
    await _seed(store, fleet_a)
    url = f"/v1/vehicles/{fleet_a.vehicle_id}"
    for role in ("manager", "viewer", "admin"):  # an admin without a reason too
        r = await client.get(f"{url}/trips", params=RANGE, headers=fleet_a.h(role))
        assert r.status_code == 200, r.text
        body = r.json()
        assert _spans(body) == VISIBLE_TRIPS, role
        assert body["total_distance_m"] == 2000 + 1000 + 1000
        assert body["privacy"] == "active"
        private_times = {_at(m) for m in range(6, 10)}
        assert str(PRIVATE_LAT) not in r.text and not any(t in r.text for t in private_times)
        r = await client.get(
            f"{url}/trips", params={**RANGE, "format": "csv"}, headers=fleet_a.h(role)
        )
        assert r.status_code == 200
        lines = r.text.strip().splitlines()
        assert len(lines) == 1 + 3 and str(PRIVATE_LAT) not in r.text
        r = await client.get(f"{url}/mileage", params=RANGE, headers=fleet_a.h(role))
        assert r.json()["total_distance_m"] == 4000 and r.json()["privacy"] == "active"
    # A manager's reason changes nothing: only an admin may reveal.
    r = await client.get(
        f"{url}/trips", params=RANGE, headers={**fleet_a.h("manager"), "Gp8-Reason": "curious"}
    )
    assert _spans(r.json()) == VISIBLE_TRIPS


async def test_list_trips_admin_with_reason_sees_all_and_is_logged(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture
) -> None:
    await _seed(store, fleet_a)
    reason = {**fleet_a.h("admin"), "Gp8-Reason": "insurance claim 42"}
    url = f"/v1/vehicles/{fleet_a.vehicle_id}"
    r = await client.get(f"{url}/trips", params=RANGE, headers=reason)
    assert _spans(r.json()) == ALL_TRIPS and r.json()["privacy"] == "revealed"
    assert r.json()["total_distance_m"] == 8000 and str(PRIVATE_LAT) in r.text
    r = await client.get(f"{url}/trips", params={**RANGE, "format": "csv"}, headers=reason)
    assert len(r.text.strip().splitlines()) == 1 + 3 and str(PRIVATE_LAT) in r.text
    r = await client.get(f"{url}/mileage", params=RANGE, headers=reason)
    assert r.json()["total_distance_m"] == 8000 and r.json()["privacy"] == "revealed"
    log = await client.get("/v1/access-log", params={"limit": 1000}, headers=fleet_a.h("admin"))
    reveals = [e for e in log.json()["data"] if e["action"] == "read_private"]
    assert len(reveals) == 3
    assert all(
        e["resource_id"] == fleet_a.vehicle_id
        and e["resource"] == "trips"  # what was read, not "positions"
        and "insurance claim 42" in e["detail"]
        for e in reveals
    )


async def test_list_trips_theft_case_overrides_privacy(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture
) -> None:
    await _seed(store, fleet_a)
    r = await client.post(f"/v1/vehicles/{fleet_a.vehicle_id}/theft", headers=fleet_a.h())
    assert r.status_code == 201, r.text
    r = await client.get(
        f"/v1/vehicles/{fleet_a.vehicle_id}/trips", params=RANGE, headers=fleet_a.h("manager")
    )
    assert _spans(r.json()) == ALL_TRIPS
    assert r.json()["privacy"] == "overridden_by_theft_case"


def test_trip_builder_hidden_spans_page_by_page_equals_whole() -> None:
    track = _track(FleetFixture("flt", {}, {}, "veh", "dev", "imei"))
    hidden = merge([(PRIVATE_FROM, PRIVATE_TO)])
    whole = TripBuilder(hidden)
    whole.feed(track)
    paged = TripBuilder(hidden)
    for i in range(0, len(track), 5):  # a page boundary falls inside the private span
        paged.feed(track[i : i + 5])
    assert paged.finish() == whole.finish()
    assert [(t.start.time_ms, t.end.time_ms, t.distance_m) for t in whole.trips] == [
        (T0 + 1 * _MIN, T0 + 3 * _MIN, 2000),
        (T0 + 4 * _MIN, T0 + 5 * _MIN, 1000),
        (T0 + 10 * _MIN, T0 + 11 * _MIN, 1000),
    ]
