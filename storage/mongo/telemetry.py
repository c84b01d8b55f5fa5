"""Positions, events and last positions on MongoDB: the ingest hot path.

`store()` of a batch is at most three round trips whatever its size: one unordered insert_many
of positions, one of events, one ordered bulk_write of last positions. Queries name position
keys literally: those are storage.fields.QUERIED_ATTRS, whose stored names are their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter
from typing import Any

from pymongo import UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError

from storage.latest import newest_valid_fixes, vehicle_subject
from storage.models import Event, Page, Position, StoreResult, first_copies, now_ms
from storage.mongo import documents as docs
from storage.mongo.db import BULK_DELETE_TIMEOUT_S, Doc, MongoDb
from storage.mongo.errors import DUPLICATE_KEY
from storage.mongo.query import ASC, after
from storage.mongo.schema import EVENTS, LAST_POSITIONS, POSITIONS
from storage.mongo.tracking import held_vehicles
from storage.pagination import decode_cursor, make_page, page_limit
from storage.repository import BBox, StreamRepo


class MongoTelemetry:
    def __init__(self, db: MongoDb, stream: StreamRepo | None = None) -> None:
        self._db = db
        self._stream = stream

    async def store(self, positions: Sequence[Position], events: Sequence[Event]) -> StoreResult:
        dup_positions: list[int] = []
        dup_events: list[int] = []
        if positions:
            dup_positions = await self._db.call(
                _insert_new(
                    self._db.collection(POSITIONS), [docs.position_doc(p) for p in positions]
                )
            )
        if events:
            dup_events = await self._db.call(
                _insert_new(self._db.collection(EVENTS), [docs.event_doc(e) for e in events])
            )
        resent_p = _resent(positions, dup_positions, _POSITION_KEY)
        resent_e = _resent(events, dup_events, _EVENT_KEY)
        if self._stream is not None:
            # After the records: a stream client never sees one that was not stored.
            await self._stream.append(
                [
                    *first_copies(positions, resent_p, _POSITION_KEY),
                    *first_copies(events, resent_e, _EVENT_KEY),
                ]
            )
        # Every valid fix is offered, resends included: if a failure ever separated a position
        # from its last-position update, the store() was not acknowledged, the box resends, and
        # this repairs it (the update is idempotent).
        newest = newest_valid_fixes(positions)
        if newest:
            await self._db.call(
                self._db.collection(LAST_POSITIONS).bulk_write(
                    _last_position_ops(newest), ordered=True
                )
            )
        return StoreResult(
            positions_inserted=len(positions) - len(dup_positions),
            positions_duplicate=len(dup_positions),
            events_inserted=len(events) - len(dup_events),
            events_duplicate=len(dup_events),
            duplicate_positions=resent_p,
            duplicate_events=resent_e,
        )

    async def last_position(self, fleet_id: str, vehicle_id: str) -> Position | None:
        doc = await self._db.call(
            self._db.collection(LAST_POSITIONS).find_one(
                {"_id": vehicle_subject(vehicle_id), "fleet_id": fleet_id}
            )
        )
        return None if doc is None else docs.to_position(doc)

    async def last_positions(self, fleet_id: str, *, bbox: BBox | None = None) -> list[Position]:
        # Boxes without a vehicle have last positions too, but this lists vehicles only.
        query: Doc = {"fleet_id": fleet_id, "vehicle_id": {"$ne": None}}
        if bbox is not None:
            min_lon, min_lat, max_lon, max_lat = bbox
            query["lat"] = {"$gte": min_lat, "$lte": max_lat}
            if min_lon <= max_lon:
                query["lon"] = {"$gte": min_lon, "$lte": max_lon}
            else:  # a box across the antimeridian (GeoJSON, RFC 7946 §5.2)
                query["$or"] = [{"lon": {"$gte": min_lon}}, {"lon": {"$lte": max_lon}}]
        found = await self._db.find(LAST_POSITIONS, query, [("vehicle_id", ASC)])
        return [docs.to_position(d) for d in found]

    async def positions(
        self,
        fleet_id: str,
        vehicle_id: str,
        *,
        from_ms: int,
        to_ms: int,
        cursor: str | None = None,
        limit: int = 1000,
    ) -> Page[Position]:
        limit = page_limit(limit)
        key = None if cursor is None else decode_cursor(cursor, "position", (int, str))
        query: Doc = {
            "fleet_id": fleet_id,
            "vehicle_id": vehicle_id,
            "time_ms": {"$gte": from_ms, "$lt": to_ms},
            **after(["time_ms", "device_id"], key),
        }
        found = await self._db.find(
            POSITIONS, query, [("time_ms", ASC), ("device_id", ASC)], limit + 1
        )
        return make_page(
            [docs.to_position(d) for d in found],
            limit,
            "position",
            lambda p: (p.time_ms, p.device_id),
        )

    async def events(
        self,
        fleet_id: str,
        *,
        vehicle_id: str | None = None,
        code: str | None = None,
        from_ms: int = 0,
        to_ms: int = 2**62,
        cursor: str | None = None,
        limit: int = 1000,
    ) -> Page[Event]:
        limit = page_limit(limit)
        key = None if cursor is None else decode_cursor(cursor, "event", (int, str, str))
        query: Doc = {
            "fleet_id": fleet_id,
            "time_ms": {"$gte": from_ms, "$lt": to_ms},
            **after(["time_ms", "device_id", "code"], key),
        }
        if vehicle_id is not None:
            query["vehicle_id"] = vehicle_id
        if code is not None:
            query["code"] = code
        sort = [("time_ms", ASC), ("device_id", ASC), ("code", ASC)]
        found = await self._db.find(EVENTS, query, sort, limit + 1)
        return make_page(
            [docs.to_event(d) for d in found],
            limit,
            "event",
            lambda e: (e.time_ms, e.device_id, e.code),
        )

    async def purge_before(self, fleet_id: str, before_ms: int) -> int:
        # A last position is kept however old, in the track too: it is a vehicle's current
        # state, not history (a van parked for a month is still on the map), and the SQLite
        # engine keeps it the same way. Only last positions older than the cut-off matter here.
        old_lasts = await self._db.find(
            LAST_POSITIONS,
            {"fleet_id": fleet_id, "time_ms": {"$lt": before_ms}},
            [("_id", ASC)],
            projection={"device_id": 1, "time_ms": 1},
        )
        keep = [docs.position_id(d["device_id"], d["time_ms"]) for d in old_lasts]
        # A vehicle under a legal hold (a theft case, docs/theft.md) keeps all of its data.
        held = await held_vehicles(self._db, fleet_id, now_ms())
        deleted = 0
        for name in (POSITIONS, EVENTS):
            query: Doc = {"fleet_id": fleet_id, "time_ms": {"$lt": before_ms}}
            if held:
                query["vehicle_id"] = {"$nin": held}
            if name == POSITIONS and keep:
                query["_id"] = {"$nin": keep}
            result = await self._db.call(
                self._db.collection(name).delete_many(query), timeout_s=BULK_DELETE_TIMEOUT_S
            )
            deleted += result.deleted_count
        return deleted


_POSITION_KEY = attrgetter("device_id", "time_ms")
_EVENT_KEY = attrgetter("device_id", "time_ms", "code")


def _resent(records: Sequence[Any], duplicates: list[int], key: Any) -> frozenset[Any]:
    """Keys of the records refused as duplicates that no earlier copy in the batch stored:
    those were resends of an earlier batch; the others, second copies within this one."""
    if not duplicates:
        return frozenset()
    refused = set(duplicates)
    stored_now = {key(r) for i, r in enumerate(records) if i not in refused}
    return frozenset(k for k in (key(records[i]) for i in duplicates) if k not in stored_now)


async def _insert_new(collection: AsyncCollection[Doc], documents: list[Doc]) -> list[int]:
    """Insert what is not stored yet; return the indexes of those that were already stored.

    Unordered, so one duplicate does not stop the rest of the batch; the server reports each
    duplicate _id as a write error with code 11000, which here just means "resent". Any other
    write error, or a write concern error, is a real failure and propagates.
    """
    try:
        await collection.insert_many(documents, ordered=False)
    except BulkWriteError as exc:
        details = exc.details
        write_errors = details.get("writeErrors") or []
        if details.get("writeConcernErrors") or any(
            e.get("code") != DUPLICATE_KEY for e in write_errors
        ):
            raise
        return sorted(e["index"] for e in write_errors)
    return []


def _last_position_ops(newest: dict[str, Position]) -> list[UpdateOne]:
    """Two updates per subject, in this order, in one ordered bulk write:

    1. create the document if it does not exist ($setOnInsert; a no-op on an existing one);
    2. replace it only if it is older than this fix (the time condition).

    Why not one conditional upsert (``{_id, time_ms: {$lt: t}}`` + upsert): when a newer
    document exists, that upsert finds no match, tries to insert a second document with the
    same _id and fails with a duplicate key error, which we would have to tell apart from a
    real one and which would stop an ordered bulk. Here step 1's query is the bare ``_id``, so
    the server retries a concurrent-insert race itself (SERVER-37124) and step 2 never inserts:
    no duplicate key errors, and the newest fix wins whichever of two gateways writes first.
    """
    ops: list[UpdateOne] = []
    for subject, position in newest.items():
        fields = docs.position_fields(position)
        ops.append(UpdateOne({"_id": subject}, {"$setOnInsert": fields}, upsert=True))
        ops.append(
            UpdateOne({"_id": subject, "time_ms": {"$lt": position.time_ms}}, {"$set": fields})
        )
    return ops
