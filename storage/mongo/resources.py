"""Fleets, API keys, vehicles and the access log on MongoDB."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Collection
from typing import TypeVar

from pymongo import ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession

from storage.errors import Conflict, NotFound
from storage.latest import vehicle_subject
from storage.models import AccessLogEntry, ApiKey, Fleet, Page, Vehicle, new_id, now_ms
from storage.mongo import documents as docs
from storage.mongo.audit_chain import (
    MAX_ATTEMPTS,
    ChainRace,
    chain_fleets,
    insert_chained,
    read_chain,
)
from storage.mongo.db import BULK_DELETE_TIMEOUT_S, Doc, MongoDb
from storage.mongo.query import ASC, after, keyset
from storage.mongo.schema import (
    ACCESS_LOG,
    DEVICES,
    FITTINGS,
    FLEET_COLLECTIONS,
    FLEETS,
    KEYS,
    LAST_POSITIONS,
    VEHICLES,
)
from storage.mongo.transactions import ServerTransactions, Transactions
from storage.pagination import decode_cursor, id_key, make_page, order_kind, page_limit

T = TypeVar("T")
# A write given the transaction's session, or None outside one.
Write = Callable[[AsyncClientSession | None], Awaitable[T]]


class MongoFleets:
    def __init__(self, db: MongoDb) -> None:
        self._db = db

    async def create(self, name: str) -> Fleet:
        fleet = Fleet(id=new_id("flt"), name=name, created_ms=now_ms())
        await self._db.call(self._db.collection(FLEETS).insert_one(docs.fleet_doc(fleet)))
        return fleet

    async def get(self, fleet_id: str) -> Fleet:
        return docs.to_fleet(
            await self._db.find_one(FLEETS, {"_id": fleet_id}, f"fleet {fleet_id}")
        )

    async def list(self, *, cursor: str | None = None, limit: int = 100) -> Page[Fleet]:
        limit = page_limit(limit)
        found = await self._db.find(
            FLEETS, after(["_id"], id_key(cursor, "fleet")), [("_id", ASC)], limit + 1
        )
        return make_page([docs.to_fleet(d) for d in found], limit, "fleet", lambda f: (f.id,))

    async def delete(self, fleet_id: str) -> None:
        await self._db.require_fleet(fleet_id)
        # No multi-document transaction (a standalone server has none): the fleet document
        # goes last, so an erasure interrupted half way is finished by simply calling it again.
        for name in FLEET_COLLECTIONS:
            await self._db.call(
                self._db.collection(name).delete_many({"fleet_id": fleet_id}),
                timeout_s=BULK_DELETE_TIMEOUT_S,
            )
        await self._db.call(self._db.collection(FLEETS).delete_one({"_id": fleet_id}))


class MongoKeys:
    def __init__(self, db: MongoDb) -> None:
        self._db = db

    async def create(self, key: ApiKey) -> ApiKey:
        if key.fleet_id is not None:
            await self._db.require_fleet(key.fleet_id)
        # A second key with this id or hash fails on a unique index: DuplicateKeyError, Conflict.
        await self._db.call(self._db.collection(KEYS).insert_one(docs.key_doc(key)))
        return key

    async def get_by_hash(self, key_hash: str) -> ApiKey | None:
        doc = await self._db.call(self._db.collection(KEYS).find_one({"key_hash": key_hash}))
        return None if doc is None else docs.to_key(doc)

    async def get(self, fleet_id: str | None, key_id: str) -> ApiKey:
        # fleet_id None matches the null stored for operator keys, never a fleet's key.
        doc = await self._db.find_one(KEYS, {"_id": key_id, "fleet_id": fleet_id}, f"key {key_id}")
        return docs.to_key(doc)

    async def list(
        self, fleet_id: str | None, *, cursor: str | None = None, limit: int = 100
    ) -> Page[ApiKey]:
        limit = page_limit(limit)
        query = {"fleet_id": fleet_id, **after(["_id"], id_key(cursor, "key"))}
        found = await self._db.find(KEYS, query, [("_id", ASC)], limit + 1)
        return make_page([docs.to_key(d) for d in found], limit, "key", lambda k: (k.id,))

    async def touch(self, key_id: str, at_ms: int, *, every_ms: int) -> None:
        stale: Doc = {"$or": [{"last_used_ms": None}, {"last_used_ms": {"$lte": at_ms - every_ms}}]}
        await self._db.call(
            self._db.collection(KEYS).update_one(
                {"_id": key_id, **stale}, {"$set": {"last_used_ms": at_ms}}
            )
        )

    async def revoke(self, fleet_id: str | None, key_id: str, at_ms: int) -> ApiKey:
        # Only a key not yet revoked is updated, so the first revocation time stays.
        doc = await self._db.call(
            self._db.collection(KEYS).find_one_and_update(
                {"_id": key_id, "fleet_id": fleet_id, "revoked_ms": None},
                {"$set": {"revoked_ms": at_ms}},
                return_document=ReturnDocument.AFTER,
            )
        )
        if doc is None:  # revoked already, or not there at all
            return await self.get(fleet_id, key_id)
        return docs.to_key(doc)


async def write_logged(
    db: MongoDb,
    transactions: Transactions,
    write: Write[T],
    log: AccessLogEntry | None,
    *,
    complete: Callable[[AccessLogEntry, T], AccessLogEntry] | None = None,
) -> T:
    """``write`` and the request's access-log entry ``log`` (VehicleRepo): in one transaction
    where the deployment has them (run again when another writer took the chain's next link);
    else the write, then the entry, as two writes: a write that fails logs nothing, and only a
    crash between the two leaves a write without its entry. ``complete``: the entry made
    whole from the write's result (what only the write finds out). Without an entry the write
    is still one transaction where there are some: a fit touches three collections."""

    def completed(result: T) -> AccessLogEntry | None:
        return log if log is None or complete is None else complete(log, result)

    if not await transactions.available():
        result = await write(None)
        if (entry := completed(result)) is not None:
            await insert_chained(db, ACCESS_LOG, entry, docs.access_doc)
        return result
    results: list[T] = []

    async def work(session: AsyncClientSession) -> None:
        results.clear()  # the driver may run it again after a transient error
        results.append(await write(session))
        if (entry := completed(results[0])) is not None:
            await insert_chained(db, ACCESS_LOG, entry, docs.access_doc, session=session)

    for _ in range(MAX_ATTEMPTS):
        try:
            await transactions.run(work)
        except ChainRace:
            continue
        return results[0]
    raise Conflict("the access log chain's head kept moving")


async def find_vehicle(
    db: MongoDb, fleet_id: str, vehicle_id: str, session: AsyncClientSession | None = None
) -> Doc:
    """The fleet's vehicle's document (in ``session``'s transaction, if given); NotFound."""
    query = {"_id": vehicle_id, "fleet_id": fleet_id}
    return await db.find_one(VEHICLES, query, f"vehicle {vehicle_id}", session=session)


class MongoVehicles:
    def __init__(self, db: MongoDb, transactions: Transactions | None = None) -> None:
        self._db = db
        self._transactions = transactions or ServerTransactions(db)

    async def create(
        self,
        fleet_id: str,
        *,
        vin: str,
        plate: str,
        label: str,
        log: AccessLogEntry | None = None,
    ) -> Vehicle:
        await self._db.require_fleet(fleet_id)
        vehicle = Vehicle(
            id=new_id("veh"),
            fleet_id=fleet_id,
            vin=vin,
            plate=plate,
            label=label,
            created_ms=now_ms(),
        )
        doc = docs.vehicle_doc(vehicle)

        async def insert(session: AsyncClientSession | None) -> Vehicle:
            await self._db.call(self._db.collection(VEHICLES).insert_one(doc, session=session))
            return vehicle

        if log is not None:
            log = dataclasses.replace(log, resource_id=vehicle.id)
        return await write_logged(self._db, self._transactions, insert, log)

    async def get(self, fleet_id: str, vehicle_id: str) -> Vehicle:
        return docs.to_vehicle(await find_vehicle(self._db, fleet_id, vehicle_id))

    async def get_many(self, fleet_id: str, vehicle_ids: Collection[str]) -> dict[str, Vehicle]:
        if not vehicle_ids:
            return {}
        query: Doc = {"_id": {"$in": list(vehicle_ids)}, "fleet_id": fleet_id}
        found = await self._db.find(VEHICLES, query, [("_id", ASC)])
        return {v.id: v for v in map(docs.to_vehicle, found)}

    async def list(
        self,
        fleet_id: str,
        *,
        cursor: str | None = None,
        limit: int = 100,
        vin: str | None = None,
        plate: str | None = None,
        fitted: bool | None = None,
    ) -> Page[Vehicle]:
        limit = page_limit(limit)
        query: Doc = {"fleet_id": fleet_id, **after(["_id"], id_key(cursor, "vehicle"))}
        if vin is not None:
            query["vin"] = vin
        if plate is not None:
            query["plate"] = plate
        if fitted is not None:
            query["device_id"] = {"$ne": None} if fitted else None
        found = await self._db.find(VEHICLES, query, [("_id", ASC)], limit + 1)
        return make_page([docs.to_vehicle(d) for d in found], limit, "vehicle", lambda v: (v.id,))

    async def update(
        self,
        fleet_id: str,
        vehicle_id: str,
        *,
        vin: str | None = None,
        plate: str | None = None,
        label: str | None = None,
        log: AccessLogEntry | None = None,
    ) -> Vehicle:
        changes = {
            name: value
            for name, value in (("vin", vin), ("plate", plate), ("label", label))
            if value is not None
        }

        async def update(session: AsyncClientSession | None) -> Vehicle:
            if not changes:
                return docs.to_vehicle(await find_vehicle(self._db, fleet_id, vehicle_id, session))
            doc = await self._db.call(
                self._db.collection(VEHICLES).find_one_and_update(
                    {"_id": vehicle_id, "fleet_id": fleet_id},
                    {"$set": changes},
                    return_document=ReturnDocument.AFTER,
                    session=session,
                )
            )
            if doc is None:
                raise NotFound(f"vehicle {vehicle_id}")
            return docs.to_vehicle(doc)

        return await write_logged(self._db, self._transactions, update, log)

    async def delete(
        self, fleet_id: str, vehicle_id: str, at_ms: int, *, log: AccessLogEntry | None = None
    ) -> None:
        async def delete(session: AsyncClientSession | None) -> None:
            vehicle = docs.to_vehicle(await find_vehicle(self._db, fleet_id, vehicle_id, session))
            if vehicle.device_id is not None:
                fittings = self._db.collection(FITTINGS)
                current = await self._db.call(
                    fittings.find_one({"vehicle_id": vehicle_id, "to_ms": None}, session=session)
                )
                if current is not None:
                    # A delete must not fail on a clock behind the fitting start: end it where
                    # it began rather than before.
                    to_ms = max(at_ms, current["from_ms"])
                    await self._db.call(
                        fittings.update_one(
                            {"_id": current["_id"]}, {"$set": {"to_ms": to_ms}}, session=session
                        )
                    )
                await self._db.call(
                    self._db.collection(DEVICES).update_one(
                        {"_id": vehicle.device_id}, {"$set": {"vehicle_id": None}}, session=session
                    )
                )
            await self._db.call(
                self._db.collection(VEHICLES).delete_one({"_id": vehicle_id}, session=session)
            )
            # The last position is derived state of the vehicle; its positions stay (history).
            await self._db.call(
                self._db.collection(LAST_POSITIONS).delete_one(
                    {"_id": vehicle_subject(vehicle_id)}, session=session
                )
            )

        await write_logged(self._db, self._transactions, delete, log)


class MongoAccessLog:
    def __init__(self, db: MongoDb) -> None:
        self._db = db

    async def append(self, entry: AccessLogEntry) -> None:
        await insert_chained(self._db, ACCESS_LOG, entry, docs.access_doc)

    async def chain(
        self, fleet_id: str | None, *, after_seq: int = 0, limit: int = 1000
    ) -> list[AccessLogEntry]:
        return await read_chain(self._db, ACCESS_LOG, docs.to_access, fleet_id, after_seq, limit)

    async def chain_fleets(self) -> list[str | None]:
        return await chain_fleets(self._db, ACCESS_LOG)

    async def list(
        self,
        fleet_id: str | None,
        *,
        from_ms: int = 0,
        to_ms: int = 2**62,
        cursor: str | None = None,
        limit: int = 1000,
        newest_first: bool = False,
    ) -> Page[AccessLogEntry]:
        limit = page_limit(limit)
        tag = order_kind("access", newest_first)
        key = None if cursor is None else decode_cursor(cursor, tag, (int, str))
        seek, sort = keyset(["time_ms", "_id"], key, newest_first=newest_first)
        query: Doc = {"fleet_id": fleet_id, "time_ms": {"$gte": from_ms, "$lt": to_ms}, **seek}
        found = await self._db.find(ACCESS_LOG, query, sort, limit + 1)
        return make_page(
            [docs.to_access(d) for d in found], limit, tag, lambda e: (e.time_ms, e.id)
        )
