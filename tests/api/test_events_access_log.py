"""Events with their positions, and the access log of writes and personal-data reads."""

from __future__ import annotations

import httpx

from api.schemas.events import EventsPublic, EventType
from api.times import iso_ms
from gateway.adapters.teltonika import FMB_EVENTS
from protocol.gp8.frames import EventCode
from protocol.teltonika import AvlId
from storage.privacy import PRIVACY_SWITCH_EVENT
from storage.repository import Store
from tests.api.helpers import T0, FleetFixture, make_event, make_position

RANGE = {"from": iso_ms(T0 - 60_000), "to": iso_ms(T0 + 3_600_000)}


def test_event_type_matches_protocol_event_codes() -> None:
    gp8_codes = [(c.name or "").lower() for c in EventCode]
    assert [t.value for t in EventType][: len(gp8_codes)] == gp8_codes


def test_event_type_has_every_code_a_teltonika_box_can_produce() -> None:
    produced = set()
    for io_id, rule in FMB_EVENTS.items():
        for value in range(4):
            decided = rule(value, {io_id: value, AvlId.GREEN_DRIVING_VALUE: 1})
            if decided is not None:
                produced.add(decided[0])
    produced.add(PRIVACY_SWITCH_EVENT)  # a profile's privacy input, where it has one
    gp8_codes = {(c.name or "").lower() for c in EventCode}
    assert produced - gp8_codes == {t.value for t in EventType} - gp8_codes


async def seed_events(store: Store, fleet: FleetFixture) -> None:
    p1 = make_position(fleet.id, fleet.device_id, fleet.vehicle_id, T0 + 1000, lat=45.5)
    p2 = make_position(fleet.id, fleet.device_id, fleet.vehicle_id, T0 + 2000, lat=45.6)
    p3 = make_position(fleet.id, fleet.device_id, fleet.vehicle_id, T0 + 3000, lat=45.7)
    await store.telemetry.store(
        [p1, p2, p3],
        [make_event(p2, "power_cut", 11800), make_event(p1, "sos"), make_event(p3, "sos")],
    )


async def test_get_events_with_positions_in_order(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture
) -> None:
    await seed_events(store, fleet_a)
    r = await client.get("/v1/events", params=RANGE, headers=fleet_a.h("viewer"))
    assert r.status_code == 200
    body = EventsPublic.model_validate(r.json())
    assert [(e.type, e.time) for e in body.data] == [
        ("sos", iso_ms(T0 + 1000)),
        ("power_cut", iso_ms(T0 + 2000)),
        ("sos", iso_ms(T0 + 3000)),
    ]
    assert body.data[1].detail == 11800
    assert body.data[1].position.lat == 45.6
    assert body.data[0].vehicle_id == fleet_a.vehicle_id


async def test_get_events_filtered_by_type_and_vehicle(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture
) -> None:
    await seed_events(store, fleet_a)
    r = await client.get(
        "/v1/events",
        params={**RANGE, "type": "sos", "vehicle_id": fleet_a.vehicle_id},
        headers=fleet_a.h(),
    )
    assert [e["time"] for e in r.json()["data"]] == [iso_ms(T0 + 1000), iso_ms(T0 + 3000)]
    r = await client.get("/v1/events", params={**RANGE, "type": "crash"}, headers=fleet_a.h())
    assert r.json()["data"] == []
    r = await client.get("/v1/events", params={**RANGE, "limit": 1}, headers=fleet_a.h())
    page = r.json()
    assert len(page["data"]) == 1 and page["next_cursor"]
    r = await client.get(
        "/v1/events",
        params={**RANGE, "limit": 5, "cursor": page["next_cursor"]},
        headers=fleet_a.h(),
    )
    assert [e["type"] for e in r.json()["data"]] == ["power_cut", "sos"]


async def test_get_events_unknown_type_422(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    r = await client.get("/v1/events", params={"type": "fire"}, headers=fleet_a.h())
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["query", "type"]


async def test_get_access_log_records_reads_and_writes(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture
) -> None:
    await seed_events(store, fleet_a)
    viewer = fleet_a.h("viewer")
    vid = fleet_a.vehicle_id
    await client.get(f"/v1/vehicles/{vid}/positions", params=RANGE, headers=viewer)
    await client.get(f"/v1/vehicles/{vid}/position", headers=viewer)
    await client.get(f"/v1/vehicles/{vid}/trips", params=RANGE, headers=viewer)
    await client.get(f"/v1/vehicles/{vid}/mileage", params=RANGE, headers=viewer)
    await client.get("/v1/events", params=RANGE, headers=viewer)
    await client.get("/v1/fleet/positions", headers=viewer)
    await client.patch(f"/v1/vehicles/{vid}", json={"label": "x"}, headers=fleet_a.h())
    # A refused write and a non-personal read leave no entry.
    await client.patch(f"/v1/vehicles/{vid}", json={"label": "y"}, headers=viewer)
    await client.get("/v1/vehicles", headers=viewer)

    r = await client.get("/v1/access-log", params={"limit": 1000}, headers=fleet_a.h("admin"))
    assert r.status_code == 200
    entries = r.json()["data"]
    reads = [(e["action"], e["resource"], e["resource_id"], e["key_id"]) for e in entries]
    viewer_id = fleet_a.key_ids["viewer"]
    for resource in ("positions", "position", "trips", "mileage"):
        assert ("read", resource, vid, viewer_id) in reads, resource
    assert ("read", "events", None, viewer_id) in reads
    assert ("read", "fleet_positions", None, viewer_id) in reads
    updates = [e for e in entries if e["action"] == "update"]
    assert [(e["resource_id"], e["key_id"], e["detail"]) for e in updates] == [
        (vid, fleet_a.key_ids["admin"], "label")
    ]
    # The fixture's writes are there too: the operator's key creations, the admin's vehicle.
    assert ("create", "vehicle", vid, fleet_a.key_ids["admin"]) in reads
    assert all(e["fleet_id"] == fleet_a.id for e in entries)
    times = [e["time"] for e in entries]
    assert times == sorted(times)


async def test_get_access_log_other_fleet_entries_hidden(
    client: httpx.AsyncClient, fleet_a: FleetFixture, fleet_b: FleetFixture
) -> None:
    await client.get(f"/v1/vehicles/{fleet_b.vehicle_id}/position", headers=fleet_b.h("viewer"))
    r = await client.get("/v1/access-log", headers=fleet_a.h())
    assert fleet_b.vehicle_id not in r.text and fleet_b.key_ids["viewer"] not in r.text
    r = await client.get("/v1/access-log", headers=fleet_b.h())
    assert fleet_b.vehicle_id in r.text


async def test_post_data_purge_deletes_old_positions(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture
) -> None:
    await seed_events(store, fleet_a)
    r = await client.post("/v1/data/purge", json={"before": iso_ms(T0 + 2500)}, headers=fleet_a.h())
    assert r.status_code == 200
    assert r.json()["deleted"] >= 2
    r = await client.get(
        f"/v1/vehicles/{fleet_a.vehicle_id}/positions", params=RANGE, headers=fleet_a.h()
    )
    assert [p["time"] for p in r.json()["data"]] == [iso_ms(T0 + 3000)]
    r = await client.post(
        "/v1/data/purge", json={"before": "2999-01-01T00:00:00Z"}, headers=fleet_a.h()
    )
    assert r.status_code == 422
