"""Geofences, their per-vehicle states and crossings on SQLite (tables: schema.GEOFENCE_DDL).

Rows never leave this module: GeoJSON, vehicle lists and schedules are JSON text columns,
mapped to `storage.models` here. States and crossings are only written while their fence
exists (``INSERT ... SELECT ... WHERE EXISTS``), in the same transaction: the handler, which
works from a cached copy of the fences, cannot bring back the states of a fence just deleted
or of a fleet just erased.
"""

from __future__ import annotations

import builtins
import sqlite3
from collections.abc import Sequence
from typing import Any

import orjson

from storage.errors import NotFound
from storage.models import (
    FenceSide,
    Geofence,
    GeofenceEvent,
    GeofenceEventKind,
    GeofenceSchedule,
    GeofenceState,
    Page,
    now_ms,
)
from storage.pagination import decode_cursor, id_key, make_page, order_kind, page_limit
from storage.sqlite.db import Database
from storage.sqlite.query import (
    after,
    equal_filters,
    fetch_all,
    fetch_one,
    get_one,
    keyset,
    require_fleet,
)
from storage.sqlite.tracking_schema import HELD_VEHICLES_SQL

Row = tuple[Any, ...]

FENCE_COLUMNS = (
    "id, fleet_id, name, geometry, radius_m, vehicle_ids, schedule, margin_m, dwell_s,"
    " speed_limit_kmh, created_ms, updated_ms"
)
STATE_COLUMNS = (
    "vehicle_id, geofence_id, fleet_id, side, since_ms, candidate, candidate_ms, checked_ms"
)
EVENT_COLUMNS = "id, fleet_id, vehicle_id, device_id, geofence_id, kind, time_ms, lat, lon"

_INSERT_FENCE = f"INSERT INTO geofences ({FENCE_COLUMNS}) VALUES ({', '.join('?' * 12)})"
_UPDATE_FENCE = (
    "UPDATE geofences SET name = ?, geometry = ?, radius_m = ?, vehicle_ids = ?, schedule = ?,"
    " margin_m = ?, dwell_s = ?, speed_limit_kmh = ?, updated_ms = ? WHERE id = ? AND fleet_id = ?"
)
# The WHERE of the SELECT also keeps SQLite's parser from reading ON CONFLICT as a join.
# checked_ms never goes back: a stale writer cannot undo a newer decision.
_UPSERT_STATE = f"""
INSERT INTO geofence_states ({STATE_COLUMNS})
SELECT ?, ?, ?, ?, ?, ?, ?, ?
WHERE EXISTS (SELECT 1 FROM geofences WHERE id = ? AND fleet_id = ?)
ON CONFLICT (vehicle_id, geofence_id) DO UPDATE SET
    side = excluded.side,
    since_ms = excluded.since_ms,
    candidate = excluded.candidate,
    candidate_ms = excluded.candidate_ms,
    checked_ms = excluded.checked_ms
WHERE excluded.checked_ms >= geofence_states.checked_ms
"""
_INSERT_EVENT = f"""
INSERT INTO geofence_events ({EVENT_COLUMNS})
SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?
WHERE EXISTS (SELECT 1 FROM geofences WHERE id = ? AND fleet_id = ?)
ON CONFLICT DO NOTHING
"""


class SqliteGeofences:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, fence: Geofence) -> Geofence:
        await self._db.write(_insert_fence, fence)
        return fence

    async def get(self, fleet_id: str, geofence_id: str) -> Geofence:
        return await self._db.read(_get_fence, fleet_id, geofence_id)

    async def list(
        self, fleet_id: str, *, cursor: str | None = None, limit: int = 100
    ) -> Page[Geofence]:
        limit = page_limit(limit)
        cond, params = after(["id"], id_key(cursor, "geofence"))
        sql = f"SELECT {FENCE_COLUMNS} FROM geofences WHERE fleet_id = ?{cond} ORDER BY id LIMIT ?"
        found = await self._db.read(fetch_all, sql, [fleet_id, *params, limit + 1])
        return make_page([_to_fence(r) for r in found], limit, "geofence", lambda f: (f.id,))

    async def count(self, fleet_id: str) -> int:
        row = await self._db.read(
            fetch_one, "SELECT COUNT(*) FROM geofences WHERE fleet_id = ?", (fleet_id,)
        )
        return int(row[0]) if row else 0

    async def replace(self, fence: Geofence) -> Geofence:
        await self._db.write(_replace_fence, fence)
        return fence

    async def delete(self, fleet_id: str, geofence_id: str) -> None:
        await self._db.write(_delete_fence, fleet_id, geofence_id)

    async def states(self, fleet_id: str, vehicle_id: str) -> builtins.list[GeofenceState]:
        sql = (
            f"SELECT {STATE_COLUMNS} FROM geofence_states"
            " WHERE vehicle_id = ? AND fleet_id = ? ORDER BY geofence_id"
        )
        found = await self._db.read(fetch_all, sql, (vehicle_id, fleet_id))
        return [_to_state(r) for r in found]

    async def save(
        self, states: Sequence[GeofenceState], events: Sequence[GeofenceEvent] = ()
    ) -> None:
        if states or events:
            await self._db.write(_save, list(states), list(events))

    async def events(
        self,
        fleet_id: str,
        *,
        geofence_id: str | None = None,
        vehicle_id: str | None = None,
        from_ms: int = 0,
        to_ms: int = 2**62,
        cursor: str | None = None,
        limit: int = 100,
        newest_first: bool = False,
    ) -> Page[GeofenceEvent]:
        limit = page_limit(limit)
        where = ["fleet_id = ?", "time_ms >= ?", "time_ms < ?"]
        params: list[Any] = [fleet_id, from_ms, to_ms]
        equal_filters(where, params, geofence_id=geofence_id, vehicle_id=vehicle_id)
        tag = order_kind("geofence_event", newest_first)
        key = None if cursor is None else decode_cursor(cursor, tag, (int, str))
        cond, after_params, order = keyset(["time_ms", "id"], key, newest_first=newest_first)
        sql = (
            f"SELECT {EVENT_COLUMNS} FROM geofence_events WHERE {' AND '.join(where)}{cond}"
            f" ORDER BY {order} LIMIT ?"
        )
        found = await self._db.read(fetch_all, sql, [*params, *after_params, limit + 1])
        return make_page([_to_event(r) for r in found], limit, tag, lambda e: (e.time_ms, e.id))

    async def purge_before(self, fleet_id: str, before_ms: int) -> int:
        return await self._db.write(_purge_events, fleet_id, before_ms)


# --- rows <-> models ---------------------------------------------------------------------------


def _json(value: object) -> str:
    return orjson.dumps(value).decode()


def _schedule_json(schedule: GeofenceSchedule | None) -> str | None:
    if schedule is None:
        return None
    return _json(
        {
            "timezone": schedule.timezone,
            "days": list(schedule.days),
            "from": schedule.start,
            "to": schedule.end,
        }
    )


def _to_schedule(text: str | None) -> GeofenceSchedule | None:
    if text is None:
        return None
    stored = orjson.loads(text)
    return GeofenceSchedule(
        timezone=stored["timezone"],
        days=tuple(stored["days"]),
        start=stored["from"],
        end=stored["to"],
    )


def _fence_values(fence: Geofence) -> Row:
    return (
        fence.id,
        fence.fleet_id,
        fence.name,
        _json(fence.geometry),
        fence.radius_m,
        None if fence.vehicle_ids is None else _json(list(fence.vehicle_ids)),
        _schedule_json(fence.schedule),
        fence.margin_m,
        fence.dwell_s,
        fence.speed_limit_kmh,
        fence.created_ms,
        fence.updated_ms,
    )


def _to_fence(row: Row) -> Geofence:
    (
        fence_id,
        fleet_id,
        name,
        geometry,
        radius_m,
        vehicle_ids,
        schedule,
        margin_m,
        dwell_s,
        speed_limit_kmh,
        created_ms,
        updated_ms,
    ) = row
    return Geofence(
        id=fence_id,
        fleet_id=fleet_id,
        name=name,
        geometry=orjson.loads(geometry),
        created_ms=created_ms,
        updated_ms=updated_ms,
        radius_m=radius_m,
        vehicle_ids=None if vehicle_ids is None else tuple(orjson.loads(vehicle_ids)),
        schedule=_to_schedule(schedule),
        margin_m=margin_m,
        dwell_s=dwell_s,
        speed_limit_kmh=speed_limit_kmh,
    )


def _state_values(state: GeofenceState) -> Row:
    return (
        state.vehicle_id,
        state.geofence_id,
        state.fleet_id,
        state.side.value,
        state.since_ms,
        None if state.candidate is None else state.candidate.value,
        state.candidate_ms,
        state.checked_ms,
        state.geofence_id,
        state.fleet_id,
    )


def _to_state(row: Row) -> GeofenceState:
    vehicle_id, geofence_id, fleet_id, side, since_ms, candidate, candidate_ms, checked_ms = row
    return GeofenceState(
        fleet_id=fleet_id,
        vehicle_id=vehicle_id,
        geofence_id=geofence_id,
        side=FenceSide(side),
        since_ms=since_ms,
        candidate=None if candidate is None else FenceSide(candidate),
        candidate_ms=candidate_ms,
        checked_ms=checked_ms,
    )


def _event_values(event: GeofenceEvent) -> Row:
    return (
        event.id,
        event.fleet_id,
        event.vehicle_id,
        event.device_id,
        event.geofence_id,
        event.kind.value,
        event.time_ms,
        event.lat,
        event.lon,
        event.geofence_id,
        event.fleet_id,
    )


def _to_event(row: Row) -> GeofenceEvent:
    event_id, fleet_id, vehicle_id, device_id, geofence_id, kind, time_ms, lat, lon = row
    return GeofenceEvent(
        id=event_id,
        fleet_id=fleet_id,
        vehicle_id=vehicle_id,
        device_id=device_id,
        geofence_id=geofence_id,
        kind=GeofenceEventKind(kind),
        time_ms=time_ms,
        lat=lat,
        lon=lon,
    )


# --- run on the writer / reader thread ---------------------------------------------------------


def _get_fence(conn: sqlite3.Connection, fleet_id: str, geofence_id: str) -> Geofence:
    sql = f"SELECT {FENCE_COLUMNS} FROM geofences WHERE id = ? AND fleet_id = ?"
    return get_one(conn, sql, (geofence_id, fleet_id), _to_fence, f"geofence {geofence_id}")


def _insert_fence(conn: sqlite3.Connection, fence: Geofence) -> None:
    require_fleet(conn, fence.fleet_id)
    conn.execute(_INSERT_FENCE, _fence_values(fence))


def _replace_fence(conn: sqlite3.Connection, fence: Geofence) -> None:
    values = _fence_values(fence)
    # name .. speed_limit_kmh, updated_ms, then the key
    cursor = conn.execute(
        _UPDATE_FENCE, (*values[2:10], fence.updated_ms, fence.id, fence.fleet_id)
    )
    if cursor.rowcount == 0:
        raise NotFound(f"geofence {fence.id}")
    if fence.vehicle_ids is not None:
        conn.execute(
            "DELETE FROM geofence_states WHERE geofence_id = ?"
            " AND vehicle_id NOT IN (SELECT value FROM json_each(?))",
            (fence.id, _json(list(fence.vehicle_ids))),
        )


def _delete_fence(conn: sqlite3.Connection, fleet_id: str, geofence_id: str) -> None:
    cursor = conn.execute(
        "DELETE FROM geofences WHERE id = ? AND fleet_id = ?", (geofence_id, fleet_id)
    )
    if cursor.rowcount == 0:
        raise NotFound(f"geofence {geofence_id}")
    conn.execute("DELETE FROM geofence_states WHERE geofence_id = ?", (geofence_id,))


def _save(
    conn: sqlite3.Connection, states: list[GeofenceState], events: list[GeofenceEvent]
) -> None:
    conn.executemany(_INSERT_EVENT, [_event_values(e) for e in events])
    conn.executemany(_UPSERT_STATE, [_state_values(s) for s in states])


def _purge_events(conn: sqlite3.Connection, fleet_id: str, before_ms: int) -> int:
    # Crossings are location data: retention deletes them like positions, and a vehicle under
    # a legal hold (a theft case, docs/theft.md) keeps them like its positions.
    cursor = conn.execute(
        "DELETE FROM geofence_events WHERE fleet_id = ? AND time_ms < ?"
        f" AND vehicle_id NOT IN ({HELD_VEHICLES_SQL})",
        (fleet_id, before_ms, fleet_id, now_ms()),
    )
    return cursor.rowcount
