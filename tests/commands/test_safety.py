"""Safety and abuse: duplicate-box freeze, four-eyes approval, hourly engine-start cap, the
platform kill switch, and who may change the policies."""

from __future__ import annotations

from protocol.gp8 import CommandType
from tests.api.helpers import bearer
from tests.commands.conftest import OPERATOR, Fleet, Gp8, send, wait_silent, wait_status


async def second_admin(gp8: Gp8, fleet: Fleet) -> dict[str, str]:
    r = await gp8.http.post(
        f"/v1/fleets/{fleet.id}/keys",
        json={"role": "admin", "name": "admin 2", "email": "a2@example.com"},
        headers=OPERATOR,
    )
    assert r.status_code == 201, r.text
    return bearer(r.json()["key"])


async def set_policy(gp8: Gp8, fleet: Fleet, **policy: object) -> None:
    r = await gp8.http.put(f"/v1/fleets/{fleet.id}/policy", json=policy, headers=fleet.h())
    assert r.status_code == 200, r.text


async def open_alerts(gp8: Gp8, fleet: Fleet) -> list[dict[str, object]]:
    r = await gp8.http.get("/v1/alerts", params={"open": "true"}, headers=fleet.h("viewer"))
    assert r.status_code == 200, r.text
    alerts: list[dict[str, object]] = r.json()["data"]
    return alerts


async def test_duplicate_box_freezes_commands_until_an_admin_clears_it(
    gp8: Gp8, fleet: Fleet
) -> None:
    real = gp8.box(fleet)
    await real.connect()
    queued = await send(gp8, fleet, "disable_engine_start", ttl_s=600)
    await wait_status(gp8, fleet, queued["id"], ["acknowledged"])
    clone = gp8.box(fleet)  # same IMEI and secret: a cloned box
    await clone.connect()  # while the real one's session is live

    # Raised before the clone's login is even answered.
    (alert,) = await open_alerts(gp8, fleet)
    assert alert["kind"] == "duplicate_box" and alert["freezes_commands"] is True
    assert alert["vehicle_id"] == fleet.vehicle_id

    r = await gp8.http.post(fleet.commands_url, json={"type": "unlock"}, headers=fleet.h())
    assert r.status_code == 409
    assert r.json()["type"] == "urn:gp8:problem:duplicate-box"
    assert r.json()["alert_ids"] == [alert["id"]]
    assert clone.commands == []  # the impostor got nothing
    # Only an admin clears it.
    r = await gp8.http.post(f"/v1/alerts/{alert['id']}/clear", headers=fleet.h("manager"))
    assert r.status_code == 403
    r = await gp8.http.post(
        f"/v1/alerts/{alert['id']}/clear", json={"reason": "box replaced"}, headers=fleet.h()
    )
    assert r.status_code == 200 and r.json()["open"] is False
    assert await open_alerts(gp8, fleet) == []
    unlock = await send(gp8, fleet, "unlock")
    await wait_status(gp8, fleet, unlock["id"], ["acknowledged"])
    assert [c.command for c in clone.commands] == [CommandType.UNLOCK]  # the session it won
    r = await gp8.http.get("/v1/audit", params={"vehicle_id": fleet.vehicle_id}, headers=fleet.h())
    actions = [e["action"] for e in r.json()["data"]]
    assert {"alert.raised", "command.refused", "alert.cleared"} <= set(actions)


async def test_a_box_back_after_a_silent_link_is_not_a_duplicate(gp8: Gp8, fleet: Fleet) -> None:
    gp8.run.gateway.registry.duplicate_live_window_s = 0.2
    old = gp8.box(fleet)
    await old.connect()
    await wait_silent(gp8.run.gateway.registry, fleet.imei, 0.2)  # nothing on the old link
    new = gp8.box(fleet)
    await new.connect()
    lock = await send(gp8, fleet, "lock")
    await wait_status(gp8, fleet, lock["id"], ["acknowledged"])
    assert await open_alerts(gp8, fleet) == []
    assert [c.command for c in new.commands] == [CommandType.LOCK]


async def test_four_eyes_needs_another_admin(gp8: Gp8, fleet: Fleet) -> None:
    box = gp8.box(fleet)
    await box.connect()
    await set_policy(gp8, fleet, four_eyes=True)

    pending = await send(gp8, fleet, "disable_engine_start", expect=202, reason="stolen")
    assert pending["status"] == "pending_approval"
    unlock = await send(gp8, fleet, "unlock", role="manager", expect=202)
    lock = await send(gp8, fleet, "lock", role="manager", expect=201)  # not under four-eyes
    await wait_status(gp8, fleet, lock["id"], ["acknowledged"])
    r = await gp8.http.get("/v1/commands", params={"status": "pending_approval"}, headers=fleet.h())
    assert {c["id"] for c in r.json()["data"]} == {pending["id"], unlock["id"]}

    url = f"/v1/commands/{pending['id']}/approve"
    r = await gp8.http.post(url, headers=fleet.h())  # the requester itself
    assert r.status_code == 403
    r = await gp8.http.post(url, headers=fleet.h("manager"))
    assert r.status_code == 403
    await gp8.run.commands.settle()  # every delivery started so far is done
    assert [c.command for c in box.commands] == [CommandType.LOCK]  # nothing pending went

    other = await second_admin(gp8, fleet)
    r = await gp8.http.post(url, headers=other)
    assert r.status_code == 200, r.text
    assert (
        r.json()["approved_by"] is not None and r.json()["approved_by"] != pending["requested_by"]
    )
    done = await wait_status(gp8, fleet, pending["id"], ["acknowledged"])
    assert done["approved_at"] is not None and box.state.engine_start_inhibited
    r = await gp8.http.post(url, headers=other)
    assert r.status_code == 409  # approved already
    # The manager's unlock: the first admin may approve it, it is not theirs.
    r = await gp8.http.post(f"/v1/commands/{unlock['id']}/approve", headers=fleet.h())
    assert r.status_code == 200
    await wait_status(gp8, fleet, unlock["id"], ["acknowledged"])
    r = await gp8.http.get("/v1/audit", params={"command_id": pending["id"]}, headers=fleet.h())
    assert [e["action"] for e in r.json()["data"]] == [
        "command.requested",
        "command.approved",
        "command.sent",
        "command.delivered",
        "command.acknowledged",
    ]


async def test_hourly_engine_start_cap(gp8: Gp8, fleet: Fleet, other_fleet: Fleet) -> None:
    await set_policy(gp8, fleet, engine_start_cap_per_hour=2)
    await send(gp8, fleet, "disable_engine_start", expect=201)
    await send(gp8, fleet, "enable_engine_start", expect=201)
    r = await gp8.http.post(
        fleet.commands_url, json={"type": "disable_engine_start"}, headers=fleet.h()
    )
    assert r.status_code == 429, r.text
    assert r.json()["type"] == "urn:gp8:problem:engine-start-cap"
    assert 3000 < int(r.headers["Retry-After"]) <= 3600
    (alert,) = await open_alerts(gp8, fleet)
    assert alert["kind"] == "engine_start_cap" and alert["freezes_commands"] is False
    # Other commands, and other fleets, are not affected.
    await send(gp8, fleet, "lock", expect=201)
    await send(gp8, other_fleet, "disable_engine_start", expect=201)
    r = await gp8.http.post(
        fleet.commands_url, json={"type": "enable_engine_start"}, headers=fleet.h()
    )
    assert r.status_code == 429
    assert len(await open_alerts(gp8, fleet)) == 1  # one alert, not one per refusal
    await set_policy(gp8, fleet, engine_start_cap_per_hour=None)
    await send(gp8, fleet, "disable_engine_start", expect=201)


async def test_kill_switch_suspends_immobilization(gp8: Gp8, fleet: Fleet) -> None:
    held = await send(gp8, fleet, "disable_engine_start", ttl_s=600)  # queued, box offline
    r = await gp8.http.put(
        "/v1/platform/kill-switch", json={"engaged": True, "reason": "bug 42"}, headers=fleet.h()
    )
    assert r.status_code == 403  # operators only
    r = await gp8.http.put(
        "/v1/platform/kill-switch", json={"engaged": True, "reason": "bug 42"}, headers=OPERATOR
    )
    assert r.status_code == 200 and r.json()["engaged"] is True
    r = await gp8.http.get("/v1/platform/kill-switch", headers=fleet.h("viewer"))
    assert r.json()["engaged"] is True and r.json()["reason"] == "bug 42"

    r = await gp8.http.post(
        fleet.commands_url, json={"type": "disable_engine_start"}, headers=fleet.h()
    )
    assert r.status_code == 409
    assert r.json()["type"] == "urn:gp8:problem:immobilization-suspended"
    release = await send(gp8, fleet, "enable_engine_start", ttl_s=600)  # still allowed
    box = gp8.box(fleet)
    await box.connect()
    await wait_status(gp8, fleet, release["id"], ["acknowledged"])
    r = await gp8.http.get(f"/v1/commands/{held['id']}", headers=fleet.h())
    assert r.json()["status"] == "queued"  # held, not sent
    assert [c.command for c in box.commands] == [CommandType.ENABLE_ENGINE_START]

    r = await gp8.http.put("/v1/platform/kill-switch", json={"engaged": False}, headers=OPERATOR)
    assert r.status_code == 200
    await wait_status(gp8, fleet, held["id"], ["acknowledged"])
    r = await gp8.http.get("/v1/audit", headers=OPERATOR)
    assert [e["action"] for e in r.json()["data"]] == [
        "kill_switch.engaged",
        "kill_switch.released",
    ]
    assert r.json()["data"][0]["reason"] == "bug 42"


async def test_policy_is_for_the_fleets_admins_and_the_operator(
    gp8: Gp8, fleet: Fleet, other_fleet: Fleet
) -> None:
    url = f"/v1/fleets/{fleet.id}/policy"
    r = await gp8.http.get(url, headers=fleet.h())
    assert r.json() == {
        "fleet_id": fleet.id,
        "four_eyes": False,
        "engine_start_cap_per_hour": None,
        "updated_at": None,
        "updated_by": None,
    }
    for role in ("viewer", "manager"):
        assert (await gp8.http.get(url, headers=fleet.h(role))).status_code == 403
        r = await gp8.http.put(url, json={"four_eyes": True}, headers=fleet.h(role))
        assert r.status_code == 403
    r = await gp8.http.put(url, json={"four_eyes": True}, headers=other_fleet.h())
    assert r.status_code == 404
    r = await gp8.http.put(url, json={"engine_start_cap_per_hour": 0}, headers=fleet.h())
    assert r.status_code == 422
    r = await gp8.http.put(url, json={"four_eyes": True}, headers=OPERATOR)
    assert r.status_code == 200 and r.json()["four_eyes"] is True
    r = await gp8.http.get(f"/v1/fleets/{other_fleet.id}/policy", headers=other_fleet.h())
    assert r.json()["four_eyes"] is False
