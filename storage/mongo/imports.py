"""Bulk onboarding on MongoDB: a file's vehicles, boxes and fittings, all or none.

Where the deployment runs transactions (a replica set or mongos, as in production) the three
inserts are one transaction. Without (a standalone server, the test fake) they are ordered
inserts, and when one fails everything this import inserted is deleted again by id before
the error goes on (a compensating delete): a crash in between can leave part of the file,
which a second run of the same file reports as taken (docs/api.md, "Bulk import").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence

from pymongo.asynchronous.client_session import AsyncClientSession

from storage.models import Device, Fitting, Vehicle, new_id
from storage.mongo import documents as docs
from storage.mongo.db import Doc, MongoDb
from storage.mongo.query import ASC
from storage.mongo.schema import DEVICES, FITTINGS, VEHICLES
from storage.mongo.transactions import ServerTransactions, Transactions
from storage.secrets import SecretBox, device_context

# Values per $in lookup: keeps each query document small.
_CHUNK = 1000
_BY_ID = [("_id", ASC)]


class MongoImports:
    def __init__(
        self, db: MongoDb, secrets: SecretBox, transactions: Transactions | None = None
    ) -> None:
        self._db = db
        self._secrets = secrets
        self._transactions = transactions or ServerTransactions(db)

    async def taken(
        self, fleet_id: str, vins: Collection[str], imeis: Collection[str]
    ) -> tuple[set[str], set[str]]:
        found_vins: set[str] = set()
        for chunk in _chunks(list(vins)):
            query = {"fleet_id": fleet_id, "vin": {"$in": chunk}}
            found_vins.update(d["vin"] for d in await self._db.find(VEHICLES, query, _BY_ID))
        found_imeis: set[str] = set()
        for chunk in _chunks(list(imeis)):
            # Any fleet: an IMEI is one box in the whole platform (unique index).
            found = await self._db.find(DEVICES, {"imei": {"$in": chunk}}, _BY_ID)
            found_imeis.update(d["imei"] for d in found)
        return found_vins, found_imeis

    async def provision(
        self,
        fleet_id: str,
        vehicles: Sequence[Vehicle],
        devices: Sequence[Device],
        fittings: Sequence[Fitting],
    ) -> None:
        await self._db.require_fleet(fleet_id)
        batches: list[tuple[str, list[Doc]]] = [
            (VEHICLES, [docs.vehicle_doc(v) for v in vehicles]),
            (
                DEVICES,
                [
                    docs.device_doc(
                        dataclasses.replace(
                            d, secret=self._secrets.seal(d.secret, device_context(d.id))
                        )
                    )
                    for d in devices
                ],
            ),
            (FITTINGS, [docs.fitting_doc(new_id("fit"), f) for f in fittings]),
        ]
        batches = [(name, batch) for name, batch in batches if batch]
        if await self._transactions.available():

            async def work(session: AsyncClientSession) -> None:
                for name, batch in batches:
                    await self._db.collection(name).insert_many(batch, session=session)

            await self._transactions.run(work)
            return
        done: list[tuple[str, list[Doc]]] = []
        try:
            for name, batch in batches:
                done.append((name, batch))  # before: an ordered insert stops half way
                await self._db.call(self._db.collection(name).insert_many(batch, ordered=True))
        except Exception:
            for name, batch in done:
                ids = [doc["_id"] for doc in batch]
                for chunk in _chunks(ids):
                    await self._db.call(
                        self._db.collection(name).delete_many({"_id": {"$in": chunk}})
                    )
            raise


def _chunks(values: list[str]) -> list[list[str]]:
    return [values[i : i + _CHUNK] for i in range(0, len(values), _CHUNK)]
