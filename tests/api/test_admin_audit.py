"""Admin activity in the hash-chained audit (docs/gdpr.md, "Logging of administrators'
activity"): every write route of the API, driven through the real app, appends a chained entry
naming the caller's key and the action, in the chain it belongs to (the fleet's, or the
platform's for an operator's own acts); `gp8 admin verify-audit` passes on the result, and
editing one of those entries in the database makes it fail at that entry.

`CASES` has a row per write route; `test_cases_cover_every_write_route` fails when a route is
added without one, so a new write route cannot skip the audit unnoticed."""

from __future__ import annotations

import asyncio
import itertools
import json
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from gp8.cli import main
from storage import SQLITE_FILENAME
from storage.models import AlertKind, now_ms
from storage.repository import Store
from tests.api.helpers import OPERATOR_KEY, T0, FleetFixture, bearer, luhn_imei, make_position
from tests.api.test_alerts import raise_incident

ACCESS, COMMANDS = "access_log", "command_audit"
WRITES = {"post", "put", "patch", "delete"}
_serial = itertools.count(1)


@dataclass
class World:
    client: httpx.AsyncClient
    store: Store
    fleet: FleetFixture
    keys: dict[str, tuple[str, str]]  # who -> (secret, key id)
    shared: dict[str, str] = field(default_factory=dict)  # ids handed from case to case

    async def call(
        self,
        method: str,
        url: str,
        who: str = "admin",
        headers: dict[str, str] | None = None,
        **kw: Any,
    ) -> httpx.Response:
        headers = {**bearer(self.keys[who][0]), **(headers or {})}
        return await self.client.request(method, url, headers=headers, **kw)

    async def vehicle(self, *, fitted: bool = True) -> dict[str, str]:
        """A new vehicle, with a new box fitted unless told otherwise."""
        n = next(_serial)
        r = await self.call("POST", "/v1/vehicles", json={"vin": f"WVWZZZ1JZ{n:08d}"})
        assert r.status_code == 201, r.text
        out = {"vehicle_id": r.json()["id"], "imei": luhn_imei(f"35391805{n:06d}")}
        r = await self.call("POST", "/v1/devices", json={"imei": out["imei"], "model": "GP8000"})
        assert r.status_code == 201, r.text
        out["device_id"] = r.json()["id"]
        if fitted:
            r = await self.call(
                "PUT", f"/v1/vehicles/{out['vehicle_id']}/device", json={"imei": out["imei"]}
            )
            assert r.status_code == 200, r.text
        return out

    async def created(self, url: str, body: Any, who: str = "admin") -> str:
        r = await self.call("POST", url, who, json=body)
        assert r.status_code in (200, 201, 202), r.text
        return str(r.json()["id"])


Setup = Callable[[World], Awaitable[dict[str, Any]]]
# The chain an entry lands in, from the path's parameters and the answer: a fleet, or None.
Chain = Callable[[World, dict[str, Any], httpx.Response], str | None]


def _fleet(w: World, params: dict[str, Any], r: httpx.Response) -> str | None:
    return w.fleet.id


def _platform(w: World, params: dict[str, Any], r: httpx.Response) -> str | None:
    return None


def _path_fleet(w: World, params: dict[str, Any], r: httpx.Response) -> str | None:
    return str(params["fleet_id"])


def _created_fleet(w: World, params: dict[str, Any], r: httpx.Response) -> str | None:
    return str(r.json()["id"])


async def _nothing(w: World) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class Case:
    method: str
    path: str  # the route's template, as in the OpenAPI document
    action: str  # the entry's action
    who: str = "admin"
    body: Any = None  # JSON, or a function of the parameters
    setup: Setup = _nothing  # makes what the path names; its parameters
    log: str = ACCESS
    chain: Chain = _fleet
    content: str | None = None  # a raw body instead (CSV)
    reason: str | None = None  # the reason the entry must carry


async def _other_fleet(w: World) -> dict[str, Any]:
    return {"fleet_id": await w.created("/v1/fleets", {"name": "other"}, "operator")}


async def _key(w: World) -> dict[str, Any]:
    body = {"role": "viewer", "name": "Temp", "email": "temp@example.com"}
    return {"key_id": await w.created(f"/v1/fleets/{w.fleet.id}/keys", body)}


async def _alert(w: World) -> dict[str, Any]:
    alert = await raise_incident(w.store, w.fleet, AlertKind.TOWING, T0 + next(_serial))
    return {"alert_id": alert.id}


async def _queued_command(w: World) -> dict[str, Any]:
    url = f"/v1/vehicles/{w.fleet.vehicle_id}/commands"
    return {"command_id": await w.created(url, {"type": "lock"}, "manager")}


async def _pending_command(w: World) -> dict[str, Any]:
    """A command awaiting approval (four-eyes), and a second admin key to approve it."""
    r = await w.call("PUT", f"/v1/fleets/{w.fleet.id}/policy", json={"four_eyes": True})
    assert r.status_code == 200, r.text
    url = f"/v1/vehicles/{w.fleet.vehicle_id}/commands"
    command_id = await w.created(url, {"type": "unlock", "reason": "driver locked out"})
    body = {"role": "admin", "name": "Second", "email": "second@example.com"}
    r = await w.call("POST", f"/v1/fleets/{w.fleet.id}/keys", "operator", json=body)
    w.keys["second_admin"] = (r.json()["key"], r.json()["id"])
    return {"command_id": command_id}


_SQUARE = [[2.35, 48.85], [2.36, 48.85], [2.36, 48.86], [2.35, 48.86], [2.35, 48.85]]
_GEOFENCE = {"name": "Depot", "geometry": {"type": "Polygon", "coordinates": [_SQUARE]}}


async def _geofence(w: World) -> dict[str, Any]:
    return {"geofence_id": await w.created("/v1/geofences", _GEOFENCE, "manager")}


async def _webhook(w: World) -> dict[str, Any]:
    body = {"url": "https://hooks.example/gp8", "kinds": ["position"]}
    return {"webhook_id": await w.created("/v1/webhooks", body)}


_RULE = {"type": "overspeed", "name": "Motorway", "speed_limit_kmh": 130, "min_duration_s": 20}


async def _rule(w: World) -> dict[str, Any]:
    return {"rule_id": await w.created("/v1/alert-rules", _RULE)}


async def _driver(w: World) -> dict[str, Any]:
    body = {"badge": str(700_000 + next(_serial)), "name": "Bo"}
    return {"driver_id": await w.created("/v1/drivers", body, "manager")}


async def _theft_vehicle(w: World) -> dict[str, Any]:
    found = await w.vehicle()
    w.shared["theft_vehicle"] = found["vehicle_id"]
    return found


async def _theft_alert(w: World) -> dict[str, Any]:
    v = await w.vehicle()
    over = {"vehicle_id": v["vehicle_id"], "device_id": v["device_id"]}
    alert = await raise_incident(w.store, w.fleet, AlertKind.SUSPECTED_THEFT, now_ms(), **over)
    return {"alert_id": alert.id}


async def _open_case(w: World) -> dict[str, Any]:
    case = await w.store.theft_cases.open_case(w.fleet.id, w.shared["theft_vehicle"])
    assert case is not None
    return {"case_id": case.id}


async def _fitted_vehicle(w: World) -> dict[str, Any]:
    return await w.vehicle()


async def _unfitted_vehicle(w: World) -> dict[str, Any]:
    return await w.vehicle(fitted=False)


async def _with_position(w: World) -> dict[str, Any]:
    fix = make_position(w.fleet.id, w.fleet.device_id, w.fleet.vehicle_id, now_ms() - 60_000)
    await w.store.telemetry.store([fix], [])
    return {}


def _import_csv() -> str:
    n = next(_serial)
    return (
        "vin,plate,label,imei,model,protocol,fitted_at\n"
        f"WVWZZZ1JZ{n:08d},IMP-{n},van,{luhn_imei(f'35391805{n:06d}')},GP8000,,\n"
    )


_SPAN = {"from": "2020-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}

CASES = [
    # Fleets and keys: the operator's acts on a fleet are in that fleet's chain; erasing a
    # fleet erases its chain, so that act is in the platform's.
    Case("post", "/v1/fleets", "create", "operator", {"name": "new"}, chain=_created_fleet),
    Case(
        "delete", "/v1/fleets/{fleet_id}", "delete", "operator", setup=_other_fleet, chain=_platform
    ),
    Case(
        "post",
        "/v1/fleets/{fleet_id}/keys",
        "create",
        body={"role": "manager", "name": "Ana", "email": "ana@example.com"},
    ),
    Case("delete", "/v1/fleets/{fleet_id}/keys/{key_id}", "revoke", setup=_key),
    Case(
        "post",
        "/v1/fleets/{fleet_id}/offboard",
        "offboard",
        "operator",
        setup=_other_fleet,
        chain=_path_fleet,
    ),
    Case("put", "/v1/fleets/{fleet_id}/retention", "update", body={"positions": 30}),
    # Vehicles, boxes, fittings, imports.
    Case("post", "/v1/vehicles", "create", body=lambda p: {"vin": f"WVWZZZ1JZ{next(_serial):08d}"}),
    Case("patch", "/v1/vehicles/{vehicle_id}", "update", body={"label": "truck"}),
    Case("delete", "/v1/vehicles/{vehicle_id}", "delete", setup=_unfitted_vehicle),
    Case(
        "put",
        "/v1/vehicles/{vehicle_id}/device",
        "fit",
        setup=_unfitted_vehicle,
        body=lambda p: {"imei": p["imei"]},
    ),
    Case("delete", "/v1/vehicles/{vehicle_id}/device", "unfit", setup=_fitted_vehicle),
    Case(
        "post",
        "/v1/devices",
        "create",
        body=lambda p: {"imei": luhn_imei(f"35391805{next(_serial):06d}"), "model": "GP8000"},
    ),
    Case("post", "/v1/imports", "import", content=_import_csv()),
    Case(
        "post",
        "/v1/vehicles/{vehicle_id}/fittings/correct",
        "rectify",
        setup=_unfitted_vehicle,
        body=lambda p: {"device_id": p["fleet_device"], **_SPAN, "reason": "wrong van"},
        reason="wrong van",
    ),
    # Personal data: reads by area, purge, exports, erasure.
    Case("post", "/v1/fleet/positions/search", "read", "viewer", {"bbox": [2.3, 48.8, 2.4, 48.9]}),
    Case("post", "/v1/data/purge", "delete", body={"before": "2000-01-01T00:00:00Z"}),
    Case("post", "/v1/exports", "export", body=lambda p: {"vehicle_id": p["vehicle_id"], **_SPAN}),
    Case(
        "post",
        "/v1/vehicles/{vehicle_id}/erase",
        "erase",
        body={"reason": "subject asked"},
        reason="subject asked",
    ),
    Case(
        "post",
        "/v1/drivers/erase",
        "erase",
        body={"driver_badge": "123456", "reason": "left the company"},
        reason="left the company",
    ),
    # Privacy mode and drivers.
    Case("put", "/v1/vehicles/{vehicle_id}/privacy", "update", "manager", {"schedule": None}),
    Case("put", "/v1/privacy-badge", "update", body={"badge": "4242"}),
    Case("post", "/v1/drivers", "create", "manager", {"badge": "5555", "name": "Ana"}),
    Case("delete", "/v1/drivers/{driver_id}", "delete", "manager", setup=_driver),
    # Command controls: policy (four-eyes, the engine-start cap), the kill switch (the
    # platform's chain), alerts.
    Case(
        "put",
        "/v1/fleets/{fleet_id}/policy",
        "update",
        body={"four_eyes": False, "engine_start_cap_per_hour": 5},
    ),
    Case(
        "put",
        "/v1/platform/kill-switch",
        "update",
        "operator",
        {"engaged": False, "reason": "drill over"},
        chain=_platform,
        reason="drill over",
    ),
    Case(
        "post",
        "/v1/alerts/{alert_id}/clear",
        "clear",
        setup=_alert,
        body={"reason": "box replaced"},
        reason="box replaced",
    ),
    Case("post", "/v1/alerts/{alert_id}/ack", "update", "manager", {"note": "seen"}, setup=_alert),
    # Commands: each step is a line of the command audit (its own chain, the same rules).
    Case(
        "post",
        "/v1/vehicles/{vehicle_id}/commands",
        "command.requested",
        "manager",
        {"type": "lock"},
        log=COMMANDS,
    ),
    Case(
        "post",
        "/v1/commands/bulk",
        "command.requested",
        "manager",
        body=lambda p: {"type": "lock", "vehicle_ids": [p["vehicle_id"]]},
        log=COMMANDS,
    ),
    Case(
        "delete",
        "/v1/commands/{command_id}",
        "command.cancelled",
        "manager",
        setup=_queued_command,
        log=COMMANDS,
    ),
    Case(
        "post",
        "/v1/commands/{command_id}/approve",
        "command.approved",
        "second_admin",
        setup=_pending_command,
        log=COMMANDS,
    ),
    # Geofences, webhooks, alert rules, the badge policy.
    Case("post", "/v1/geofences", "create", "manager", _GEOFENCE),
    Case(
        "patch",
        "/v1/geofences/{geofence_id}",
        "update",
        "manager",
        {"name": "Yard"},
        setup=_geofence,
    ),
    Case("delete", "/v1/geofences/{geofence_id}", "delete", "manager", setup=_geofence),
    Case(
        "post",
        "/v1/webhooks",
        "create",
        body={"url": "https://hooks.example/a", "kinds": ["alert"]},
    ),
    Case("patch", "/v1/webhooks/{webhook_id}", "update", body={"enabled": False}, setup=_webhook),
    Case("delete", "/v1/webhooks/{webhook_id}", "delete", setup=_webhook),
    Case("post", "/v1/alert-rules", "create", body=_RULE),
    Case("patch", "/v1/alert-rules/{rule_id}", "update", body={"enabled": False}, setup=_rule),
    Case("delete", "/v1/alert-rules/{rule_id}", "delete", setup=_rule),
    Case("put", "/v1/badge-policy", "update", body={"require_badge": False, "badges": []}),
    # Theft: the guard, cases (a legal hold), immobilising from a case.
    Case(
        "put",
        "/v1/vehicles/{vehicle_id}/guard",
        "update",
        "manager",
        {"armed": False},
        setup=_with_position,
    ),
    Case("post", "/v1/vehicles/{vehicle_id}/theft", "create", body={}, setup=_theft_vehicle),
    Case("post", "/v1/alerts/{alert_id}/theft", "create", body={}, setup=_theft_alert),
    Case("post", "/v1/theft-cases/{case_id}/immobilise", "create", setup=_open_case),
    Case(
        "post",
        "/v1/theft-cases/{case_id}/close",
        "update",
        body={"outcome": "recovered", "note": "found at the depot"},
        setup=_open_case,
        reason="found at the depot",
    ),
]


# Admin-only reads of the logs themselves and of the keys' owners are logged too (an
# operator's in the platform's chain); the other reads of personal data are proved with their
# routes (test_privacy.py, test_trips_privacy.py: reveals; test_gdpr.py: downloads).
READS = [
    Case("get", "/v1/access-log", "read"),
    Case("get", "/v1/audit", "read"),
    Case("get", "/v1/audit", "read", "operator", chain=_platform),
    # Keys name their owners (name, e-mail): reading them is logged.
    Case("get", "/v1/fleets/{fleet_id}/keys", "read"),
    Case("get", "/v1/fleets/{fleet_id}/keys/{key_id}", "read", setup=_key),
]


def _routes(routes: Iterable[BaseRoute]) -> Iterator[APIRoute]:
    """Every route of the app, those left out of the OpenAPI document included."""
    for route in routes:
        inner = getattr(route, "original_router", None)  # an included router
        if inner is not None:
            yield from _routes(inner.routes)
        elif isinstance(route, APIRoute):
            yield route


def _write_operations(app: FastAPI) -> set[tuple[str, str]]:
    return {
        (method.lower(), route.path)
        for route in _routes(app.routes)
        for method in route.methods or ()
        if method.lower() in WRITES
    }


def test_cases_cover_every_write_route(app: FastAPI) -> None:
    cases = [(c.method, c.path) for c in CASES]
    assert len(cases) == len(set(cases))
    assert set(cases) == _write_operations(app)


class Chains:
    """The last entry seen of every chain of both logs; `new` gives what came since."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._seen: dict[tuple[str, str | None], int] = {}

    async def new(self) -> dict[tuple[str, str | None], list[Any]]:
        found: dict[tuple[str, str | None], list[Any]] = {}
        for log, repo in ((ACCESS, self._store.access_log), (COMMANDS, self._store.audit)):
            for fleet in await repo.chain_fleets():
                after = self._seen.get((log, fleet), 0)
                entries = await repo.chain(fleet, after_seq=after, limit=10_000)
                if entries:
                    found[(log, fleet)] = list(entries)
                    self._seen[(log, fleet)] = entries[-1].seq
        return found


async def _verify(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[Any]]:
    capsys.readouterr()
    argv = ["admin", "--data-dir", str(data_dir), "verify-audit"]
    code = await asyncio.to_thread(main, argv)
    return code, [json.loads(line) for line in capsys.readouterr().out.splitlines()]


async def test_every_write_route_is_chained_then_an_edit_breaks_verify_audit(
    client: httpx.AsyncClient,
    store: Store,
    fleet_a: FleetFixture,
    data_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    r = await client.get("/v1/me", headers=bearer(OPERATOR_KEY))
    keys = {role: (fleet_a.keys[role], fleet_a.key_ids[role]) for role in fleet_a.keys}
    w = World(client, store, fleet_a, {**keys, "operator": (OPERATOR_KEY, r.json()["id"])})
    chains = Chains(store)
    # (log, chain, seq, entry id) of an admin's and of the operator's entry, edited below.
    picked: dict[str, tuple[str, str | None, int, str]] = {}
    for case in [*CASES, *READS]:
        params: dict[str, Any] = {
            "fleet_id": fleet_a.id,
            "vehicle_id": fleet_a.vehicle_id,
            "fleet_device": fleet_a.device_id,
        }
        params.update(await case.setup(w))
        body = case.body(params) if callable(case.body) else case.body
        url = case.path.format(**params)
        await chains.new()  # what the setup wrote
        if case.content is not None:
            csv = {"Content-Type": "text/csv"}
            r = await w.call(case.method, url, case.who, csv, content=case.content.encode())
        else:
            r = await w.call(case.method, url, case.who, json=body)
        assert r.status_code < 300, (case.method, case.path, r.status_code, r.text)
        where = (case.log, case.chain(w, params, r))
        key_id = w.keys[case.who][1]
        entries = (await chains.new()).get(where, [])
        mine = [e for e in entries if e.key_id == key_id and e.action == case.action]
        assert mine, (case.method, case.path, where, entries)
        if case.reason is not None:
            assert any(case.reason in f"{getattr(e, 'reason', '')} {e.detail}" for e in mine)
        entry = mine[0]
        if case.path == "/v1/vehicles/{vehicle_id}/erase":
            picked["admin"] = (case.log, where[1], entry.seq, entry.id)
        if case.path == "/v1/platform/kill-switch":
            picked["operator"] = (case.log, where[1], entry.seq, entry.id)

    code, lines = await _verify(data_dir, capsys)
    assert code == 0, lines
    checked = {(line["log"], line["fleet_id"]) for line in lines}
    assert (ACCESS, fleet_a.id) in checked and (ACCESS, None) in checked

    db = sqlite3.connect(data_dir / SQLITE_FILENAME)
    try:
        for who in ("admin", "operator"):
            log, fleet, seq, entry_id = picked[who]
            with db:
                db.execute(
                    f"UPDATE {log} SET detail = 'nothing happened' WHERE id = ?", (entry_id,)
                )
            code, lines = await _verify(data_dir, capsys)
            assert code == 1
            (broken,) = [line for line in lines if (line["log"], line["fleet_id"]) == (log, fleet)]
            assert broken["broken"] == {
                "seq": seq,
                "entry_id": entry_id,
                "reason": "the entry was altered",
            }, who
    finally:
        db.close()


def test_operator_acts_at_the_database_are_chained(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `gp8 admin` has no key: its entries name none, in the fleet's or the platform's chain.
    def admin(*argv: str) -> tuple[int, list[Any]]:
        code = main(["admin", "--data-dir", str(tmp_path), *argv])
        return code, [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    _, (fleet,) = admin("create-fleet", "--name", "Acme")
    _, (key,) = admin("create-key", "--role", "operator", "--name", "Ops", "--email", "o@x.io")
    assert admin("rotate-secrets-key")[0] == 0
    code, lines = admin("verify-audit")
    assert code == 0
    assert {(line["log"], line["fleet_id"], line["entries"]) for line in lines} == {
        (ACCESS, fleet["id"], 1),  # the fleet's creation
        (ACCESS, None, 2),  # the operator key's, the secrets key's rotation
    }
    db = sqlite3.connect(tmp_path / SQLITE_FILENAME)
    try:
        rows = db.execute(
            "SELECT key_id, action, resource, resource_id FROM access_log WHERE fleet_id IS NULL"
            " ORDER BY seq"
        ).fetchall()
    finally:
        db.close()
    assert rows == [(None, "create", "key", key["id"]), (None, "rotate", "secrets_key", None)]
