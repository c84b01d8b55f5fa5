"""The fleet API's acceptance path: `gp8 sim` → gateway → storage → API, every position back, in
order, in every format (JSON pages, GeoJSON points and line, CSV, GPX)."""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from simulator.pacing import wall_ms
from tests.simulator.conftest import FleetAccess
from tests.simulator.test_cli import _gp8, _vehicles

pytestmark = pytest.mark.slow

DEVICES = 3
COUNT = 40
GPX = "{http://www.topografix.com/GPX/1/1}"


async def _export(
    fleet: FleetAccess, path: str, window: dict[str, int], fmt: str, **extra: Any
) -> str:
    response = await fleet.client.get(path, params={**window, "format": fmt, **extra})
    assert response.status_code == 200, response.text
    return response.text


async def test_every_simulated_position_comes_back_in_order_in_every_format(
    fleet: FleetAccess,
) -> None:
    started = wall_ms()
    code, out, err = await _gp8(
        "sim",
        "--api",
        fleet.gp8.base_url,
        "--key",
        fleet.key,
        "--gateway",
        f"127.0.0.1:{fleet.gp8.tcp_port}",
        "--devices",
        str(DEVICES),
        "--count",
        str(COUNT),
        "--interval",
        "0",
    )
    assert code == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    assert report["devices"] == DEVICES
    assert report["sent"] == report["acked"] == DEVICES * COUNT

    # The simulated clock ends at "now"; records reach back COUNT intervals at most a day.
    window = {"from": started - 86_400_000, "to": wall_ms() + 1}
    vehicles = await _vehicles(fleet)
    assert len(vehicles) == DEVICES
    for vehicle in vehicles:
        path = f"/v1/vehicles/{vehicle['id']}/positions"
        # JSON, walked page by page with a small page size so the cursor is exercised.
        times: list[str] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {**window, "limit": 7}
            if cursor:
                params["cursor"] = cursor
            page = await fleet.get(path, **params)
            times += [p["time"] for p in page["data"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert len(times) == COUNT
        assert times == sorted(times) and len(set(times)) == COUNT

        points = json.loads(await _export(fleet, path, window, "geojson"))
        assert points["type"] == "FeatureCollection"
        assert [f["properties"]["time"] for f in points["features"]] == times
        coords = [f["geometry"]["coordinates"][:2] for f in points["features"]]

        line = json.loads(await _export(fleet, path, window, "geojson", geometry="linestring"))
        assert line["geometry"]["type"] == "LineString"
        assert [c[:2] for c in line["geometry"]["coordinates"]] == coords

        rows = list(csv.DictReader(io.StringIO(await _export(fleet, path, window, "csv"))))
        assert [r["time"] for r in rows] == times
        assert [[float(r["lon"]), float(r["lat"])] for r in rows] == coords

        gpx = ET.fromstring(await _export(fleet, path, window, "gpx"))
        trkpts = gpx.findall(f".//{GPX}trkpt")
        assert [t.findtext(f"{GPX}time") for t in trkpts] == times
        assert [[float(t.get("lon", "nan")), float(t.get("lat", "nan"))] for t in trkpts] == [
            pytest.approx(c, abs=1e-7) for c in coords
        ]
