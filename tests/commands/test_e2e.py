"""Commands end to end: HTTP API → gp8 → TCP → virtual box → COMMAND_RESULT → API, over real
sockets (docs/commands.md)."""

from __future__ import annotations

import asyncio

from protocol.gp8 import Command, CommandFailure, CommandStatus, CommandType
from simulator.box import BoxState, CommandOutcome
from storage.models import now_ms
from tests.commands.conftest import TIMEOUT_S, Fleet, Gp8, send, wait_status


async def audit_actions(gp8: Gp8, fleet: Fleet, command_id: str) -> list[str]:
    r = await gp8.http.get("/v1/audit", params={"command_id": command_id}, headers=fleet.h())
    assert r.status_code == 200, r.text
    return [e["action"] for e in r.json()["data"]]


async def test_online_box_executes_and_the_api_shows_the_state_then_the_position_confirms(
    gp8: Gp8, fleet: Fleet
) -> None:
    box = gp8.box(fleet)
    await box.connect()

    created = await send(gp8, fleet, "lock", role="manager", reason="customer request 12")
    assert created["status"] in ("queued", "sent", "acknowledged")
    done = await wait_status(gp8, fleet, created["id"], ["acknowledged"])

    assert box.state.doors_locked
    assert [c.command for c in box.commands] == [CommandType.LOCK]
    assert box.commands[0].seq == done["seq"]
    assert done["result"] == {"doors_locked": True, "engine_start_inhibited": False}
    assert done["attempts"] == 1 and done["failure"] is None
    assert done["delivered_at"] is not None  # the box ACKed the COMMAND on receipt
    # The vehicle shows the state at once, from the acknowledgement...
    r = await gp8.http.get(f"/v1/vehicles/{fleet.vehicle_id}", headers=fleet.h("viewer"))
    state = r.json()["lock_state"]
    assert (state["doors_locked"], state["source"], state["confirmed"]) == (True, "command", False)
    assert state["command_id"] == created["id"]
    # ... and the box's next position confirms it.
    await box.send_positions([box.record(now_ms(), 48.85, 2.35)], timeout=TIMEOUT_S)
    r = await gp8.http.get(f"/v1/vehicles/{fleet.vehicle_id}/position", headers=fleet.h("viewer"))
    body = r.json()
    assert body["position"]["doors_locked"] is True
    assert body["lock_state"]["source"] == "position" and body["lock_state"]["confirmed"] is True
    # Every step is in the audit log, with who asked and why.
    r = await gp8.http.get("/v1/audit", params={"command_id": created["id"]}, headers=fleet.h())
    entries = r.json()["data"]
    assert [e["action"] for e in entries] == [
        "command.requested",
        "command.sent",
        "command.delivered",
        "command.acknowledged",
    ]
    assert {e["key_id"] for e in entries} == {fleet.api.key_ids["manager"]}
    assert {e["reason"] for e in entries} == {"customer request 12"}
    assert entries[0]["actor"] == f"key:{fleet.api.key_ids['manager']}"
    assert entries[2]["actor"] == entries[3]["actor"] == f"box:{fleet.imei}"


async def test_offline_queue_is_delivered_in_order_at_the_next_login(
    gp8: Gp8, fleet: Fleet
) -> None:
    made = [
        await send(gp8, fleet, "lock"),
        await send(gp8, fleet, "set_report_interval", params={"seconds": 60}),
        await send(gp8, fleet, "disable_engine_start", theft_case_id="PD-2024-118"),
        await send(gp8, fleet, "unlock"),
    ]
    assert {c["status"] for c in made} == {"queued"}
    seqs = [c["seq"] for c in made]
    assert seqs == sorted(seqs) and len(set(seqs)) == 4

    box = gp8.box(fleet)
    await box.connect()
    for c in made:
        await wait_status(gp8, fleet, c["id"], ["acknowledged"])

    assert [c.seq for c in box.commands] == seqs
    assert [c.command for c in box.commands] == [
        CommandType.LOCK,
        CommandType.SET_REPORT_INTERVAL,
        CommandType.DISABLE_ENGINE_START,
        CommandType.UNLOCK,
    ]
    assert box.commands[1].param == 60
    assert box.state.report_interval_s == 60
    assert box.state.engine_start_inhibited and not box.state.doors_locked
    # Its positions show the inhibit from now on.
    await box.send_positions([box.record(now_ms(), 48.85, 2.35)], timeout=TIMEOUT_S)
    r = await gp8.http.get(f"/v1/vehicles/{fleet.vehicle_id}/position", headers=fleet.h("viewer"))
    assert r.json()["position"]["engine_start_inhibited"] is True
    assert r.json()["lock_state"]["engine_start_inhibited"] is True


async def test_expired_before_delivery_is_never_sent(gp8: Gp8, fleet: Fleet) -> None:
    short = await send(gp8, fleet, "lock", ttl_s=1)
    long = await send(gp8, fleet, "locate", ttl_s=600)
    expired = await wait_status(gp8, fleet, short["id"], ["expired"], timeout_s=5.0)
    assert expired["completed_at"] is not None

    box = gp8.box(fleet)
    await box.connect()
    await wait_status(gp8, fleet, long["id"], ["acknowledged"])
    assert [c.command for c in box.commands] == [CommandType.LOCATE]
    assert not box.state.doors_locked
    actions = await audit_actions(gp8, fleet, short["id"])
    assert actions == ["command.requested", "command.expired"]


async def test_now_or_never_fails_at_once_when_the_box_is_offline(gp8: Gp8, fleet: Fleet) -> None:
    offline = await send(gp8, fleet, "locate", ttl_s=0, expect=201)
    assert (offline["status"], offline["failure"]) == ("failed", "box_offline")

    box = gp8.box(fleet)
    await box.connect()
    online = await send(gp8, fleet, "locate", ttl_s=0, expect=201)
    await wait_status(gp8, fleet, online["id"], ["acknowledged"])
    assert [c.seq for c in box.commands] == [online["seq"]]  # the failed one never went


async def test_cancel_only_before_sending(gp8: Gp8, fleet: Fleet) -> None:
    queued = await send(gp8, fleet, "unlock", role="manager")
    # A viewer may not; a manager may cancel what a manager may send.
    r = await gp8.http.delete(f"/v1/commands/{queued['id']}", headers=fleet.h("viewer"))
    assert r.status_code == 403
    r = await gp8.http.delete(f"/v1/commands/{queued['id']}", headers=fleet.h("manager"))
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert r.json()["cancelled_by"] == fleet.api.key_ids["manager"]

    box = gp8.box(fleet)
    await box.connect()
    sent = await send(gp8, fleet, "lock")
    await wait_status(gp8, fleet, sent["id"], ["acknowledged"])
    assert [c.command for c in box.commands] == [CommandType.LOCK]  # the unlock never went
    r = await gp8.http.delete(f"/v1/commands/{sent['id']}", headers=fleet.h())
    assert r.status_code == 409
    assert r.json()["type"] == "urn:gp8:problem:command-state"
    r = await gp8.http.delete(f"/v1/commands/{queued['id']}", headers=fleet.h())
    assert r.status_code == 409  # cancelled already
    actions = await audit_actions(gp8, fleet, queued["id"])
    assert actions == ["command.requested", "command.cancelled"]


async def test_idempotency_key_returns_the_same_command_never_a_second(
    gp8: Gp8, fleet: Fleet
) -> None:
    box = gp8.box(fleet)
    await box.connect()
    key = {"Idempotency-Key": "9b2f7c1e-retry-me"}
    first = await send(gp8, fleet, "lock", headers=key, expect=201)
    r = await gp8.http.post(fleet.commands_url, json={"type": "lock"}, headers={**fleet.h(), **key})
    assert r.status_code == 200 and r.headers["Idempotent-Replayed"] == "true"
    assert r.json()["id"] == first["id"]
    await wait_status(gp8, fleet, first["id"], ["acknowledged"])
    r = await gp8.http.post(fleet.commands_url, json={"type": "lock"}, headers={**fleet.h(), **key})
    assert r.json()["id"] == first["id"] and r.json()["status"] == "acknowledged"
    # The same key for another order is refused, not silently mapped to the first.
    r = await gp8.http.post(
        fleet.commands_url, json={"type": "unlock"}, headers={**fleet.h(), **key}
    )
    assert r.status_code == 422 and r.json()["type"] == "urn:gp8:problem:idempotency-key-reused"
    await gp8.run.commands.settle()  # every delivery started so far is done
    assert len(box.commands) == 1
    r = await gp8.http.get(fleet.commands_url, headers=fleet.h("viewer"))
    assert [c["id"] for c in r.json()["data"]] == [first["id"]]


async def test_failure_reported_by_the_box(gp8: Gp8, fleet: Fleet) -> None:
    def door_open(command: Command, state: BoxState) -> CommandOutcome | None:
        if command.command is CommandType.LOCK:
            return CommandStatus.FAILED, CommandFailure.DOOR_OPEN
        return None

    box = gp8.box(fleet, on_command=door_open)
    await box.connect()
    lock = await send(gp8, fleet, "lock")
    failed = await wait_status(gp8, fleet, lock["id"], ["failed"])
    assert failed["failure"] == "door_open"
    assert failed["result"] == {"doors_locked": False, "engine_start_inhibited": False}
    r = await gp8.http.get("/v1/audit", params={"command_id": lock["id"]}, headers=fleet.h())
    last = r.json()["data"][-1]
    assert last["action"] == "command.failed" and "door_open" in last["detail"]


async def test_gateway_restart_between_sent_and_answer_loses_nothing(
    gp8: Gp8, fleet: Fleet
) -> None:
    executed: list[int] = []
    first_executed = asyncio.Event()

    def lose_first_answer(command: Command, state: BoxState) -> CommandOutcome | None:
        executed.append(command.seq)
        if len(executed) == 1:
            box.cut()  # executes, but the link dies before its COMMAND_RESULT leaves
            first_executed.set()
        return None

    box = gp8.box(fleet, on_command=lose_first_answer)
    await box.connect()
    inhibit = await send(gp8, fleet, "disable_engine_start", ttl_s=600)
    sent = await wait_status(gp8, fleet, inhibit["id"], ["sent"])
    async with asyncio.timeout(TIMEOUT_S):
        await first_executed.wait()
    assert box.state.engine_start_inhibited and sent["status"] == "sent"

    await gp8.restart()  # a deploy: the gateway that sent it is gone
    r = await gp8.http.get(f"/v1/commands/{inhibit['id']}", headers=fleet.h())
    assert r.json()["status"] == "sent"

    await box.connect()
    done = await wait_status(gp8, fleet, inhibit["id"], ["acknowledged"])
    assert done["attempts"] == 2
    # Sent twice with the same number; executed once.
    assert [c.seq for c in box.commands] == [inhibit["seq"], inhibit["seq"]]
    assert executed == [inhibit["seq"]]
    assert done["result"]["engine_start_inhibited"] is True
    actions = await audit_actions(gp8, fleet, inhibit["id"])
    assert actions == [
        "command.requested",
        "command.sent",
        "command.delivered",  # the box's receipt ACK; its answer was lost
        "command.sent",
        "command.acknowledged",
    ]
