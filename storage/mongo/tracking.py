"""Stolen-vehicle tracking on MongoDB: alert incidents, alert rules and badge policies, parked
guards, theft cases and their legal holds (collections: storage/mongo/tracking_schema.py).

No multi-document transactions (a standalone server and the test fake have none), so each
write is ordered to fail safe: an incident's alert is found by its unique ``open_key`` and
updated in place, or inserted, and the insert loses cleanly (duplicate key) to a concurrent
one, which is then updated instead; a case is stored before its hold, and the stream entry of
a change is appended after the change (a stream client never sees what was not stored).
"""

from __future__ import annotations

import builtins
import dataclasses
from collections.abc import Collection, Sequence
from typing import Any

from pymongo import ReturnDocument

from storage.errors import Conflict, NotFound, StorageError
from storage.models import (
    Alert,
    AlertKind,
    AlertRule,
    AlertState,
    GuardState,
    LegalHold,
    Page,
    TheftCase,
    TheftCaseStatus,
    TrackingPolicy,
)
from storage.mongo.command_schema import ALERTS
from storage.mongo.commands import MongoAlerts, _doc, to_alert
from storage.mongo.db import Doc, MongoDb
from storage.mongo.query import ASC, keyset
from storage.mongo.tracking_schema import (
    ALERT_RULES,
    GUARD_STATES,
    LEGAL_HOLDS,
    THEFT_CASES,
    TRACKING_POLICIES,
)
from storage.pagination import decode_cursor, make_page, order_kind, page_limit
from storage.repository import StreamRepo
from storage.tracking_codec import incident_key, to_case, to_doc, to_guard, to_policy, to_rule

# Tries at storing a trigger: each retry means another writer opened or closed the same
# incident in between (two gateways on one vehicle in the same instant).
_TRIGGER_ATTEMPTS = 5

_STATE_QUERY: dict[AlertState, Doc] = {
    AlertState.OPEN: {"cleared_ms": None, "acked_ms": None},
    AlertState.ACKNOWLEDGED: {"cleared_ms": None, "acked_ms": {"$ne": None}},
    AlertState.CLOSED: {"cleared_ms": {"$ne": None}},
}


def _with_id(item: Any) -> Doc:
    return {"_id": item.id, **to_doc(item)}


class MongoIncidentAlerts(MongoAlerts):
    """The alert repository: the command alerts (MongoAlerts) and the incidents of the alert
    rules, one open alert per incident through the sparse unique ``open_key``."""

    async def _appear(self, alert: Alert) -> Alert:
        await self._announce(alert)
        return alert

    async def list(
        self,
        fleet_id: str,
        *,
        vehicle_id: str | None = None,
        open_only: bool = False,
        cursor: str | None = None,
        limit: int = 100,
        kinds: Collection[AlertKind] | None = None,
        state: AlertState | None = None,
        from_ms: int = 0,
        to_ms: int = 2**62,
        newest_first: bool = False,
    ) -> Page[Alert]:
        limit = page_limit(limit)
        query: Doc = {"fleet_id": fleet_id, "raised_ms": {"$gte": from_ms, "$lt": to_ms}}
        if vehicle_id is not None:
            query["vehicle_id"] = vehicle_id
        if kinds is not None:
            query["kind"] = {"$in": [k.value for k in kinds]}
        conditions: list[Doc] = []
        if open_only:
            conditions.append({"cleared_ms": None})
        if state is not None:
            conditions.append(_STATE_QUERY[state])
        tag = order_kind("alert", newest_first)
        key = None if cursor is None else decode_cursor(cursor, tag, (int, str))
        seek, sort = keyset(["raised_ms", "_id"], key, newest_first=newest_first)
        if seek:
            conditions.append(seek)
        if conditions:
            query["$and"] = conditions
        found = await self._db.find(ALERTS, query, sort, limit + 1)
        return make_page([to_alert(d) for d in found], limit, tag, lambda a: (a.raised_ms, a.id))

    async def trigger(self, alert: Alert) -> tuple[Alert, bool]:
        db = self._db
        key = incident_key(
            alert.fleet_id, alert.vehicle_id, alert.device_id, alert.kind.value, alert.ref
        )
        first = alert.first_ms if alert.first_ms is not None else alert.raised_ms
        last = alert.last_ms if alert.last_ms is not None else first
        updated_ms = alert.updated_ms if alert.updated_ms is not None else alert.raised_ms
        collection = db.collection(ALERTS)
        for _ in range(_TRIGGER_ATTEMPTS):
            existing = await db.call(collection.find_one({"open_key": key}))
            if existing is None:
                new = dataclasses.replace(alert, first_ms=first, last_ms=last)
                try:
                    await db.call(collection.insert_one({**_doc(new), "open_key": key}))
                except Conflict:
                    continue  # a concurrent trigger opened it: update that one
                return await self._appear(new), True
            changes: Doc = {"severity": alert.severity.value, "updated_ms": updated_ms}
            if alert.rule_id is not None:
                changes["rule_id"] = alert.rule_id
            if last >= (existing.get("last_ms") or 0):  # a late trigger keeps the newest texts
                changes.update(
                    lat=alert.lat, lon=alert.lon, speed_kmh=alert.speed_kmh, detail=alert.detail
                )
            doc = await db.call(
                collection.find_one_and_update(
                    {"_id": existing["_id"], "open_key": key},
                    {
                        "$inc": {"count": alert.count},
                        "$min": {"first_ms": first},
                        "$max": {"last_ms": last},
                        "$set": changes,
                    },
                    return_document=ReturnDocument.AFTER,
                )
            )
            if doc is not None:
                return await self._appear(to_alert(doc)), False
            # closed between the two calls: open a new one
        raise StorageError(f"incident {key}: too many concurrent changes")

    async def close_incident(
        self,
        fleet_id: str,
        *,
        vehicle_id: str | None,
        device_id: str | None,
        kind: AlertKind,
        ref: str | None,
        at_ms: int,
        reason: str,
    ) -> Alert | None:
        key = incident_key(fleet_id, vehicle_id, device_id, kind.value, ref)
        doc = await self._db.call(
            self._db.collection(ALERTS).find_one_and_update(
                {"open_key": key},
                {
                    "$set": {
                        "cleared_ms": at_ms,
                        "cleared_by": "system",
                        "close_reason": reason,
                        "updated_ms": at_ms,
                    },
                    "$unset": {"open_key": ""},
                },
                return_document=ReturnDocument.AFTER,
            )
        )
        return None if doc is None else await self._appear(to_alert(doc))

    async def acknowledge(
        self, fleet_id: str, alert_id: str, *, by: str, at_ms: int, note: str
    ) -> Alert:
        doc = await self._db.call(
            self._db.collection(ALERTS).find_one_and_update(
                {"_id": alert_id, "fleet_id": fleet_id, "acked_ms": None},
                {
                    "$set": {
                        "acked_ms": at_ms,
                        "acked_by": by,
                        "ack_note": note,
                        "updated_ms": at_ms,
                    }
                },
                return_document=ReturnDocument.AFTER,
            )
        )
        if doc is None:  # acknowledged before (the first one stays), or not there: NotFound
            return await self.get(fleet_id, alert_id)
        return await self._appear(to_alert(doc))

    async def link_theft_case(self, fleet_id: str, alert_id: str, case_id: str) -> Alert:
        doc = await self._db.call(
            self._db.collection(ALERTS).find_one_and_update(
                {"_id": alert_id, "fleet_id": fleet_id},
                {"$set": {"theft_case_id": case_id}},
                return_document=ReturnDocument.AFTER,
            )
        )
        if doc is None:
            raise NotFound(f"alert {alert_id}")
        return await self._appear(to_alert(doc))


class MongoAlertRules:
    def __init__(self, db: MongoDb) -> None:
        self._db = db

    async def list(self, fleet_id: str) -> builtins.list[AlertRule]:
        found = await self._db.find(
            ALERT_RULES, {"fleet_id": fleet_id}, [("created_ms", ASC), ("_id", ASC)]
        )
        return [to_rule(d) for d in found]

    async def get(self, fleet_id: str, rule_id: str) -> AlertRule:
        doc = await self._db.find_one(
            ALERT_RULES, {"_id": rule_id, "fleet_id": fleet_id}, f"alert rule {rule_id}"
        )
        return to_rule(doc)

    async def create(self, rule: AlertRule) -> AlertRule:
        await self._db.require_fleet(rule.fleet_id)
        await self._db.call(self._db.collection(ALERT_RULES).insert_one(_with_id(rule)))
        return rule

    async def replace(self, rule: AlertRule) -> AlertRule:
        result = await self._db.call(
            self._db.collection(ALERT_RULES).replace_one(
                {"_id": rule.id, "fleet_id": rule.fleet_id}, _with_id(rule)
            )
        )
        if result.matched_count == 0:
            raise NotFound(f"alert rule {rule.id}")
        return rule

    async def delete(self, fleet_id: str, rule_id: str) -> None:
        result = await self._db.call(
            self._db.collection(ALERT_RULES).delete_one({"_id": rule_id, "fleet_id": fleet_id})
        )
        if result.deleted_count == 0:
            raise NotFound(f"alert rule {rule_id}")

    async def ensure_defaults(self, fleet_id: str, rules: Sequence[AlertRule], at_ms: int) -> bool:
        await self._db.require_fleet(fleet_id)
        # The claim: only the call that sets defaults_ms (on a new or an unclaimed policy
        # document) creates the rules; a second one finds no match and its upsert collides
        # with the existing _id. A crash between the claim and the inserts leaves a fleet
        # without its defaults (it can create the rules itself): never with them twice.
        policy = to_doc(TrackingPolicy(fleet_id=fleet_id))
        del policy["defaults_ms"]
        try:
            result = await self._db.call(
                self._db.collection(TRACKING_POLICIES).update_one(
                    {"_id": fleet_id, "defaults_ms": None},
                    {"$set": {"defaults_ms": at_ms}, "$setOnInsert": policy},
                    upsert=True,
                )
            )
        except Conflict:
            return False
        if result.matched_count == 0 and result.upserted_id is None:
            return False
        if rules:
            await self._db.call(
                self._db.collection(ALERT_RULES).insert_many([_with_id(r) for r in rules])
            )
        return True

    async def policy(self, fleet_id: str) -> TrackingPolicy:
        doc = await self._db.call(
            self._db.collection(TRACKING_POLICIES).find_one({"_id": fleet_id})
        )
        return TrackingPolicy(fleet_id=fleet_id) if doc is None else to_policy(doc)

    async def put_policy(self, policy: TrackingPolicy) -> TrackingPolicy:
        await self._db.require_fleet(policy.fleet_id)
        fields = to_doc(policy)
        del fields["defaults_ms"]
        doc = await self._db.call(
            self._db.collection(TRACKING_POLICIES).find_one_and_update(
                {"_id": policy.fleet_id},
                {"$set": fields},
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        )
        return dataclasses.replace(policy, defaults_ms=doc.get("defaults_ms") if doc else None)


class MongoGuards:
    def __init__(self, db: MongoDb) -> None:
        self._db = db

    async def get(self, fleet_id: str, vehicle_id: str) -> GuardState | None:
        doc = await self._db.call(
            self._db.collection(GUARD_STATES).find_one({"_id": vehicle_id, "fleet_id": fleet_id})
        )
        return None if doc is None else to_guard(doc)

    async def save(self, state: GuardState, *, expected_revision: int) -> GuardState | None:
        stored = dataclasses.replace(state, revision=expected_revision + 1)
        doc = {"_id": stored.vehicle_id, **to_doc(stored)}
        collection = self._db.collection(GUARD_STATES)
        if expected_revision == 0:
            try:
                await self._db.call(collection.insert_one(doc))
            except Conflict:
                return None
            return stored
        result = await self._db.call(
            collection.replace_one(
                {
                    "_id": stored.vehicle_id,
                    "fleet_id": stored.fleet_id,
                    "revision": expected_revision,
                },
                doc,
            )
        )
        return stored if result.matched_count else None

    async def list(self, fleet_id: str) -> builtins.list[GuardState]:
        found = await self._db.find(GUARD_STATES, {"fleet_id": fleet_id}, [("_id", ASC)])
        return [to_guard(d) for d in found]


def _case_doc(case: TheftCase) -> Doc:
    doc = _with_id(case)
    if case.status is TheftCaseStatus.OPEN:
        doc["open_vehicle"] = case.vehicle_id  # sparse unique: one open case per vehicle
    return doc


def _hold_doc(hold: LegalHold) -> Doc:
    return {"_id": hold.case_id, **to_doc(hold)}


class MongoTheftCases:
    def __init__(self, db: MongoDb, stream: StreamRepo | None = None) -> None:
        self._db = db
        self._stream = stream

    async def _appear(self, case: TheftCase) -> TheftCase:
        if self._stream is not None:
            await self._stream.append((case,))
        return case

    async def create(self, case: TheftCase, hold: LegalHold) -> TheftCase:
        await self._db.require_fleet(case.fleet_id)
        # The case first: a second open case for the vehicle is refused (Conflict) before
        # anything else is written.
        await self._db.call(self._db.collection(THEFT_CASES).insert_one(_case_doc(case)))
        await self._db.call(
            self._db.collection(LEGAL_HOLDS).replace_one(
                {"_id": hold.case_id}, _hold_doc(hold), upsert=True
            )
        )
        return await self._appear(case)

    async def get(self, fleet_id: str, case_id: str) -> TheftCase:
        doc = await self._db.find_one(
            THEFT_CASES, {"_id": case_id, "fleet_id": fleet_id}, f"theft case {case_id}"
        )
        return to_case(doc)

    async def replace(self, case: TheftCase, hold: LegalHold | None = None) -> TheftCase:
        result = await self._db.call(
            self._db.collection(THEFT_CASES).replace_one(
                {"_id": case.id, "fleet_id": case.fleet_id}, _case_doc(case)
            )
        )
        if result.matched_count == 0:
            raise NotFound(f"theft case {case.id}")
        if hold is not None:
            await self._db.call(
                self._db.collection(LEGAL_HOLDS).replace_one(
                    {"_id": hold.case_id}, _hold_doc(hold), upsert=True
                )
            )
        return await self._appear(case)

    async def list(
        self,
        fleet_id: str,
        *,
        vehicle_id: str | None = None,
        status: TheftCaseStatus | None = None,
        cursor: str | None = None,
        limit: int = 100,
        newest_first: bool = False,
    ) -> Page[TheftCase]:
        limit = page_limit(limit)
        query: Doc = {"fleet_id": fleet_id}
        if vehicle_id is not None:
            query["vehicle_id"] = vehicle_id
        if status is not None:
            query["status"] = status.value
        tag = order_kind("theft_case", newest_first)
        key = None if cursor is None else decode_cursor(cursor, tag, (int, str))
        seek, sort = keyset(["opened_ms", "_id"], key, newest_first=newest_first)
        found = await self._db.find(THEFT_CASES, {**query, **seek}, sort, limit + 1)
        cases = [to_case(d) for d in found]
        return make_page(cases, limit, tag, lambda c: (c.opened_ms, c.id))

    async def open_case(self, fleet_id: str, vehicle_id: str) -> TheftCase | None:
        doc = await self._db.call(
            self._db.collection(THEFT_CASES).find_one(
                {"fleet_id": fleet_id, "open_vehicle": vehicle_id}
            )
        )
        return None if doc is None else to_case(doc)

    async def holds(self, fleet_id: str, *, at_ms: int) -> builtins.list[LegalHold]:
        found = await self._db.find(
            LEGAL_HOLDS,
            {"fleet_id": fleet_id, "$or": [{"until_ms": None}, {"until_ms": {"$gt": at_ms}}]},
            [("from_ms", ASC), ("_id", ASC)],
        )
        return [LegalHold(**{k: v for k, v in d.items() if k != "_id"}) for d in found]


async def held_vehicles(db: MongoDb, fleet_id: str, at_ms: int) -> builtins.list[str]:
    """The vehicles retention keeps whole (telemetry purge): held by a theft case that is
    open, or closed less than its hold period ago."""
    found = await db.find(
        LEGAL_HOLDS,
        {"fleet_id": fleet_id, "$or": [{"until_ms": None}, {"until_ms": {"$gt": at_ms}}]},
        [("_id", ASC)],
        projection={"vehicle_id": 1},
    )
    return sorted({d["vehicle_id"] for d in found})
