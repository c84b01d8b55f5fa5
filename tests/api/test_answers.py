"""Issue 16: answers that misled or leaked, each with the class it stands for."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from pymongo_async_mock import AsyncMongoMockClient

from api.app import create_app
from storage import open_store
from storage.mongo import MongoStore
from storage.repository import Store
from tests.api.helpers import (
    OPERATOR_KEY,
    T0,
    VALID_IMEIS,
    VALID_VINS,
    FleetFixture,
    create_fleet,
    make_event,
    make_position,
)


@pytest.fixture(params=["sqlite", "mongo"])
async def any_store(request: pytest.FixtureRequest, data_dir: Path) -> AsyncIterator[Store]:
    s: Store
    if request.param == "sqlite":
        s = open_store(mongo_url=None, mongo_db="gp8", data_dir=data_dir)
    else:
        s = MongoStore(AsyncMongoMockClient(), "gp8_answers")
    await s.start()
    yield s
    await s.close()


@pytest.fixture
async def any_client(any_store: Store) -> AsyncIterator[httpx.AsyncClient]:
    app: FastAPI = create_app(any_store, bootstrap_key=OPERATOR_KEY, rate_limit_per_minute=None)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            yield c


# --- database text never reaches a client ------------------------------------------------------


async def test_create_duplicates_conflict_in_the_api_words_on_both_engines(
    any_client: httpx.AsyncClient,
) -> None:
    fleet = await create_fleet(any_client, "alpha", VALID_VINS[0], VALID_IMEIS[0])
    r = await any_client.post(
        "/v1/vehicles", json={"vin": VALID_VINS[0], "plate": "X-1"}, headers=fleet.h()
    )
    assert r.status_code == 409
    assert r.json()["detail"] == "the fleet already has a vehicle with this VIN"
    r = await any_client.post(
        "/v1/devices", json={"imei": VALID_IMEIS[0], "model": "GP8000"}, headers=fleet.h()
    )
    assert r.status_code == 409
    assert r.json()["detail"].startswith("a box with this IMEI is already provisioned")
    # A VIN changed into another vehicle's: the same words from the update path.
    r = await any_client.post(
        "/v1/vehicles", json={"vin": VALID_VINS[1], "plate": "X-2"}, headers=fleet.h()
    )
    r = await any_client.patch(
        f"/v1/vehicles/{r.json()['id']}", json={"vin": VALID_VINS[0]}, headers=fleet.h()
    )
    assert r.status_code == 409
    assert r.json()["detail"] == "the fleet already has a vehicle with this VIN"
    for text in ("UNIQUE", "E11000", "constraint", "keyValue"):
        assert text not in r.text


# --- unknown query parameters ------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/v1/events?vehicleid=veh_x", "/v1/vehicles?plat=X", "/v1/devices?limit=5&imie=1"],
)
async def test_get_listing_unknown_parameter_is_400_naming_it(
    client: httpx.AsyncClient, fleet_a: FleetFixture, path: str
) -> None:
    r = await client.get(path, headers=fleet_a.h())
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["type"] == "urn:gp8:problem:unknown-parameter"
    unknown = path.rsplit("&", 1)[-1].split("?")[-1].split("=")[0]
    assert f"'{unknown}'" in body["detail"]
    assert body["errors"][0]["loc"] == ["query", unknown]


async def test_get_known_parameters_through_dependencies_are_accepted(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    # from/to come from a shared dependency, not the route's own signature.
    r = await client.get(
        f"/v1/vehicles/{fleet_a.vehicle_id}/positions?from=2024-05-01T00:00:00Z"
        "&to=2024-05-01T01:00:00Z&limit=5",
        headers=fleet_a.h(),
    )
    assert r.status_code == 200, r.text


def test_openapi_declares_400_on_every_operation(app: FastAPI) -> None:
    for path, operations in app.openapi()["paths"].items():
        for method, operation in operations.items():
            assert "400" in operation["responses"], (method, path)


# --- a box fitted elsewhere --------------------------------------------------------------------


async def test_put_device_fitted_elsewhere_is_409_unless_moved(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    r = await client.post(
        "/v1/vehicles", json={"vin": VALID_VINS[2], "plate": "B-2"}, headers=fleet_a.h()
    )
    other = r.json()["id"]
    r = await client.put(
        f"/v1/vehicles/{other}/device", json={"imei": fleet_a.imei}, headers=fleet_a.h()
    )
    assert r.status_code == 409, r.text
    assert fleet_a.vehicle_id in r.json()["detail"] and '"move": true' in r.json()["detail"]
    r = await client.get(f"/v1/vehicles/{fleet_a.vehicle_id}", headers=fleet_a.h())
    assert r.json()["device_id"] == fleet_a.device_id  # nothing moved
    r = await client.put(
        f"/v1/vehicles/{other}/device",
        json={"imei": fleet_a.imei, "move": True},
        headers=fleet_a.h(),
    )
    assert r.status_code == 200, r.text
    r = await client.get(f"/v1/vehicles/{fleet_a.vehicle_id}", headers=fleet_a.h())
    assert r.json()["device_id"] is None
    # Fitting it again where it already is needs no flag.
    r = await client.put(
        f"/v1/vehicles/{other}/device", json={"imei": fleet_a.imei}, headers=fleet_a.h()
    )
    assert r.status_code == 200, r.text


# --- listings and single views agree -----------------------------------------------------------


async def test_list_vehicles_shows_the_lock_state_of_the_single_view(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture
) -> None:
    position = make_position(fleet_a.id, fleet_a.device_id, fleet_a.vehicle_id, T0)
    await store.telemetry.store([position._replace(doors_locked=True)], [])
    one = (await client.get(f"/v1/vehicles/{fleet_a.vehicle_id}", headers=fleet_a.h())).json()
    (listed,) = (await client.get("/v1/vehicles", headers=fleet_a.h())).json()["data"]
    assert one["lock_state"]["doors_locked"] is True
    assert listed["lock_state"] == one["lock_state"]


# --- plate search -----------------------------------------------------------------------------


async def test_list_vehicles_plate_search_ignores_case_and_separators(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    r = await client.post(
        "/v1/vehicles", json={"vin": VALID_VINS[2], "plate": "JS829WH"}, headers=fleet_a.h()
    )
    wanted = r.json()["id"]
    for query in ("js-829-wh", "JS 829 WH", "JS829WH"):
        r = await client.get("/v1/vehicles", params={"plate": query}, headers=fleet_a.h())
        assert [v["id"] for v in r.json()["data"]] == [wanted], query


async def test_list_vehicles_plate_search_pages(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    ids = []
    for vin in VALID_VINS[1:]:
        r = await client.post(
            "/v1/vehicles", json={"vin": vin, "plate": "AB-12"}, headers=fleet_a.h()
        )
        ids.append(r.json()["id"])
    seen, cursor = [], None
    while True:
        params = {"plate": "ab12", "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/vehicles", params=params, headers=fleet_a.h())).json()
        seen += [v["id"] for v in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(ids)


# --- times -------------------------------------------------------------------------------------


async def test_get_events_epoch_seconds_error_says_how_the_number_was_read(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    r = await client.get("/v1/events", params={"from": "1796150000"}, headers=fleet_a.h())
    assert r.status_code == 422
    (issue,) = r.json()["errors"]
    assert issue["loc"] == ["query", "from"]
    assert "read as epoch milliseconds: 1970-01-21T18:55:50.000Z" in issue["msg"]
    assert "1796150000000" in issue["msg"]  # what to send for seconds
    assert "to (not given, so now: " in issue["msg"]


async def test_get_events_from_after_defaulted_to_says_to_defaulted(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    r = await client.get("/v1/events", params={"from": "2999-01-01"}, headers=fleet_a.h())
    assert r.status_code == 422
    msg = r.json()["errors"][0]["msg"]
    assert "from='2999-01-01' (read as 2999-01-01T00:00:00.000Z)" in msg
    assert "to (not given, so now: " in msg


@pytest.mark.parametrize(
    "value", ["2024-05-01T12:00:00Z", "2024-05-01t12:00:00z", "2024-05-01 12:00:00+00:00"]
)
async def test_get_positions_rfc3339_forms_are_accepted(
    client: httpx.AsyncClient, fleet_a: FleetFixture, value: str
) -> None:
    r = await client.get(
        f"/v1/vehicles/{fleet_a.vehicle_id}/positions",
        params={"from": value, "to": "2024-05-02T00:00:00Z"},
        headers=fleet_a.h(),
    )
    assert r.status_code == 200, r.text
    assert r.json()["from"] == "2024-05-01T12:00:00.000Z"


async def test_post_purge_number_as_time_is_422(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    r = await client.post("/v1/data/purge", json={"before": 0}, headers=fleet_a.h())
    assert r.status_code == 422
    assert r.json()["errors"][0]["loc"] == ["body", "before"]
    assert "RFC 3339" in r.json()["errors"][0]["msg"]


# --- error wording -----------------------------------------------------------------------------


async def test_post_command_unknown_type_names_the_known_ones(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    r = await client.post(
        f"/v1/vehicles/{fleet_a.vehicle_id}/commands", json={"type": "x"}, headers=fleet_a.h()
    )
    assert r.status_code == 422
    (issue,) = r.json()["errors"]
    assert issue["loc"] == ["body", "type"]
    assert issue["msg"].startswith("unknown command type 'x'; known: 'lock', 'unlock'")
    assert "Input tag" not in r.text


async def test_post_command_field_error_names_the_field_sent(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    r = await client.post(
        f"/v1/vehicles/{fleet_a.vehicle_id}/commands",
        json={"type": "lock", "ttl_s": "soon"},
        headers=fleet_a.h(),
    )
    assert r.status_code == 422
    assert r.json()["errors"][0]["loc"] == ["body", "ttl_s"]  # not body.lock.ttl_s
    assert r.json()["detail"].startswith("body.ttl_s: ")


@pytest.mark.parametrize(
    ("body", "reason"),
    [(b"[" * 100_000 + b"]" * 100_000, "nested too deeply"), (b"1" * 5000, "4300 digits")],
)
async def test_post_unreadable_json_is_the_malformed_json_problem(
    client: httpx.AsyncClient, fleet_a: FleetFixture, body: bytes, reason: str
) -> None:
    r = await client.post(
        "/v1/vehicles", content=body, headers={**fleet_a.h(), "Content-Type": "application/json"}
    )
    assert r.status_code == 400
    assert r.json()["type"] == "urn:gp8:problem:malformed-json"
    assert reason in r.json()["detail"]


async def test_get_with_other_scheme_says_bearer_is_expected(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/vehicles", headers={"Authorization": "Token abc"})
    assert r.status_code == 401
    assert "not of the Bearer scheme" in r.json()["detail"]


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("OPTIONS", "/v1/devices", "GET, POST"),
        ("DELETE", "/v1/devices", "GET, POST"),
        ("POST", "/v1/vehicles/veh_x", "DELETE, GET, PATCH"),
    ],
)
async def test_405_allow_lists_every_method_of_the_path(
    client: httpx.AsyncClient, fleet_a: FleetFixture, method: str, path: str, allowed: str
) -> None:
    r = await client.request(method, path, headers=fleet_a.h())
    assert r.status_code == 405
    assert r.headers["allow"] == allowed
    assert r.json()["detail"] == f"{method} is not allowed here; allowed: {allowed}"


# --- Accept ------------------------------------------------------------------------------------


async def test_get_json_only_route_with_csv_accept_is_406(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    r = await client.get("/v1/vehicles", headers={**fleet_a.h(), "Accept": "text/csv"})
    assert r.status_code == 406
    assert r.json()["type"] == "urn:gp8:problem:not-acceptable"
    assert r.json()["available"] == ["application/json"]
    for accept in ("application/json", "*/*", "application/*", "text/html, */*;q=0.1"):
        r = await client.get("/v1/vehicles", headers={**fleet_a.h(), "Accept": accept})
        assert r.status_code == 200, accept


# --- rate limits -------------------------------------------------------------------------------


async def test_ratelimit_headers_on_every_counted_response_and_limit_in_429(
    store: Store, fleet_a: FleetFixture
) -> None:
    app = create_app(store, rate_limit_per_minute=3)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            seen = []
            for path in ("/v1/vehicles", "/v1/vehicles/veh_nope", "/v1/devices"):
                r = await c.get(path, headers=fleet_a.h())
                seen.append((r.status_code, r.headers["ratelimit-remaining"]))
                assert r.headers["ratelimit-limit"] == "3"
                assert int(r.headers["ratelimit-reset"]) >= 1
            assert seen == [(200, "2"), (404, "1"), (200, "0")]
            r = await c.get("/v1/vehicles", headers=fleet_a.h())
            assert r.status_code == 429
            assert r.headers["ratelimit-remaining"] == "0"
            assert "3 requests per minute" in r.json()["detail"]


# --- the last position -------------------------------------------------------------------------


async def test_get_position_last_seen_after_a_tunnel_and_stale(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture
) -> None:
    fix = make_position(fleet_a.id, fleet_a.device_id, fleet_a.vehicle_id, T0)
    # Thirty minutes later the box still reports, without a GPS fix.
    no_fix = make_position(
        fleet_a.id, fleet_a.device_id, fleet_a.vehicle_id, T0 + 1_800_000, fix_valid=False
    )
    await store.telemetry.store([fix, no_fix], [])
    body = (
        await client.get(f"/v1/vehicles/{fleet_a.vehicle_id}/position", headers=fleet_a.h())
    ).json()
    assert body["position"]["time"] == "2024-05-01T12:00:00.000Z"
    assert body["last_seen_at"] == "2024-05-01T12:30:00.500Z"
    assert body["stale"] is True


async def test_get_position_fresh_fix_is_not_stale(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture
) -> None:
    fix = make_position(fleet_a.id, fleet_a.device_id, fleet_a.vehicle_id, T0)
    await store.telemetry.store([fix], [])
    body = (
        await client.get(f"/v1/vehicles/{fleet_a.vehicle_id}/position", headers=fleet_a.h())
    ).json()
    assert (body["last_seen_at"], body["stale"]) == ("2024-05-01T12:00:00.500Z", False)


# --- event detail ------------------------------------------------------------------------------


async def test_get_events_detail_is_decoded_beside_the_raw_value(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture
) -> None:
    from protocol.gp8.frames import WarningLight

    position = make_position(fleet_a.id, fleet_a.device_id, fleet_a.vehicle_id, T0)
    mask = int(WarningLight.OIL_PRESSURE)
    await store.telemetry.store(
        [position],
        [
            make_event(position, "dashboard_warning", mask),
            make_event(position._replace(time_ms=T0 + 1), "overspeed", 900),
            make_event(position._replace(time_ms=T0 + 2), "sos", 0),
        ],
    )
    r = await client.get(
        "/v1/events", params={"from": "2024-05-01", "to": "2024-05-02"}, headers=fleet_a.h()
    )
    got = [(e["type"], e["detail"], e["detail_decoded"]) for e in r.json()["data"]]
    assert got == [
        ("dashboard_warning", mask, {"warnings": ["oil_pressure"]}),
        ("overspeed", 900, {"limit_kmh": 90.0}),
        ("sos", 0, None),
    ]


def test_event_detail_table_names_only_known_event_codes() -> None:
    from api.schemas.events import EventType
    from api.services.event_details import decoded_codes

    assert decoded_codes() <= {t.value for t in EventType}


# --- bbox --------------------------------------------------------------------------------------


async def test_get_fleet_positions_bbox_of_booleans_is_422(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    r = await client.post(
        "/v1/fleet/positions/search", json={"bbox": [False, 0, 0, 0]}, headers=fleet_a.h()
    )
    assert r.status_code == 422
    assert r.json()["errors"][0]["loc"][:2] == ["body", "bbox"]


async def test_get_fleet_positions_swapped_bbox_says_so(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture
) -> None:
    position = make_position(fleet_a.id, fleet_a.device_id, fleet_a.vehicle_id, T0)
    await store.telemetry.store([position], [])  # Paris: lon 2.35, lat 48.86
    r = await client.get(
        "/v1/fleet/positions", params={"bbox": "48.8,2.2,48.9,2.5"}, headers=fleet_a.h()
    )
    assert r.status_code == 422
    assert "swapped" in r.json()["errors"][0]["msg"]
    r = await client.get(
        "/v1/fleet/positions", params={"bbox": "2.2,48.8,2.5,48.9"}, headers=fleet_a.h()
    )
    assert r.status_code == 200 and len(r.json()["data"]) == 1
    # Latitudes out of range that are valid longitudes: the same hint without a lookup.
    r = await client.get(
        "/v1/fleet/positions", params={"bbox": "10,120,20,130"}, headers=fleet_a.h()
    )
    assert r.status_code == 422


# --- the OpenAPI document ----------------------------------------------------------------------


def test_openapi_every_success_with_a_body_declares_it(app: FastAPI) -> None:
    for path, operations in app.openapi()["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if status.startswith("2") and status != "204":
                    assert response.get("content"), (method, path, status)


# --- downloads ---------------------------------------------------------------------------------


async def _seed_day(store: Store, fleet: FleetFixture) -> None:
    """A trip (ignition on for ten fixes) with an event in it."""
    positions = [
        make_position(
            fleet.id,
            fleet.device_id,
            fleet.vehicle_id,
            T0 + i * 60_000,
            ignition=1 <= i <= 10,
            odometer_m=100_000 + 500 * i,
        )
        for i in range(12)
    ]
    await store.telemetry.store(positions, [make_event(positions[3], "harsh_braking", 450)])


_DAY = {"from": "2024-05-01", "to": "2024-05-02"}


@pytest.mark.parametrize("fmt", ["csv", "gpx", "geojson"])
async def test_get_positions_download_has_a_file_name(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture, fmt: str
) -> None:
    await _seed_day(store, fleet_a)
    r = await client.get(
        f"/v1/vehicles/{fleet_a.vehicle_id}/positions",
        params={**_DAY, "format": fmt},
        headers=fleet_a.h(),
    )
    assert r.status_code == 200
    assert r.headers["content-disposition"] == (
        f'attachment; filename="alpha-1_2024-05-01T00-00-00.000Z_2024-05-02T00-00-00.000Z.{fmt}"'
    )


async def test_get_events_csv_exports_the_range(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture
) -> None:
    await _seed_day(store, fleet_a)
    for request in ({"params": {**_DAY, "format": "csv"}}, {"params": _DAY, "accept": True}):
        headers = {**fleet_a.h(), **({"Accept": "text/csv"} if "accept" in request else {})}
        r = await client.get("/v1/events", params=request["params"], headers=headers)
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/csv")
        assert r.headers["content-disposition"].startswith('attachment; filename="events_fleet_')
        header, row = r.text.splitlines()
        assert header.startswith("time,type,detail,detail_decoded,vehicle_id")
        assert row.startswith('2024-05-01T12:03:00.000Z,harsh_braking,450,"{""peak_deceleration_mg')


async def test_get_trips_csv_has_a_trip_per_row(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture
) -> None:
    await _seed_day(store, fleet_a)
    r = await client.get(
        f"/v1/vehicles/{fleet_a.vehicle_id}/trips",
        params={**_DAY, "format": "csv"},
        headers=fleet_a.h(),
    )
    assert r.status_code == 200
    header, row = r.text.splitlines()
    assert header.split(",")[:4] == ["start_time", "start_lat", "start_lon", "end_time"]
    assert row.startswith("2024-05-01T12:01:00.000Z,")
    assert row.split(",")[6] == "5000"  # distance_m: ten steps of 500 m, to the ignition off


async def test_get_alerts_csv_lists_every_alert(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture
) -> None:
    from storage.models import Alert, AlertKind, new_id, now_ms

    for _ in range(3):
        await store.alerts.raise_alert(
            Alert(
                id=new_id("alr"),
                fleet_id=fleet_a.id,
                kind=AlertKind.TOWING,
                raised_ms=now_ms(),
                vehicle_id=fleet_a.vehicle_id,
            )
        )
    r = await client.get("/v1/alerts", params={"format": "csv", "limit": 1}, headers=fleet_a.h())
    assert r.status_code == 200
    lines = r.text.splitlines()
    assert lines[0].startswith("id,kind,raised_at,")
    listed = (await client.get("/v1/alerts", headers=fleet_a.h())).json()["data"]
    assert len(listed) >= 2
    # Every alert, not one page of limit=1.
    assert [line.split(",")[0] for line in lines[1:]] == [a["id"] for a in listed]
    r = await client.get("/v1/alerts", params={"format": "xml"}, headers=fleet_a.h())
    assert r.status_code == 406
