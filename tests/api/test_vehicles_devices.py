"""Vehicles and boxes: validation, CRUD, filters, pagination, fitting history."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from tests.api.helpers import VALID_IMEIS, VALID_VINS, FleetFixture, luhn_imei


async def test_post_vehicles_admin_201(client: httpx.AsyncClient, fleet_a: FleetFixture) -> None:
    r = await client.post(
        "/v1/vehicles",
        json={"vin": " wvwzzz1jzxw000001 ", "plate": "AB-123-CD", "label": "Camión 12"},
        headers=fleet_a.h(),
    )
    assert r.status_code == 201
    body = r.json()
    assert body["vin"] == "WVWZZZ1JZXW000001"
    assert body["plate"] == "AB-123-CD" and body["label"] == "Camión 12"
    assert body["device_id"] is None
    r = await client.get(f"/v1/vehicles/{body['id']}", headers=fleet_a.h("viewer"))
    fields = ("id", "vin", "plate", "label", "device_id", "created_at")
    assert {k: r.json()[k] for k in fields} == {k: body[k] for k in fields}


@pytest.mark.parametrize(
    ("payload", "loc", "msg"),
    [
        ({"vin": "1M8GDM9A1KP042788"}, ["body", "vin"], "check digit (position 9) is '1'"),
        ({"vin": "1M8GDM9AXKO042788"}, ["body", "vin"], "never contains I, O or Q"),
        ({"vin": "SHORT"}, ["body", "vin"], "a VIN has 17 characters, this one has 5"),
        ({"vin": 12345}, ["body", "vin"], "Input should be a valid string"),
        ({}, ["body", "vin"], "Field required"),
        ({"vin": VALID_VINS[3], "plate": "X" * 17}, ["body", "plate"], "at most 16 characters"),
        ({"vin": VALID_VINS[3], "label": "L" * 65}, ["body", "label"], "at most 64 characters"),
        ({"vin": VALID_VINS[3], "label": "bell\x07"}, ["body", "label"], "printable"),
        ({"vin": VALID_VINS[3], "colour": "red"}, ["body", "colour"], "Extra inputs"),
    ],
)
async def test_post_vehicles_invalid_422(
    client: httpx.AsyncClient,
    fleet_a: FleetFixture,
    payload: dict[str, object],
    loc: list[str],
    msg: str,
) -> None:
    r = await client.post("/v1/vehicles", json=payload, headers=fleet_a.h())
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["errors"][0]["loc"] == loc
    assert msg in body["errors"][0]["msg"]
    assert msg in body["detail"]


async def test_post_vehicles_duplicate_vin_409(
    client: httpx.AsyncClient, fleet_a: FleetFixture, fleet_b: FleetFixture
) -> None:
    r = await client.post("/v1/vehicles", json={"vin": VALID_VINS[0]}, headers=fleet_a.h())
    assert r.status_code == 409
    assert r.json()["status"] == 409
    # The same VIN in another fleet is that fleet's business (a sold vehicle, a lease).
    r = await client.post("/v1/vehicles", json={"vin": VALID_VINS[0]}, headers=fleet_b.h())
    assert r.status_code == 201


@pytest.mark.parametrize("role", ["manager", "viewer"])
async def test_post_vehicles_low_role_403(
    client: httpx.AsyncClient, fleet_a: FleetFixture, role: str
) -> None:
    r = await client.post("/v1/vehicles", json={"vin": VALID_VINS[3]}, headers=fleet_a.h(role))
    assert r.status_code == 403
    assert r.json()["detail"] == f"this needs the admin role or higher; the key is {role}"


async def test_patch_vehicle_changes_given_fields(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    url = f"/v1/vehicles/{fleet_a.vehicle_id}"
    r = await client.patch(url, json={"label": "reefer"}, headers=fleet_a.h())
    assert r.status_code == 200
    assert r.json()["label"] == "reefer" and r.json()["plate"] == "alpha-1"
    r = await client.patch(url, json={"vin": "1m8gdm9a1kp042788"}, headers=fleet_a.h())
    assert r.status_code == 422
    assert (await client.get(url, headers=fleet_a.h())).json()["label"] == "reefer"


async def test_delete_vehicle_204_then_404(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    url = f"/v1/vehicles/{fleet_a.vehicle_id}"
    assert (await client.delete(url, headers=fleet_a.h())).status_code == 204
    assert (await client.get(url, headers=fleet_a.h())).status_code == 404
    # Its box was unfitted, not deleted.
    r = await client.get(f"/v1/devices/{fleet_a.device_id}", headers=fleet_a.h())
    assert r.status_code == 200 and r.json()["vehicle_id"] is None


async def test_get_vehicles_filters_and_pagination(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    created = [fleet_a.vehicle_id]
    for i, vin in enumerate(["11111111111111111", "WVWZZZ1JZXW000001", "JH4KA7561PC008269"]):
        r = await client.post(
            "/v1/vehicles", json={"vin": vin, "plate": f"P{i}"}, headers=fleet_a.h()
        )
        created.append(r.json()["id"])
    r = await client.get("/v1/vehicles", params={"limit": 3}, headers=fleet_a.h("viewer"))
    first = r.json()
    assert [v["id"] for v in first["data"]] == created[:3] and first["next_cursor"]
    r = await client.get(
        "/v1/vehicles", params={"limit": 3, "cursor": first["next_cursor"]}, headers=fleet_a.h()
    )
    assert [v["id"] for v in r.json()["data"]] == created[3:]
    assert r.json()["next_cursor"] is None
    r = await client.get("/v1/vehicles", params={"plate": "P1"}, headers=fleet_a.h())
    assert [v["vin"] for v in r.json()["data"]] == ["WVWZZZ1JZXW000001"]
    r = await client.get("/v1/vehicles", params={"vin": "jh4ka7561pc008269"}, headers=fleet_a.h())
    assert [v["id"] for v in r.json()["data"]] == [created[3]]
    r = await client.get("/v1/vehicles", params={"fitted": "true"}, headers=fleet_a.h())
    assert [v["id"] for v in r.json()["data"]] == [fleet_a.vehicle_id]
    r = await client.get("/v1/vehicles", params={"fitted": "false"}, headers=fleet_a.h())
    assert [v["id"] for v in r.json()["data"]] == created[1:]


async def test_get_vehicles_invalid_cursor_400(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    r = await client.get("/v1/vehicles", params={"cursor": "garbage!"}, headers=fleet_a.h())
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/problem+json"
    assert "cursor" in r.json()["detail"]


async def test_get_vehicles_limit_out_of_range_422(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    r = await client.get("/v1/vehicles", params={"limit": 0}, headers=fleet_a.h())
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["query", "limit"]


async def test_post_devices_secret_returned_once(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    imei = VALID_IMEIS[2]
    r = await client.post(
        "/v1/devices", json={"imei": imei, "model": "GP8500"}, headers=fleet_a.h()
    )
    assert r.status_code == 201
    body = r.json()
    assert body["imei"] == imei and body["model"] == "GP8500" and body["status"] == "active"
    assert len(body["secret"]) == 32
    assert r.headers["cache-control"] == "no-store"
    r = await client.get(f"/v1/devices/{body['id']}", headers=fleet_a.h())
    assert r.status_code == 200 and "secret" not in r.json()
    listing = await client.get("/v1/devices", headers=fleet_a.h())
    assert body["secret"] not in listing.text


@pytest.mark.parametrize(
    ("payload", "loc", "msg"),
    [
        ({"imei": "490154203237519", "model": "GP8000"}, ["body", "imei"], "Luhn"),
        ({"imei": "4901542032375", "model": "GP8000"}, ["body", "imei"], "15 digits"),
        ({"imei": "490154203237518", "model": "GP9000"}, ["body", "model"], "'GP8000' or 'GP8500'"),
        ({"model": "GP8000"}, ["body", "imei"], "Field required"),
    ],
)
async def test_post_devices_invalid_422(
    client: httpx.AsyncClient,
    fleet_a: FleetFixture,
    payload: dict[str, str],
    loc: list[str],
    msg: str,
) -> None:
    r = await client.post("/v1/devices", json=payload, headers=fleet_a.h())
    assert r.status_code == 422
    assert r.json()["errors"][0]["loc"] == loc
    assert msg in r.json()["errors"][0]["msg"]


async def test_post_devices_imei_taken_in_other_fleet_409(
    client: httpx.AsyncClient, fleet_a: FleetFixture, fleet_b: FleetFixture
) -> None:
    r = await client.post(
        "/v1/devices", json={"imei": fleet_a.imei, "model": "GP8000"}, headers=fleet_b.h()
    )
    assert r.status_code == 409
    assert fleet_a.id not in r.text and fleet_a.device_id not in r.text


@pytest.mark.parametrize("role", ["manager", "viewer"])
async def test_post_devices_low_role_403(
    client: httpx.AsyncClient, fleet_a: FleetFixture, role: str
) -> None:
    r = await client.post(
        "/v1/devices", json={"imei": VALID_IMEIS[3], "model": "GP8000"}, headers=fleet_a.h(role)
    )
    assert r.status_code == 403


async def test_get_devices_filters(client: httpx.AsyncClient, fleet_a: FleetFixture) -> None:
    other = luhn_imei("35000000000001")
    r = await client.post(
        "/v1/devices", json={"imei": other, "model": "GP8500"}, headers=fleet_a.h()
    )
    other_id = r.json()["id"]
    r = await client.get("/v1/devices", params={"model": "GP8500"}, headers=fleet_a.h("viewer"))
    assert [d["id"] for d in r.json()["data"]] == [other_id]
    r = await client.get("/v1/devices", params={"imei": fleet_a.imei}, headers=fleet_a.h())
    assert [d["id"] for d in r.json()["data"]] == [fleet_a.device_id]
    r = await client.get("/v1/devices", params={"fitted": "false"}, headers=fleet_a.h())
    assert [d["id"] for d in r.json()["data"]] == [other_id]
    r = await client.get("/v1/devices", params={"model": "GP1"}, headers=fleet_a.h())
    assert r.status_code == 422


async def test_put_vehicle_device_moves_box_and_keeps_history(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    r = await client.post("/v1/vehicles", json={"vin": VALID_VINS[3]}, headers=fleet_a.h())
    second = r.json()["id"]
    r = await client.put(
        f"/v1/vehicles/{second}/device",
        json={"imei": fleet_a.imei, "move": True},
        headers=fleet_a.h(),
    )
    assert r.status_code == 200
    assert r.json()["vehicle_id"] == second and r.json()["device_id"] == fleet_a.device_id
    assert r.json()["removed_at"] is None
    first = await client.get(f"/v1/vehicles/{fleet_a.vehicle_id}", headers=fleet_a.h())
    assert first.json()["device_id"] is None
    r = await client.get(f"/v1/devices/{fleet_a.device_id}/fittings", headers=fleet_a.h())
    history = r.json()["data"]
    assert [f["vehicle_id"] for f in history] == [fleet_a.vehicle_id, second]
    assert history[0]["removed_at"] is not None and history[1]["removed_at"] is None


async def test_put_vehicle_device_invalid_imei_422(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    r = await client.put(
        f"/v1/vehicles/{fleet_a.vehicle_id}/device", json={"imei": "123"}, headers=fleet_a.h()
    )
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "imei"]


async def test_put_vehicle_device_unknown_imei_404(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    r = await client.put(
        f"/v1/vehicles/{fleet_a.vehicle_id}/device",
        json={"imei": VALID_IMEIS[3]},
        headers=fleet_a.h(),
    )
    assert r.status_code == 404


async def test_delete_vehicle_device_204_then_404(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    url = f"/v1/vehicles/{fleet_a.vehicle_id}/device"
    assert (await client.delete(url, headers=fleet_a.h())).status_code == 204
    r = await client.get(f"/v1/vehicles/{fleet_a.vehicle_id}", headers=fleet_a.h())
    assert r.json()["device_id"] is None
    assert (await client.delete(url, headers=fleet_a.h())).status_code == 404
    r = await client.get(f"/v1/devices/{fleet_a.device_id}/fittings", headers=fleet_a.h())
    assert len(r.json()["data"]) == 1 and r.json()["data"][0]["removed_at"] is not None


async def test_put_vehicle_device_backdated_fitting(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    r = await client.post("/v1/vehicles", json={"vin": VALID_VINS[3]}, headers=fleet_a.h())
    second = r.json()["id"]
    other_imei = luhn_imei("35000000000002")
    await client.post(
        "/v1/devices", json={"imei": other_imei, "model": "GP8000"}, headers=fleet_a.h()
    )
    url = f"/v1/vehicles/{second}/device"
    body = {"imei": other_imei, "fitted_at": "2024-05-01T00:00:00Z"}
    r = await client.put(url, json=body, headers=fleet_a.h())
    assert r.status_code == 200
    assert r.json()["fitted_at"] == "2024-05-01T00:00:00.000Z"
    # Fitting it again to the same vehicle is idempotent, whatever the time given.
    r = await client.put(
        url, json={**body, "fitted_at": "2024-04-01T00:00:00Z"}, headers=fleet_a.h()
    )
    assert r.status_code == 200 and r.json()["fitted_at"] == "2024-05-01T00:00:00.000Z"
    # Moving it to another vehicle before its last fitting began would overlap the history.
    r = await client.put(
        f"/v1/vehicles/{fleet_a.vehicle_id}/device",
        json={"imei": other_imei, "fitted_at": "2024-04-30T00:00:00Z"},
        headers=fleet_a.h(),
    )
    assert r.status_code == 409
    r = await client.put(
        url, json={**body, "fitted_at": "2999-01-01T00:00:00Z"}, headers=fleet_a.h()
    )
    assert r.status_code == 422
    assert r.json()["errors"][0]["msg"].startswith(
        "fitted_at (2999-01-01T00:00:00.000Z) must not be in the future (now: "
    )


async def test_vehicle_writes_are_logged_and_a_failed_one_is_not(
    client: httpx.AsyncClient, app: FastAPI, fleet_a: FleetFixture
) -> None:
    log = app.state.store.access_log
    before = len(await log.chain(fleet_a.id))  # in seq order: one millisecond may hold all
    r = await client.post("/v1/vehicles", json={"vin": VALID_VINS[0]}, headers=fleet_a.h())
    assert r.status_code == 409  # the fleet's vehicle has this VIN: nothing to log
    r = await client.post("/v1/vehicles", json={"vin": VALID_VINS[3]}, headers=fleet_a.h())
    assert r.status_code == 201
    vehicle_id = r.json()["id"]
    r = await client.patch(f"/v1/vehicles/{vehicle_id}", json={"label": "x"}, headers=fleet_a.h())
    assert r.status_code == 200
    r = await client.delete(f"/v1/vehicles/{vehicle_id}", headers=fleet_a.h())
    assert r.status_code == 204
    entries = (await log.chain(fleet_a.id))[before:]
    assert [(e.action, e.resource, e.resource_id, e.detail) for e in entries] == [
        ("create", "vehicle", vehicle_id, ""),
        ("update", "vehicle", vehicle_id, "label"),
        ("delete", "vehicle", vehicle_id, ""),
    ]
    assert {e.key_id for e in entries} == {fleet_a.key_ids["admin"]}
