"""Boxes, their fitting history and connection state on MongoDB.

Fitting touches three collections (fittings, vehicles, devices): one multi-document
transaction with its access-log entry where the deployment has them (a replica set), else
separate writes, which a standalone server and the test fake leave no other way. Every check
runs before the first write, the open fitting is written before the links that mirror it, and
each write is safe to repeat, so a fit interrupted half way is completed by repeating it.
"""

from __future__ import annotations

import builtins
import dataclasses

from pymongo import UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession

from storage.errors import Conflict, NotFound
from storage.models import (
    AccessLogEntry,
    Device,
    DeviceConnection,
    DeviceModel,
    DeviceProtocol,
    DeviceStatus,
    Fitting,
    Page,
    naming_box,
    new_id,
    now_ms,
)
from storage.mongo import documents as docs
from storage.mongo.db import Doc, MongoDb
from storage.mongo.query import ASC, after
from storage.mongo.resources import find_vehicle, write_logged
from storage.mongo.schema import CONNECTIONS, DEVICES, FITTINGS, VEHICLES
from storage.mongo.transactions import ServerTransactions, Transactions
from storage.pagination import id_key, make_page, page_limit
from storage.secrets import SecretBox, device_context


class MongoDevices:
    """The LOGIN secret is sealed in the document (storage/secrets.py), opened here."""

    def __init__(
        self, db: MongoDb, secrets: SecretBox, transactions: Transactions | None = None
    ) -> None:
        self._db = db
        self._secrets = secrets
        self._transactions = transactions or ServerTransactions(db)

    def _to_device(self, doc: Doc) -> Device:
        device = docs.to_device(doc)
        return dataclasses.replace(
            device, secret=self._secrets.open(device.secret, device_context(device.id))
        )

    async def create(
        self,
        fleet_id: str,
        *,
        imei: str,
        model: DeviceModel,
        secret: str,
        protocol: DeviceProtocol = DeviceProtocol.GP8,
        log: AccessLogEntry | None = None,
    ) -> Device:
        await self._db.require_fleet(fleet_id)
        device = Device(
            id=new_id("dev"),
            fleet_id=fleet_id,
            imei=imei,
            model=model,
            secret=secret,
            created_ms=now_ms(),
            status=DeviceStatus.ACTIVE,
            protocol=protocol,
        )
        # The unique IMEI index makes a second box with this IMEI a DuplicateKeyError: Conflict.
        sealed = self._secrets.seal(device.secret, device_context(device.id))
        doc = docs.device_doc(dataclasses.replace(device, secret=sealed))

        async def insert(session: AsyncClientSession | None) -> Device:
            await self._db.call(self._db.collection(DEVICES).insert_one(doc, session=session))
            return device

        if log is not None:
            log = dataclasses.replace(log, resource_id=device.id)
        return await write_logged(self._db, self._transactions, insert, log)

    async def get(self, fleet_id: str, device_id: str) -> Device:
        doc = await self._db.find_one(
            DEVICES, {"_id": device_id, "fleet_id": fleet_id}, f"device {device_id}"
        )
        return self._to_device(doc)

    async def get_by_imei(self, imei: str) -> Device | None:
        doc = await self._db.call(self._db.collection(DEVICES).find_one({"imei": imei}))
        return None if doc is None else self._to_device(doc)

    async def list(
        self,
        fleet_id: str,
        *,
        cursor: str | None = None,
        limit: int = 100,
        imei: str | None = None,
        model: DeviceModel | None = None,
        fitted: bool | None = None,
        protocol: DeviceProtocol | None = None,
    ) -> Page[Device]:
        limit = page_limit(limit)
        query: Doc = {"fleet_id": fleet_id}
        if protocol is DeviceProtocol.GP8:
            # Documents written before devices had a protocol lack the key: they are GP8 boxes.
            query["protocol"] = {"$in": [protocol.value, None]}
        elif protocol is not None:
            query["protocol"] = protocol.value
        query.update(after(["_id"], id_key(cursor, "device")))
        if imei is not None:
            query["imei"] = imei
        if model is not None:
            query["model"] = model.value
        if fitted is not None:
            query["vehicle_id"] = {"$ne": None} if fitted else None
        found = await self._db.find(DEVICES, query, [("_id", ASC)], limit + 1)
        return make_page([self._to_device(d) for d in found], limit, "device", lambda d: (d.id,))

    async def fit(
        self,
        fleet_id: str,
        vehicle_id: str,
        imei: str,
        at_ms: int,
        *,
        log: AccessLogEntry | None = None,
    ) -> Fitting:
        async def fit(session: AsyncClientSession | None) -> Fitting:
            await find_vehicle(self._db, fleet_id, vehicle_id, session)
            device = await self._db.find_one(
                DEVICES,
                {"imei": imei, "fleet_id": fleet_id},
                f"device with IMEI {imei}",
                session=session,
            )
            device_id: str = device["_id"]
            of_device = await self._open_fitting("device_id", device_id, session)
            if of_device is not None and of_device[1].vehicle_id == vehicle_id:
                return of_device[1]  # already fitted there: keep the history as it is
            of_vehicle = await self._open_fitting("vehicle_id", vehicle_id, session)
            current = [f for f in (of_device, of_vehicle) if f is not None]
            for _, fitting in current:
                _check_end(fitting, at_ms)
            fitting = Fitting(
                fleet_id=fleet_id, device_id=device_id, vehicle_id=vehicle_id, from_ms=at_ms
            )
            # The box leaves its old vehicle and the vehicle loses its old box, at the same
            # instant.
            for fitting_id, old in current:
                await self._end(fitting_id, old, at_ms, session)
            await self._db.call(
                self._db.collection(FITTINGS).insert_one(
                    docs.fitting_doc(new_id("fit"), fitting), session=session
                )
            )
            await self._link(device_id, vehicle_id, session)
            return fitting

        return await write_logged(self._db, self._transactions, fit, log, complete=naming_box)

    async def unfit(
        self, fleet_id: str, vehicle_id: str, at_ms: int, *, log: AccessLogEntry | None = None
    ) -> Fitting:
        async def unfit(session: AsyncClientSession | None) -> Fitting:
            await find_vehicle(self._db, fleet_id, vehicle_id, session)
            current = await self._open_fitting("vehicle_id", vehicle_id, session)
            if current is None:
                raise NotFound(f"no box fitted to vehicle {vehicle_id}")
            fitting_id, fitting = current
            _check_end(fitting, at_ms)
            return await self._end(fitting_id, fitting, at_ms, session)

        return await write_logged(self._db, self._transactions, unfit, log, complete=naming_box)

    async def fittings(self, device_id: str) -> builtins.list[Fitting]:
        found = await self._db.find(
            FITTINGS, {"device_id": device_id}, [("from_ms", ASC), ("_id", ASC)]
        )
        # Fittings that begin in the same millisecond: the ended one came first.
        fittings = [docs.to_fitting(d) for d in found]
        return sorted(fittings, key=lambda f: (f.from_ms, f.to_ms is None, f.to_ms or 0))

    async def set_connection(self, connection: DeviceConnection) -> None:
        await self.set_connections([connection])

    async def set_connections(self, connections: builtins.list[DeviceConnection]) -> None:
        # The newest state per box: the writes of one unordered bulk may land in any order.
        newest: dict[str, DeviceConnection] = {}
        for c in connections:
            if c.device_id not in newest or c.version >= newest[c.device_id].version:
                newest[c.device_id] = c
        if not newest:
            return
        found = await self._db.find(
            DEVICES, {"_id": {"$in": sorted(newest)}}, [("_id", ASC)], projection={"fleet_id": 1}
        )
        # Boxes deleted while connected have nothing to attach a state to: left out, with no
        # error to fail the gateway's disconnect path with. "Newest observation wins" in one
        # conditional upsert each: when the stored version is newer the filter matches nothing,
        # the upsert's insert hits the _id and the write is dropped (several gateway processes
        # write this document).
        ops = [
            UpdateOne(
                {"_id": d["_id"], "version": {"$lte": newest[d["_id"]].version}},
                {"$set": docs.connection_fields(newest[d["_id"]], d["fleet_id"])},
                upsert=True,
            )
            for d in found
        ]
        if not ops:
            return
        try:
            # Unordered: a stale state (its upsert hits the _id of a newer document) does not
            # stop the others.
            await self._db.call(self._db.collection(CONNECTIONS).bulk_write(ops, ordered=False))
        except Conflict:
            return  # every failed upsert met a newer observation: nothing else failed

    async def touch_connections(
        self, gateway_id: str, device_ids: builtins.list[str], seen_ms: int
    ) -> dict[str, str]:
        if not device_ids:
            return {}
        connections = self._db.collection(CONNECTIONS)
        # Only documents this gateway still holds online: one taken over stays the other's.
        await self._db.call(
            connections.update_many(
                {"_id": {"$in": device_ids}, "gateway_id": gateway_id, "online": True},
                {"$set": {"seen_ms": seen_ms}},
            )
        )
        taken = await self._db.find(
            CONNECTIONS,
            {
                "_id": {"$in": device_ids},
                "online": True,
                "gateway_id": {"$nin": [gateway_id, None]},
            },
            [("_id", ASC)],
            projection={"gateway_id": 1},
        )
        return {d["_id"]: d["gateway_id"] for d in taken}

    async def connection(self, device_id: str) -> DeviceConnection | None:
        doc = await self._db.call(self._db.collection(CONNECTIONS).find_one({"_id": device_id}))
        return None if doc is None else docs.to_connection(doc)

    async def _open_fitting(
        self, field: str, value: str, session: AsyncClientSession | None = None
    ) -> tuple[str, Fitting] | None:
        doc = await self._db.call(
            self._db.collection(FITTINGS).find_one({field: value, "to_ms": None}, session=session)
        )
        return None if doc is None else (doc["_id"], docs.to_fitting(doc))

    async def _end(
        self,
        fitting_id: str,
        fitting: Fitting,
        at_ms: int,
        session: AsyncClientSession | None = None,
    ) -> Fitting:
        await self._db.call(
            self._db.collection(FITTINGS).update_one(
                {"_id": fitting_id}, {"$set": {"to_ms": at_ms}}, session=session
            )
        )
        await self._db.call(
            self._db.collection(VEHICLES).update_one(
                {"_id": fitting.vehicle_id, "device_id": fitting.device_id},
                {"$set": {"device_id": None}},
                session=session,
            )
        )
        await self._db.call(
            self._db.collection(DEVICES).update_one(
                {"_id": fitting.device_id, "vehicle_id": fitting.vehicle_id},
                {"$set": {"vehicle_id": None}},
                session=session,
            )
        )
        return dataclasses.replace(fitting, to_ms=at_ms)

    async def _link(
        self, device_id: str, vehicle_id: str, session: AsyncClientSession | None = None
    ) -> None:
        await self._db.call(
            self._db.collection(VEHICLES).update_one(
                {"_id": vehicle_id}, {"$set": {"device_id": device_id}}, session=session
            )
        )
        await self._db.call(
            self._db.collection(DEVICES).update_one(
                {"_id": device_id}, {"$set": {"vehicle_id": vehicle_id}}, session=session
            )
        )


def _check_end(fitting: Fitting, at_ms: int) -> None:
    if at_ms < fitting.from_ms:
        # Ending before it began would make the history overlap itself.
        raise Conflict(f"fitting of {fitting.device_id} began at {fitting.from_ms} > {at_ms}")
