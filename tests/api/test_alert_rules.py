"""/v1/alert-rules and /v1/badge-policy: default rules, CRUD, validation, roles, tenancy."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from tests.api.helpers import FleetFixture


async def rules(client: httpx.AsyncClient, fleet: FleetFixture) -> list[dict[str, object]]:
    r = await client.get("/v1/alert-rules", headers=fleet.h("viewer"))
    assert r.status_code == 200, r.text
    data: list[dict[str, object]] = r.json()["data"]
    return data


async def test_list_alert_rules_starts_with_the_defaults(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    first = await rules(client, fleet_a)
    assert [(r["type"], r["enabled"], r["default"]) for r in first] == [
        ("parked_guard", True, True),
        ("box_alarm", True, True),
        ("box_offline", True, True),
    ]
    guard = first[0]
    assert guard["severity"] == "critical"
    assert guard["parameters"] == {"radius_m": 150.0, "park_minutes": 5}
    assert first[2]["parameters"] == {"offline_minutes": 1440}
    assert await rules(client, fleet_a) == first  # made once


async def test_create_update_delete_alert_rule(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    body = {
        "type": "overspeed",
        "name": "Motorway",
        "severity": "critical",
        "speed_limit_kmh": 130,
        "min_duration_s": 20,
        "muted_vehicle_ids": [fleet_a.vehicle_id],
    }
    r = await client.post("/v1/alert-rules", json=body, headers=fleet_a.h())
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["id"].startswith("arl_")
    assert created["parameters"] == {
        "speed_limit_kmh": 130.0,
        "min_duration_s": 20,
        "geofence_ids": None,
    }
    assert created["muted_vehicle_ids"] == [fleet_a.vehicle_id]
    assert len(await rules(client, fleet_a)) == 4  # the defaults and this one

    r = await client.patch(
        f"/v1/alert-rules/{created['id']}",
        json={"enabled": False, "muted_vehicle_ids": [], "min_duration_s": None},
        headers=fleet_a.h(),
    )
    assert r.status_code == 200, r.text
    patched = r.json()
    assert patched["enabled"] is False and patched["muted_vehicle_ids"] == []
    assert patched["parameters"]["min_duration_s"] == 30  # back to the default
    assert patched["name"] == "Motorway"
    r = await client.get(f"/v1/alert-rules/{created['id']}", headers=fleet_a.h("viewer"))
    assert r.json() == patched

    r = await client.delete(f"/v1/alert-rules/{created['id']}", headers=fleet_a.h())
    assert r.status_code == 204
    r = await client.get(f"/v1/alert-rules/{created['id']}", headers=fleet_a.h())
    assert r.status_code == 404


async def test_create_alert_rule_with_a_schedule(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    body = {
        "type": "outside_hours",
        "schedule": {
            "timezone": "Europe/Paris",
            "days": [1, 2, 3, 4, 5],
            "from": "07:00",
            "to": "19:00",
        },
    }
    r = await client.post("/v1/alert-rules", json=body, headers=fleet_a.h())
    assert r.status_code == 201, r.text
    assert r.json()["parameters"]["schedule"] == body["schedule"]


async def test_create_alert_rule_refuses_what_does_not_fit(
    client: httpx.AsyncClient, fleet_a: FleetFixture, fleet_b: FleetFixture
) -> None:
    bad = [
        {"type": "box_alarm", "radius_m": 200},  # not a box_alarm parameter
        {"type": "nonsense"},
        {"type": "box_alarm", "codes": ["harsh_braking"]},
        {"type": "overspeed", "speed_limit_kmh": -5},
        {"type": "no_badge", "muted_vehicle_ids": [fleet_b.vehicle_id]},  # another fleet's
        {"type": "geofence_exit", "geofence_ids": ["gfn_missing"]},
        {"type": "box_offline", "offline_minutes": 1},
    ]
    for body in bad:
        r = await client.post("/v1/alert-rules", json=body, headers=fleet_a.h())
        assert r.status_code == 422, (body, r.text)
    r = await client.get("/v1/alert-rules", headers=fleet_a.h())
    rule_id = r.json()["data"][1]["id"]  # box_alarm
    r = await client.patch(f"/v1/alert-rules/{rule_id}", json={"radius_m": 10}, headers=fleet_a.h())
    assert r.status_code == 422


async def test_alert_rules_roles_and_tenancy(
    client: httpx.AsyncClient, fleet_a: FleetFixture, fleet_b: FleetFixture
) -> None:
    body = {"type": "no_badge"}
    for role in ("viewer", "manager"):
        r = await client.post("/v1/alert-rules", json=body, headers=fleet_a.h(role))
        assert r.status_code == 403
    rule_id = (await rules(client, fleet_a))[0]["id"]
    for method, json in (("GET", None), ("PATCH", {"enabled": False}), ("DELETE", None)):
        r = await client.request(
            method, f"/v1/alert-rules/{rule_id}", json=json, headers=fleet_b.h()
        )
        assert r.status_code == 404, (method, r.text)
    assert all(r["id"] != rule_id for r in await rules(client, fleet_b))


async def test_badge_policy(
    client: httpx.AsyncClient, app: FastAPI, fleet_a: FleetFixture, fleet_b: FleetFixture
) -> None:
    r = await client.get("/v1/badge-policy", headers=fleet_a.h("viewer"))
    assert r.json() == {
        "require_badge": False,
        "badges": [],
        "updated_at": None,
        "updated_by": None,
    }
    body = {"require_badge": True, "badges": ["4711", "42", "4711"]}
    r = await client.put("/v1/badge-policy", json=body, headers=fleet_a.h("manager"))
    assert r.status_code == 403
    r = await client.put("/v1/badge-policy", json=body, headers=fleet_a.h())
    assert r.status_code == 200, r.text
    # Kept and answered as pseudonyms, as the gateway stores a box's badge (docs/privacy.md).
    pseudonyms = app.state.pseudonyms
    expected = sorted([pseudonyms.of(42), pseudonyms.of(4711)])
    assert r.json()["badges"] == [str(p) for p in expected] and r.json()["require_badge"] is True
    r = await client.put(
        "/v1/badge-policy", json={"require_badge": True, "badges": ["x1"]}, headers=fleet_a.h()
    )
    assert r.status_code == 422
    r = await client.get("/v1/badge-policy", headers=fleet_b.h())
    assert r.json()["require_badge"] is False
