"""Shared counters on MongoDB (storage/counters.py): one document per counter name.

``{_id: name, fleet_id, rev, buckets: [[bucket_ms, n], ...]}``. "Count, compare, add" is a
compare-and-set on ``rev``: read, decide, write back only if nobody wrote in between, else
read again. A single-document write is atomic on a replica set and on a sharded cluster alike
(the collection shards on ``_id``), so no transaction is needed, and the fake runs it as is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from storage.counters import CounterWindow, Increment
from storage.errors import Conflict, StorageUnavailable
from storage.mongo.db import MongoDb
from storage.mongo.schema import COUNTERS

# Writers racing on one counter retry; this many lost races in a row means something is wrong
# (a counter written by thousands of requests at once), and the caller gets StorageUnavailable.
MAX_ATTEMPTS = 16


class MongoCounters:
    def __init__(self, db: MongoDb) -> None:
        self._db = db

    async def take(
        self, name: str, *, fleet_id: str | None, limit: int, window: CounterWindow, now_ms: int
    ) -> int | None:
        return await self._change(name, fleet_id, 1, window, now_ms, limit=limit)

    async def add(
        self, increments: Sequence[Increment], *, window: CounterWindow, now_ms: int
    ) -> dict[str, int]:
        totals: dict[str, int] = {}
        for inc in increments:
            total = await self._change(inc.name, inc.fleet_id, inc.n, window, now_ms)
            assert total is not None  # no limit: never refused
            totals[inc.name] = total
        return totals

    async def _change(
        self,
        name: str,
        fleet_id: str | None,
        n: int,
        window: CounterWindow,
        now_ms: int,
        *,
        limit: int | None = None,
    ) -> int | None:
        counters = self._db.collection(COUNTERS)
        oldest = window.oldest(now_ms)
        bucket = window.bucket(now_ms)
        for _ in range(MAX_ATTEMPTS):
            doc = await self._db.call(counters.find_one({"_id": name}))
            kept: list[list[int]] = [
                [b, c] for b, c in (doc["buckets"] if doc else []) if b > oldest
            ]
            total = sum(c for _, c in kept)
            if limit is not None and total >= limit:
                return None
            if n == 0:
                return total
            for entry in kept:
                if entry[0] == bucket:
                    entry[1] += n
                    break
            else:
                kept.append([bucket, n])
            fields: dict[str, Any] = {"fleet_id": fleet_id, "buckets": kept}
            if doc is None:
                try:
                    await self._db.call(counters.insert_one({"_id": name, "rev": 1, **fields}))
                except Conflict:
                    continue  # another process created it first: read it
                return total + n
            result = await self._db.call(
                counters.update_one(
                    {"_id": name, "rev": doc["rev"]},
                    {"$set": {**fields, "rev": doc["rev"] + 1}},
                )
            )
            if result.matched_count == 1:
                return total + n
        raise StorageUnavailable(f"counter {name}: {MAX_ATTEMPTS} lost races in a row")
