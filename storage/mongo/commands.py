"""Remote commands on MongoDB: commands, the command audit log, policies, alerts.

Create: a command and the audit line of its request are stored in one multi-document
transaction where the deployment has them (a replica set or mongos, as in production). A
standalone server, and the in-memory fake the tests use, have none; there the writes are
ordered to fail safe: idempotency claim, audit line, then the command, so a crash half way
leaves at worst an unused number and an audit line for a request that never became a command,
never a command without its request's audit line. Both paths: docs/storage.md, "Commands".

Transition: the compare-and-set on the status, then the audit entry. The caller sends a
COMMAND only after both returned, so nothing reaches a box without its audit line.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable, Collection
from typing import Any, Protocol

from pymongo import ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession

from storage.errors import Conflict, StorageError, StorageUnavailable
from storage.models import (
    MAX_COMMAND_SEQ,
    Alert,
    AlertKind,
    AuditEntry,
    CommandChanges,
    CommandKind,
    CommandPolicy,
    CommandRecord,
    CommandState,
    KillSwitch,
    Page,
    Severity,
    VehicleLockState,
    first_command_seq,
)
from storage.mongo.command_schema import (
    ALERTS,
    COMMAND_AUDIT,
    COMMAND_IDEMPOTENCY,
    COMMAND_POLICIES,
    COMMAND_SEQS,
    COMMANDS,
    PLATFORM_SWITCHES,
    VEHICLE_LOCK_STATES,
)
from storage.mongo.db import Doc, MongoDb
from storage.mongo.query import ASC, after
from storage.pagination import decode_cursor, make_page, page_limit
from storage.repository import StreamRepo

_CHANGEABLE = frozenset(CommandChanges.__annotations__)
_LIVE = [s.value for s in (CommandState.PENDING_APPROVAL, CommandState.QUEUED, CommandState.SENT)]
_KILL_SWITCH = "kill_switch"
# Tries at allocating a command number before giving up (each retry means another writer
# raced us on the same box, which takes two API requests for one box in the same instant).
_SEQ_ATTEMPTS = 5
# An idempotency document whose command never appeared (the writer died half way) is given up
# after this long, so the key can be used again.
IDEMPOTENCY_STALE_MS = 60_000


def _doc(model: Any) -> Doc:
    """A dataclass as a document: ``id`` becomes ``_id``, enums their values."""
    doc: Doc = {}
    for field in dataclasses.fields(model):
        value = getattr(model, field.name)
        if isinstance(value, CommandKind | CommandState | AlertKind | Severity):
            value = value.value
        doc["_id" if field.name == "id" else field.name] = value
    return doc


def _fields(doc: Doc, model: type[Any]) -> dict[str, Any]:
    return {
        f.name: doc["_id"] if f.name == "id" else doc.get(f.name) for f in dataclasses.fields(model)
    }


def to_command(doc: Doc) -> CommandRecord:
    values = _fields(doc, CommandRecord)
    values["kind"] = CommandKind(values["kind"])
    values["status"] = CommandState(values["status"])
    return CommandRecord(**values)


def to_audit(doc: Doc) -> AuditEntry:
    return AuditEntry(**_fields(doc, AuditEntry))


# Alert fields a document stored before they existed lacks: read as their defaults.
_ALERT_DEFAULTS = {
    f.name: f.default
    for f in dataclasses.fields(Alert)
    if f.default is not dataclasses.MISSING and f.default is not None
}


def to_alert(doc: Doc) -> Alert:
    values = _fields(doc, Alert)
    for name, default in _ALERT_DEFAULTS.items():
        if values[name] is None:
            values[name] = default
    values["kind"] = AlertKind(values["kind"])
    values["severity"] = Severity(values["severity"])
    return Alert(**values)


def _key_id(command: CommandRecord) -> str:
    return f"{command.fleet_id}:{command.idempotency_key}"


def _key_doc(command: CommandRecord) -> Doc | None:
    """The document that claims ``command``'s idempotency key (its ``_id`` is unique)."""
    if command.idempotency_key is None:
        return None
    return {
        "_id": _key_id(command),
        "fleet_id": command.fleet_id,
        "command_id": command.id,
        "created_ms": command.created_ms,
    }


class Transactions(Protocol):
    """Multi-document transactions, where the deployment has them (tests pass a fake)."""

    async def available(self) -> bool:
        """Whether `run` may be used: a replica set member or mongos answers."""
        ...

    async def run(self, work: Callable[[AsyncClientSession], Awaitable[None]]) -> None:
        """Run ``work`` (every write of it given the session) as one committed transaction;
        driver errors come out as storage errors (a duplicate key: Conflict)."""
        ...


class ServerTransactions:
    """Transactions through the database's own client, if its server has them."""

    def __init__(self, db: MongoDb) -> None:
        self._db = db
        self._available: bool | None = None  # asked once: a deployment does not change kind

    async def available(self) -> bool:
        if self._available is None:
            self._available = await self._ask()
        return self._available

    async def _ask(self) -> bool:
        try:
            hello: Doc = await self._db.call(self._db.database.command("hello"))
        except StorageUnavailable:
            raise  # not an answer: ask again next time
        except (StorageError, NotImplementedError):
            # A server too old for `hello`, or a stand-in (the test fake) that implements few
            # commands: neither runs transactions.
            return False
        return supports_transactions(hello)

    async def run(self, work: Callable[[AsyncClientSession], Awaitable[None]]) -> None:
        async with self._db.database.client.start_session() as session:
            # One call at the error boundary: with_transaction retries a transient error
            # itself (it must see the driver's exception, so `work` calls the driver
            # directly), and the operation timeout bounds the whole transaction.
            await self._db.call(
                session.with_transaction(work, write_concern=self._db.database.write_concern)
            )


def supports_transactions(hello: Doc) -> bool:
    """Does the server that gave this `hello` reply run multi-document transactions?"""
    sessions = hello.get("logicalSessionTimeoutMinutes") is not None
    return sessions and ("setName" in hello or hello.get("msg") == "isdbgrid")


class MongoCommands:
    def __init__(
        self,
        db: MongoDb,
        transactions: Transactions | None = None,
        *,
        stream: StreamRepo | None = None,
    ) -> None:
        self._db = db
        self._transactions = transactions or ServerTransactions(db)
        self._stream = stream

    def _col(self, name: str = COMMANDS) -> Any:
        return self._db.collection(name)

    async def create(
        self, command: CommandRecord, requested: AuditEntry
    ) -> tuple[CommandRecord, bool]:
        key = command.idempotency_key
        if key is not None:
            existing = await self.by_idempotency_key(command.fleet_id, key)
            if existing is not None:
                return existing, False
        # Numbered outside the transaction: the counter is an atomic $inc of its own, and a
        # number a failed create used is harmless (numbers are unique, not contiguous).
        command = dataclasses.replace(
            command, seq=await self._next_seq(command.imei, command.created_ms)
        )
        write = (
            self._write_in_transaction
            if await self._transactions.available()
            else self._write_ordered
        )
        for _ in range(2):
            try:
                await write(command, requested)
                if self._stream is not None:
                    await self._stream.append((command,))
                return command, True
            except Conflict:
                if key is None:
                    raise
                holder = await self._key_holder(command)
                if holder is not None:
                    return holder, False
                # A stale claim was just released: try once more.
        raise Conflict("a request with this idempotency key is in progress")

    async def _write_in_transaction(self, command: CommandRecord, requested: AuditEntry) -> None:
        """Idempotency claim, audit line and command: all committed, or none."""
        key_doc = _key_doc(command)
        docs = [(COMMAND_AUDIT, _doc(requested)), (COMMANDS, _doc(command))]
        if key_doc is not None:
            docs.insert(0, (COMMAND_IDEMPOTENCY, key_doc))

        async def work(session: AsyncClientSession) -> None:
            for collection, doc in docs:
                await self._col(collection).insert_one(doc, session=session)

        await self._transactions.run(work)

    async def _write_ordered(self, command: CommandRecord, requested: AuditEntry) -> None:
        """Without transactions: each write on its own, in the order that fails safe."""
        key_doc = _key_doc(command)
        if key_doc is not None:
            await self._db.call(self._col(COMMAND_IDEMPOTENCY).insert_one(key_doc))
        await self._db.call(self._col(COMMAND_AUDIT).insert_one(_doc(requested)))
        await self._db.call(self._col().insert_one(_doc(command)))

    async def _key_holder(self, command: CommandRecord) -> CommandRecord | None:
        """The command holding ``command``'s idempotency key, or None once the claim is gone.

        A claim without its command is a request being stored right now (Conflict), or one
        whose writer died half way on a server without transactions: given up after
        IDEMPOTENCY_STALE_MS, so the key can be used again.
        """
        key_id = _key_id(command)
        held = await self._db.call(self._col(COMMAND_IDEMPOTENCY).find_one({"_id": key_id}))
        if held is None:
            return None  # released in between
        found = await self._db.call(self._col().find_one({"_id": held["command_id"]}))
        if found is not None:
            return to_command(found)
        if command.created_ms - held.get("created_ms", 0) < IDEMPOTENCY_STALE_MS:
            raise Conflict("a request with this idempotency key is in progress")
        await self._db.call(
            self._col(COMMAND_IDEMPOTENCY).delete_one(
                {"_id": key_id, "command_id": held["command_id"]}
            )
        )
        return None

    async def _next_seq(self, imei: str, now_ms: int) -> int:
        seqs = self._col(COMMAND_SEQS)
        for _ in range(_SEQ_ATTEMPTS):
            doc = await self._db.call(
                seqs.find_one_and_update(
                    {"_id": imei}, {"$inc": {"last": 1}}, return_document=ReturnDocument.AFTER
                )
            )
            if doc is None:
                first = first_command_seq(now_ms)
                try:
                    await self._db.call(seqs.insert_one({"_id": imei, "last": first}))
                except Conflict:
                    continue  # another writer numbered this box's first command: increment
                return first
            last = int(doc["last"])
            if last <= MAX_COMMAND_SEQ:
                return last
            # Past the u32 range: the one writer that turns the counter back to 1 gets 1.
            result = await self._db.call(
                seqs.update_one(
                    {"_id": imei, "last": {"$gt": MAX_COMMAND_SEQ}}, {"$set": {"last": 1}}
                )
            )
            if result.modified_count:
                return 1
        raise StorageUnavailable(f"could not allocate a command number for {imei}")

    async def get(self, fleet_id: str, command_id: str) -> CommandRecord:
        doc = await self._db.find_one(
            COMMANDS, {"_id": command_id, "fleet_id": fleet_id}, f"command {command_id}"
        )
        return to_command(doc)

    async def by_seq(self, imei: str, seq: int) -> CommandRecord | None:
        doc = await self._db.call(self._col().find_one({"imei": imei, "seq": seq}))
        return None if doc is None else to_command(doc)

    async def by_idempotency_key(self, fleet_id: str, key: str) -> CommandRecord | None:
        held = await self._db.call(
            self._col(COMMAND_IDEMPOTENCY).find_one({"_id": f"{fleet_id}:{key}"})
        )
        if held is None:
            return None
        doc = await self._db.call(
            self._col().find_one({"_id": held["command_id"], "fleet_id": fleet_id})
        )
        return None if doc is None else to_command(doc)

    async def list(
        self,
        fleet_id: str,
        *,
        vehicle_id: str | None = None,
        status: CommandState | None = None,
        kind: CommandKind | None = None,
        from_ms: int = 0,
        to_ms: int = 2**62,
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page[CommandRecord]:
        limit = page_limit(limit)
        query: Doc = {"fleet_id": fleet_id, "created_ms": {"$gte": from_ms, "$lt": to_ms}}
        if vehicle_id is not None:
            query["vehicle_id"] = vehicle_id
        if status is not None:
            query["status"] = status.value
        if kind is not None:
            query["kind"] = kind.value
        if cursor is not None:
            query.update(after(["created_ms", "_id"], decode_cursor(cursor, "command", (int, str))))
        found = await self._db.find(COMMANDS, query, [("created_ms", ASC), ("_id", ASC)], limit + 1)
        return make_page(
            [to_command(d) for d in found], limit, "command", lambda c: (c.created_ms, c.id)
        )

    async def count_since(
        self, fleet_id: str, kinds: Collection[CommandKind], since_ms: int
    ) -> int:
        if not kinds:
            return 0
        query = {
            "fleet_id": fleet_id,
            "created_ms": {"$gte": since_ms},
            "kind": {"$in": [k.value for k in kinds]},
        }
        count: int = await self._db.call(self._col().count_documents(query))
        return count

    async def pending_for_box(self, imei: str, now_ms: int) -> builtins.list[CommandRecord]:
        query = {
            "imei": imei,
            "status": {"$in": [CommandState.QUEUED.value, CommandState.SENT.value]},
            "expires_ms": {"$gt": now_ms},
        }
        return [to_command(d) for d in await self._db.find(COMMANDS, query, [("seq", ASC)])]

    async def in_status(
        self,
        status: CommandState,
        *,
        updated_from_ms: int = 0,
        updated_to_ms: int = 2**62,
        limit: int = 1000,
    ) -> builtins.list[CommandRecord]:
        query = {
            "status": status.value,
            "updated_ms": {"$gte": updated_from_ms, "$lt": updated_to_ms},
        }
        found = await self._db.find(COMMANDS, query, [("updated_ms", ASC)], page_limit(limit))
        return [to_command(d) for d in found]

    async def expiring(self, now_ms: int, *, limit: int = 1000) -> builtins.list[CommandRecord]:
        query = {"status": {"$in": _LIVE}, "expires_ms": {"$lte": now_ms}}
        found = await self._db.find(COMMANDS, query, [("expires_ms", ASC)], page_limit(limit))
        return [to_command(d) for d in found]

    async def transition(
        self,
        command_id: str,
        *,
        expected: Collection[CommandState],
        status: CommandState,
        at_ms: int,
        changes: CommandChanges | None = None,
        attempts_delta: int = 0,
        audit: AuditEntry | None = None,
        vehicle_state: VehicleLockState | None = None,
    ) -> CommandRecord | None:
        if not expected:
            return None
        fields = dict(changes or {})
        unknown = set(fields) - _CHANGEABLE
        if unknown:
            raise ValueError(f"not changeable by a transition: {sorted(unknown)}")
        if vehicle_state is not None:
            # Before the status: whoever sees the command acknowledged sees its effect.
            await self.set_vehicle_state(vehicle_state)
        update: Doc = {"$set": {"status": status.value, "updated_ms": at_ms, **fields}}
        if attempts_delta:
            update["$inc"] = {"attempts": attempts_delta}
        doc = await self._db.call(
            self._col().find_one_and_update(
                {"_id": command_id, "status": {"$in": [s.value for s in expected]}},
                update,
                return_document=ReturnDocument.AFTER,
            )
        )
        if doc is None:
            return None
        if audit is not None:
            await self._db.call(self._col(COMMAND_AUDIT).insert_one(_doc(audit)))
        changed = to_command(doc)
        if self._stream is not None:
            await self._stream.append((changed,))
        return changed

    async def vehicle_state(self, fleet_id: str, vehicle_id: str) -> VehicleLockState | None:
        doc = await self._db.call(
            self._col(VEHICLE_LOCK_STATES).find_one({"_id": vehicle_id, "fleet_id": fleet_id})
        )
        if doc is None:
            return None
        return VehicleLockState(
            fleet_id=doc["fleet_id"],
            vehicle_id=doc["_id"],
            device_id=doc["device_id"],
            doors_locked=doc["doors_locked"],
            engine_start_inhibited=doc["engine_start_inhibited"],
            updated_ms=doc["updated_ms"],
            command_id=doc.get("command_id"),
        )

    async def set_vehicle_state(self, state: VehicleLockState) -> None:
        fields = dataclasses.asdict(state)
        vehicle_id = fields.pop("vehicle_id")
        # Matches only an older state (or none, then inserts); when a newer one is stored, the
        # upsert's insert hits its _id: Conflict, and the newer state is kept.
        with contextlib.suppress(Conflict):
            await self._db.call(
                self._col(VEHICLE_LOCK_STATES).update_one(
                    {"_id": vehicle_id, "updated_ms": {"$lte": state.updated_ms}},
                    {"$set": fields},
                    upsert=True,
                )
            )


class MongoAudit:
    def __init__(self, db: MongoDb) -> None:
        self._db = db

    async def append(self, entry: AuditEntry) -> None:
        await self._db.call(self._db.collection(COMMAND_AUDIT).insert_one(_doc(entry)))

    async def list(
        self,
        fleet_id: str | None,
        *,
        vehicle_id: str | None = None,
        command_id: str | None = None,
        from_ms: int = 0,
        to_ms: int = 2**62,
        cursor: str | None = None,
        limit: int = 1000,
    ) -> Page[AuditEntry]:
        limit = page_limit(limit)
        # fleet_id None matches the null of the platform's entries, never a fleet's.
        query: Doc = {"fleet_id": fleet_id, "time_ms": {"$gte": from_ms, "$lt": to_ms}}
        if vehicle_id is not None:
            query["vehicle_id"] = vehicle_id
        if command_id is not None:
            query["command_id"] = command_id
        if cursor is not None:
            query.update(after(["time_ms", "_id"], decode_cursor(cursor, "audit", (int, str))))
        found = await self._db.find(
            COMMAND_AUDIT, query, [("time_ms", ASC), ("_id", ASC)], limit + 1
        )
        return make_page([to_audit(d) for d in found], limit, "audit", lambda e: (e.time_ms, e.id))


class MongoPolicies:
    def __init__(self, db: MongoDb) -> None:
        self._db = db

    async def get(self, fleet_id: str) -> CommandPolicy:
        doc = await self._db.call(self._db.collection(COMMAND_POLICIES).find_one({"_id": fleet_id}))
        if doc is None:
            return CommandPolicy(fleet_id=fleet_id)
        return CommandPolicy(
            fleet_id=fleet_id,
            four_eyes=doc["four_eyes"],
            engine_start_cap_per_hour=doc.get("engine_start_cap_per_hour"),
            updated_ms=doc["updated_ms"],
            updated_by=doc.get("updated_by"),
        )

    async def put(self, policy: CommandPolicy) -> CommandPolicy:
        fields = dataclasses.asdict(policy)
        fleet_id = fields["fleet_id"]
        await self._db.call(
            self._db.collection(COMMAND_POLICIES).replace_one(
                {"_id": fleet_id}, {"_id": fleet_id, **fields}, upsert=True
            )
        )
        return policy

    async def kill_switch(self) -> KillSwitch:
        doc = await self._db.call(
            self._db.collection(PLATFORM_SWITCHES).find_one({"_id": _KILL_SWITCH})
        )
        if doc is None:
            return KillSwitch()
        return KillSwitch(doc["engaged"], doc["reason"], doc["changed_ms"], doc.get("changed_by"))

    async def set_kill_switch(self, switch: KillSwitch) -> KillSwitch:
        await self._db.call(
            self._db.collection(PLATFORM_SWITCHES).replace_one(
                {"_id": _KILL_SWITCH},
                {"_id": _KILL_SWITCH, **dataclasses.asdict(switch)},
                upsert=True,
            )
        )
        return switch


class MongoAlerts:
    def __init__(self, db: MongoDb, stream: StreamRepo | None = None) -> None:
        self._db = db
        self._stream = stream

    async def raise_alert(self, alert: Alert) -> Alert:
        await self._db.call(self._db.collection(ALERTS).insert_one(_doc(alert)))
        await self._announce(alert)
        return alert

    async def _announce(self, alert: Alert) -> None:
        if self._stream is not None:
            await self._stream.append((alert,))

    async def get(self, fleet_id: str, alert_id: str) -> Alert:
        doc = await self._db.find_one(
            ALERTS, {"_id": alert_id, "fleet_id": fleet_id}, f"alert {alert_id}"
        )
        return to_alert(doc)

    async def list(
        self,
        fleet_id: str,
        *,
        vehicle_id: str | None = None,
        open_only: bool = False,
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page[Alert]:
        limit = page_limit(limit)
        query: Doc = {"fleet_id": fleet_id}
        if vehicle_id is not None:
            query["vehicle_id"] = vehicle_id
        if open_only:
            query["cleared_ms"] = None
        if cursor is not None:
            query.update(after(["raised_ms", "_id"], decode_cursor(cursor, "alert", (int, str))))
        found = await self._db.find(ALERTS, query, [("raised_ms", ASC), ("_id", ASC)], limit + 1)
        return make_page(
            [to_alert(d) for d in found], limit, "alert", lambda a: (a.raised_ms, a.id)
        )

    async def open_alerts(
        self,
        *,
        device_id: str | None = None,
        vehicle_id: str | None = None,
        kind: AlertKind | None = None,
    ) -> builtins.list[Alert]:
        about = [
            {name: value}
            for name, value in (("device_id", device_id), ("vehicle_id", vehicle_id))
            if value is not None
        ]
        if not about:
            return []
        query: Doc = {"$or": about, "cleared_ms": None}
        if kind is not None:
            query["kind"] = kind.value
        found = await self._db.find(ALERTS, query, [("raised_ms", ASC), ("_id", ASC)])
        return [to_alert(d) for d in found]

    async def clear(self, fleet_id: str, alert_id: str, *, by: str, at_ms: int) -> Alert:
        # Only an alert still open is updated, so the first clearing stays.
        doc = await self._db.call(
            self._db.collection(ALERTS).find_one_and_update(
                {"_id": alert_id, "fleet_id": fleet_id, "cleared_ms": None},
                # open_key: a closed alert no longer stands for its incident (mongo/tracking.py)
                {"$set": {"cleared_ms": at_ms, "cleared_by": by}, "$unset": {"open_key": ""}},
                return_document=ReturnDocument.AFTER,
            )
        )
        if doc is None:
            return await self.get(fleet_id, alert_id)
        alert = to_alert(doc)
        await self._announce(alert)
        return alert
