"""Privacy mode over the API (docs/privacy.md): private fixes hidden from managers and
viewers, shown to an admin who states a reason (logged), overridden by an open theft case."""

from __future__ import annotations

import httpx

from api.services.privacy import EntryPrivacy
from api.webhooks import WebhookService
from storage.models import StreamEntry, StreamKind, now_ms
from storage.repository import Store
from tests.api.helpers import FleetFixture, make_event, make_position

ALWAYS = {
    "tz": "Europe/Paris",
    "private": [{"days": [1, 2, 3, 4, 5, 6, 7], "from": "00:00", "to": "24:00"}],
}


async def _private_vehicle(client: httpx.AsyncClient, store: Store, fleet: FleetFixture) -> int:
    r = await client.put(
        f"/v1/vehicles/{fleet.vehicle_id}/privacy",
        json={"schedule": ALWAYS},
        headers=fleet.h("manager"),
    )
    assert r.status_code == 200, r.text
    assert r.json()["private_now"] is True
    t = now_ms() + 1000
    await store.telemetry.store(
        [
            make_position(fleet.id, fleet.device_id, fleet.vehicle_id, t + i * 1000)
            for i in range(3)
        ],
        [],
    )
    return t


def _range(t: int) -> dict[str, str]:
    from api.times import iso_ms

    return {"from": iso_ms(t - 60_000), "to": iso_ms(t + 60_000)}


async def test_private_positions_hidden_from_manager_and_viewer(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture
) -> None:
    t = await _private_vehicle(client, store, fleet_a)
    for role in ("manager", "viewer"):
        r = await client.get(
            f"/v1/vehicles/{fleet_a.vehicle_id}/positions",
            params=_range(t),
            headers=fleet_a.h(role),
        )
        assert r.status_code == 200
        assert r.json()["data"] == [] and r.json()["privacy"] == "active"
        r = await client.get(
            f"/v1/vehicles/{fleet_a.vehicle_id}/positions",
            params={**_range(t), "format": "csv"},
            headers=fleet_a.h(role),
        )
        assert r.text.count("\n") == 1  # the header only
        r = await client.get(f"/v1/vehicles/{fleet_a.vehicle_id}/position", headers=fleet_a.h(role))
        assert r.json()["position"] is None
        r = await client.get("/v1/fleet/positions", headers=fleet_a.h(role))
        assert r.json()["data"] == [] and r.json()["private"] == [fleet_a.vehicle_id]
        # Named whatever the area: an empty box far away must not tell it apart.
        far = await client.get(
            "/v1/fleet/positions", params={"bbox": "-70,-50,-69,-49"}, headers=fleet_a.h(role)
        )
        assert far.json()["private"] == [fleet_a.vehicle_id]
    # A reason from a manager changes nothing: only an admin may reveal.
    r = await client.get(
        f"/v1/vehicles/{fleet_a.vehicle_id}/positions",
        params=_range(t),
        headers={**fleet_a.h("manager"), "Gp8-Reason": "curious"},
    )
    assert r.json()["data"] == []


async def test_private_positions_shown_to_admin_with_reason_and_logged(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture
) -> None:
    t = await _private_vehicle(client, store, fleet_a)
    r = await client.get(
        f"/v1/vehicles/{fleet_a.vehicle_id}/positions", params=_range(t), headers=fleet_a.h("admin")
    )
    assert r.json()["data"] == []  # no reason, no reveal
    r = await client.get(
        f"/v1/vehicles/{fleet_a.vehicle_id}/positions",
        params=_range(t),
        headers={**fleet_a.h("admin"), "Gp8-Reason": "insurance claim 42"},
    )
    assert len(r.json()["data"]) == 3 and r.json()["privacy"] == "revealed"
    r = await client.get("/v1/access-log", params={"limit": 1000}, headers=fleet_a.h("admin"))
    reveals = [e for e in r.json()["data"] if e["action"] == "read_private"]
    assert len(reveals) == 1 and "insurance claim 42" in reveals[0]["detail"]


async def test_theft_case_overrides_privacy(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture
) -> None:
    t = await _private_vehicle(client, store, fleet_a)
    r = await client.post(f"/v1/vehicles/{fleet_a.vehicle_id}/theft", headers=fleet_a.h())
    assert r.status_code == 201, r.text
    r = await client.get(
        f"/v1/vehicles/{fleet_a.vehicle_id}/positions",
        params=_range(t),
        headers=fleet_a.h("manager"),
    )
    assert len(r.json()["data"]) == 3
    assert r.json()["privacy"] == "overridden_by_theft_case"
    r = await client.get(f"/v1/vehicles/{fleet_a.vehicle_id}/privacy", headers=fleet_a.h("viewer"))
    assert r.json()["privacy"] == "overridden_by_theft_case"


async def test_stream_filter_drops_private_positions(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture
) -> None:
    t = await _private_vehicle(client, store, fleet_a)
    private = make_position(fleet_a.id, fleet_a.device_id, fleet_a.vehicle_id, t)
    before = make_position(fleet_a.id, fleet_a.device_id, fleet_a.vehicle_id, t - 3_600_000)
    entries = [
        StreamEntry(fleet_a.id, i, StreamKind.POSITION, fleet_a.vehicle_id, t, p)
        for i, p in enumerate((before, private))
    ]
    kept = await EntryPrivacy(store)(fleet_a.id, entries)
    # The schedule took effect now: the fix of an hour ago stays visible (not retroactive).
    assert [e.item for e in kept] == [before]


async def test_put_privacy_refuses_a_bad_schedule(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    bad = {"tz": "Mars/Olympus", "private": [{"days": [1], "from": "19:00", "to": "07:00"}]}
    r = await client.put(
        f"/v1/vehicles/{fleet_a.vehicle_id}/privacy",
        json={"schedule": bad},
        headers=fleet_a.h("manager"),
    )
    assert r.status_code == 422
    r = await client.put(
        f"/v1/vehicles/{fleet_a.vehicle_id}/privacy",
        json={"schedule": ALWAYS},
        headers=fleet_a.h("viewer"),
    )
    assert r.status_code == 403


async def test_drivers_map_badges_to_names_for_managers_only(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    r = await client.post(
        "/v1/drivers", json={"badge": "123456", "name": "Ana"}, headers=fleet_a.h("manager")
    )
    assert r.status_code == 201, r.text
    driver = r.json()
    assert driver["badge"] != "123456"  # the pseudonym, never the badge
    r = await client.post(
        "/v1/drivers", json={"badge": "123456", "name": "Bo"}, headers=fleet_a.h("manager")
    )
    assert r.status_code == 409
    r = await client.get("/v1/drivers", headers=fleet_a.h("viewer"))
    assert r.status_code == 403
    r = await client.get("/v1/drivers", headers=fleet_a.h("manager"))
    assert [d["name"] for d in r.json()["data"]] == ["Ana"]
    r = await client.delete(f"/v1/drivers/{driver['id']}", headers=fleet_a.h("manager"))
    assert r.status_code == 204
    r = await client.get("/v1/drivers", headers=fleet_a.h("manager"))
    assert r.json()["count"] == 0


async def test_webhooks_carry_no_private_position(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture
) -> None:
    # A webhook is a fleet-level integration with nobody to state a reason: as on the stream,
    # private fixes are not queued for it (those of other vehicles and alerts still are).
    r = await client.post(
        "/v1/webhooks",
        json={"url": "https://hooks.example/gp8", "kinds": ["position"]},
        headers=fleet_a.h("admin"),
    )
    assert r.status_code == 201, r.text
    hook = r.json()
    await _private_vehicle(client, store, fleet_a)
    before = await store.webhooks.get(fleet_a.id, hook["id"])
    page = await store.stream.after(fleet_a.id, before.cursor, kinds=before.kinds)
    # The three fixes are in the log the webhook follows: only the filter keeps them out.
    assert len([e for e in page.entries if e.kind is StreamKind.POSITION]) == 3
    service = WebhookService(store, allow_private=True, privacy=EntryPrivacy(store))
    await service.run_pass()
    await service.stop(grace_s=0.5)
    after = await store.webhooks.get(fleet_a.id, hook["id"])
    assert after.cursor > before.cursor  # read past them
    queued = await store.webhooks.deliveries(fleet_a.id, hook["id"])
    assert queued.items == []


async def test_events_in_privacy_mode_are_hidden_as_their_fixes(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture
) -> None:
    t = await _private_vehicle(client, store, fleet_a)
    fix = make_position(fleet_a.id, fleet_a.device_id, fleet_a.vehicle_id, t + 500)
    await store.telemetry.store([], [make_event(fix, "towing")])
    params = {**_range(t), "vehicle_id": fleet_a.vehicle_id}
    for role in ("manager", "viewer"):
        r = await client.get("/v1/events", params=params, headers=fleet_a.h(role))
        assert r.status_code == 200 and r.json()["data"] == [], role
        r = await client.get(
            "/v1/events", params={**params, "format": "csv"}, headers=fleet_a.h(role)
        )
        assert r.text.count("\n") == 1  # the header only
    r = await client.get(
        "/v1/events", params=params, headers={**fleet_a.h("admin"), "Gp8-Reason": "insurer claim"}
    )
    assert len(r.json()["data"]) == 1
