"""POST /v1/commands/bulk: one command type for many vehicles, every rule per vehicle, one
Idempotency-Key for the order (docs/commands.md, "Bulk orders")."""

from __future__ import annotations

from typing import Any

from commands import BulkRequest
from storage.errors import NotFound
from storage.models import CommandKind, DeviceModel
from tests.api.helpers import luhn_imei
from tests.commands.conftest import OPERATOR, Fleet, Gp8, wait_status
from tests.commands.world import FakeSender, World
from tests.storage.conftest import make_device

BULK = "/v1/commands/bulk"
# Luhn-valid IMEIs that tests/api/helpers.py's fleets do not use.
MORE_IMEIS = ["353918050000006", "353918050000014", "353918050000022"]


async def _vehicle(gp8: Gp8, fleet: Fleet, n: int, *, imei: str | None = None) -> str:
    store = gp8.run.store
    vehicle = await store.vehicles.create(
        fleet.id, vin=f"WVWZZZ1JZ{n:08d}", plate=f"B-{n}", label="van"
    )
    if imei is not None:
        await make_device(store, fleet.id, imei, DeviceModel.GP8000)
        await store.devices.fit(fleet.id, vehicle.id, imei, 0)
    return vehicle.id


async def _bulk(
    gp8: Gp8, fleet: Fleet, body: dict[str, Any], *, role: str = "admin", key: str | None = None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    headers = {**fleet.h(role), **({"Idempotency-Key": key} if key else {})}
    r = await gp8.http.post(BULK, json=body, headers=headers)
    return r.status_code, r.json(), dict(r.headers)


def _by_vehicle(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["vehicle_id"]: item for item in body["data"]}


async def test_bulk_lock_answers_per_vehicle_and_replays_with_its_key(
    gp8: Gp8, fleet: Fleet
) -> None:
    box = gp8.box(fleet)
    await box.connect()
    offline = await _vehicle(gp8, fleet, 1, imei=MORE_IMEIS[0])
    no_box = await _vehicle(gp8, fleet, 2)
    asked = [fleet.vehicle_id, offline, no_box, "veh_unknown", offline]

    status, body, _ = await _bulk(
        gp8, fleet, {"type": "lock", "vehicle_ids": asked}, role="manager", key="order-1"
    )

    assert status == 200, body
    assert [i["vehicle_id"] for i in body["data"]] == [
        fleet.vehicle_id,
        offline,
        no_box,
        "veh_unknown",
    ]
    items = _by_vehicle(body)
    assert (body["created"], body["replayed"], body["refused"]) == (2, 0, 2)
    assert items[offline]["status"] == "queued" and items[offline]["problem"] is None
    assert items[no_box]["command_id"] is None
    assert items[no_box]["problem"]["type"] == "urn:gp8:problem:no-box-fitted"
    assert items[no_box]["problem"]["status"] == 409
    assert items["veh_unknown"]["problem"]["status"] == 404
    online = items[fleet.vehicle_id]["command_id"]
    await wait_status(gp8, fleet, online, {"acknowledged"})
    assert len(box.commands) == 1

    # The retry answers the same commands and creates none.
    status, again, headers = await _bulk(
        gp8, fleet, {"type": "lock", "vehicle_ids": asked}, role="manager", key="order-1"
    )
    assert status == 200 and headers.get("idempotent-replayed") == "true"
    assert (again["created"], again["replayed"], again["refused"]) == (0, 2, 2)
    assert _by_vehicle(again)[fleet.vehicle_id]["command_id"] == online
    assert _by_vehicle(again)[offline]["command_id"] == items[offline]["command_id"]
    r = await gp8.http.get("/v1/commands", headers=fleet.h("viewer"))
    assert len(r.json()["data"]) == 2
    # The same key for another order: refused per vehicle, nothing stored.
    _, other, _ = await _bulk(
        gp8, fleet, {"type": "unlock", "vehicle_ids": [offline]}, role="manager", key="order-1"
    )
    assert other["data"][0]["problem"]["type"] == "urn:gp8:problem:idempotency-key-reused"


async def test_bulk_role_and_body_rules_refuse_the_whole_order(gp8: Gp8, fleet: Fleet) -> None:
    one = {"vehicle_ids": [fleet.vehicle_id]}
    status, body, _ = await _bulk(gp8, fleet, {"type": "lock", **one}, role="viewer")
    assert status == 403
    status, body, _ = await _bulk(gp8, fleet, {"type": "reboot", **one}, role="manager")
    assert status == 403 and body["type"] == "urn:gp8:problem:forbidden"
    r = await gp8.http.post(BULK, json={"type": "lock", "all": True}, headers=OPERATOR)
    assert r.status_code == 403
    for bad in (
        {"type": "lock"},
        {"type": "lock", "all": True, **one},
        {"type": "lock", "vehicle_ids": []},
        {"type": "set_report_interval", "params": {"seconds": 1}, **one},
        {"type": "lock", "params": {"seconds": 30}, **one},
        {"type": "lock", "ttl_s": -1, **one},
    ):
        status, body, _ = await _bulk(gp8, fleet, bad)
        assert status == 422, (bad, body)
    r = await gp8.http.get("/v1/commands", headers=fleet.h("viewer"))
    assert r.json()["data"] == []


async def test_bulk_applies_four_eyes_cap_and_kill_switch_per_vehicle(
    gp8: Gp8, fleet: Fleet, other_fleet: Fleet
) -> None:
    second = await _vehicle(gp8, fleet, 3, imei=MORE_IMEIS[1])
    r = await gp8.http.put(
        f"/v1/fleets/{fleet.id}/policy",
        json={"four_eyes": True, "engine_start_cap_per_hour": 1},
        headers=fleet.h(),
    )
    assert r.status_code == 200, r.text

    status, body, _ = await _bulk(gp8, fleet, {"type": "disable_engine_start", "all": True})

    assert status == 200, body
    # "all": this fleet's two vehicles, never the other fleet's.
    assert {i["vehicle_id"] for i in body["data"]} == {fleet.vehicle_id, second}
    first, capped = body["data"]
    assert first["status"] == "pending_approval" and first["problem"] is None
    assert capped["problem"]["type"] == "urn:gp8:problem:engine-start-cap"
    assert capped["problem"]["status"] == 429
    audit = await gp8.http.get("/v1/audit", headers=fleet.h())
    refused = [e for e in audit.json()["data"] if e["action"] == "command.refused"]
    assert [e["vehicle_id"] for e in refused] == [capped["vehicle_id"]]

    r = await gp8.http.put(
        "/v1/platform/kill-switch", json={"engaged": True, "reason": "bug 42"}, headers=OPERATOR
    )
    assert r.status_code == 200, r.text
    status, body, _ = await _bulk(
        gp8, other_fleet, {"type": "disable_engine_start", "vehicle_ids": [other_fleet.vehicle_id]}
    )
    assert body["data"][0]["problem"]["type"] == "urn:gp8:problem:immobilization-suspended"
    # What the switch does not suspend still goes.
    status, body, _ = await _bulk(
        gp8, other_fleet, {"type": "enable_engine_start", "vehicle_ids": [other_fleet.vehicle_id]}
    )
    assert body["created"] == 1


# --- the service alone, on each engine: an order big enough to read by pages ------------


async def test_bulk_order_of_many_vehicles_reads_by_pages_on_each_engine(world: World) -> None:
    store = world.store
    ids = [world.vehicle_id]
    for n in range(120):
        vehicle = await store.vehicles.create(
            world.fleet_id, vin=f"WVWZZZ1JZ{n:08d}", plate=f"M-{n}", label=""
        )
        imei = luhn_imei(f"35391806{n:06d}")
        await make_device(store, world.fleet_id, imei)
        await store.devices.fit(world.fleet_id, vehicle.id, imei, 0)
        ids.append(vehicle.id)
    ids.append("veh_unknown")
    sender = FakeSender()
    service = world.service(sender)
    bulk = BulkRequest(CommandKind.LOCATE, vehicle_ids=ids, idempotency_key="big")

    outcomes = await service.create_bulk(world.admin, bulk)
    await service.settle()

    assert [o.vehicle_id for o in outcomes] == ids
    assert sum(o.created for o in outcomes) == 121
    assert isinstance(outcomes[-1].refusal, NotFound)
    # The retry: every command found again by its key, none created.
    again = await service.create_bulk(world.admin, bulk)
    assert [o.command.id if o.command else None for o in again] == [
        o.command.id if o.command else None for o in outcomes
    ]
    assert not any(o.created for o in again)
