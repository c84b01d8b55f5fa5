"""Who may send what, and that another fleet's vehicles and commands do not exist for a key."""

from __future__ import annotations

from tests.commands.conftest import OPERATOR, Fleet, Gp8, send

# type -> (body extras, lowest role allowed)
COMMANDS: dict[str, tuple[dict[str, object], str]] = {
    "lock": ({}, "manager"),
    "unlock": ({}, "manager"),
    "locate": ({}, "manager"),
    "disable_engine_start": ({}, "admin"),
    "enable_engine_start": ({}, "admin"),
    "set_report_interval": ({"params": {"seconds": 30}}, "admin"),
    "reboot": ({}, "admin"),
}
RANK = {"viewer": 0, "manager": 1, "admin": 2}


async def test_role_matrix_for_every_command_type(gp8: Gp8, fleet: Fleet) -> None:
    # One gp8 for the whole matrix: starting one per case would cost more than the cases.
    for type_, (extra, lowest) in COMMANDS.items():
        for role in ("viewer", "manager", "admin"):
            allowed = RANK[role] >= RANK[lowest]
            r = await gp8.http.post(
                fleet.commands_url, json={"type": type_, **extra}, headers=fleet.h(role)
            )
            if allowed:
                assert r.status_code == 201, (type_, role, r.text)
                assert r.json()["type"] == type_ and r.json()["status"] == "queued"
                assert r.json()["requested_by"] == fleet.api.key_ids[role]
            else:
                assert r.status_code == 403, (type_, role, r.text)
                assert r.json()["type"] == "urn:gp8:problem:forbidden"
        # The operator runs the platform, not the fleets' vehicles.
        r = await gp8.http.post(fleet.commands_url, json={"type": type_, **extra}, headers=OPERATOR)
        assert r.status_code == 403, type_
        r = await gp8.http.get(
            fleet.commands_url, params={"type": type_}, headers=fleet.h("viewer")
        )
        expected = sum(RANK[role] >= RANK[lowest] for role in RANK)
        assert len(r.json()["data"]) == expected, type_


async def test_another_fleets_vehicle_and_commands_are_404(
    gp8: Gp8, fleet: Fleet, other_fleet: Fleet
) -> None:
    mine = await send(gp8, fleet, "lock")
    for role in ("viewer", "manager", "admin"):
        theirs = other_fleet.h(role)
        r = await gp8.http.post(fleet.commands_url, json={"type": "lock"}, headers=theirs)
        assert r.status_code == 404, (role, r.text)
        r = await gp8.http.post(
            fleet.commands_url, json={"type": "disable_engine_start"}, headers=theirs
        )
        assert r.status_code == 404, (role, r.text)  # 404 before any role check
        assert (await gp8.http.get(fleet.commands_url, headers=theirs)).status_code == 404
        r = await gp8.http.get(f"/v1/commands/{mine['id']}", headers=theirs)
        assert r.status_code == 404
        r = await gp8.http.delete(f"/v1/commands/{mine['id']}", headers=theirs)
        assert r.status_code == 404
        r = await gp8.http.post(f"/v1/commands/{mine['id']}/approve", headers=theirs)
        assert r.status_code == 404
    r = await gp8.http.get("/v1/commands", headers=other_fleet.h("viewer"))
    assert r.json()["data"] == []
    r = await gp8.http.get(
        "/v1/audit", params={"vehicle_id": fleet.vehicle_id}, headers=other_fleet.h()
    )
    assert r.status_code == 200 and r.json()["data"] == []
    r = await gp8.http.get(f"/v1/commands/{mine['id']}", headers=fleet.h("viewer"))
    assert r.json()["status"] == "queued"  # nothing of theirs touched it


async def test_audit_log_is_for_admins(gp8: Gp8, fleet: Fleet) -> None:
    await send(gp8, fleet, "lock", reason="theft suspected", theft_case_id="PD-7")
    for role in ("viewer", "manager"):
        r = await gp8.http.get("/v1/audit", headers=fleet.h(role))
        assert r.status_code == 403
    r = await gp8.http.get("/v1/audit", params={"vehicle_id": fleet.vehicle_id}, headers=fleet.h())
    assert r.status_code == 200
    (entry,) = r.json()["data"]
    assert (entry["action"], entry["reason"], entry["theft_case_id"]) == (
        "command.requested",
        "theft suspected",
        "PD-7",
    )


INVALID: list[tuple[dict[str, object], str]] = [
    ({"type": "custom", "params": {"raw": "G8..."}}, "'custom'"),
    ({"type": "set_report_interval"}, "params"),
    ({"type": "set_report_interval", "params": {"seconds": 4}}, "seconds"),
    ({"type": "set_report_interval", "params": {"seconds": 3601}}, "seconds"),
    ({"type": "set_report_interval", "params": {"seconds": "60"}}, "seconds"),
    ({"type": "set_report_interval", "params": {"seconds": 60.5}}, "seconds"),
    ({"type": "set_report_interval", "params": {"seconds": 60, "x": 1}}, "x"),
    ({"type": "lock", "params": {"seconds": 60}}, "seconds"),
    ({"type": "lock", "ttl_s": -1}, "ttl_s"),
    ({"type": "lock", "ttl_s": 604_801}, "ttl_s"),
    ({"type": "lock", "reason": "bad\x00byte"}, "reason"),
    ({"type": "lock", "reason": "x" * 501}, "reason"),
    ({"type": "lock", "theft_case_id": "case 7; DROP"}, "theft_case_id"),
    ({"type": "lock", "frame": "4738"}, "frame"),
]


async def test_only_typed_commands_with_valid_parameters(gp8: Gp8, fleet: Fleet) -> None:
    for body, where in INVALID:
        r = await gp8.http.post(fleet.commands_url, json=body, headers=fleet.h())
        assert r.status_code == 422, (body, r.text)
        problem = r.json()
        located = any(where in map(str, e["loc"]) for e in problem["errors"])
        assert located or where in problem["detail"], (body, problem)
    for key in ("has space", "k" * 129):
        r = await gp8.http.post(
            fleet.commands_url,
            headers={**fleet.h(), "Idempotency-Key": key},
            json={"type": "lock"},
        )
        assert r.status_code == 422, key
        assert r.json()["errors"][0]["loc"] == ["header", "Idempotency-Key"]
    r = await gp8.http.get(fleet.commands_url, headers=fleet.h())
    assert r.json()["data"] == []


async def test_a_vehicle_without_a_box_gets_409(gp8: Gp8, fleet: Fleet) -> None:
    r = await gp8.http.delete(f"/v1/vehicles/{fleet.vehicle_id}/device", headers=fleet.h())
    assert r.status_code == 204
    r = await gp8.http.post(fleet.commands_url, json={"type": "lock"}, headers=fleet.h())
    assert r.status_code == 409 and r.json()["type"] == "urn:gp8:problem:no-box-fitted"
