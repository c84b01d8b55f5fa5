"""Retention, exports, erasure and offboarding on MongoDB (collections: retention_schema.py).

No TTL index: none fits (docs/gdpr.md, "Retention"): times are integer milliseconds, periods
are per fleet and may change, held vehicles must be skipped, and an export has a file on
disk. The purge job is the one mechanism on both engines. Writes are single-document or
idempotent deletes, so every operation is safe to repeat after a failure half way (no
transaction needed); status changes of export jobs are compare-and-set on ``status``.
"""

from __future__ import annotations

import builtins
import dataclasses
from collections.abc import Mapping
from typing import Any

from pymongo import ASCENDING as ASC
from pymongo import DESCENDING as DESC
from pymongo import ReturnDocument

from storage.errors import Conflict, NotFound
from storage.latest import subject_key
from storage.models import LIVE_COMMAND_STATES, Event, Page, Position
from storage.mongo import documents as docs
from storage.mongo.command_schema import ALERTS, COMMAND_AUDIT, COMMANDS, VEHICLE_LOCK_STATES
from storage.mongo.db import BULK_DELETE_TIMEOUT_S, Doc, MongoDb
from storage.mongo.query import after
from storage.mongo.retention_schema import EXPORTS, OFFBOARDINGS, RETENTION
from storage.mongo.schema import (
    ACCESS_LOG,
    DEVICES,
    EVENTS,
    FLEET_COLLECTIONS,
    FLEETS,
    GEOFENCE_EVENTS,
    GEOFENCE_STATES,
    LAST_POSITIONS,
    POSITIONS,
    VEHICLES,
)
from storage.mongo.tracking import held_vehicles
from storage.mongo.tracking_schema import GUARD_STATES, LEGAL_HOLDS, THEFT_CASES
from storage.pagination import decode_cursor, make_page, page_limit
from storage.retention import (
    DataKind,
    ExportJob,
    ExportStatus,
    FleetRetention,
    Offboarding,
    PurgeRun,
    default_retention,
    driver_key,
    job_data,
    offboarding_data,
    retention_data,
    to_job,
    to_offboarding,
    to_retention,
)

_LIVE = sorted(str(state) for state in LIVE_COMMAND_STATES)
_STALE_ERROR = "interrupted: the process running it stopped; ask for the export again"


def _free(held: builtins.list[str]) -> Doc:
    """Not a held vehicle's (a record without a vehicle is never held)."""
    return {"vehicle_id": {"$nin": held}} if held else {}


class MongoRetention:
    def __init__(self, db: MongoDb) -> None:
        self._db = db

    async def get(self, fleet_id: str) -> FleetRetention:
        await self._db.require_fleet(fleet_id)
        doc = await self._db.call(self._db.collection(RETENTION).find_one({"_id": fleet_id}))
        return default_retention(fleet_id) if doc is None else to_retention(fleet_id, doc)

    async def _save(self, r: FleetRetention) -> None:
        await self._db.call(
            self._db.collection(RETENTION).replace_one(
                {"_id": r.fleet_id}, {"fleet_id": r.fleet_id, **retention_data(r)}, upsert=True
            )
        )

    async def put(
        self, fleet_id: str, days: Mapping[DataKind, int], *, at_ms: int, by: str | None
    ) -> FleetRetention:
        current = await self.get(fleet_id)
        changed = FleetRetention(
            fleet_id, {**current.days, **days}, at_ms, by, last_run=current.last_run
        )
        await self._save(changed)
        return changed

    async def purge(
        self, fleet_id: str, cutoffs: Mapping[DataKind, int], *, at_ms: int
    ) -> dict[str, int]:
        free = _free(await held_vehicles(self._db, fleet_id, at_ms))
        positions = cutoffs[DataKind.POSITIONS]
        alerts = cutoffs[DataKind.ALERTS]
        ended = await self._db.find(
            LEGAL_HOLDS,
            {"fleet_id": fleet_id, "until_ms": {"$ne": None, "$lt": alerts}},
            [("_id", ASC)],
            projection={"_id": 1},
        )
        plan: list[tuple[str, Doc]] = [
            (POSITIONS, {"time_ms": {"$lt": positions}, **free}),
            (EVENTS, {"time_ms": {"$lt": cutoffs[DataKind.EVENTS]}, **free}),
            # Retention removes a last position too once past the period (docs/gdpr.md).
            (LAST_POSITIONS, {"time_ms": {"$lt": positions}, **free}),
            (GEOFENCE_EVENTS, {"time_ms": {"$lt": positions}, **free}),
            (ALERTS, {"raised_ms": {"$lt": alerts}, "cleared_ms": {"$ne": None}, **free}),
            (THEFT_CASES, {"status": "closed", "_id": {"$in": [d["_id"] for d in ended]}}),
            (LEGAL_HOLDS, {"until_ms": {"$ne": None, "$lt": alerts}}),
            (
                COMMANDS,
                {
                    "created_ms": {"$lt": cutoffs[DataKind.COMMANDS]},
                    "status": {"$nin": _LIVE},
                    **free,
                },
            ),
        ]
        deleted: dict[str, int] = {}
        for name, query in plan:
            result = await self._db.call(
                self._db.collection(name).delete_many({"fleet_id": fleet_id, **query}),
                timeout_s=BULK_DELETE_TIMEOUT_S,
            )
            deleted[name] = result.deleted_count
        # The command audit is an accountability log, like the access log: the same period.
        for name in (COMMAND_AUDIT, ACCESS_LOG):
            deleted[name] = await self._trim_chain(name, fleet_id, cutoffs[DataKind.ACCESS_LOG])
        return deleted

    async def _trim_chain(self, name: str, fleet_id: str, before_ms: int) -> int:
        """Delete a hash-chained log's oldest entries (storage/audit_chain.py): a prefix of the
        chain in ``seq`` order, never a link in the middle (verify-audit would see a gap), and
        never its head, which the next entry links to."""
        limits = []
        for query, order in (({"time_ms": {"$gte": before_ms}}, ASC), ({}, DESC)):
            found = await self._db.find(
                name, {"fleet_id": fleet_id, **query}, [("seq", order)], 1, projection={"seq": 1}
            )
            if found:
                limits.append(int(found[0].get("seq") or 0))
        if not limits:
            return 0
        result = await self._db.call(
            self._db.collection(name).delete_many(
                {"fleet_id": fleet_id, "time_ms": {"$lt": before_ms}, "seq": {"$lt": limits[0]}}
            ),
            timeout_s=BULK_DELETE_TIMEOUT_S,
        )
        return int(result.deleted_count)

    async def record_run(self, fleet_id: str, run: PurgeRun) -> None:
        try:
            current = await self.get(fleet_id)
        except NotFound:
            return  # erased meanwhile: nothing of it is kept
        await self._save(
            FleetRetention(
                fleet_id, current.days, current.updated_ms, current.updated_by, last_run=run
            )
        )

    async def start_offboarding(self, offboarding: Offboarding) -> Offboarding:
        await self._db.require_fleet(offboarding.fleet_id)
        doc = {
            "_id": offboarding.fleet_id,
            "ends_ms": offboarding.ends_ms,
            **offboarding_data(offboarding),
        }
        # The _id is the fleet: a second offboarding is a duplicate key.
        try:
            await self._db.call(self._db.collection(OFFBOARDINGS).insert_one(doc))
        except Conflict:
            raise Conflict(f"fleet {offboarding.fleet_id} is offboarding already") from None
        return offboarding

    async def offboarding(self, fleet_id: str) -> Offboarding | None:
        doc = await self._db.call(self._db.collection(OFFBOARDINGS).find_one({"_id": fleet_id}))
        return None if doc is None else to_offboarding(doc)

    async def due_offboardings(self, now_ms: int) -> builtins.list[Offboarding]:
        found = await self._db.find(
            OFFBOARDINGS,
            {"erased_ms": None, "ends_ms": {"$lte": now_ms}},
            [("ends_ms", ASC), ("_id", ASC)],
        )
        return [to_offboarding(d) for d in found]

    async def erase_offboarded(self, fleet_id: str, at_ms: int) -> Offboarding:
        current = await self.offboarding(fleet_id)
        if current is None:
            raise NotFound(f"offboarding of fleet {fleet_id}")
        if current.erased_ms is not None:
            return current
        reports = self._db.collection(OFFBOARDINGS)
        # The same collections as FleetRepo.delete, the fleet document last; each count is
        # added to the report as it is deleted, so a second run after a failure adds the rest.
        for name in FLEET_COLLECTIONS:
            result = await self._db.call(
                self._db.collection(name).delete_many({"fleet_id": fleet_id}),
                timeout_s=BULK_DELETE_TIMEOUT_S,
            )
            if result.deleted_count:
                await self._db.call(
                    reports.update_one(
                        {"_id": fleet_id}, {"$inc": {f"deleted.{name}": result.deleted_count}}
                    )
                )
        fleet = await self._db.call(self._db.collection(FLEETS).delete_one({"_id": fleet_id}))
        update: Doc = {"$set": {"erased_ms": at_ms}}
        if fleet.deleted_count:
            update["$inc"] = {"deleted.fleets": 1}
        doc = await self._db.call(
            reports.find_one_and_update(
                {"_id": fleet_id}, update, return_document=ReturnDocument.AFTER
            )
        )
        if doc is None:  # the report is never deleted: only a concurrent bug gets here
            raise NotFound(f"offboarding of fleet {fleet_id}")
        return to_offboarding(doc)


class MongoExports:
    def __init__(self, db: MongoDb) -> None:
        self._db = db

    def _doc(self, job: ExportJob) -> Doc:
        return {"_id": job.id, **job_data(job)}

    async def create(self, job: ExportJob) -> ExportJob:
        await self._db.require_fleet(job.fleet_id)
        await self._db.call(self._db.collection(EXPORTS).insert_one(self._doc(job)))
        return job

    async def get(self, fleet_id: str, export_id: str) -> ExportJob:
        doc = await self._db.find_one(
            EXPORTS, {"_id": export_id, "fleet_id": fleet_id}, f"export {export_id}"
        )
        return to_job(doc)

    async def _swap(self, job: ExportJob, expected: ExportStatus) -> bool:
        result = await self._db.call(
            self._db.collection(EXPORTS).replace_one(
                {"_id": job.id, "status": str(expected)}, self._doc(job)
            )
        )
        return bool(result.matched_count)

    async def claim(self, now_ms: int, lease_until_ms: int) -> ExportJob | None:
        # Compare-and-set on the status: of two workers, one gets it, the other none (it
        # looks again at its next poll).
        doc = await self._db.call(
            self._db.collection(EXPORTS).find_one_and_update(
                {"status": str(ExportStatus.PENDING)},
                {
                    "$set": {
                        "status": str(ExportStatus.RUNNING),
                        "lease_ms": lease_until_ms,
                        "updated_ms": now_ms,
                    }
                },
                sort=[("created_ms", ASC), ("_id", ASC)],
                return_document=ReturnDocument.AFTER,
            )
        )
        return None if doc is None else to_job(doc)

    async def renew(self, export_id: str, lease_until_ms: int) -> bool:
        result = await self._db.call(
            self._db.collection(EXPORTS).update_one(
                {"_id": export_id, "status": str(ExportStatus.RUNNING)},
                {"$set": {"lease_ms": lease_until_ms}},
            )
        )
        return bool(result.matched_count)

    async def finish(self, job: ExportJob) -> bool:
        return await self._swap(_replace(job, lease_ms=None), ExportStatus.RUNNING)

    async def fail_stale(self, now_ms: int) -> int:
        result = await self._db.call(
            self._db.collection(EXPORTS).update_many(
                {"status": str(ExportStatus.RUNNING), "lease_ms": {"$lt": now_ms}},
                {
                    "$set": {
                        "status": str(ExportStatus.FAILED),
                        "lease_ms": None,
                        "updated_ms": now_ms,
                        "error": _STALE_ERROR,
                    }
                },
            )
        )
        return int(result.modified_count)

    async def expire(self, fleet_id: str, before_ms: int) -> builtins.list[ExportJob]:
        query: Doc = {
            "fleet_id": fleet_id,
            "created_ms": {"$lt": before_ms},
            "status": {"$ne": str(ExportStatus.RUNNING)},
        }
        found = await self._db.find(EXPORTS, query, [("_id", ASC)])
        if found:
            await self._db.call(
                self._db.collection(EXPORTS).delete_many(
                    {"_id": {"$in": [d["_id"] for d in found]}}
                )
            )
        return [to_job(d) for d in found]

    async def driver_positions(
        self,
        fleet_id: str,
        badge: int,
        *,
        from_ms: int,
        to_ms: int,
        cursor: str | None = None,
        limit: int = 1000,
    ) -> Page[Position]:
        limit = page_limit(limit)
        # No index on the badge (each costs ingest throughput): a rare request scans the
        # fleet's positions of the period.
        query: Doc = {
            "fleet_id": fleet_id,
            "driver_badge": driver_key(badge),
            "time_ms": {"$gte": from_ms, "$lt": to_ms},
        }
        if cursor is not None:
            query.update(
                after(["time_ms", "device_id"], decode_cursor(cursor, "position", (int, str)))
            )
        sort = [("time_ms", ASC), ("device_id", ASC)]
        found = await self._db.find(POSITIONS, query, sort, limit + 1)
        return make_page(
            [docs.to_position(d) for d in found],
            limit,
            "position",
            lambda p: (p.time_ms, p.device_id),
        )

    async def driver_events(
        self,
        fleet_id: str,
        badge: int,
        *,
        from_ms: int,
        to_ms: int,
        cursor: str | None = None,
        limit: int = 1000,
    ) -> Page[Event]:
        limit = page_limit(limit)
        query: Doc = {
            "fleet_id": fleet_id,
            "position.driver_badge": driver_key(badge),
            "time_ms": {"$gte": from_ms, "$lt": to_ms},
        }
        if cursor is not None:
            key = decode_cursor(cursor, "event", (int, str, str))
            query.update(after(["time_ms", "device_id", "code"], key))
        sort = [("time_ms", ASC), ("device_id", ASC), ("code", ASC)]
        found = await self._db.find(EVENTS, query, sort, limit + 1)
        return make_page(
            [docs.to_event(d) for d in found],
            limit,
            "event",
            lambda e: (e.time_ms, e.device_id, e.code),
        )


class MongoErasure:
    def __init__(self, db: MongoDb) -> None:
        self._db = db

    async def _delete(self, name: str, query: Doc) -> int:
        result = await self._db.call(
            self._db.collection(name).delete_many(query), timeout_s=BULK_DELETE_TIMEOUT_S
        )
        return int(result.deleted_count)

    async def erase_vehicle(self, fleet_id: str, vehicle_id: str, at_ms: int) -> dict[str, int]:
        await self._db.find_one(
            VEHICLES, {"_id": vehicle_id, "fleet_id": fleet_id}, f"vehicle {vehicle_id}"
        )
        holds = await self._db.find(
            LEGAL_HOLDS,
            {
                "fleet_id": fleet_id,
                "vehicle_id": vehicle_id,
                "$or": [{"until_ms": None}, {"until_ms": {"$gt": at_ms}}],
            },
            [("from_ms", ASC)],
        )
        if holds:
            hold = holds[0]
            until = (
                "while the case is open"
                if hold.get("until_ms") is None
                else f"until {hold['until_ms']} (ms)"
            )
            raise Conflict(
                f"vehicle {vehicle_id} is under a legal hold (theft case {hold['_id']}) {until}:"
                " its data cannot be erased before the hold ends"
            )
        query = {"fleet_id": fleet_id, "vehicle_id": vehicle_id}
        # The command audit stays: it is the record of who ordered what (accountability).
        names = (
            POSITIONS,
            EVENTS,
            LAST_POSITIONS,
            GEOFENCE_EVENTS,
            GEOFENCE_STATES,
            ALERTS,
            COMMANDS,
            VEHICLE_LOCK_STATES,
            GUARD_STATES,
        )
        return {name: await self._delete(name, query) for name in names}

    async def _subjects(self, query: Doc) -> set[tuple[str | None, str]]:
        found = await self._db.find(
            POSITIONS, query, [("_id", ASC)], projection={"vehicle_id": 1, "device_id": 1}
        )
        return {(d.get("vehicle_id"), d["device_id"]) for d in found}

    async def _recompute_last(self, fleet_id: str, subjects: set[tuple[str | None, str]]) -> None:
        """Point each subject's last position at its newest valid fix still stored (or drop
        it): erasure and rectification remove or move the fix it was a copy of."""
        lasts = self._db.collection(LAST_POSITIONS)
        for vehicle_id, device_id in subjects:
            query: Doc = {"fleet_id": fleet_id, "fix_valid": True, "vehicle_id": vehicle_id}
            if vehicle_id is None:
                query["device_id"] = device_id
            newest = await self._db.find(
                POSITIONS, query, [("time_ms", DESC), ("device_id", DESC)], 1
            )
            subject = subject_key(vehicle_id, device_id)
            if not newest:
                await self._db.call(lasts.delete_one({"_id": subject}))
                continue
            fields = docs.position_fields(docs.to_position(newest[0]))
            await self._db.call(lasts.replace_one({"_id": subject}, fields, upsert=True))

    async def erase_driver(self, fleet_id: str, badge: int, at_ms: int) -> dict[str, int]:
        free = _free(await held_vehicles(self._db, fleet_id, at_ms))
        key = driver_key(badge)
        query: Doc = {"fleet_id": fleet_id, "driver_badge": key, **free}
        touched = await self._subjects(query)
        deleted = {
            POSITIONS: await self._delete(POSITIONS, query),
            EVENTS: await self._delete(
                EVENTS, {"fleet_id": fleet_id, "position.driver_badge": key, **free}
            ),
        }
        await self._recompute_last(fleet_id, touched)
        return deleted

    async def move_fitting(
        self, fleet_id: str, device_id: str, *, from_ms: int, to_ms: int, vehicle_id: str
    ) -> dict[str, int]:
        await self._db.find_one(
            DEVICES, {"_id": device_id, "fleet_id": fleet_id}, f"device {device_id}"
        )
        await self._db.find_one(
            VEHICLES, {"_id": vehicle_id, "fleet_id": fleet_id}, f"vehicle {vehicle_id}"
        )
        query: Doc = {
            "fleet_id": fleet_id,
            "device_id": device_id,
            "time_ms": {"$gte": from_ms, "$lt": to_ms},
        }
        touched = await self._subjects(query)
        touched.add((vehicle_id, device_id))
        moved: dict[str, int] = {}
        # An event keeps a copy of its position, which names the vehicle too.
        for name, update in (
            (POSITIONS, {"vehicle_id": vehicle_id}),
            (EVENTS, {"vehicle_id": vehicle_id, "position.vehicle_id": vehicle_id}),
        ):
            result = await self._db.call(
                self._db.collection(name).update_many(query, {"$set": update}),
                timeout_s=BULK_DELETE_TIMEOUT_S,
            )
            moved[name] = int(result.modified_count)
        await self._recompute_last(fleet_id, touched)
        return moved


def _replace(job: ExportJob, **changes: Any) -> ExportJob:
    return dataclasses.replace(job, **changes)
