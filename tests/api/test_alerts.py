"""GET /v1/alerts with the incident fields and filters, POST /v1/alerts/{id}/ack."""

from __future__ import annotations

from typing import Any

import httpx

from storage.models import Alert, AlertKind, Severity, new_id
from storage.repository import Store
from tests.api.helpers import T0, FleetFixture


async def raise_incident(
    store: Store, fleet: FleetFixture, kind: AlertKind, t: int, **over: object
) -> Alert:
    fields: dict[str, object] = {
        "id": new_id("alr"),
        "fleet_id": fleet.id,
        "kind": kind,
        "raised_ms": t,
        "device_id": fleet.device_id,
        "vehicle_id": fleet.vehicle_id,
        "detail": kind.value,
        "severity": Severity.CRITICAL,
        "lat": 48.85,
        "lon": 2.35,
        "speed_kmh": 30.0,
        "updated_ms": t,
    }
    fields.update(over)
    alert, _ = await store.alerts.trigger(Alert(**fields))  # type: ignore[arg-type]
    return alert


async def listed(client: httpx.AsyncClient, fleet: FleetFixture, **params: Any) -> list[str]:
    r = await client.get("/v1/alerts", params=params, headers=fleet.h("viewer"))
    assert r.status_code == 200, r.text
    return [a["id"] for a in r.json()["data"]]


async def test_alert_shows_its_incident(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture
) -> None:
    alert = await raise_incident(store, fleet_a, AlertKind.SUSPECTED_THEFT, T0, first_ms=T0 - 5)
    await raise_incident(store, fleet_a, AlertKind.SUSPECTED_THEFT, T0 + 1000, lat=48.9)
    r = await client.get(f"/v1/alerts/{alert.id}", headers=fleet_a.h("viewer"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["type"] == body["kind"] == "suspected_theft"
    assert (body["state"], body["open"], body["count"], body["severity"]) == (
        "open",
        True,
        2,
        "critical",
    )
    assert body["first_seen_at"] == "2024-05-01T11:59:59.995Z"
    assert body["last_seen_at"] == "2024-05-01T12:00:01.000Z"
    assert (body["lat"], body["lon"]) == (48.9, 2.35)


async def test_list_alerts_filters(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture, fleet_b: FleetFixture
) -> None:
    sos = await raise_incident(store, fleet_a, AlertKind.SOS, T0)
    speed = await raise_incident(store, fleet_a, AlertKind.OVERSPEED, T0 + 1000)
    fence = await raise_incident(store, fleet_a, AlertKind.GEOFENCE_EXIT, T0 + 2000, ref="gfn_1")
    await raise_incident(store, fleet_b, AlertKind.SOS, T0)
    await store.alerts.acknowledge(fleet_a.id, speed.id, by="k", at_ms=T0 + 5, note="")
    await store.alerts.clear(fleet_a.id, fence.id, by="k", at_ms=T0 + 5)

    assert await listed(client, fleet_a) == [sos.id, speed.id, fence.id]
    assert await listed(client, fleet_a, order="desc") == [fence.id, speed.id, sos.id]
    assert await listed(client, fleet_a, type="sos") == [sos.id]
    assert await listed(client, fleet_a, type=["sos", "geofence_exit"]) == [sos.id, fence.id]
    assert await listed(client, fleet_a, state="open") == [sos.id]
    assert await listed(client, fleet_a, state="acknowledged") == [speed.id]
    assert await listed(client, fleet_a, state="closed") == [fence.id]
    assert await listed(client, fleet_a, open="true") == [sos.id, speed.id]
    assert await listed(client, fleet_a, **{"from": T0 + 1000}) == [speed.id, fence.id]
    assert await listed(client, fleet_a, to="2024-05-01T12:00:01Z") == [sos.id]
    assert await listed(client, fleet_a, vehicle_id="veh_other") == []
    r = await client.get("/v1/alerts", params={"order": "desc", "limit": 2}, headers=fleet_a.h())
    page = r.json()
    assert [a["id"] for a in page["data"]] == [fence.id, speed.id]
    r = await client.get(
        "/v1/alerts",
        params={"order": "desc", "limit": 2, "cursor": page["next_cursor"]},
        headers=fleet_a.h(),
    )
    assert [a["id"] for a in r.json()["data"]] == [sos.id]
    for params in ({"type": "nonsense"}, {"state": "gone"}, {"from": "yesterday"}, {"order": "up"}):
        r = await client.get("/v1/alerts", params=params, headers=fleet_a.h())
        assert r.status_code == 422, (params, r.text)
    r = await client.get("/v1/alerts", params={"from": T0, "to": T0}, headers=fleet_a.h())
    assert r.status_code == 422


async def test_ack_alert(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture, fleet_b: FleetFixture
) -> None:
    alert = await raise_incident(store, fleet_a, AlertKind.TOWING, T0)
    r = await client.post(
        f"/v1/alerts/{alert.id}/ack", json={"note": "x"}, headers=fleet_a.h("viewer")
    )
    assert r.status_code == 403
    r = await client.post(f"/v1/alerts/{alert.id}/ack", json={"note": "x"}, headers=fleet_b.h())
    assert r.status_code == 404
    r = await client.post(
        f"/v1/alerts/{alert.id}/ack",
        json={"note": "driver says it is at the garage"},
        headers=fleet_a.h("manager"),
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["state"], body["acked_by"], body["ack_note"]) == (
        "acknowledged",
        fleet_a.key_ids["manager"],
        "driver says it is at the garage",
    )
    assert body["acked_at"] is not None and body["open"] is True
    r = await client.post(f"/v1/alerts/{alert.id}/ack", headers=fleet_a.h())  # no body
    assert r.status_code == 200 and r.json()["acked_by"] == fleet_a.key_ids["manager"]
    r = await client.post(
        f"/v1/alerts/{alert.id}/ack", json={"note": "x", "extra": 1}, headers=fleet_a.h()
    )
    assert r.status_code == 422
    r = await client.get("/v1/access-log", headers=fleet_a.h())
    assert any(e["resource"] == "alert" and e["resource_id"] == alert.id for e in r.json()["data"])


async def test_command_alerts_keep_their_shape(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture
) -> None:
    dup = Alert(new_id("alr"), fleet_a.id, AlertKind.DUPLICATE_BOX, T0, fleet_a.device_id)
    await store.alerts.raise_alert(dup)
    r = await client.get(f"/v1/alerts/{dup.id}", headers=fleet_a.h())
    body = r.json()
    assert (body["kind"], body["type"], body["state"], body["count"]) == (
        "duplicate_box",
        "duplicate_box",
        "open",
        1,
    )
    r = await client.post(f"/v1/alerts/{dup.id}/clear", json={}, headers=fleet_a.h())
    assert r.status_code == 200 and r.json()["state"] == "closed"
