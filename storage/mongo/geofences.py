"""Geofences, their per-vehicle states and crossings on MongoDB (indexes: schema.INDEXES).

Documents never leave this module. A fence is stored with its GeoJSON as a sub-document; a
state's ``_id`` is ``"<vehicle_id>:<geofence_id>"``; a crossing is unique on (fence, vehicle,
time, kind), so saving it twice keeps one copy.

`save` without transactions: crossings first, then states, and only for fences that still
exist (looked up in the same call), so the handler working from its cached fences does not
bring back the states of a fence just deleted. A delete racing between that look-up and the
writes can leave a state behind; the handler never reads it (its fence is gone) and the
fleet's erasure removes it.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any

from pymongo import UpdateOne

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
from storage.mongo.db import BULK_DELETE_TIMEOUT_S, Doc, MongoDb, insert_new
from storage.mongo.query import ASC, after, keyset
from storage.mongo.schema import GEOFENCE_EVENTS, GEOFENCE_STATES, GEOFENCES
from storage.mongo.tracking import held_vehicles
from storage.pagination import decode_cursor, id_key, make_page, order_kind, page_limit


class MongoGeofences:
    def __init__(self, db: MongoDb) -> None:
        self._db = db

    def _col(self, name: str) -> Any:
        return self._db.collection(name)

    async def create(self, fence: Geofence) -> Geofence:
        await self._db.require_fleet(fence.fleet_id)
        await self._db.call(self._col(GEOFENCES).insert_one(fence_doc(fence)))
        return fence

    async def get(self, fleet_id: str, geofence_id: str) -> Geofence:
        doc = await self._db.find_one(
            GEOFENCES, {"_id": geofence_id, "fleet_id": fleet_id}, f"geofence {geofence_id}"
        )
        return to_fence(doc)

    async def list(
        self, fleet_id: str, *, cursor: str | None = None, limit: int = 100
    ) -> Page[Geofence]:
        limit = page_limit(limit)
        query: Doc = {"fleet_id": fleet_id, **after(["_id"], id_key(cursor, "geofence"))}
        found = await self._db.find(GEOFENCES, query, [("_id", ASC)], limit + 1)
        return make_page([to_fence(d) for d in found], limit, "geofence", lambda f: (f.id,))

    async def count(self, fleet_id: str) -> int:
        count: int = await self._db.call(
            self._col(GEOFENCES).count_documents({"fleet_id": fleet_id})
        )
        return count

    async def replace(self, fence: Geofence) -> Geofence:
        doc = fence_doc(fence)
        del doc["created_ms"]  # the stored creation time stays
        result = await self._db.call(
            self._col(GEOFENCES).update_one(
                {"_id": fence.id, "fleet_id": fence.fleet_id}, {"$set": doc}
            )
        )
        if result.matched_count == 0:
            raise NotFound(f"geofence {fence.id}")
        if fence.vehicle_ids is not None:
            await self._db.call(
                self._col(GEOFENCE_STATES).delete_many(
                    {"geofence_id": fence.id, "vehicle_id": {"$nin": list(fence.vehicle_ids)}}
                )
            )
        return fence

    async def delete(self, fleet_id: str, geofence_id: str) -> None:
        result = await self._db.call(
            self._col(GEOFENCES).delete_one({"_id": geofence_id, "fleet_id": fleet_id})
        )
        if result.deleted_count == 0:
            raise NotFound(f"geofence {geofence_id}")
        await self._db.call(self._col(GEOFENCE_STATES).delete_many({"geofence_id": geofence_id}))

    async def states(self, fleet_id: str, vehicle_id: str) -> builtins.list[GeofenceState]:
        found = await self._db.find(
            GEOFENCE_STATES,
            {"fleet_id": fleet_id, "vehicle_id": vehicle_id},
            [("geofence_id", ASC)],
        )
        return [to_state(d) for d in found]

    async def save(
        self, states: Sequence[GeofenceState], events: Sequence[GeofenceEvent] = ()
    ) -> None:
        if not (states or events):
            return
        keys = {(s.fleet_id, s.geofence_id) for s in states} | {
            (e.fleet_id, e.geofence_id) for e in events
        }
        existing = await self._db.find(
            GEOFENCES,
            {"_id": {"$in": sorted({fence_id for _, fence_id in keys})}},
            [("_id", ASC)],
            projection={"fleet_id": 1},
        )
        alive = {(d["fleet_id"], d["_id"]) for d in existing}
        new_events = [event_doc(e) for e in events if (e.fleet_id, e.geofence_id) in alive]
        if new_events:
            await self._db.call(insert_new(self._col(GEOFENCE_EVENTS), new_events))
        ops = [op for s in states if (s.fleet_id, s.geofence_id) in alive for op in _state_ops(s)]
        if ops:
            await self._db.call(self._col(GEOFENCE_STATES).bulk_write(ops, ordered=True))

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
        tag = order_kind("geofence_event", newest_first)
        key = None if cursor is None else decode_cursor(cursor, tag, (int, str))
        seek, sort = keyset(["time_ms", "_id"], key, newest_first=newest_first)
        query: Doc = {"fleet_id": fleet_id, "time_ms": {"$gte": from_ms, "$lt": to_ms}, **seek}
        if geofence_id is not None:
            query["geofence_id"] = geofence_id
        if vehicle_id is not None:
            query["vehicle_id"] = vehicle_id
        found = await self._db.find(GEOFENCE_EVENTS, query, sort, limit + 1)
        return make_page([to_event(d) for d in found], limit, tag, lambda e: (e.time_ms, e.id))

    async def purge_before(self, fleet_id: str, before_ms: int) -> int:
        # Kept for a vehicle under a legal hold, like its positions (storage/mongo/telemetry.py).
        query: Doc = {"fleet_id": fleet_id, "time_ms": {"$lt": before_ms}}
        held = await held_vehicles(self._db, fleet_id, now_ms())
        if held:
            query["vehicle_id"] = {"$nin": held}
        result = await self._db.call(
            self._col(GEOFENCE_EVENTS).delete_many(query), timeout_s=BULK_DELETE_TIMEOUT_S
        )
        deleted: int = result.deleted_count
        return deleted


def _state_ops(state: GeofenceState) -> list[UpdateOne]:
    """Create the state if missing, then overwrite it unless a newer decision is stored: the
    two-step upsert of the last positions (storage/mongo/telemetry.py says why not one)."""
    doc = state_doc(state)
    state_id = doc.pop("_id")
    return [
        UpdateOne({"_id": state_id}, {"$setOnInsert": doc}, upsert=True),
        UpdateOne({"_id": state_id, "checked_ms": {"$lte": state.checked_ms}}, {"$set": doc}),
    ]


# --- documents <-> models ----------------------------------------------------------------------


def _schedule_doc(schedule: GeofenceSchedule | None) -> Doc | None:
    if schedule is None:
        return None
    return {
        "timezone": schedule.timezone,
        "days": list(schedule.days),
        "from": schedule.start,
        "to": schedule.end,
    }


def fence_doc(fence: Geofence) -> Doc:
    return {
        "_id": fence.id,
        "fleet_id": fence.fleet_id,
        "name": fence.name,
        "geometry": fence.geometry,
        "radius_m": fence.radius_m,
        "vehicle_ids": None if fence.vehicle_ids is None else list(fence.vehicle_ids),
        "schedule": _schedule_doc(fence.schedule),
        "margin_m": fence.margin_m,
        "dwell_s": fence.dwell_s,
        "speed_limit_kmh": fence.speed_limit_kmh,
        "created_ms": fence.created_ms,
        "updated_ms": fence.updated_ms,
    }


def to_fence(doc: Doc) -> Geofence:
    schedule = doc.get("schedule")
    vehicle_ids = doc.get("vehicle_ids")
    return Geofence(
        id=doc["_id"],
        fleet_id=doc["fleet_id"],
        name=doc["name"],
        geometry=dict(doc["geometry"]),
        created_ms=doc["created_ms"],
        updated_ms=doc["updated_ms"],
        radius_m=doc.get("radius_m"),
        vehicle_ids=None if vehicle_ids is None else tuple(vehicle_ids),
        schedule=None
        if schedule is None
        else GeofenceSchedule(
            timezone=schedule["timezone"],
            days=tuple(schedule["days"]),
            start=schedule["from"],
            end=schedule["to"],
        ),
        margin_m=doc["margin_m"],
        dwell_s=doc["dwell_s"],
        speed_limit_kmh=doc.get("speed_limit_kmh"),
    )


def state_doc(state: GeofenceState) -> Doc:
    return {
        "_id": f"{state.vehicle_id}:{state.geofence_id}",
        "fleet_id": state.fleet_id,
        "vehicle_id": state.vehicle_id,
        "geofence_id": state.geofence_id,
        "side": state.side.value,
        "since_ms": state.since_ms,
        "candidate": None if state.candidate is None else state.candidate.value,
        "candidate_ms": state.candidate_ms,
        "checked_ms": state.checked_ms,
    }


def to_state(doc: Doc) -> GeofenceState:
    candidate = doc.get("candidate")
    return GeofenceState(
        fleet_id=doc["fleet_id"],
        vehicle_id=doc["vehicle_id"],
        geofence_id=doc["geofence_id"],
        side=FenceSide(doc["side"]),
        since_ms=doc["since_ms"],
        candidate=None if candidate is None else FenceSide(candidate),
        candidate_ms=doc.get("candidate_ms"),
        checked_ms=doc["checked_ms"],
    )


def event_doc(event: GeofenceEvent) -> Doc:
    return {
        "_id": event.id,
        "fleet_id": event.fleet_id,
        "vehicle_id": event.vehicle_id,
        "device_id": event.device_id,
        "geofence_id": event.geofence_id,
        "kind": event.kind.value,
        "time_ms": event.time_ms,
        "lat": event.lat,
        "lon": event.lon,
    }


def to_event(doc: Doc) -> GeofenceEvent:
    return GeofenceEvent(
        id=doc["_id"],
        fleet_id=doc["fleet_id"],
        vehicle_id=doc["vehicle_id"],
        device_id=doc["device_id"],
        geofence_id=doc["geofence_id"],
        kind=GeofenceEventKind(doc["kind"]),
        time_ms=doc["time_ms"],
        lat=doc["lat"],
        lon=doc["lon"],
    )
