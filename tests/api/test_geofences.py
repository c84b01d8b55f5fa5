"""/v1/geofences and /v1/geofence-events: create, validate, list, change, delete, crossings;
another fleet's fence is a 404 for every verb and role; viewers read, managers write."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from storage.models import GeofenceEvent, GeofenceEventKind, new_id
from storage.repository import Store
from tests.api.helpers import OPERATOR_KEY, T0, FleetFixture, bearer

SQUARE = [[2.35, 48.85], [2.36, 48.85], [2.36, 48.86], [2.35, 48.86], [2.35, 48.85]]
POLYGON = {"type": "Polygon", "coordinates": [SQUARE]}
CIRCLE = {"type": "Point", "coordinates": [2.3522, 48.8566]}
RANGE = {"from": str(T0 - 3_600_000), "to": str(T0 + 3_600_000)}


async def create(
    client: httpx.AsyncClient, fleet: FleetFixture, role: str = "manager", **body: Any
) -> httpx.Response:
    payload = {"name": "Depot", "geometry": POLYGON, **body}
    return await client.post("/v1/geofences", json=payload, headers=fleet.h(role))


async def created(client: httpx.AsyncClient, fleet: FleetFixture, **body: Any) -> dict[str, Any]:
    r = await create(client, fleet, **body)
    assert r.status_code == 201, r.text
    fence: dict[str, Any] = r.json()
    return fence


def problem(r: httpx.Response, status: int = 422) -> tuple[list[Any], str]:
    """The location and message of the only validation error."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    (error,) = r.json()["errors"]
    return error["loc"], error["msg"]


# --- create, read, list ------------------------------------------------------------------------


async def test_post_geofence_polygon_defaults(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    fence = await created(client, fleet_a)
    assert fence["id"].startswith("gfn_")
    assert fence["name"] == "Depot" and fence["geometry"] == POLYGON
    assert fence["radius_m"] is None and fence["vehicle_ids"] is None
    assert fence["schedule"] is None and fence["speed_limit_kmh"] is None
    assert (fence["margin_m"], fence["dwell_s"]) == (25.0, 30)
    assert fence["created_at"] == fence["updated_at"]
    r = await client.get(f"/v1/geofences/{fence['id']}", headers=fleet_a.h("viewer"))
    assert r.status_code == 200 and r.json() == fence


async def test_post_geofence_circle_with_everything(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    schedule = {"timezone": "Europe/Paris", "days": [5, 1, 1], "from": "07:00", "to": "19:00"}
    fence = await created(
        client,
        fleet_a,
        geometry={"type": "Feature", "properties": {}, "geometry": CIRCLE},
        radius_m=150,
        vehicle_ids=[fleet_a.vehicle_id, fleet_a.vehicle_id],
        schedule=schedule,
        margin_m=10,
        dwell_s=60,
        speed_limit_kmh=30,
    )
    assert fence["geometry"] == CIRCLE and fence["radius_m"] == 150.0
    assert fence["vehicle_ids"] == [fleet_a.vehicle_id]
    assert fence["schedule"] == {**schedule, "days": [1, 5]}
    assert (fence["margin_m"], fence["dwell_s"], fence["speed_limit_kmh"]) == (10.0, 60, 30.0)


async def test_get_geofences_pages(client: httpx.AsyncClient, fleet_a: FleetFixture) -> None:
    ids = [(await created(client, fleet_a, name=f"f{i}"))["id"] for i in range(3)]
    r = await client.get("/v1/geofences", params={"limit": 2}, headers=fleet_a.h("viewer"))
    assert r.status_code == 200
    first = r.json()
    assert len(first["data"]) == 2 and first["next_cursor"]
    r = await client.get(
        "/v1/geofences", params={"cursor": first["next_cursor"]}, headers=fleet_a.h("viewer")
    )
    rest = r.json()
    assert rest["next_cursor"] is None
    assert sorted(f["id"] for f in first["data"] + rest["data"]) == sorted(ids)
    r = await client.get("/v1/geofences", params={"cursor": "nope"}, headers=fleet_a.h())
    assert r.status_code == 400


# --- validation -----------------------------------------------------------------------------------


def ring(*points: tuple[float, float]) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": [[list(p) for p in (*points, points[0])]]}


@pytest.mark.parametrize(
    ("body", "loc", "needles"),
    [
        # Latitude first, as people say it: [48.85, 102.3] cannot be [lon, lat]...
        (
            {"geometry": {"type": "Point", "coordinates": [48.85, 102.3]}, "radius_m": 100},
            ["body", "geometry"],
            ["[longitude, latitude]", "look swapped", "[102.3, 48.85]"],
        ),
        # ...and out of range either way is said to be out of range, without the hint.
        (
            {"geometry": ring((200, 10), (201, 10), (201, 11))},
            ["body", "geometry"],
            ["ring 0, position 0", "out of range", "longitude -180..180"],
        ),
        (
            {"geometry": {"type": "Polygon", "coordinates": [[*SQUARE[:-1], [2.35, 48.851]]]}},
            ["body", "geometry"],
            ["ring 0 is not closed"],
        ),
        (
            {"geometry": {"type": "Polygon", "coordinates": [SQUARE[:3]]}},
            ["body", "geometry"],
            ["at least 4 positions"],
        ),
        (
            {"geometry": ring((2.35, 48.85), (2.36, 48.86), (2.36, 48.85), (2.35, 48.86))},
            ["body", "geometry"],
            ["not valid", "Self-intersection"],
        ),
        (
            {"geometry": {"type": "LineString", "coordinates": [[2.35, 48.85], [2.36, 48.86]]}},
            ["body", "geometry"],
            ["Polygon", "MultiPolygon", "Point"],
        ),
        (
            {"geometry": ring((2.35, 48.85), (2.35001, 48.85), (2.35001, 48.85001))},
            ["body", "geometry"],
            ["m²", "GPS error"],
        ),
        (
            {"geometry": ring((-10, 35), (40, 35), (40, 70), (-10, 70))},
            ["body", "geometry"],
            ["km across", "at most 500 km"],
        ),
        ({"geometry": CIRCLE}, ["body", "radius_m"], ["needs radius_m"]),
        ({"geometry": POLYGON, "radius_m": 100}, ["body", "radius_m"], ["only for a Point"]),
        (
            {"geometry": CIRCLE, "radius_m": 20, "margin_m": 25},
            ["body", "margin_m"],
            ["smaller than radius_m"],
        ),
        (
            {"geometry": ring((2.35, 48.85), (2.3504, 48.85), (2.3504, 48.8503), (2.35, 48.8503))},
            ["body", "margin_m"],
            ["too large for this fence"],
        ),
        (
            {"schedule": {"timezone": "Mars/Olympus", "from": "07:00", "to": "19:00"}},
            ["body", "schedule"],
            ["unknown time zone"],
        ),
        (
            {"schedule": {"timezone": "UTC", "from": "07:00", "to": "07:00"}},
            ["body", "schedule"],
            ["same time"],
        ),
        ({"vehicle_ids": []}, ["body", "vehicle_ids"], ["at least 1"]),
        ({"colour": "red"}, ["body", "colour"], ["Extra inputs"]),
    ],
)
async def test_post_geofence_invalid_422(
    client: httpx.AsyncClient,
    store: Store,
    fleet_a: FleetFixture,
    body: dict[str, Any],
    loc: list[Any],
    needles: list[str],
) -> None:
    r = await create(client, fleet_a, **body)
    where, msg = problem(r)
    assert where[: len(loc)] == loc, r.text
    for needle in needles:
        assert needle in msg, msg
    if "looks swapped" not in needles and "out of range" in needles:
        assert "swapped" not in msg
    assert await store.geofences.count(fleet_a.id) == 0


async def test_post_geofence_vehicle_of_other_fleet_422(
    client: httpx.AsyncClient, fleet_a: FleetFixture, fleet_b: FleetFixture
) -> None:
    r = await create(client, fleet_a, vehicle_ids=[fleet_a.vehicle_id, fleet_b.vehicle_id])
    loc, msg = problem(r)
    assert loc == ["body", "vehicle_ids", 1]
    assert msg == f"no vehicle {fleet_b.vehicle_id} in this fleet"
    r = await create(client, fleet_a, vehicle_ids=["veh_missing"])
    assert problem(r)[1] == "no vehicle veh_missing in this fleet"  # the same answer


# --- change, delete ----------------------------------------------------------------------------


async def test_patch_geofence_changes_only_what_is_given(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    schedule = {"timezone": "UTC", "days": [1], "from": "22:00", "to": "06:00"}
    fence = await created(
        client, fleet_a, vehicle_ids=[fleet_a.vehicle_id], schedule=schedule, speed_limit_kmh=50
    )
    url = f"/v1/geofences/{fence['id']}"
    r = await client.patch(
        url, json={"name": "Yard", "margin_m": None}, headers=fleet_a.h("manager")
    )
    assert r.status_code == 200, r.text
    after = r.json()
    assert after["name"] == "Yard" and after["margin_m"] == 25.0
    assert after["schedule"] == schedule and after["vehicle_ids"] == [fleet_a.vehicle_id]
    assert after["updated_at"] > fence["updated_at"] and after["created_at"] == fence["created_at"]
    # null clears the optional settings: every vehicle, no schedule, no limit.
    r = await client.patch(
        url,
        json={"vehicle_ids": None, "schedule": None, "speed_limit_kmh": None},
        headers=fleet_a.h("manager"),
    )
    cleared = r.json()
    assert (cleared["vehicle_ids"], cleared["schedule"], cleared["speed_limit_kmh"]) == (
        None,
        None,
        None,
    )
    r = await client.get(url, headers=fleet_a.h("viewer"))
    assert r.json() == cleared


async def test_patch_geofence_to_circle_and_back(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    url = f"/v1/geofences/{(await created(client, fleet_a))['id']}"
    manager = fleet_a.h("manager")
    loc, _ = problem(await client.patch(url, json={"geometry": CIRCLE}, headers=manager))
    assert loc == ["body", "radius_m"]
    r = await client.patch(url, json={"geometry": CIRCLE, "radius_m": 200}, headers=manager)
    assert r.status_code == 200 and r.json()["radius_m"] == 200.0
    # Back to a polygon: the circle's radius goes with it.
    r = await client.patch(url, json={"geometry": POLYGON}, headers=manager)
    assert r.status_code == 200 and r.json()["radius_m"] is None


async def test_patch_geofence_checked_as_a_whole(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    fence = await created(client, fleet_a, geometry=CIRCLE, radius_m=100)
    r = await client.patch(
        f"/v1/geofences/{fence['id']}", json={"margin_m": 150}, headers=fleet_a.h("manager")
    )
    loc, msg = problem(r)
    assert loc == ["body", "margin_m"] and "smaller than radius_m" in msg
    r = await client.get(f"/v1/geofences/{fence['id']}", headers=fleet_a.h())
    assert r.json()["margin_m"] == 25.0


async def test_delete_geofence_then_404(client: httpx.AsyncClient, fleet_a: FleetFixture) -> None:
    url = f"/v1/geofences/{(await created(client, fleet_a))['id']}"
    assert (await client.delete(url, headers=fleet_a.h("manager"))).status_code == 204
    for method in ("GET", "PATCH", "DELETE"):
        kwargs: dict[str, Any] = {"json": {"name": "x"}} if method == "PATCH" else {}
        r = await client.request(method, url, headers=fleet_a.h(), **kwargs)
        assert r.status_code == 404, method


async def test_writes_notify_the_geofence_handler(
    app: FastAPI, client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    changed: list[str] = []
    app.state.geofences_changed = changed.append
    fence = await created(client, fleet_a)
    url = f"/v1/geofences/{fence['id']}"
    await client.patch(url, json={"name": "x"}, headers=fleet_a.h("manager"))
    await client.delete(url, headers=fleet_a.h("manager"))
    assert changed == [fleet_a.id] * 3


# --- crossings ---------------------------------------------------------------------------------


async def seed_crossings(store: Store, fleet: FleetFixture, fence_id: str) -> list[GeofenceEvent]:
    events = [
        GeofenceEvent(
            id=new_id("gfe"),
            fleet_id=fleet.id,
            vehicle_id=fleet.vehicle_id,
            device_id=fleet.device_id,
            geofence_id=fence_id,
            kind=kind,
            time_ms=T0 + i * 60_000,
            lat=48.855,
            lon=2.355,
        )
        for i, kind in enumerate([GeofenceEventKind.ENTER, GeofenceEventKind.EXIT])
    ]
    await store.geofences.save([], events)
    return events


async def test_get_geofence_events_listed_and_logged(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture
) -> None:
    fence = await created(client, fleet_a)
    other = await created(client, fleet_a, name="other")
    await seed_crossings(store, fleet_a, fence["id"])
    await seed_crossings(store, fleet_a, other["id"])
    viewer = fleet_a.h("viewer")
    r = await client.get(f"/v1/geofences/{fence['id']}/events", params=RANGE, headers=viewer)
    assert r.status_code == 200, r.text
    body = r.json()
    assert [e["kind"] for e in body["data"]] == ["enter", "exit"]
    first = body["data"][0]
    assert first["geofence_id"] == fence["id"] and first["vehicle_id"] == fleet_a.vehicle_id
    assert first["device_id"] == fleet_a.device_id
    assert first["time"] == "2024-05-01T12:00:00.000Z"
    assert (first["lat"], first["lon"]) == (48.855, 2.355)
    r = await client.get(
        "/v1/geofence-events", params={**RANGE, "vehicle_id": fleet_a.vehicle_id}, headers=viewer
    )
    assert len(r.json()["data"]) == 4
    r = await client.get(
        "/v1/geofence-events",
        params={**RANGE, "geofence_id": other["id"], "limit": 1},
        headers=viewer,
    )
    page = r.json()
    assert [e["geofence_id"] for e in page["data"]] == [other["id"]] and page["next_cursor"]
    # Deleting the fence keeps its crossings in the fleet's history.
    await client.delete(f"/v1/geofences/{fence['id']}", headers=fleet_a.h("manager"))
    r = await client.get("/v1/geofence-events", params=RANGE, headers=viewer)
    assert len(r.json()["data"]) == 4
    log = await client.get("/v1/access-log", params={"from": "0"}, headers=fleet_a.h("admin"))
    reads = [e for e in log.json()["data"] if e["resource"] == "geofence_events"]
    assert len(reads) == 4  # every listing above


# --- tenancy and roles ---------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["admin", "manager", "viewer"])
async def test_other_fleet_geofence_404_every_verb(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture, fleet_b: FleetFixture, role: str
) -> None:
    theirs = await created(client, fleet_b, name="bravo secret")
    await seed_crossings(store, fleet_b, theirs["id"])
    url = f"/v1/geofences/{theirs['id']}"
    requests: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", url, {}),
        ("PATCH", url, {"json": {"name": "pwned"}}),
        ("DELETE", url, {}),
        ("GET", f"{url}/events", {"params": RANGE}),
        ("GET", "/v1/geofence-events", {"params": {**RANGE, "vehicle_id": fleet_b.vehicle_id}}),
    ]
    for method, target, kwargs in requests:
        r = await client.request(method, target, headers=fleet_a.h(role), **kwargs)
        assert r.status_code == 404, (method, target, r.text)
        assert set(r.json()) == {"type", "title", "status", "detail", "instance"}
        assert "bravo" not in r.text
    # A's listings hold nothing of B.
    for target, params in (("/v1/geofences", {}), ("/v1/geofence-events", RANGE)):
        r = await client.get(target, params=params, headers=fleet_a.h(role))
        assert r.status_code == 200 and r.json()["data"] == []
    r = await client.get(
        "/v1/geofence-events", params={**RANGE, "geofence_id": theirs["id"]}, headers=fleet_a.h()
    )
    assert r.json()["data"] == []
    r = await client.get(url, headers=fleet_b.h("viewer"))
    assert r.status_code == 200 and r.json()["name"] == "bravo secret"


async def test_geofence_writes_viewer_403_manager_ok(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    r = await create(client, fleet_a, role="viewer")
    assert r.status_code == 403 and r.headers["content-type"] == "application/problem+json"
    fence = await created(client, fleet_a)
    url = f"/v1/geofences/{fence['id']}"
    assert (
        await client.patch(url, json={"name": "x"}, headers=fleet_a.h("viewer"))
    ).status_code == 403
    assert (await client.delete(url, headers=fleet_a.h("viewer"))).status_code == 403
    assert (await client.get(url, headers=fleet_a.h("viewer"))).json()["name"] == "Depot"
    for role in ("manager", "admin"):
        r = await client.patch(url, json={"name": role}, headers=fleet_a.h(role))
        assert r.status_code == 200 and r.json()["name"] == role
    assert (await create(client, fleet_a, role="admin")).status_code == 201


async def test_geofences_operator_403(client: httpx.AsyncClient, fleet_a: FleetFixture) -> None:
    fence = await created(client, fleet_a)
    op = bearer(OPERATOR_KEY)
    assert (await client.get("/v1/geofences", headers=op)).status_code == 403
    assert (await client.post("/v1/geofences", json={}, headers=op)).status_code in (403, 422)
    r = await client.patch(f"/v1/geofences/{fence['id']}", json={"name": "x"}, headers=op)
    assert r.status_code == 403
