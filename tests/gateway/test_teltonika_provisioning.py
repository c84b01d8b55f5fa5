"""Provisioning Teltonika boxes through the API: POST /v1/devices with "protocol", no secret,
the device view says it authenticates by IMEI only, GET /v1/devices filters by protocol."""

from __future__ import annotations

import httpx
import pytest

# The API suite's fixtures: a real app on SQLite, fleets with keys.
from tests.api.conftest import app, client, data_dir, fleet_a, store  # noqa: F401
from tests.api.helpers import FleetFixture, luhn_imei

TELTONIKA_IMEI = luhn_imei("35630704244101")


async def test_post_teltonika_device_has_no_secret(
    client: httpx.AsyncClient,  # noqa: F811
    fleet_a: FleetFixture,  # noqa: F811
) -> None:
    r = await client.post(
        "/v1/devices",
        json={"imei": TELTONIKA_IMEI, "model": "FMC130", "protocol": "teltonika"},
        headers=fleet_a.h(),
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["protocol"], body["model"], body["secret"]) == ("teltonika", "FMC130", None)
    assert body["authentication"] == "imei_only"
    r = await client.get(f"/v1/devices/{body['id']}", headers=fleet_a.h("viewer"))
    assert r.json()["protocol"] == "teltonika" and r.json()["authentication"] == "imei_only"


async def test_gp8_is_the_default_protocol(
    client: httpx.AsyncClient,  # noqa: F811
    fleet_a: FleetFixture,  # noqa: F811
) -> None:
    r = await client.get(f"/v1/devices/{fleet_a.device_id}", headers=fleet_a.h())
    assert (r.json()["protocol"], r.json()["authentication"]) == ("gp8", "hmac_secret")


@pytest.mark.parametrize(
    "payload",
    [
        {"model": "FMC130"},  # protocol defaults to gp8, which an FMC130 does not speak
        {"model": "GP8000", "protocol": "teltonika"},
        {"model": "FMC130", "protocol": "nmea"},
    ],
)
async def test_model_and_protocol_must_agree(
    client: httpx.AsyncClient,  # noqa: F811
    fleet_a: FleetFixture,  # noqa: F811
    payload: dict[str, str],
) -> None:
    r = await client.post(
        "/v1/devices", json={"imei": TELTONIKA_IMEI, **payload}, headers=fleet_a.h()
    )
    assert r.status_code == 422, r.text


async def test_list_filters_by_protocol(
    client: httpx.AsyncClient,  # noqa: F811
    fleet_a: FleetFixture,  # noqa: F811
) -> None:
    r = await client.post(
        "/v1/devices",
        json={"imei": TELTONIKA_IMEI, "model": "FMB920", "protocol": "teltonika"},
        headers=fleet_a.h(),
    )
    tel_id = r.json()["id"]
    r = await client.get("/v1/devices", params={"protocol": "teltonika"}, headers=fleet_a.h())
    assert [d["id"] for d in r.json()["data"]] == [tel_id]
    r = await client.get("/v1/devices", params={"protocol": "gp8"}, headers=fleet_a.h())
    assert [d["id"] for d in r.json()["data"]] == [fleet_a.device_id]
    r = await client.get("/v1/devices", params={"protocol": "x"}, headers=fleet_a.h())
    assert r.status_code == 422
