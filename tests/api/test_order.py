"""``order=desc`` on every time-ordered listing: newest first, its cursor followed in the same
order, refused by the other order (400 invalid-cursor); position exports stay in time order."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from storage.models import AlertKind, AuditEntry, TheftCaseStatus, new_id
from storage.repository import Store
from tests.api.helpers import T0, FleetFixture, make_event, make_position
from tests.storage.factories import access_entry
from tests.storage.test_alert_rules import incident
from tests.storage.test_commands import command, entry
from tests.storage.test_geofences import crossing, fence
from tests.storage.test_theft import case, hold_of
from tests.storage.test_webhooks import endpoint, queued

# Two rows at each of three instants (ties split by pages of 2 in the middle group).
TIMES = (T0, T0 + 1_000, T0 + 1_000, T0 + 2_000, T0 + 2_000, T0 + 3_000)
RANGE = {"from": str(T0 - 1), "to": str(T0 + 60_000)}


@dataclass(frozen=True)
class Route:
    seed: Callable[[Store, FleetFixture], Awaitable[str]]  # the path to list
    time_field: str
    params: dict[str, str]


async def _positions(store: Store, fx: FleetFixture) -> str:
    await store.telemetry.store(
        [make_position(fx.id, f"dev_{i % 2}", fx.vehicle_id, t) for i, t in enumerate(TIMES)], []
    )
    return f"/v1/vehicles/{fx.vehicle_id}/positions"


async def _events(store: Store, fx: FleetFixture) -> str:
    fixes = [make_position(fx.id, fx.device_id, fx.vehicle_id, t) for t in TIMES]
    codes = ("sos", "tamper")
    await store.telemetry.store([], [make_event(p, codes[i % 2]) for i, p in enumerate(fixes)])
    return "/v1/events"


async def _made_commands(store: Store, fx: FleetFixture) -> None:
    for t in TIMES:
        c = command(fx.id, fx.vehicle_id, fx.device_id, imei=fx.imei, created_ms=t)
        await store.commands.create(c, entry(c))


async def _commands(store: Store, fx: FleetFixture) -> str:
    await _made_commands(store, fx)
    return "/v1/commands"


async def _vehicle_commands(store: Store, fx: FleetFixture) -> str:
    await _made_commands(store, fx)
    return f"/v1/vehicles/{fx.vehicle_id}/commands"


async def _audit(store: Store, fx: FleetFixture) -> str:
    for t in TIMES:
        await store.audit.append(
            AuditEntry(id=new_id("aud"), time_ms=t, fleet_id=fx.id, action="a", actor="k")
        )
    return "/v1/audit"


async def _access_log(store: Store, fx: FleetFixture) -> str:
    for t in TIMES:
        await store.access_log.append(access_entry(fx.id, t))
    return "/v1/access-log"


async def _made_crossings(store: Store, fx: FleetFixture) -> str:
    f = await store.geofences.create(fence(fx.id))
    await store.geofences.save([], [crossing(f, f"veh_{i % 2}", t) for i, t in enumerate(TIMES)])
    return f.id


async def _geofence_events(store: Store, fx: FleetFixture) -> str:
    await _made_crossings(store, fx)
    return "/v1/geofence-events"


async def _fence_crossings(store: Store, fx: FleetFixture) -> str:
    return f"/v1/geofences/{await _made_crossings(store, fx)}/events"


async def _theft_cases(store: Store, fx: FleetFixture) -> str:
    for i, t in enumerate(TIMES):
        c = case(fx.id, f"veh_{i}", t, status=TheftCaseStatus.CLOSED)
        await store.theft_cases.create(c, hold_of(c))
    return "/v1/theft-cases"


async def _deliveries(store: Store, fx: FleetFixture) -> str:
    hook = await store.webhooks.create(endpoint(fx.id))
    await queued(store, hook, *range(1, len(TIMES) + 1))
    return f"/v1/webhooks/{hook.id}/deliveries"


async def _alerts(store: Store, fx: FleetFixture) -> str:
    for i, t in enumerate(TIMES):
        await store.alerts.trigger(incident(fx.id, f"veh_{i}", AlertKind.SOS, t))
    return "/v1/alerts"


ROUTES: dict[str, Route] = {
    "positions": Route(_positions, "time", RANGE),
    "events": Route(_events, "time", RANGE),
    "commands": Route(_commands, "created_at", RANGE),
    "vehicle commands": Route(_vehicle_commands, "created_at", RANGE),
    "audit": Route(_audit, "time", RANGE),
    "access log": Route(_access_log, "time", RANGE),
    "geofence events": Route(_geofence_events, "time", RANGE),
    "geofence crossings": Route(_fence_crossings, "time", RANGE),
    "theft cases": Route(_theft_cases, "opened_at", {}),
    "webhook deliveries": Route(_deliveries, "cursor", {}),
    "alerts": Route(_alerts, "raised_at", RANGE),
}


async def _walk(
    client: httpx.AsyncClient, fx: FleetFixture, path: str, params: dict[str, str]
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(len(TIMES) + 1):
        query = {**params, "limit": "2", **({"cursor": cursor} if cursor else {})}
        r = await client.get(path, params=query, headers=fx.h("admin"))
        assert r.status_code == 200, r.text
        items += r.json()["data"]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("pagination does not end")


@pytest.mark.parametrize("name", sorted(ROUTES))
async def test_order_desc_lists_newest_first_and_keeps_its_cursors(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture, name: str
) -> None:
    route = ROUTES[name]
    path = await route.seed(store, fleet_a)
    oldest = await _walk(client, fleet_a, path, {**route.params, "order": "asc"})
    newest = await _walk(client, fleet_a, path, {**route.params, "order": "desc"})
    assert len(oldest) == len(TIMES)
    times = [item[route.time_field] for item in oldest]
    assert times == sorted(times) and times[0] != times[-1]
    assert newest == oldest[::-1]

    for made, other in (("desc", "asc"), ("asc", "desc")):
        r = await client.get(
            path, params={**route.params, "order": made, "limit": "2"}, headers=fleet_a.h("admin")
        )
        cursor = r.json()["next_cursor"]
        r = await client.get(
            path,
            params={**route.params, "order": other, "cursor": cursor},
            headers=fleet_a.h("admin"),
        )
        assert r.status_code == 400, r.text
        assert r.json()["type"] == "urn:gp8:problem:invalid-cursor"


async def test_order_defaults_keep_each_listing_as_it_was(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture
) -> None:
    path = await _events(store, fleet_a)
    r = await client.get(path, params=RANGE, headers=fleet_a.h())
    assert [e["time"] for e in r.json()["data"]] == [
        e["time"] for e in await _walk(client, fleet_a, path, {**RANGE, "order": "asc"})
    ]
    path = await _deliveries(store, fleet_a)
    r = await client.get(path, headers=fleet_a.h())
    assert [d["cursor"] for d in r.json()["data"]] == list(range(len(TIMES), 0, -1))


@pytest.mark.parametrize("fmt", ["csv", "gpx", "geojson"])
async def test_position_exports_refuse_order_desc(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture, fmt: str
) -> None:
    path = await _positions(store, fleet_a)
    r = await client.get(
        path, params={**RANGE, "format": fmt, "order": "desc"}, headers=fleet_a.h()
    )
    assert r.status_code == 422, r.text
    assert "exports" in r.json()["detail"] and "time order" in r.json()["detail"]
    r = await client.get(path, params={**RANGE, "format": fmt, "order": "asc"}, headers=fleet_a.h())
    assert r.status_code == 200, r.text


async def test_events_csv_follows_order_desc(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture
) -> None:
    path = await _events(store, fleet_a)
    rows = {}
    for order in ("asc", "desc"):
        r = await client.get(
            path, params={**RANGE, "format": "csv", "order": order}, headers=fleet_a.h()
        )
        assert r.status_code == 200, r.text
        rows[order] = r.text.strip().splitlines()[1:]
    assert len(rows["asc"]) == len(TIMES) and rows["desc"] == rows["asc"][::-1]


async def test_order_takes_only_asc_or_desc(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    r = await client.get("/v1/events", params={"order": "newest"}, headers=fleet_a.h())
    assert r.status_code == 422, r.text
