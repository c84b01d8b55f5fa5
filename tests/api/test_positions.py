"""Positions on stored data: last position, history in each format, the fleet map query."""

from __future__ import annotations

import asyncio
import csv
import io
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from starlette.types import Message, Receive, Scope, Send

from api.schemas.positions import (
    FleetPositionsPublic,
    LastPositionPublic,
    PositionsFeatureCollection,
    PositionsPublic,
    TrackFeature,
)
from api.services import formats
from api.times import iso_ms
from protocol.gp8.frames import WarningLight
from storage.errors import StorageUnavailable
from storage.models import AccessLogEntry, DeviceConnection, Position, Transport
from storage.repository import Store
from tests.api.helpers import T0, FleetFixture, make_position

N = 12
STEP_MS = 30_000
RANGE = {"from": iso_ms(T0 - 60_000), "to": iso_ms(T0 + 3_600_000)}

# The names and order of a position's fields as served: a contract with every client, spelled
# out here by hand on purpose, independently of the field table they are derived from
# (storage/fields.py), so a change there cannot rename or reorder what clients parse.
PUBLIC_FIELDS = [
    "time",
    "lat",
    "lon",
    "altitude_m",
    "speed_kmh",
    "heading_deg",
    "satellites",
    "hdop",
    "fix_valid",
    "ignition",
    "doors_locked",
    "engine_start_inhibited",
    "external_power",
    "odometer_m",
    "external_power_mv",
    "battery_mv",
    "gsm_signal",
    "warnings",
    "driver_badge",
    "received_at",
    "device_id",
    "buffered",
    "io",
]


async def seed_track(store: Store, fleet: FleetFixture, n: int = N) -> list[int]:
    """``n`` positions 30 s apart going north-east, stored in shuffled batches."""
    positions = [
        make_position(
            fleet.id,
            fleet.device_id,
            fleet.vehicle_id,
            T0 + i * STEP_MS + 250,
            lat=48.0 + i * 0.001,
            lon=2.0 + i * 0.002,
            odometer_m=1000 + i * 400,
            warnings=int(WarningLight.ENGINE | WarningLight.FUEL_LOW) if i == 3 else 0,
            driver_badge=4242 if i == 4 else None,
        )
        for i in range(n)
    ]
    order = list(range(n))[::2] + list(range(n))[1::2]  # evens then odds: out of order
    for start in range(0, n, 5):
        await store.telemetry.store([positions[j] for j in order[start : start + 5]], [])
    return [p.time_ms for p in positions]


def positions_url(fleet: FleetFixture) -> str:
    return f"/v1/vehicles/{fleet.vehicle_id}/positions"


async def test_get_position_last_and_online(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture
) -> None:
    url = f"/v1/vehicles/{fleet_a.vehicle_id}/position"
    r = await client.get(url, headers=fleet_a.h("viewer"))
    assert r.status_code == 200
    assert r.json() == {
        "vehicle_id": fleet_a.vehicle_id,
        "position": None,
        "age_s": None,
        "last_seen_at": None,
        "stale": False,
        "online": False,
        # Doors and engine-start inhibit (docs/commands.md): never reported yet.
        "lock_state": {
            "doors_locked": None,
            "engine_start_inhibited": None,
            "source": None,
            "confirmed": False,
            "as_of": None,
            "command_id": None,
        },
        "privacy": "off",  # docs/privacy.md
    }
    times = await seed_track(store, fleet_a)
    await store.devices.set_connection(
        DeviceConnection(fleet_a.device_id, True, Transport.TCP, "gw-1", T0, "10.0.0.1:4000")
    )
    r = await client.get(url, headers=fleet_a.h("viewer"))
    body = LastPositionPublic.model_validate(r.json())
    assert body.online is True
    assert body.position is not None and body.position.time == iso_ms(times[-1])
    assert body.position.lat == pytest.approx(48.0 + (N - 1) * 0.001)
    assert body.age_s is not None and body.age_s > 0
    await store.devices.set_connection(
        DeviceConnection(fleet_a.device_id, False, None, None, T0 + 1)
    )
    r = await client.get(url, headers=fleet_a.h("viewer"))
    assert r.json()["online"] is False


async def test_get_positions_json_in_time_order(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture
) -> None:
    times = await seed_track(store, fleet_a)
    r = await client.get(positions_url(fleet_a), params=RANGE, headers=fleet_a.h("viewer"))
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    page = PositionsPublic.model_validate(r.json())
    assert [p.time for p in page.data] == [iso_ms(t) for t in times]
    assert page.next_cursor is None
    fix = r.json()["data"][3]
    assert fix["time"] == iso_ms(times[3]) and fix["time"].endswith(".250Z")
    assert fix["warnings"] == ["engine", "fuel_low"]
    assert r.json()["data"][4]["driver_badge"] == "4242"
    assert fix["device_id"] == fleet_a.device_id
    assert fix["odometer_m"] == 1000 + 3 * 400


async def test_get_positions_json_answered_only_once_the_read_is_logged(
    app: FastAPI,
    client: httpx.AsyncClient,
    store: Store,
    fleet_a: FleetFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A page of several chunks: rendered while its access-log entry commits, but no byte of
    the answer (headers included) is sent before the entry is committed; keys in order."""
    n = 2 * formats.RENDER_CHUNK + 7  # three chunks
    times = await seed_track(store, fleet_a, n=n)
    seen: list[str] = []
    release = asyncio.Event()
    append = store.access_log.append

    async def held_append(entry: AccessLogEntry) -> None:
        await release.wait()
        await append(entry)
        seen.append(f"logged {entry.resource}")

    rendered = 0
    render = formats.render_positions

    def counted(positions: Iterable[Position]) -> list[dict[str, Any]]:
        nonlocal rendered
        rendered += 1
        return render(positions)

    async def recorder(scope: Scope, receive: Receive, send: Send) -> None:
        async def record(message: Message) -> None:
            seen.append(message["type"])
            await send(message)

        await app(scope, receive, record)

    store.access_log.append = held_append  # type: ignore[method-assign]
    monkeypatch.setattr(formats, "render_positions", counted)
    day = {**RANGE, "to": iso_ms(T0 + n * STEP_MS)}
    transport = httpx.ASGITransport(app=recorder)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        request = asyncio.create_task(
            c.get(positions_url(fleet_a), params=day, headers=fleet_a.h("viewer"))
        )
        async with asyncio.timeout(10):
            while rendered < 3:  # noqa: ASYNC110 - polling state the test does not own
                await asyncio.sleep(0.005)
        for _ in range(100):  # turns in which a route that did not wait would answer
            await asyncio.sleep(0)
        assert "http.response.start" not in seen
        release.set()
        r = await request
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert seen.index("logged positions") < seen.index("http.response.start")
    body = r.json()
    assert list(body) == ["vehicle_id", "from", "to", "privacy", "data", "next_cursor"]
    assert [fix["time"] for fix in body["data"]] == [iso_ms(t) for t in times]
    assert body["privacy"] == "off" and body["next_cursor"] is None


async def test_get_positions_json_unanswered_when_the_read_cannot_be_logged(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture
) -> None:
    await seed_track(store, fleet_a)

    async def failing_append(entry: AccessLogEntry) -> None:
        raise StorageUnavailable("the access log is down")

    store.access_log.append = failing_append  # type: ignore[method-assign]
    r = await client.get(positions_url(fleet_a), params=RANGE, headers=fleet_a.h("viewer"))
    assert r.status_code == 503
    assert b'"data"' not in r.content and fleet_a.device_id.encode() not in r.content


async def test_get_positions_field_names_in_every_format(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture
) -> None:
    await seed_track(store, fleet_a, n=2)
    url = positions_url(fleet_a)
    r = await client.get(url, params=RANGE, headers=fleet_a.h())
    assert [list(fix) for fix in r.json()["data"]] == [PUBLIC_FIELDS] * 2
    r = await client.get(f"/v1/vehicles/{fleet_a.vehicle_id}/position", headers=fleet_a.h())
    assert list(r.json()["position"]) == PUBLIC_FIELDS
    r = await client.get(url, params={**RANGE, "format": "csv"}, headers=fleet_a.h())
    assert r.text.splitlines()[0].split(",") == PUBLIC_FIELDS
    r = await client.get(url, params={**RANGE, "format": "geojson"}, headers=fleet_a.h())
    properties = [list(f["properties"]) for f in orjson.loads(r.content)["features"]]
    assert properties == [[n for n in PUBLIC_FIELDS if n not in ("lat", "lon")]] * 2
    schema = (await client.get("/openapi.json")).json()["components"]["schemas"]["PositionPublic"]
    assert list(schema["properties"]) == PUBLIC_FIELDS
    assert schema["required"] == PUBLIC_FIELDS


async def test_get_positions_json_cursor_pages(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture
) -> None:
    times = await seed_track(store, fleet_a)
    seen: list[str] = []
    params = {**RANGE, "limit": "5"}
    while True:
        r = await client.get(positions_url(fleet_a), params=params, headers=fleet_a.h())
        assert r.status_code == 200
        body = r.json()
        assert len(body["data"]) <= 5
        seen += [p["time"] for p in body["data"]]
        if body["next_cursor"] is None:
            break
        params["cursor"] = body["next_cursor"]
    assert seen == [iso_ms(t) for t in times]


async def test_get_positions_range_half_open(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture
) -> None:
    times = await seed_track(store, fleet_a)
    params = {"from": str(times[2]), "to": str(times[5])}  # epoch ms works too
    r = await client.get(positions_url(fleet_a), params=params, headers=fleet_a.h())
    assert [p["time"] for p in r.json()["data"]] == [iso_ms(t) for t in times[2:5]]


async def test_get_positions_geojson_points(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture
) -> None:
    times = await seed_track(store, fleet_a)
    r = await client.get(
        positions_url(fleet_a),
        params=RANGE,
        headers={**fleet_a.h(), "Accept": "application/geo+json"},
    )
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/geo+json"
    body = orjson.loads(r.content)
    collection = PositionsFeatureCollection.model_validate(body)
    assert len(collection.features) == N
    first = body["features"][0]
    assert first["geometry"] == {"type": "Point", "coordinates": [2.0, 48.0, 35]}
    assert [f["properties"]["time"] for f in body["features"]] == [iso_ms(t) for t in times]
    assert "lat" not in first["properties"]


async def test_get_positions_geojson_linestring(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture
) -> None:
    times = await seed_track(store, fleet_a)
    r = await client.get(
        positions_url(fleet_a),
        params={**RANGE, "format": "geojson", "geometry": "linestring"},
        headers=fleet_a.h(),
    )
    assert r.status_code == 200
    body = orjson.loads(r.content)
    feature = TrackFeature.model_validate(body)
    assert feature.geometry is not None and feature.geometry.type == "LineString"
    coordinates = body["geometry"]["coordinates"]
    assert len(coordinates) == N
    assert coordinates[0] == [2.0, 48.0, 35]
    assert coordinates[-1][1] == pytest.approx(48.0 + (N - 1) * 0.001)
    assert body["properties"]["count"] == N
    assert body["properties"]["start_time"] == iso_ms(times[0])
    assert body["properties"]["end_time"] == iso_ms(times[-1])


@pytest.mark.parametrize("count", [0, 1])
async def test_get_positions_geojson_linestring_too_few_points_null_geometry(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture, count: int
) -> None:
    await seed_track(store, fleet_a, n=count)
    r = await client.get(
        positions_url(fleet_a),
        params={**RANGE, "format": "geojson", "geometry": "linestring"},
        headers=fleet_a.h(),
    )
    body = orjson.loads(r.content)
    assert body["type"] == "Feature" and body["geometry"] is None
    assert body["properties"]["count"] == count


async def test_get_positions_csv(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture
) -> None:
    times = await seed_track(store, fleet_a)
    r = await client.get(
        positions_url(fleet_a), params={**RANGE, "format": "csv"}, headers=fleet_a.h()
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == N
    assert [row["time"] for row in rows] == [iso_ms(t) for t in times]
    assert rows[3]["warnings"] == "engine|fuel_low"
    assert rows[4]["driver_badge"] == "4242" and rows[0]["driver_badge"] == ""
    assert rows[0]["fix_valid"] == "true" and float(rows[0]["lat"]) == 48.0
    header = r.text.splitlines()[0].split(",")
    assert header[:3] == ["time", "lat", "lon"]


async def test_get_positions_csv_by_accept_header(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture
) -> None:
    await seed_track(store, fleet_a)
    r = await client.get(
        positions_url(fleet_a),
        params=RANGE,
        headers={**fleet_a.h(), "Accept": "text/html;q=0.9, text/csv"},
    )
    assert r.headers["content-type"].startswith("text/csv")
    assert r.headers["vary"] == "Accept"
    assert len(r.text.strip().splitlines()) == N + 1


async def test_get_positions_gpx(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture
) -> None:
    times = await seed_track(store, fleet_a)
    r = await client.get(
        positions_url(fleet_a), params={**RANGE, "format": "gpx"}, headers=fleet_a.h()
    )
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/gpx+xml"
    root = ET.fromstring(r.content)
    ns = {"g": "http://www.topografix.com/GPX/1/1"}
    assert root.tag == "{http://www.topografix.com/GPX/1/1}gpx" and root.get("version") == "1.1"
    points = root.findall("g:trk/g:trkseg/g:trkpt", ns)
    assert len(points) == N
    assert [p.findtext("g:time", namespaces=ns) for p in points] == [iso_ms(t) for t in times]
    assert float(points[0].get("lat", "nan")) == 48.0
    assert float(points[0].get("lon", "nan")) == 2.0
    assert root.findtext("g:trk/g:name", namespaces=ns) == "alpha-1 van"


async def test_get_positions_format_overrides_accept(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture
) -> None:
    await seed_track(store, fleet_a)
    r = await client.get(
        positions_url(fleet_a),
        params={**RANGE, "format": "json"},
        headers={**fleet_a.h(), "Accept": "application/gpx+xml"},
    )
    assert r.headers["content-type"] == "application/json" and len(r.json()["data"]) == N


async def test_get_positions_unacceptable_406(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    r = await client.get(
        positions_url(fleet_a), headers={**fleet_a.h(), "Accept": "text/html, image/png"}
    )
    assert r.status_code == 406
    assert r.headers["content-type"] == "application/problem+json"


async def test_get_positions_export_limit_caps_rows(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture
) -> None:
    await seed_track(store, fleet_a)
    r = await client.get(
        positions_url(fleet_a), params={**RANGE, "format": "csv", "limit": 4}, headers=fleet_a.h()
    )
    assert len(r.text.strip().splitlines()) == 1 + 4


async def test_get_positions_export_walks_every_page(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a storage page of 5 rows, an export of 12 must take 3 pages and lose none."""
    import api.routes.positions as route
    import api.services.paging as paging

    monkeypatch.setattr(paging, "WALK_PAGE", 5)
    monkeypatch.setattr(route, "WALK_PAGE", 5)
    times = await seed_track(store, fleet_a)
    r = await client.get(
        positions_url(fleet_a), params={**RANGE, "format": "geojson"}, headers=fleet_a.h()
    )
    body = orjson.loads(r.content)
    assert [f["properties"]["time"] for f in body["features"]] == [iso_ms(t) for t in times]


@pytest.mark.parametrize(
    ("params", "loc", "msg"),
    [
        ({"from": "yesterday"}, ["query", "from"], "neither RFC 3339"),
        ({"to": "2024-13-01T00:00:00Z"}, ["query", "to"], "neither RFC 3339"),
        (
            {"from": "2024-05-02T00:00:00Z", "to": "2024-05-01T00:00:00Z"},
            ["query", "from"],
            "before",
        ),
        (
            {"from": "2024-01-01T00:00:00Z", "to": "2024-03-01T00:00:00Z"},
            ["query", "from"],
            "31 days",
        ),
        ({"limit": "10001"}, ["query", "limit"], "less than or equal to 10000"),
    ],
)
async def test_get_positions_invalid_params_422(
    client: httpx.AsyncClient,
    fleet_a: FleetFixture,
    params: dict[str, str],
    loc: list[str],
    msg: str,
) -> None:
    r = await client.get(positions_url(fleet_a), params=params, headers=fleet_a.h())
    assert r.status_code == 422
    error = r.json()["errors"][0]
    assert error["loc"] == loc and msg in error["msg"], error


async def test_get_positions_unknown_format_406_lists_the_formats(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    r = await client.get(positions_url(fleet_a), params={"format": "kml"}, headers=fleet_a.h())
    assert r.status_code == 406
    assert r.json()["type"] == "urn:gp8:problem:not-acceptable"
    assert "'json', 'geojson', 'csv' or 'gpx'" in r.json()["detail"]


async def test_get_positions_invalid_cursor_400(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    r = await client.get(
        positions_url(fleet_a), params={"cursor": "bm90LWEtY3Vyc29y"}, headers=fleet_a.h()
    )
    assert r.status_code == 400


async def test_get_positions_unknown_vehicle_404_before_a_bad_cursor(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    """The vehicle and its page are read together; the vehicle's answer still comes first."""
    r = await client.get(
        "/v1/vehicles/veh_doesnotexist/positions",
        params={"cursor": "bm90LWEtY3Vyc29y"},
        headers=fleet_a.h(),
    )
    assert r.status_code == 404


async def test_get_positions_belong_to_vehicle_at_that_time(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture
) -> None:
    """Positions stored for the box's previous vehicle stay with that vehicle after a refit."""
    await seed_track(store, fleet_a)
    r = await client.post("/v1/vehicles", json={"vin": "11111111111111111"}, headers=fleet_a.h())
    second = r.json()["id"]
    await client.put(
        f"/v1/vehicles/{second}/device", json={"imei": fleet_a.imei}, headers=fleet_a.h()
    )
    await store.telemetry.store(
        [make_position(fleet_a.id, fleet_a.device_id, second, T0 + 1_800_000)], []
    )
    first = await client.get(positions_url(fleet_a), params=RANGE, headers=fleet_a.h())
    assert len(first.json()["data"]) == N
    r = await client.get(f"/v1/vehicles/{second}/positions", params=RANGE, headers=fleet_a.h())
    assert [p["time"] for p in r.json()["data"]] == [iso_ms(T0 + 1_800_000)]


# --- the fleet map query --------------------------------------------------------------------


async def seed_fleet_map(
    client: httpx.AsyncClient, store: Store, fleet: FleetFixture
) -> dict[str, str]:
    """Three vehicles: Paris (the fixture's), Lyon, and one without a position."""
    await store.telemetry.store(
        [make_position(fleet.id, fleet.device_id, fleet.vehicle_id, T0, lat=48.8566, lon=2.3522)],
        [],
    )
    r = await client.post(
        "/v1/vehicles", json={"vin": "11111111111111111", "plate": "LY-1"}, headers=fleet.h()
    )
    lyon = r.json()["id"]
    await store.telemetry.store(
        [make_position(fleet.id, "dev_other", lyon, T0, lat=45.7640, lon=4.8357)], []
    )
    r = await client.post("/v1/vehicles", json={"vin": "WVWZZZ1JZXW000001"}, headers=fleet.h())
    return {"paris": fleet.vehicle_id, "lyon": lyon, "none": r.json()["id"]}


async def test_get_fleet_positions_all(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture
) -> None:
    ids = await seed_fleet_map(client, store, fleet_a)
    r = await client.get("/v1/fleet/positions", headers=fleet_a.h("viewer"))
    assert r.status_code == 200
    body = FleetPositionsPublic.model_validate(r.json())
    assert sorted(item.vehicle_id for item in body.data) == sorted([ids["paris"], ids["lyon"]])
    lyon = next(item for item in body.data if item.vehicle_id == ids["lyon"])
    assert lyon.plate == "LY-1" and lyon.position.lat == pytest.approx(45.764)


async def test_get_fleet_positions_bbox(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture
) -> None:
    ids = await seed_fleet_map(client, store, fleet_a)
    r = await client.get(
        "/v1/fleet/positions", params={"bbox": "2.2,48.8,2.5,48.9"}, headers=fleet_a.h()
    )
    assert [item["vehicle_id"] for item in r.json()["data"]] == [ids["paris"]]


async def test_get_fleet_positions_leave_out_deleted_vehicles(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture
) -> None:
    """Only the vehicles named are read, not the fleet: a deleted one is neither on the map,
    though a late fix of it stored its last position again, nor named as private."""
    ids = await seed_fleet_map(client, store, fleet_a)
    always = {"tz": "UTC", "private": [{"days": list(range(1, 8)), "from": "00:00", "to": "24:00"}]}
    r = await client.put(
        f"/v1/vehicles/{ids['none']}/privacy", json={"schedule": always}, headers=fleet_a.h()
    )
    assert r.status_code == 200, r.text
    r = await client.get("/v1/fleet/positions", headers=fleet_a.h())
    assert r.json()["private"] == [ids["none"]]
    for gone in ("lyon", "none"):
        r = await client.delete(f"/v1/vehicles/{ids[gone]}", headers=fleet_a.h())
        assert r.status_code == 204
    # A fix the box had buffered, stamped with the vehicle it was fitted to then.
    await store.telemetry.store(
        [make_position(fleet_a.id, "dev_other", ids["lyon"], T0 + 1000, lat=45.7, lon=4.8)], []
    )
    assert ids["lyon"] in {p.vehicle_id for p in await store.telemetry.last_positions(fleet_a.id)}
    r = await client.get("/v1/fleet/positions", headers=fleet_a.h())
    assert [item["vehicle_id"] for item in r.json()["data"]] == [ids["paris"]]
    assert r.json()["private"] == []


async def test_get_fleet_positions_polygon(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture
) -> None:
    ids = await seed_fleet_map(client, store, fleet_a)
    # A triangle around Lyon whose bounding box also holds Paris: the polygon must exclude it.
    triangle = {
        "type": "Polygon",
        "coordinates": [[[4.0, 45.0], [6.0, 45.0], [1.0, 50.0], [4.0, 45.0]]],
    }
    r = await client.get(
        "/v1/fleet/positions",
        params={"polygon": orjson.dumps(triangle).decode()},
        headers=fleet_a.h(),
    )
    assert r.status_code == 200
    assert [item["vehicle_id"] for item in r.json()["data"]] == [ids["lyon"]]
    r = await client.post(
        "/v1/fleet/positions/search", json={"polygon": triangle}, headers=fleet_a.h()
    )
    assert [item["vehicle_id"] for item in r.json()["data"]] == [ids["lyon"]]


@pytest.mark.parametrize(
    ("params", "loc", "msg"),
    [
        ({"bbox": "1,2,3"}, ["query", "bbox"], "4 numbers"),
        ({"bbox": "a,b,c,d"}, ["query", "bbox"], "4 numbers"),
        ({"bbox": "3,0,1,1"}, ["query", "bbox"], "antimeridian"),
        ({"bbox": "0,-91,1,1"}, ["query", "bbox"], "latitudes"),
        ({"polygon": "{"}, ["query", "polygon"], "not JSON"),
        ({"polygon": '{"type":"Point","coordinates":[1,2]}'}, ["query", "polygon"], "Polygon"),
        (
            {"polygon": '{"type":"Polygon","coordinates":[[[0,0],[1,1],[1,0],[0,1],[0,0]]]}'},
            ["query", "polygon"],
            "Self-intersection",
        ),
        (
            {"polygon": '{"type":"Polygon","coordinates":[[[0,0],[1,1],[0,0]]]}'},
            ["query", "polygon"],
            "at least 4 positions",
        ),
        ({"bbox": "0,0,1,1", "polygon": "{}"}, ["query", "polygon"], "not both"),
    ],
)
async def test_get_fleet_positions_invalid_area_422(
    client: httpx.AsyncClient,
    fleet_a: FleetFixture,
    params: dict[str, str],
    loc: list[str],
    msg: str,
) -> None:
    r = await client.get("/v1/fleet/positions", params=params, headers=fleet_a.h())
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    error = r.json()["errors"][0]
    assert error["loc"] == loc and msg in error["msg"], error
