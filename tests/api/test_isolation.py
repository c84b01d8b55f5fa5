"""Tenant isolation for every resource and verb, and the role check of every write.

Fleet A's keys on fleet B's ids get 404 and none of B's data; listings never show B's items;
a role too low gets 403 and changes nothing.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from storage.repository import Store
from tests.api.helpers import (
    OPERATOR_KEY,
    T0,
    VALID_IMEIS,
    VALID_VINS,
    FleetFixture,
    bearer,
    make_event,
    make_position,
)

RANGE = {"from": str(T0 - 3_600_000), "to": str(T0 + 3_600_000)}

# The owner every key is created for (a key belongs to a named person).
OWNER = {"name": "v", "email": "v@example.com"}


def foreign_requests(a: FleetFixture, b: FleetFixture) -> list[tuple[str, str, dict[str, Any]]]:
    """Every route that names a resource, aimed at fleet B's ids."""
    return [
        ("GET", f"/v1/fleets/{b.id}", {}),
        ("DELETE", f"/v1/fleets/{b.id}", {}),
        ("GET", f"/v1/fleets/{b.id}/keys", {}),
        ("POST", f"/v1/fleets/{b.id}/keys", {"json": {"role": "admin"}}),
        ("GET", f"/v1/fleets/{b.id}/keys/{b.key_ids['admin']}", {}),
        ("DELETE", f"/v1/fleets/{b.id}/keys/{b.key_ids['admin']}", {}),
        ("DELETE", f"/v1/fleets/{a.id}/keys/{b.key_ids['admin']}", {}),
        ("GET", f"/v1/vehicles/{b.vehicle_id}", {}),
        ("PATCH", f"/v1/vehicles/{b.vehicle_id}", {"json": {"label": "pwned"}}),
        ("DELETE", f"/v1/vehicles/{b.vehicle_id}", {}),
        ("PUT", f"/v1/vehicles/{b.vehicle_id}/device", {"json": {"imei": b.imei}}),
        ("DELETE", f"/v1/vehicles/{b.vehicle_id}/device", {}),
        ("GET", f"/v1/vehicles/{b.vehicle_id}/position", {}),
        ("GET", f"/v1/vehicles/{b.vehicle_id}/positions", {"params": RANGE}),
        ("GET", f"/v1/vehicles/{b.vehicle_id}/positions", {"params": {**RANGE, "format": "csv"}}),
        ("GET", f"/v1/vehicles/{b.vehicle_id}/trips", {"params": RANGE}),
        ("GET", f"/v1/vehicles/{b.vehicle_id}/mileage", {"params": RANGE}),
        ("GET", f"/v1/devices/{b.device_id}", {}),
        ("GET", f"/v1/devices/{b.device_id}/fittings", {}),
        ("GET", "/v1/events", {"params": {**RANGE, "vehicle_id": b.vehicle_id}}),
    ]


async def seed(store: Store, fleet: FleetFixture, lat: float) -> None:
    positions = [
        make_position(fleet.id, fleet.device_id, fleet.vehicle_id, T0 + i * 30_000, lat=lat)
        for i in range(5)
    ]
    await store.telemetry.store(positions, [make_event(positions[2], "sos")])


@pytest.mark.parametrize("role", ["admin", "manager", "viewer"])
async def test_all_verbs_other_fleet_ids_404(
    client: httpx.AsyncClient,
    store: Store,
    fleet_a: FleetFixture,
    fleet_b: FleetFixture,
    role: str,
) -> None:
    await seed(store, fleet_b, lat=10.0)
    for method, url, kwargs in foreign_requests(fleet_a, fleet_b):
        r = await client.request(method, url, headers=fleet_a.h(role), **kwargs)
        assert r.status_code == 404, (method, url, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        # Only a problem document: no data of B (its name, plate, positions) in it.
        assert set(r.json()) == {"type", "title", "status", "detail", "instance"}
        for data_of_b in ("bravo", "10.0"):
            assert data_of_b not in r.text, (method, url)
    # Nothing of B changed.
    r = await client.get(f"/v1/vehicles/{fleet_b.vehicle_id}", headers=fleet_b.h("viewer"))
    assert r.status_code == 200
    assert r.json()["label"] == "van" and r.json()["device_id"] == fleet_b.device_id
    r = await client.get(f"/v1/fleets/{fleet_b.id}/keys", headers=fleet_b.h("admin"))
    assert all(k["revoked_at"] is None for k in r.json()["data"])


async def test_put_vehicle_device_other_fleet_box_404(
    client: httpx.AsyncClient, fleet_a: FleetFixture, fleet_b: FleetFixture
) -> None:
    r = await client.put(
        f"/v1/vehicles/{fleet_a.vehicle_id}/device",
        json={"imei": fleet_b.imei},
        headers=fleet_a.h(),
    )
    assert r.status_code == 404
    r = await client.get(f"/v1/devices/{fleet_b.device_id}", headers=fleet_b.h())
    assert r.json()["vehicle_id"] == fleet_b.vehicle_id


async def test_get_listings_never_show_other_fleet(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture, fleet_b: FleetFixture
) -> None:
    await seed(store, fleet_a, lat=20.0)
    await seed(store, fleet_b, lat=10.0)
    listings = [
        ("/v1/vehicles", {}),
        ("/v1/devices", {}),
        ("/v1/fleet/positions", {}),
        ("/v1/fleet/positions", {"bbox": "-180,-90,180,90"}),
        ("/v1/events", RANGE),
        ("/v1/access-log", {"from": "0"}),
        (f"/v1/fleets/{fleet_a.id}/keys", {}),
    ]
    for url, params in listings:
        r = await client.get(url, params=params, headers=fleet_a.h("admin"))
        assert r.status_code == 200, (url, r.text)
        assert r.json()["data"], url  # A's own items are there...
        for foreign in (fleet_b.id, fleet_b.vehicle_id, fleet_b.device_id, fleet_b.imei):
            assert foreign not in r.text, (url, foreign)  # ...and nothing of B
    r = await client.post(
        "/v1/fleet/positions/search", json={"bbox": [-180, -90, 180, 90]}, headers=fleet_a.h()
    )
    assert [item["vehicle_id"] for item in r.json()["data"]] == [fleet_a.vehicle_id]


def own_writes(a: FleetFixture) -> list[tuple[str, str, dict[str, Any], str]]:
    """Every write on fleet A, with the least role allowed to do it."""
    return [
        ("POST", "/v1/vehicles", {"json": {"vin": VALID_VINS[3]}}, "admin"),
        ("PATCH", f"/v1/vehicles/{a.vehicle_id}", {"json": {"label": "x"}}, "admin"),
        ("DELETE", f"/v1/vehicles/{a.vehicle_id}", {}, "admin"),
        ("PUT", f"/v1/vehicles/{a.vehicle_id}/device", {"json": {"imei": a.imei}}, "admin"),
        ("DELETE", f"/v1/vehicles/{a.vehicle_id}/device", {}, "admin"),
        ("POST", "/v1/devices", {"json": {"imei": VALID_IMEIS[3], "model": "GP8000"}}, "admin"),
        ("POST", f"/v1/fleets/{a.id}/keys", {"json": {"role": "viewer", **OWNER}}, "admin"),
        ("POST", "/v1/data/purge", {"json": {"before": "2024-05-01T12:01:00Z"}}, "admin"),
        ("DELETE", f"/v1/fleets/{a.id}/keys/{a.key_ids['admin']}", {}, "admin"),
        ("POST", "/v1/fleets", {"json": {"name": "new"}}, "operator"),
        ("DELETE", f"/v1/fleets/{a.id}", {}, "operator"),
    ]


_BELOW = {
    "admin": ["viewer", "manager"],
    "operator": ["viewer", "manager", "admin"],
}


async def test_all_writes_role_too_low_403(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture
) -> None:
    await seed(store, fleet_a, lat=20.0)
    for method, url, kwargs, least in own_writes(fleet_a):
        for role in _BELOW[least]:
            r = await client.request(method, url, headers=fleet_a.h(role), **kwargs)
            assert r.status_code == 403, (method, url, role, r.text)
            assert r.headers["content-type"] == "application/problem+json"
    # Nothing changed.
    r = await client.get(f"/v1/vehicles/{fleet_a.vehicle_id}", headers=fleet_a.h("viewer"))
    assert r.json()["label"] == "van" and r.json()["device_id"] == fleet_a.device_id
    assert len((await client.get("/v1/vehicles", headers=fleet_a.h())).json()["data"]) == 1
    assert len((await client.get("/v1/devices", headers=fleet_a.h())).json()["data"]) == 1
    keys = (await client.get(f"/v1/fleets/{fleet_a.id}/keys", headers=fleet_a.h())).json()
    assert len(keys["data"]) == 3 and all(k["revoked_at"] is None for k in keys["data"])
    r = await client.get(
        f"/v1/vehicles/{fleet_a.vehicle_id}/positions", params=RANGE, headers=fleet_a.h()
    )
    assert len(r.json()["data"]) == 5


async def test_fleet_data_writes_operator_403(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    for method, url, kwargs, least in own_writes(fleet_a):
        if least != "admin" or "/keys" in url:
            continue  # the operator manages fleets and keys
        r = await client.request(method, url, headers=bearer(OPERATOR_KEY), **kwargs)
        assert r.status_code == 403, (method, url, r.text)


async def test_all_writes_allowed_role_succeeds(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture
) -> None:
    """The same writes with the least allowed role pass: the 403s above are role checks."""
    await seed(store, fleet_a, lat=20.0)
    expected = [201, 200, 204, 404, 404, 201, 201, 200, 204, 201, 204]
    for (method, url, kwargs, least), status in zip(own_writes(fleet_a), expected, strict=True):
        headers = bearer(OPERATOR_KEY) if least == "operator" else fleet_a.h(least)
        r = await client.request(method, url, headers=headers, **kwargs)
        # The vehicle was deleted by the third write, so fitting it afterwards is a 404.
        assert r.status_code == status, (method, url, r.text)


@pytest.mark.parametrize("role", ["viewer", "manager"])
async def test_get_access_log_low_role_403(
    client: httpx.AsyncClient, fleet_a: FleetFixture, role: str
) -> None:
    assert (await client.get("/v1/access-log", headers=fleet_a.h(role))).status_code == 403


async def test_tracking_resources_of_another_fleet_are_404(
    client: httpx.AsyncClient, fleet_a: FleetFixture, fleet_b: FleetFixture
) -> None:
    """Geofences, webhooks, theft cases, alerts and the guard: fleet B's, asked by A, are 404
    for every verb and role (the sweep above, over the stolen-vehicle tracking routes)."""
    square = [[2.35, 48.85], [2.36, 48.85], [2.36, 48.86], [2.35, 48.86], [2.35, 48.85]]
    polygon = {"type": "Polygon", "coordinates": [square]}
    b = fleet_b.h("admin")
    r = await client.post("/v1/geofences", json={"name": "B depot", "geometry": polygon}, headers=b)
    assert r.status_code == 201, r.text
    fence_id = r.json()["id"]
    r = await client.post("/v1/webhooks", json={"url": "https://hooks.example.com/b"}, headers=b)
    assert r.status_code == 201, r.text
    webhook_id = r.json()["id"]
    r = await client.post(
        f"/v1/vehicles/{fleet_b.vehicle_id}/theft",
        json={"reported_at": "2026-01-01T00:00:00Z", "note": "B's van"},
        headers=b,
    )
    assert r.status_code == 201, r.text
    case_id = r.json()["id"]
    foreign: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", f"/v1/geofences/{fence_id}", {}),
        ("PATCH", f"/v1/geofences/{fence_id}", {"json": {"name": "pwned"}}),
        ("DELETE", f"/v1/geofences/{fence_id}", {}),
        ("GET", f"/v1/geofences/{fence_id}/events", {}),
        ("GET", f"/v1/webhooks/{webhook_id}", {}),
        ("PATCH", f"/v1/webhooks/{webhook_id}", {"json": {"enabled": False}}),
        ("DELETE", f"/v1/webhooks/{webhook_id}", {}),
        ("GET", f"/v1/webhooks/{webhook_id}/deliveries", {}),
        ("GET", f"/v1/theft-cases/{case_id}", {}),
        ("GET", f"/v1/theft-cases/{case_id}/track", {"params": {"format": "geojson"}}),
        ("POST", f"/v1/theft-cases/{case_id}/close", {"json": {"outcome": "recovered"}}),
        ("POST", f"/v1/theft-cases/{case_id}/immobilise", {}),
        ("POST", f"/v1/vehicles/{fleet_b.vehicle_id}/theft", {"json": {"note": "pwned"}}),
        ("PUT", f"/v1/vehicles/{fleet_b.vehicle_id}/guard", {"json": {"armed": False}}),
    ]
    for method, url, kwargs in foreign:
        r = await client.request(method, url, headers=fleet_a.h("admin"), **kwargs)
        assert r.status_code == 404, (method, url, r.text)
        assert "B depot" not in r.text and "B's van" not in r.text
    # Listings of A hold nothing of B.
    for url in ("/v1/geofences", "/v1/webhooks", "/v1/theft-cases", "/v1/alerts"):
        r = await client.get(url, headers=fleet_a.h("viewer"))
        assert r.status_code == 200, (url, r.text)
        assert r.json()["data"] == [], url
    # B's resources are untouched.
    r = await client.get(f"/v1/geofences/{fence_id}", headers=fleet_b.h("viewer"))
    assert r.status_code == 200 and r.json()["name"] == "B depot"
    r = await client.get(f"/v1/theft-cases/{case_id}", headers=fleet_b.h("viewer"))
    assert r.status_code == 200 and r.json()["status"] != "closed"
