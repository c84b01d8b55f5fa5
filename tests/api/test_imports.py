"""POST /v1/imports: a CSV of vehicles, boxes and fittings, validated whole, all or nothing."""

from __future__ import annotations

from typing import Any

import httpx

from tests.api.helpers import VALID_IMEIS, VALID_VINS, FleetFixture, luhn_imei

HEADER = "vin,plate,label,imei,model,protocol,fitted_at"
CSV = {"Content-Type": "text/csv"}


def vin(n: int) -> str:
    # W: a European VIN, which has no check digit to compute.
    return f"WVWZZZ1JZ{n:08d}"


def imei(n: int) -> str:
    return luhn_imei(f"35391805{n:06d}")


def csv_file(*lines: str) -> str:
    return "\n".join((HEADER, *lines)) + "\n"


async def post(
    client: httpx.AsyncClient, fleet: FleetFixture, text: str, role: str = "admin"
) -> httpx.Response:
    return await client.post("/v1/imports", content=text.encode(), headers={**fleet.h(role), **CSV})


async def count(client: httpx.AsyncClient, fleet: FleetFixture, what: str) -> int:
    total, cursor = 0, None
    while True:
        params: dict[str, Any] = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
        r = await client.get(f"/v1/{what}", params=params, headers=fleet.h("viewer"))
        assert r.status_code == 200, r.text
        total += len(r.json()["data"])
        cursor = r.json()["next_cursor"]
        if cursor is None:
            return total


async def test_import_creates_vehicles_boxes_and_fittings(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    rows = [f"{vin(i)},P-{i},van {i},{imei(i)},GP8000,," for i in range(300)]
    rows.append(f"{vin(300)},P-300,,,,,")  # a vehicle alone
    rows.append(f",,,{imei(301)},FMB920,teltonika,")  # a box alone, unfitted
    rows.append(f"{vin(302)},,,{imei(302)},GP8500,gp8,2024-05-01T12:00:00Z")
    before_vehicles = await count(client, fleet_a, "vehicles")

    r = await post(client, fleet_a, csv_file(*rows))

    assert r.status_code == 201, r.text
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert (len(body["vehicles"]), len(body["boxes"]), body["fittings"]) == (302, 302, 301)
    assert await count(client, fleet_a, "vehicles") == before_vehicles + 302
    first = body["boxes"][0]
    assert first["line"] == 2 and first["imei"] == imei(0) and first["secret"]
    teltonika = next(b for b in body["boxes"] if b["imei"] == imei(301))
    assert teltonika["secret"] is None and teltonika["vehicle_id"] is None
    # Fitted: the vehicle shows its box, the box its vehicle, the history its start.
    vehicle_id = body["boxes"][-1]["vehicle_id"]
    r = await client.get(f"/v1/vehicles/{vehicle_id}", headers=fleet_a.h("viewer"))
    assert r.json()["device_id"] == body["boxes"][-1]["device_id"]
    r = await client.get(
        f"/v1/devices/{body['boxes'][-1]['device_id']}/fittings", headers=fleet_a.h("viewer")
    )
    assert r.status_code == 200, r.text
    assert [f["fitted_at"] for f in r.json()["data"]] == ["2024-05-01T12:00:00.000Z"]
    # Audited once, for the whole file.
    r = await client.get("/v1/access-log", headers=fleet_a.h())
    assert any(e["action"] == "import" for e in r.json()["data"]), r.text


async def test_import_reports_every_error_by_line_and_column_and_stores_nothing(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    bad_luhn = imei(7)[:-1] + str((int(imei(7)[-1]) + 1) % 10)
    rows = [
        f"{vin(1)},P-1,,{imei(1)},GP8000,,",
        f"{vin(1)},P-dup,,{imei(2)},GP8000,,",  # line 3: VIN twice in the file
        f"{vin(3)},,,{bad_luhn},GP8000,,",  # line 4: Luhn
        f"{vin(4)},,,{imei(4)},GP9999,,",  # line 5: unknown model
        f"{vin(5)},,,{imei(5)},GP8000,teltonika,",  # line 6: protocol mismatch
        f"{vin(6)},,,{imei(1)},GP8000,,",  # line 7: the box of line 2 fitted twice
        f"{VALID_VINS[0]},,,,,,",  # line 8: the fixture's VIN (checked against the store later)
        f"{vin(9)},,,{imei(9)},GP8000,,yesterday",  # line 9: bad time
    ]

    r = await post(client, fleet_a, csv_file(*rows))

    assert r.status_code == 422, r.text
    problem = r.json()
    assert problem["type"] == "urn:gp8:problem:import-invalid"
    found = {(e["row"], e["column"]) for e in problem["errors"]}
    assert found == {
        (3, "vin"),
        (4, "imei"),
        (5, "model"),
        (6, "protocol"),
        (7, "imei"),
        (9, "fitted_at"),
    }
    assert await count(client, fleet_a, "devices") == 1  # the fixture's box alone

    # The same file without its own errors: what clashes with the store is reported next.
    clean = [rows[0], rows[6], f",,,{VALID_IMEIS[0]},GP8000,,"]
    r = await post(client, fleet_a, csv_file(*clean))
    assert r.status_code == 422, r.text
    assert {(e["row"], e["column"]) for e in r.json()["errors"]} == {(3, "vin"), (4, "imei")}
    assert await count(client, fleet_a, "devices") == 1


async def test_import_needs_admin_csv_and_a_header(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    text = csv_file(f"{vin(1)},,,,,,")
    r = await post(client, fleet_a, text, role="manager")
    assert r.status_code == 403
    r = await client.post("/v1/imports", json={"vin": vin(1)}, headers=fleet_a.h())
    assert r.status_code == 415
    for bad, column in (
        ("", None),
        ("vin,plate\n", "imei"),
        ("vin,imei,colour\nx,y,z\n", "colour"),
    ):
        r = await post(client, fleet_a, bad)
        assert r.status_code == 422, r.text
        assert r.json()["errors"][0]["row"] == 1
        assert r.json()["errors"][0]["column"] == column
    r = await post(client, fleet_a, csv_file(f"{vin(1)},,"))  # too few fields
    assert r.status_code == 422 and r.json()["errors"][0]["row"] == 2
