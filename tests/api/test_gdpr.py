"""Retention rules, exports, erasure, rectification and offboarding through the API
(docs/gdpr.md)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
import zipfile
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from api.services.export_job import ExportWorker
from retention import RetentionService
from storage.models import now_ms
from storage.repository import Store
from storage.retention import DAY_MS
from tests.api.helpers import (
    OPERATOR_KEY,
    VALID_VINS,
    FleetFixture,
    bearer,
    make_event,
    make_position,
)

OP = bearer(OPERATOR_KEY)


@pytest.fixture
def exports_dir(app: FastAPI, data_dir: Path) -> Path:
    directory = data_dir / "exports"
    app.state.exports_dir = directory
    return directory


async def poll(check: object, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def test_get_put_retention(
    client: httpx.AsyncClient, fleet_a: FleetFixture, fleet_b: FleetFixture
) -> None:
    url = f"/v1/fleets/{fleet_a.id}/retention"
    r = await client.get(url, headers=fleet_a.h())
    assert r.status_code == 200, r.text
    assert r.json()["days"]["positions"] == 61 and r.json()["last_purge"] is None
    assert (await client.get(url, headers=OP)).status_code == 200
    assert (await client.get(url, headers=fleet_a.h("manager"))).status_code == 403
    assert (await client.get(url, headers=fleet_b.h())).status_code == 404

    r = await client.put(url, json={"positions": 30, "exports": 2}, headers=fleet_a.h())
    assert r.status_code == 200, r.text
    assert r.json()["days"]["positions"] == 30 and r.json()["days"]["events"] == 61
    assert (
        await client.put(url, json={"positions": 5 * 366 + 1}, headers=fleet_a.h())
    ).status_code == 422
    assert (await client.put(url, json={"positions": 0}, headers=fleet_a.h())).status_code == 422
    log = (await client.get("/v1/access-log", headers=fleet_a.h())).json()["data"]
    assert any(e["resource"] == "retention" and e["action"] == "update" for e in log)


async def test_purge_job_runs_by_itself_and_keeps_held_vehicles(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture, data_dir: Path
) -> None:
    now = now_ms()
    old = now - 70 * DAY_MS
    r = await client.post(
        "/v1/vehicles",
        json={"vin": VALID_VINS[2], "plate": "H-1", "label": "held"},
        headers=fleet_a.h(),
    )
    held = r.json()["id"]
    await store.telemetry.store(
        [
            make_position(fleet_a.id, fleet_a.device_id, fleet_a.vehicle_id, old),
            make_position(fleet_a.id, fleet_a.device_id, fleet_a.vehicle_id, now - DAY_MS),
            make_position(fleet_a.id, "dev_h", held, old),
        ],
        [],
    )
    r = await client.post(f"/v1/vehicles/{held}/theft", json={}, headers=fleet_a.h())
    assert r.status_code == 201, r.text
    service = RetentionService(store, exports_dir=data_dir / "exports", interval_s=0.05)
    await service.start()
    try:

        async def purged() -> bool:
            r = await client.get(f"/v1/fleets/{fleet_a.id}/retention", headers=fleet_a.h())
            return r.json()["last_purge"] is not None

        await poll(purged)
    finally:
        await service.stop()
    last = (await client.get(f"/v1/fleets/{fleet_a.id}/retention", headers=fleet_a.h())).json()
    assert last["last_purge"]["deleted"]["positions"] == 1
    track = await store.telemetry.positions(fleet_a.id, fleet_a.vehicle_id, from_ms=0, to_ms=now)
    assert [p.time_ms for p in track.items] == [now - DAY_MS]
    kept = await store.telemetry.positions(fleet_a.id, held, from_ms=0, to_ms=now)
    assert [p.time_ms for p in kept.items] == [old]  # a theft case holds it


async def test_export_of_a_vehicle_contains_exactly_its_data(
    client: httpx.AsyncClient,
    store: Store,
    app: FastAPI,
    fleet_a: FleetFixture,
    fleet_b: FleetFixture,
    exports_dir: Path,
) -> None:
    base = now_ms() - 3_600_000
    mine = [
        make_position(fleet_a.id, fleet_a.device_id, fleet_a.vehicle_id, base + i * 1000)
        for i in range(25)
    ]
    other = make_position(fleet_b.id, fleet_b.device_id, fleet_b.vehicle_id, base)
    await store.telemetry.store(
        [*mine, other], [make_event(mine[3], "sos"), make_event(other, "sos")]
    )
    await client.get(f"/v1/vehicles/{fleet_a.vehicle_id}/position", headers=fleet_a.h())
    body = {
        "vehicle_id": fleet_a.vehicle_id,
        "from": "2020-01-01T00:00:00Z",
        "to": "2100-01-01T00:00:00Z",
    }
    assert (
        await client.post("/v1/exports", json=body, headers=fleet_a.h("manager"))
    ).status_code == 403
    r = await client.post(
        "/v1/exports", json={**body, "vehicle_id": fleet_b.vehicle_id}, headers=fleet_a.h()
    )
    assert r.status_code == 404
    r = await client.post("/v1/exports", json=body, headers=fleet_a.h())
    assert r.status_code == 202, r.text
    export = r.json()
    assert export["status"] == "pending"
    assert (export["from"], export["to"]) == (
        "2020-01-01T00:00:00.000Z",
        "2100-01-01T00:00:00.000Z",
    )
    assert (await client.get(f"/v1/exports/{export['id']}", headers=fleet_b.h())).status_code == 404
    r = await client.get(f"/v1/exports/{export['id']}/download", headers=fleet_a.h())
    assert r.status_code == 409

    worker = ExportWorker(store, directory=exports_dir)
    await worker.start()
    try:

        async def done() -> bool:
            r = await client.get(f"/v1/exports/{export['id']}", headers=fleet_a.h())
            return r.json()["status"] == "done"

        await poll(done)
    finally:
        await worker.stop()
    status = (await client.get(f"/v1/exports/{export['id']}", headers=fleet_a.h())).json()
    assert status["counts"]["positions"] == 25 and status["counts"]["events"] == 1
    r = await client.get(f"/v1/exports/{export['id']}/download", headers=fleet_a.h())
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/zip"
    assert "attachment;" in r.headers["content-disposition"]
    archive = zipfile.ZipFile(io.BytesIO(r.content))
    positions = json.loads(archive.read("positions.json"))
    assert len(positions) == 25
    assert {p["device_id"] for p in positions} == {fleet_a.device_id}
    rows = list(csv.DictReader(io.StringIO(archive.read("positions.csv").decode())))
    assert len(rows) == 25
    events = json.loads(archive.read("events.json"))
    assert [e["vehicle_id"] for e in events] == [fleet_a.vehicle_id]
    access = json.loads(archive.read("access_log.json"))
    assert access and {e["resource_id"] for e in access} == {fleet_a.vehicle_id}
    assert json.loads(archive.read("manifest.json"))["counts"] == status["counts"]
    assert fleet_b.vehicle_id.encode() not in r.content
    log = (await client.get("/v1/access-log", headers=fleet_a.h())).json()["data"]
    assert {"export", "download"} <= {e["action"] for e in log}


async def test_erase_vehicle_and_legal_hold(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture
) -> None:
    t = now_ms() - 60_000
    p = make_position(fleet_a.id, fleet_a.device_id, fleet_a.vehicle_id, t)
    await store.telemetry.store([p], [make_event(p, "sos")])
    url = f"/v1/vehicles/{fleet_a.vehicle_id}/erase"
    assert (await client.post(url, json={"reason": ""}, headers=fleet_a.h())).status_code == 422
    assert (
        await client.post(url, json={"reason": "x"}, headers=fleet_a.h("manager"))
    ).status_code == 403
    r = await client.post(url, json={"reason": "data subject request #12"}, headers=fleet_a.h())
    assert r.status_code == 200, r.text
    assert r.json()["counts"]["positions"] == 1 and r.json()["counts"]["events"] == 1
    log = (await client.get("/v1/access-log", headers=fleet_a.h())).json()["data"]
    assert any(e["action"] == "erase" and "request #12" in e["detail"] for e in log)

    r = await client.post(f"/v1/vehicles/{fleet_a.vehicle_id}/theft", json={}, headers=fleet_a.h())
    assert r.status_code == 201, r.text
    r = await client.post(url, json={"reason": "again"}, headers=fleet_a.h())
    assert r.status_code == 409
    assert "legal hold" in r.json()["detail"]


async def test_erase_driver_and_correct_fitting(
    client: httpx.AsyncClient, store: Store, app: FastAPI, fleet_a: FleetFixture
) -> None:
    t = now_ms() - 600_000
    # Stored as the gateway stores it: the badge's pseudonym, when the app has them.
    pseudonyms = getattr(app.state, "pseudonyms", None)
    stored = 4242 if pseudonyms is None else pseudonyms.of(4242)
    await store.telemetry.store(
        [
            make_position(
                fleet_a.id, fleet_a.device_id, fleet_a.vehicle_id, t, driver_badge=stored
            ),
            make_position(fleet_a.id, fleet_a.device_id, fleet_a.vehicle_id, t + 1000),
        ],
        [],
    )
    r = await client.post(
        "/v1/drivers/erase",
        json={"driver_badge": "4242", "reason": "left the company"},
        headers=fleet_a.h(),
    )
    assert r.status_code == 200, r.text
    assert r.json()["counts"]["positions"] == 1

    r = await client.post(
        "/v1/vehicles",
        json={"vin": VALID_VINS[3], "plate": "R-1", "label": "right"},
        headers=fleet_a.h(),
    )
    right = r.json()["id"]
    r = await client.post(
        f"/v1/vehicles/{right}/fittings/correct",
        json={
            "device_id": fleet_a.device_id,
            "from": "2020-01-01T00:00:00Z",
            "to": "2100-01-01T00:00:00Z",
            "reason": "box was in the other van",
        },
        headers=fleet_a.h(),
    )
    assert r.status_code == 200, r.text
    assert r.json()["counts"]["positions"] == 1
    r = await client.get(f"/v1/vehicles/{right}/position", headers=fleet_a.h())
    assert r.status_code == 200 and r.json()["position"]["device_id"] == fleet_a.device_id


async def test_offboarding_read_only_then_erased(
    client: httpx.AsyncClient,
    store: Store,
    app: FastAPI,
    fleet_a: FleetFixture,
    fleet_b: FleetFixture,
    exports_dir: Path,
) -> None:
    await store.telemetry.store(
        [make_position(fleet_a.id, fleet_a.device_id, fleet_a.vehicle_id, now_ms() - 1000)], []
    )
    url = f"/v1/fleets/{fleet_a.id}/offboard"
    assert (await client.post(url, headers=fleet_a.h())).status_code == 403
    r = await client.post(url, headers=OP)
    assert r.status_code == 201, r.text
    assert (await client.post(url, headers=OP)).status_code == 409
    # Read-only: writes refused with a problem saying why; reads and exports still work.
    r = await client.patch(
        f"/v1/vehicles/{fleet_a.vehicle_id}", json={"label": "x"}, headers=fleet_a.h()
    )
    assert r.status_code == 409
    assert r.json()["type"] == "urn:gp8:problem:fleet-offboarding"
    assert (
        await client.get(f"/v1/vehicles/{fleet_a.vehicle_id}", headers=fleet_a.h())
    ).status_code == 200
    body = {
        "vehicle_id": fleet_a.vehicle_id,
        "from": "2020-01-01T00:00:00Z",
        "to": "2100-01-01T00:00:00Z",
    }
    assert (await client.post("/v1/exports", json=body, headers=fleet_a.h())).status_code == 202
    assert (
        await client.patch(
            f"/v1/vehicles/{fleet_b.vehicle_id}", json={"label": "y"}, headers=fleet_b.h()
        )
    ).status_code == 200

    # The window ends (an injected clock, 93 days on): the purge job erases the fleet.
    later = now_ms() + 93 * DAY_MS
    await RetentionService(store, exports_dir=exports_dir, clock=lambda: later).run_once()
    r = await client.get(f"/v1/fleets/{fleet_a.id}/offboarding", headers=OP)
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["erased_at"] is not None
    assert report["deleted"]["positions"] == 1 and report["deleted"]["exports"] == 1
    assert report["deleted"]["fleets"] == 1
    assert (await client.get(f"/v1/fleets/{fleet_a.id}", headers=OP)).status_code == 404
    assert (
        await client.get(f"/v1/vehicles/{fleet_b.vehicle_id}", headers=fleet_b.h())
    ).status_code == 200
