"""The live stream's log on MongoDB (storage/stream.py says what it is for).

A fleet's block numbers come from its counter document (``stream_seq``, one atomic ``$inc`` per
append), then the blocks are inserted: two writes, so between them another process may make a
later block visible first. Readers handle that hole (storage/stream.py `page`).
The log is written after the records it reports, so a stream client never sees a record that
was not stored. On a replica set, telemetry's store writes records and log in one transaction
(``append(..., session=)``); on a standalone server, if the process dies between the two writes
the stream misses those records (the box's resend is then a duplicate and is not announced
again) — a narrow window, stated in docs/storage.md.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Collection, Sequence
from typing import Any, TypeVar

from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession

from storage import stream
from storage.errors import CursorExpired
from storage.models import StreamKind, StreamPage, now_ms
from storage.mongo import documents as docs
from storage.mongo.db import Doc, MongoDb
from storage.mongo.schema import POSITIONS
from storage.mongo.stream_schema import STREAM, STREAM_SEQ

T = TypeVar("T")


class MongoStream:
    def __init__(self, db: MongoDb) -> None:
        self._db = db

    async def append(
        self, items: Sequence[Any], *, session: AsyncClientSession | None = None
    ) -> None:
        """Log ``items``. With ``session``, in the caller's transaction: its writes carry the
        session and driver errors reach the transaction's runner untranslated (it retries the
        transient ones, then translates)."""
        if not items:
            return
        created_ms = now_ms()
        by_fleet: defaultdict[str, list[Any]] = defaultdict(list)
        for item in items:
            by_fleet[item.fleet_id].append(item)
        docs: list[Doc] = []
        for fleet_id, fleet_items in by_fleet.items():
            blocks = stream.pack(fleet_items)
            counter = await self._write(
                self._db.collection(STREAM_SEQ).find_one_and_update(
                    {"_id": fleet_id},
                    {
                        "$inc": {"block": len(blocks)},
                        "$setOnInsert": {"pruned": 0, "fleet_id": fleet_id},
                    },
                    upsert=True,
                    return_document=ReturnDocument.AFTER,
                    session=session,
                ),
                session,
            )
            assert counter is not None  # an upsert returning the document after
            last = int(counter["block"])
            for number, (count, data) in enumerate(blocks, start=last - len(blocks) + 1):
                docs.append(
                    {
                        "fleet_id": fleet_id,
                        "block": number,
                        "created_ms": created_ms,
                        "n": count,
                        "data": _bson_ready(data),
                    }
                )
        await self._write(
            self._db.collection(STREAM).insert_many(docs, ordered=False, session=session), session
        )

    async def _write(self, operation: Awaitable[T], session: AsyncClientSession | None) -> T:
        if session is None:
            return await self._db.call(operation)
        self._db.round_trips += 1
        return await operation

    async def after(
        self,
        fleet_id: str,
        cursor: int,
        *,
        kinds: Collection[StreamKind] | None = None,
        vehicle_id: str | None = None,
        limit: int = 1000,
    ) -> StreamPage:
        limit = max(1, min(limit, stream.MAX_PAGE))
        pruned = await self.horizon(fleet_id)
        if cursor < pruned:
            raise CursorExpired(cursor, pruned)
        block, _ = stream.split_cursor(cursor)
        query = {"fleet_id": fleet_id, "block": {"$gte": block}}
        found = await self._db.find(STREAM, query, [("block", ASCENDING)], limit + 1)
        blocks = [(d["block"], d["created_ms"], d["data"]) for d in found]
        page = stream.page(
            blocks,
            fleet_id,
            cursor,
            kinds=kinds,
            vehicle_id=vehicle_id,
            limit=limit,
            now_ms=now_ms(),
        )
        wanted = stream.refs(page)
        if not wanted:
            return page
        ids = [docs.position_id(r.device_id, r.time_ms) for r in wanted]
        query = {"_id": {"$in": ids}, "fleet_id": fleet_id}
        found_docs = await self._db.find(POSITIONS, query, [("_id", ASCENDING)])
        positions = [docs.to_position(d) for d in found_docs]
        by_ref = {stream.PositionRef(p.device_id, p.time_ms): p for p in positions}
        return stream.resolved(page, by_ref)

    async def head(self, fleet_id: str) -> int:
        # The last block that is visible: blocks numbered but not yet inserted do not count.
        found = await self._db.find(STREAM, {"fleet_id": fleet_id}, [("block", -1)], 1)
        if found:
            return stream.last_cursor(found[0]["block"], found[0]["n"])
        return await self.horizon(fleet_id)

    async def horizon(self, fleet_id: str) -> int:
        doc: Doc | None = await self._db.call(
            self._db.collection(STREAM_SEQ).find_one({"_id": fleet_id})
        )
        return int(doc.get("pruned", 0)) if doc else 0

    async def prune(self, before_ms: int) -> int:
        entries = self._db.collection(STREAM)
        old = {"created_ms": {"$lt": before_ms}}
        last_gone: dict[str, int] = {}
        removed = 0
        async for doc in entries.find(old, {"fleet_id": 1, "block": 1, "n": 1}):
            removed += doc["n"]
            horizon = stream.last_cursor(doc["block"], doc["n"])
            if horizon > last_gone.get(doc["fleet_id"], 0):
                last_gone[doc["fleet_id"]] = horizon
        for fleet_id, horizon in last_gone.items():
            # The horizon before the deletion: a reader never sees entries gone without it.
            await self._db.call(
                self._db.collection(STREAM_SEQ).update_one(
                    {"_id": fleet_id},
                    {
                        "$max": {"pruned": horizon},
                        "$setOnInsert": {"block": 0, "fleet_id": fleet_id},
                    },
                    upsert=True,
                )
            )
        await self._db.call(entries.delete_many(old))
        return removed


def _bson_ready(data: Any) -> Any:
    """Tuples become lists (BSON has arrays only)."""
    if isinstance(data, tuple | list):
        return [_bson_ready(x) for x in data]
    if isinstance(data, dict):
        return {k: _bson_ready(v) for k, v in data.items()}
    return data
