"""The database handle every Mongo repository shares: the one boundary driver calls cross.

Every call that goes to the server passes through `MongoDb.call`, which counts it (the
benchmark reports round trips per 1,000 positions), bounds it with a client-side operation
timeout, and translates driver errors.
"""

from __future__ import annotations

from collections.abc import Awaitable, Coroutine
from typing import Any, Literal, TypeVar

import pymongo
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from storage.errors import NotFound, StorageUnavailable
from storage.mongo.errors import DUPLICATE_KEY, translate_errors
from storage.mongo.schema import FLEETS

T = TypeVar("T")
State = Literal["new", "open", "closed"]
Doc = dict[str, Any]

# Default bound of each driver call, applied with pymongo.timeout (client-side operation
# timeout): it covers server selection (replacing serverSelectionTimeoutMS), connection
# checkout and server execution, and is sent as maxTimeMS so the server gives up too. Longer
# than an ingest bulk write takes on a healthy replica set, short enough that the gateway's
# queue does not fill up behind a dead server.
OPERATION_TIMEOUT_S = 10.0
# Deleting a fleet's telemetry (erasure, retention) is one delete_many over possibly millions of
# documents.
BULK_DELETE_TIMEOUT_S = 600.0


class MongoDb:
    def __init__(self, database: AsyncDatabase[Doc], *, operation_timeout_s: float) -> None:
        self.database = database
        self.operation_timeout_s = operation_timeout_s
        self.round_trips = 0
        self.state: State = "new"  # -> "open" (indexes made) -> "closed"

    def collection(self, name: str) -> AsyncCollection[Doc]:
        return self.database.get_collection(name)

    async def call(self, op: Awaitable[T], *, timeout_s: float | None = None) -> T:
        """Await one driver operation (one round trip) at the error boundary."""
        if self.state != "open":
            if isinstance(op, Coroutine):  # do not leave a never-awaited coroutine behind
                op.close()
            raise StorageUnavailable(f"mongo store is {self.state}, not open")
        return await self.call_unchecked(op, timeout_s=timeout_s)

    async def call_unchecked(self, op: Awaitable[T], *, timeout_s: float | None = None) -> T:
        """`call` before the store is open: for `start()` itself."""
        self.round_trips += 1
        with translate_errors(), pymongo.timeout(timeout_s or self.operation_timeout_s):
            return await op

    async def find_one(
        self,
        collection: str,
        query: Doc,
        what: str,
        *,
        session: AsyncClientSession | None = None,
    ) -> Doc:
        """The document matching ``query`` (in ``session``'s transaction, if given); NotFound
        when there is none."""
        doc = await self.call(self.collection(collection).find_one(query, session=session))
        if doc is None:
            raise NotFound(what)
        return doc

    async def find(
        self,
        collection: str,
        query: Doc,
        sort: list[tuple[str, int]],
        limit: int = 0,
        *,
        projection: Doc | None = None,
    ) -> list[Doc]:
        cursor = self.collection(collection).find(query, projection).sort(sort)
        if limit:
            cursor = cursor.limit(limit)
        docs: list[Doc] = await self.call(cursor.to_list())
        return docs

    async def require_fleet(self, fleet_id: str) -> None:
        await self.find_one(FLEETS, {"_id": fleet_id}, f"fleet {fleet_id}")


async def insert_new(collection: AsyncCollection[Doc], documents: list[Doc]) -> list[int]:
    """Insert what is not stored yet; return the indexes of those that were already stored.

    Unordered, so one duplicate does not stop the rest of the batch; the server reports each
    duplicate _id (or other unique key) as a write error with code 11000, which here just means
    "stored before" (a resend). Any other write error, or a write concern error, is a real
    failure and propagates (`MongoDb.call` translates it). Positions and events, geofence
    crossings and webhook deliveries are idempotent through it.
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
