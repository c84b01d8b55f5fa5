"""Positions, events and last positions on MongoDB: the ingest hot path.

`store()` of a batch is a handful of round trips whatever its size. On a replica set (or
mongos) it is one transaction: which of the batch's records are stored already (one query per
collection), the new ones inserted, the live stream's log appended, the last positions updated
— records and their announcement committed together, so a crash between them cannot leave a
stored record the stream never tells of. On a standalone server (and the in-memory fake), the
same writes in that order without a transaction: an unordered insert_many per collection whose
duplicate-key errors name the resends, the log after the records, then an ordered bulk_write of
last positions (storage/mongo/stream.py states the window left). Queries name position keys
literally: those are storage.fields.QUERIED_ATTRS, whose stored names are their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter
from typing import Any

from pymongo import UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection

from storage.latest import newest_valid_fixes, vehicle_subject
from storage.models import Event, Page, Position, StoreResult, first_copies, now_ms
from storage.mongo import documents as docs
from storage.mongo.db import BULK_DELETE_TIMEOUT_S, Doc, MongoDb, insert_new
from storage.mongo.query import ASC, keyset
from storage.mongo.schema import EVENTS, LAST_POSITIONS, POSITIONS, VEHICLES
from storage.mongo.stream import MongoStream
from storage.mongo.tracking import held_vehicles
from storage.mongo.transactions import ServerTransactions, Transactions
from storage.pagination import decode_cursor, make_page, order_kind, page_limit
from storage.repository import BBox, MapEntry


class MongoTelemetry:
    def __init__(
        self,
        db: MongoDb,
        stream: MongoStream | None = None,
        transactions: Transactions | None = None,
    ) -> None:
        self._db = db
        self._stream = stream
        self._transactions = transactions or ServerTransactions(db)

    async def store(self, positions: Sequence[Position], events: Sequence[Event]) -> StoreResult:
        if await self._transactions.available():
            return await self._store_in_transaction(positions, events)
        return await self._store_in_order(positions, events)

    async def _store_in_transaction(
        self, positions: Sequence[Position], events: Sequence[Event]
    ) -> StoreResult:
        position_docs = [docs.position_doc(p) for p in positions]
        event_docs = [docs.event_doc(e) for e in events]
        outcome: list[StoreResult] = []

        async def work(session: AsyncClientSession) -> None:
            # Run again from the start when the driver retries a transient error: nothing of
            # an aborted attempt counts.
            outcome.clear()
            dup_positions = await _insert_unstored(
                self._db.collection(POSITIONS), position_docs, session
            )
            dup_events = await _insert_unstored(self._db.collection(EVENTS), event_docs, session)
            resent_p = _resent(positions, dup_positions, _POSITION_KEY)
            resent_e = _resent(events, dup_events, _EVENT_KEY)
            if self._stream is not None:
                await self._stream.append(
                    [
                        *first_copies(positions, resent_p, _POSITION_KEY),
                        *first_copies(events, resent_e, _EVENT_KEY),
                    ],
                    session=session,
                )
            newest = newest_valid_fixes(positions)
            if newest:
                self._db.round_trips += 1
                await self._db.collection(LAST_POSITIONS).bulk_write(
                    _last_position_ops(newest), ordered=True, session=session
                )
            outcome.append(
                _result(positions, events, (dup_positions, dup_events), (resent_p, resent_e))
            )

        await self._transactions.run(work)
        return outcome[-1]

    async def _store_in_order(
        self, positions: Sequence[Position], events: Sequence[Event]
    ) -> StoreResult:
        dup_positions: list[int] = []
        dup_events: list[int] = []
        if positions:
            dup_positions = await self._db.call(
                insert_new(
                    self._db.collection(POSITIONS), [docs.position_doc(p) for p in positions]
                )
            )
        if events:
            dup_events = await self._db.call(
                insert_new(self._db.collection(EVENTS), [docs.event_doc(e) for e in events])
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
        return _result(positions, events, (dup_positions, dup_events), (resent_p, resent_e))

    async def last_position(self, fleet_id: str, vehicle_id: str) -> Position | None:
        doc = await self._db.call(
            self._db.collection(LAST_POSITIONS).find_one(
                {"_id": vehicle_subject(vehicle_id), "fleet_id": fleet_id}
            )
        )
        return None if doc is None else docs.to_position(doc)

    async def last_positions(self, fleet_id: str, *, bbox: BBox | None = None) -> list[Position]:
        found = await self._db.find(LAST_POSITIONS, _in_fleet_area(fleet_id, bbox), _BY_VEHICLE)
        return [docs.to_position(d) for d in found]

    async def fleet_map(self, fleet_id: str, *, bbox: BBox | None = None) -> list[MapEntry]:
        # The last positions, then only the names of their vehicles, by primary key: two
        # indexed finds, where a $lookup would be the same lookups in a pipeline.
        found = await self._db.find(LAST_POSITIONS, _in_fleet_area(fleet_id, bbox), _BY_VEHICLE)
        if not found:
            return []
        names = await self._db.find(
            VEHICLES,
            {"_id": {"$in": [d["vehicle_id"] for d in found]}, "fleet_id": fleet_id},
            [("_id", ASC)],
            projection={"plate": 1, "label": 1},
        )
        by_id = {v["_id"]: (v["plate"], v["label"]) for v in names}
        entries = []
        for doc in found:
            named = by_id.get(doc["vehicle_id"])
            if named is not None:  # else deleted since its last fix
                entries.append(MapEntry(doc["vehicle_id"], *named, docs.to_position(doc)))
        return entries

    async def positions(
        self,
        fleet_id: str,
        vehicle_id: str,
        *,
        from_ms: int,
        to_ms: int,
        cursor: str | None = None,
        limit: int = 1000,
        newest_first: bool = False,
    ) -> Page[Position]:
        limit = page_limit(limit)
        kind = order_kind("position", newest_first)
        key = None if cursor is None else decode_cursor(cursor, kind, (int, str))
        seek, sort = keyset(["time_ms", "device_id"], key, newest_first=newest_first)
        query: Doc = {
            "fleet_id": fleet_id,
            "vehicle_id": vehicle_id,
            "time_ms": {"$gte": from_ms, "$lt": to_ms},
            **seek,
        }
        found = await self._db.find(POSITIONS, query, sort, limit + 1)
        return make_page(
            [docs.to_position(d) for d in found],
            limit,
            kind,
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
        newest_first: bool = False,
    ) -> Page[Event]:
        limit = page_limit(limit)
        kind = order_kind("event", newest_first)
        key = None if cursor is None else decode_cursor(cursor, kind, (int, str, str))
        seek, sort = keyset(["time_ms", "device_id", "code"], key, newest_first=newest_first)
        query: Doc = {"fleet_id": fleet_id, "time_ms": {"$gte": from_ms, "$lt": to_ms}, **seek}
        if vehicle_id is not None:
            query["vehicle_id"] = vehicle_id
        if code is not None:
            query["code"] = code
        found = await self._db.find(EVENTS, query, sort, limit + 1)
        return make_page(
            [docs.to_event(d) for d in found],
            limit,
            kind,
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


def _result(
    positions: Sequence[Position],
    events: Sequence[Event],
    not_inserted: tuple[list[int], list[int]],
    resent: tuple[frozenset[Any], frozenset[Any]],
) -> StoreResult:
    dup_positions, dup_events = not_inserted
    return StoreResult(
        positions_inserted=len(positions) - len(dup_positions),
        positions_duplicate=len(dup_positions),
        events_inserted=len(events) - len(dup_events),
        events_duplicate=len(dup_events),
        duplicate_positions=resent[0],
        duplicate_events=resent[1],
    )


def _resent(records: Sequence[Any], duplicates: list[int], key: Any) -> frozenset[Any]:
    """Keys of the records refused as duplicates that no earlier copy in the batch stored:
    those were resends of an earlier batch; the others, second copies within this one."""
    if not duplicates:
        return frozenset()
    refused = set(duplicates)
    stored_now = {key(r) for i, r in enumerate(records) if i not in refused}
    return frozenset(k for k in (key(records[i]) for i in duplicates) if k not in stored_now)


async def _insert_unstored(
    collection: AsyncCollection[Doc], documents: list[Doc], session: AsyncClientSession
) -> list[int]:
    """In a transaction, where a duplicate-key error would abort it: ask which _ids are stored
    already, insert the others (each _id once); return the indexes of the documents not
    inserted (stored before, or a second copy within the batch), as `insert_new` does."""
    if not documents:
        return []
    ids = [d["_id"] for d in documents]
    stored = {
        d["_id"] async for d in collection.find({"_id": {"$in": ids}}, {"_id": 1}, session=session)
    }
    fresh: list[Doc] = []
    skipped: list[int] = []
    for index, doc in enumerate(documents):
        if doc["_id"] in stored:
            skipped.append(index)
        else:
            stored.add(doc["_id"])
            fresh.append(doc)
    if fresh:
        await collection.insert_many(fresh, ordered=False, session=session)
    return skipped


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


_BY_VEHICLE = [("vehicle_id", ASC)]


def _in_fleet_area(fleet_id: str, bbox: BBox | None) -> Doc:
    """The query of the fleet's vehicles' last positions in ``bbox``."""
    # Boxes without a vehicle have last positions too, but this lists vehicles only.
    query: Doc = {"fleet_id": fleet_id, "vehicle_id": {"$ne": None}}
    if bbox is not None:
        min_lon, min_lat, max_lon, max_lat = bbox
        query["lat"] = {"$gte": min_lat, "$lte": max_lat}
        if min_lon <= max_lon:
            query["lon"] = {"$gte": min_lon, "$lte": max_lon}
        else:  # a box across the antimeridian (GeoJSON, RFC 7946 §5.2)
            query["$or"] = [{"lon": {"$gte": min_lon}}, {"lon": {"$lte": max_lon}}]
    return query
