"""Theft cases through the API: open (from a vehicle, from an alert), the fast interval
command, the stream, the legal hold, the timeline, the track export, immobilisation, close;
the parked guard's manager controls; roles and tenancy."""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET

import httpx

from storage.models import Alert, AlertKind, Severity, StreamKind, new_id, now_ms
from storage.repository import Store
from tests.api.helpers import FleetFixture, make_event, make_position

MIN = 60_000


async def seed_theft(store: Store, fleet: FleetFixture, start: int) -> Alert:
    """Positions of a vehicle parked then towed away, and its suspected_theft alert."""
    parked = [
        make_position(
            fleet.id,
            fleet.device_id,
            fleet.vehicle_id,
            start - (10 - i) * MIN,
            ignition=False,
            speed_kmh=0.0,
        )
        for i in range(10)
    ]
    towed = [
        make_position(
            fleet.id,
            fleet.device_id,
            fleet.vehicle_id,
            start + i * 30_000,
            ignition=False,
            speed_kmh=30.0,
            lat=48.8566 + i * 0.002,
        )
        for i in range(6)
    ]
    await store.telemetry.store([*parked, *towed], [make_event(towed[0], "towing")])
    alert, _ = await store.alerts.trigger(
        Alert(
            id=new_id("alr"),
            fleet_id=fleet.id,
            kind=AlertKind.SUSPECTED_THEFT,
            raised_ms=start,
            device_id=fleet.device_id,
            vehicle_id=fleet.vehicle_id,
            detail="towing alarm while parked",
            severity=Severity.CRITICAL,
            first_ms=start,
            last_ms=start,
        )
    )
    return alert


async def test_open_case_from_an_alert_and_follow_it(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture, fleet_b: FleetFixture
) -> None:
    start = now_ms() - 20 * MIN
    alert = await seed_theft(store, fleet_a, start)
    head = await store.stream.head(fleet_a.id)

    r = await client.post(
        f"/v1/alerts/{alert.id}/theft", json={"note": "not at the depot"}, headers=fleet_a.h()
    )
    assert r.status_code == 201, r.text
    case = r.json()
    assert case["id"].startswith("thc_") and case["status"] == "open"
    assert case["alert_id"] == alert.id and case["note"] == "not at the depot"
    assert case["previous_interval_s"] == 60  # what the parked positions show
    assert case["fast_interval_s"] == 10 and case["legal_hold_until"] is None
    # The timeline starts at the first suspicious record, before the report.
    assert case["started_at"] < case["reported_at"]

    # The fast interval is a set_report_interval command of the case, through the lifecycle.
    r = await client.get(f"/v1/commands/{case['interval_command_id']}", headers=fleet_a.h())
    command = r.json()
    assert (command["type"], command["params"], command["theft_case_id"]) == (
        "set_report_interval",
        {"seconds": 10},
        case["id"],
    )
    assert command["status"] == "queued"  # no box connected in this test: sent at login
    # The case is on the stream; the alert knows its case.
    page = await store.stream.after(fleet_a.id, head, kinds=[StreamKind.THEFT_CASE])
    assert {e.item.id for e in page.entries} == {case["id"]}  # type: ignore[attr-defined]
    r = await client.get(f"/v1/alerts/{alert.id}", headers=fleet_a.h())
    assert r.json()["theft_case_id"] == case["id"]
    # The legal hold is in force.
    (hold,) = await store.theft_cases.holds(fleet_a.id, at_ms=now_ms())
    assert (hold.case_id, hold.until_ms) == (case["id"], None)

    # A second case for the same vehicle: 409.
    r = await client.post(f"/v1/vehicles/{fleet_a.vehicle_id}/theft", headers=fleet_a.h())
    assert r.status_code == 409

    r = await client.get(f"/v1/theft-cases/{case['id']}", headers=fleet_a.h("viewer"))
    assert r.status_code == 200, r.text
    detail = r.json()
    assert len(detail["positions"]) == 6  # the towed ones: since the theft started
    assert [e["type"] for e in detail["events"]] == ["towing"]
    assert detail["current"]["position"]["lat"] == detail["positions"][-1]["lat"]
    assert detail["current"]["speed_kmh"] == 30.0 and detail["current"]["age_s"] > 0
    assert detail["current"]["box"]["ignition"] is False
    assert [c["id"] for c in detail["commands"]] == [case["interval_command_id"]]
    assert [a["action"] for a in detail["audit"]][:2] == [
        "theft_case.opened",
        "command.requested",
    ]

    r = await client.get("/v1/theft-cases", params={"status": "open"}, headers=fleet_a.h())
    assert [c["id"] for c in r.json()["data"]] == [case["id"]]

    # Another fleet sees none of it.
    for path in (
        f"/v1/theft-cases/{case['id']}",
        f"/v1/theft-cases/{case['id']}/track",
    ):
        assert (await client.get(path, headers=fleet_b.h())).status_code == 404
    r = await client.post(
        f"/v1/theft-cases/{case['id']}/close", json={"outcome": "recovered"}, headers=fleet_b.h()
    )
    assert r.status_code == 404
    r = await client.post(f"/v1/alerts/{alert.id}/theft", headers=fleet_b.h())
    assert r.status_code == 404
    assert (await client.get("/v1/theft-cases", headers=fleet_b.h())).json()["data"] == []


async def test_track_export_formats_are_logged(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture
) -> None:
    start = now_ms() - 20 * MIN
    await seed_theft(store, fleet_a, start)
    r = await client.post(f"/v1/vehicles/{fleet_a.vehicle_id}/theft", headers=fleet_a.h())
    case_id = r.json()["id"]
    base = f"/v1/theft-cases/{case_id}/track"

    r = await client.get(base, headers=fleet_a.h("viewer"))  # GeoJSON by default
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/geo+json")
    features = json.loads(r.content)["features"]
    assert len(features) == 6 and features[0]["geometry"]["type"] == "Point"

    r = await client.get(base, params={"format": "csv"}, headers=fleet_a.h())
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == 6 and rows[0]["ignition"] == "false"
    assert r.headers["content-disposition"] == f'attachment; filename="{case_id}.csv"'

    r = await client.get(base, params={"format": "gpx"}, headers=fleet_a.h())
    root = ET.fromstring(r.content)
    ns = {"g": "http://www.topografix.com/GPX/1/1"}
    assert len(root.findall(".//g:trkpt", ns)) == 6
    assert root.find(".//g:name", ns).text == f"theft case {case_id}"  # type: ignore[union-attr]

    r = await client.get(base, params={"format": "kml"}, headers=fleet_a.h())
    assert r.status_code == 406
    r = await client.get("/v1/access-log", headers=fleet_a.h())
    exports = [e for e in r.json()["data"] if e["resource"] == "theft_case_track"]
    assert [e["action"] for e in exports] == ["export"] * 3
    assert [e["detail"].split()[0] for e in exports] == ["geojson", "csv", "gpx"]


async def test_immobilise_and_close(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture
) -> None:
    r = await client.post(
        f"/v1/vehicles/{fleet_a.vehicle_id}/theft",
        json={"reported_at": "2024-05-01T12:00:00Z", "note": "called in by the driver"},
        headers=fleet_a.h(),
    )
    assert r.status_code == 201, r.text
    case = r.json()
    assert case["reported_at"] == case["started_at"] == "2024-05-01T12:00:00.000Z"
    assert case["previous_interval_s"] == 30  # nothing tells: the default

    r = await client.post(
        f"/v1/theft-cases/{case['id']}/immobilise",
        json={"reason": "police ok"},
        headers=fleet_a.h(),
    )
    assert r.status_code == 201, r.text
    command = r.json()["command"]
    assert (command["type"], command["theft_case_id"], command["reason"]) == (
        "disable_engine_start",
        case["id"],
        "police ok",
    )
    detail = (await client.get(f"/v1/theft-cases/{case['id']}", headers=fleet_a.h())).json()
    assert detail["immobilise_command_id"] == command["id"]
    assert {c["type"] for c in detail["commands"]} == {
        "set_report_interval",
        "disable_engine_start",
    }

    r = await client.post(
        f"/v1/theft-cases/{case['id']}/close", json={"outcome": "gone"}, headers=fleet_a.h()
    )
    assert r.status_code == 422
    r = await client.post(
        f"/v1/theft-cases/{case['id']}/close",
        json={"outcome": "recovered", "note": "found in a barn"},
        headers=fleet_a.h("manager"),
    )
    assert r.status_code == 403
    r = await client.post(
        f"/v1/theft-cases/{case['id']}/close",
        json={"outcome": "recovered", "note": "found in a barn"},
        headers=fleet_a.h(),
    )
    assert r.status_code == 200, r.text
    closed = r.json()
    assert (closed["status"], closed["outcome"], closed["close_note"]) == (
        "closed",
        "recovered",
        "found in a barn",
    )
    assert closed["legal_hold_until"] is not None
    r = await client.get(f"/v1/commands/{closed['restore_command_id']}", headers=fleet_a.h())
    assert r.json()["params"] == {"seconds": 30}  # the previous interval back
    (hold,) = await store.theft_cases.holds(fleet_a.id, at_ms=now_ms())
    assert hold.until_ms is not None and hold.until_ms > now_ms() + 80 * 86_400_000
    # Closed: no second close, no immobilisation; a new case may be opened.
    r = await client.post(
        f"/v1/theft-cases/{case['id']}/close", json={"outcome": "false_alarm"}, headers=fleet_a.h()
    )
    assert r.status_code == 409
    r = await client.post(f"/v1/theft-cases/{case['id']}/immobilise", headers=fleet_a.h())
    assert r.status_code == 409
    r = await client.post(f"/v1/vehicles/{fleet_a.vehicle_id}/theft", headers=fleet_a.h())
    assert r.status_code == 201


async def test_open_case_needs_an_admin(client: httpx.AsyncClient, fleet_a: FleetFixture) -> None:
    r = await client.post(f"/v1/vehicles/{fleet_a.vehicle_id}/theft", headers=fleet_a.h("manager"))
    assert r.status_code == 403
    r = await client.post("/v1/vehicles/veh_missing/theft", headers=fleet_a.h())
    assert r.status_code == 404
    r = await client.post(
        f"/v1/vehicles/{fleet_a.vehicle_id}/theft", json={"note": 5}, headers=fleet_a.h()
    )
    assert r.status_code == 422


async def test_guard_controls(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture, fleet_b: FleetFixture
) -> None:
    path = f"/v1/vehicles/{fleet_a.vehicle_id}/guard"
    r = await client.get(path, headers=fleet_a.h("viewer"))
    assert r.status_code == 200 and r.json()["status"] == "disarmed"
    r = await client.put(path, json={"armed": True}, headers=fleet_a.h("manager"))
    assert r.status_code == 409  # no position known yet
    now = now_ms()
    await store.telemetry.store(
        [make_position(fleet_a.id, fleet_a.device_id, fleet_a.vehicle_id, now, ignition=False)], []
    )
    r = await client.put(path, json={"armed": True}, headers=fleet_a.h("manager"))
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["lat"]) == ("armed", 48.8566)
    r = await client.put(path, json={"armed": False}, headers=fleet_a.h("viewer"))
    assert r.status_code == 403
    r = await client.put(path, json={"armed": False}, headers=fleet_b.h())
    assert r.status_code == 404
    r = await client.put(path, json={"armed": False}, headers=fleet_a.h("manager"))
    assert (r.json()["status"], r.json()["held"]) == ("disarmed", True)
    assert r.json()["updated_by"] == fleet_a.key_ids["manager"]
