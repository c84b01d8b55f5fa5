"""Privacy mode and the drivers' names on MongoDB (collections: privacy_schema.py).

Every write is one document (an upsert by a deterministic _id, or a delete), so each is safe
to repeat after a failure and needs no transaction.
"""

from __future__ import annotations

import builtins
from collections import defaultdict

from pymongo import ASCENDING as ASC
from pymongo import UpdateOne

from storage.errors import NotFound
from storage.mongo.db import Doc, MongoDb
from storage.mongo.privacy_schema import DRIVERS, PRIVACY_BADGES, PRIVACY_SCHEDULES, PRIVACY_TOGGLES
from storage.mongo.schema import VEHICLES
from storage.privacy import Driver, FleetPrivacy, ScheduleChange, schedule_data, to_schedule


class MongoPrivacy:
    def __init__(self, db: MongoDb) -> None:
        self._db = db

    async def set_schedule(self, fleet_id: str, change: ScheduleChange) -> None:
        await self._db.require_fleet(fleet_id)
        doc = {
            "fleet_id": fleet_id,
            "vehicle_id": change.vehicle_id,
            "effective_ms": change.effective_ms,
            "schedule": schedule_data(change.schedule),
            "set_by": change.set_by,
        }
        await self._db.call(
            self._db.collection(PRIVACY_SCHEDULES).replace_one(
                {"_id": f"{change.vehicle_id}:{change.effective_ms}"}, doc, upsert=True
            )
        )

    async def add_toggles(self, fleet_id: str, vehicle_id: str, times_ms: list[int]) -> int:
        if not times_ms:
            return 0
        ops = [
            UpdateOne(
                {"_id": f"{vehicle_id}:{t}"},
                {"$setOnInsert": {"fleet_id": fleet_id, "vehicle_id": vehicle_id, "time_ms": t}},
                upsert=True,
            )
            for t in times_ms
        ]
        result = await self._db.call(
            self._db.collection(PRIVACY_TOGGLES).bulk_write(ops, ordered=False)
        )
        return int(result.upserted_count)

    async def set_badge(self, fleet_id: str, badge: int | None) -> None:
        await self._db.require_fleet(fleet_id)
        badges = self._db.collection(PRIVACY_BADGES)
        if badge is None:
            await self._db.call(badges.delete_one({"_id": fleet_id}))
        else:
            await self._db.call(
                badges.replace_one(
                    {"_id": fleet_id}, {"fleet_id": fleet_id, "badge": badge}, upsert=True
                )
            )

    async def badge(self, fleet_id: str) -> int | None:
        doc = await self._db.call(self._db.collection(PRIVACY_BADGES).find_one({"_id": fleet_id}))
        return None if doc is None else int(doc["badge"])

    async def fleet(
        self, fleet_id: str, vehicle_id: str | None = None, *, existing: bool = False
    ) -> FleetPrivacy:
        query: Doc = {"fleet_id": fleet_id}
        if vehicle_id is not None:
            query["vehicle_id"] = vehicle_id
        order = [("vehicle_id", ASC), ("effective_ms", ASC)]
        changes: dict[str, list[ScheduleChange]] = defaultdict(list)
        for doc in await self._db.find(PRIVACY_SCHEDULES, query, order):
            changes[doc["vehicle_id"]].append(
                ScheduleChange(
                    doc["vehicle_id"],
                    doc["effective_ms"],
                    to_schedule(doc["schedule"]),
                    doc.get("set_by"),
                )
            )
        toggles: dict[str, list[int]] = defaultdict(list)
        for doc in await self._db.find(
            PRIVACY_TOGGLES, query, [("vehicle_id", ASC), ("time_ms", ASC)]
        ):
            toggles[doc["vehicle_id"]].append(doc["time_ms"])
        if existing and (changes or toggles):
            # Which of the vehicles with facts exist: one find by primary key, ids only.
            found = await self._db.find(
                VEHICLES,
                {"_id": {"$in": sorted({*changes, *toggles})}, "fleet_id": fleet_id},
                [("_id", ASC)],
                projection={"_id": 1},
            )
            kept = {v["_id"] for v in found}
            changes = {k: v for k, v in changes.items() if k in kept}
            toggles = {k: v for k, v in toggles.items() if k in kept}
        return FleetPrivacy(
            fleet_id,
            changes={k: tuple(v) for k, v in changes.items()},
            toggles={k: tuple(v) for k, v in toggles.items()},
            badge=await self.badge(fleet_id),
        )


class MongoDrivers:
    def __init__(self, db: MongoDb) -> None:
        self._db = db

    async def create(self, driver: Driver) -> Driver:
        await self._db.require_fleet(driver.fleet_id)
        # A second name for the same badge is a duplicate key: Conflict (storage/mongo/errors.py).
        await self._db.call(
            self._db.collection(DRIVERS).insert_one(
                {
                    "_id": driver.id,
                    "fleet_id": driver.fleet_id,
                    "badge": driver.badge,
                    "name": driver.name,
                    "created_ms": driver.created_ms,
                }
            )
        )
        return driver

    async def list(self, fleet_id: str) -> builtins.list[Driver]:
        docs = await self._db.find(DRIVERS, {"fleet_id": fleet_id}, [("name", ASC), ("_id", ASC)])
        return [
            Driver(d["_id"], d["fleet_id"], d["badge"], d["name"], d["created_ms"]) for d in docs
        ]

    async def delete(self, fleet_id: str, driver_id: str) -> None:
        result = await self._db.call(
            self._db.collection(DRIVERS).delete_one({"_id": driver_id, "fleet_id": fleet_id})
        )
        if result.deleted_count == 0:
            raise NotFound(f"driver {driver_id}")

    async def delete_badge(self, fleet_id: str, badge: int) -> int:
        result = await self._db.call(
            self._db.collection(DRIVERS).delete_many({"fleet_id": fleet_id, "badge": badge})
        )
        return int(result.deleted_count)
