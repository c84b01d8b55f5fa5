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
from collections.abc import Collection, Sequence
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession

from storage.errors import Conflict, StorageUnavailable
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
    CommandStep,
    KillSwitch,
    Page,
    Severity,
    VehicleLockState,
    first_command_seq,
)
from storage.mongo.audit_chain import (
    MAX_ATTEMPTS,
    ChainRace,
    chain_fleets,
    insert_chained,
    read_chain,
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
from storage.mongo.query import ASC, after, keyset
from storage.mongo.transactions import ServerTransactions, Transactions
from storage.pagination import decode_cursor, make_page, order_kind, page_limit
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
# Keys per $in lookup: keeps each query document small.
_KEYS_PER_QUERY = 1000


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

    async def create_many(
        self, items: Sequence[tuple[CommandRecord, AuditEntry]]
    ) -> builtins.list[tuple[CommandRecord, bool]]:
        """With transactions: the new ones' claims, audit lines and commands in one
        transaction. Without (or when a key was claimed meanwhile): `create` for each, the
        ordered fallback one command at a time."""
        if not items:
            return []
        if not await self._transactions.available():
            return [await self.create(command, requested) for command, requested in items]
        answers: list[tuple[CommandRecord, bool] | None] = []
        new: list[tuple[CommandRecord, AuditEntry]] = []
        keys: set[str] = set()
        for command, requested in items:
            key = command.idempotency_key
            existing = (
                await self.by_idempotency_key(command.fleet_id, key)
                if key is not None and key not in keys
                else None
            )
            if existing is not None:
                answers.append((existing, False))
                continue
            if key is not None and key in keys:
                # The same key twice in one batch: the first one's replay (answered below).
                answers.append(None)
                continue
            if key is not None:
                keys.add(key)
            seq = await self._next_seq(command.imei, command.created_ms)
            new.append((dataclasses.replace(command, seq=seq), requested))
            answers.append(None)
        try:
            await self._write_many_in_transaction(new)
        except Conflict:
            # A key claimed by another writer meanwhile: none of the batch is stored; each
            # goes on its own, which answers the claimed one as a replay.
            return [await self.create(command, requested) for command, requested in items]
        if self._stream is not None and new:
            await self._stream.append(tuple(command for command, _ in new))
        stored = iter(command for command, _ in new)
        first: dict[str, CommandRecord] = {}
        out: list[tuple[CommandRecord, bool]] = []
        for (command, _), answer in zip(items, answers, strict=True):
            key = command.idempotency_key
            if answer is not None:
                out.append(answer)
            elif key is not None and key in first:
                out.append((first[key], False))
            else:
                created = next(stored)
                if key is not None:
                    first[key] = created
                out.append((created, True))
        return out

    async def _write_many_in_transaction(
        self, items: Sequence[tuple[CommandRecord, AuditEntry]]
    ) -> None:
        """Every claim, audit line and command of ``items``: all committed, or none."""
        if not items:
            return

        async def work(session: AsyncClientSession) -> None:
            for command, requested in items:
                key_doc = _key_doc(command)
                if key_doc is not None:
                    await self._col(COMMAND_IDEMPOTENCY).insert_one(key_doc, session=session)
                await insert_chained(self._db, COMMAND_AUDIT, requested, _doc, session=session)
            await self._col(COMMANDS).insert_many(
                [_doc(command) for command, _ in items], ordered=True, session=session
            )

        for _ in range(MAX_ATTEMPTS):
            try:
                await self._transactions.run(work)
                return
            except ChainRace:
                continue  # another writer took the audit chain's next link: run it again
        raise Conflict("the command audit chain's head kept moving")

    async def _write_in_transaction(self, command: CommandRecord, requested: AuditEntry) -> None:
        """Idempotency claim, audit line and command: all committed, or none."""
        key_doc = _key_doc(command)

        async def work(session: AsyncClientSession) -> None:
            if key_doc is not None:
                await self._col(COMMAND_IDEMPOTENCY).insert_one(key_doc, session=session)
            await insert_chained(self._db, COMMAND_AUDIT, requested, _doc, session=session)
            await self._col(COMMANDS).insert_one(_doc(command), session=session)

        for _ in range(MAX_ATTEMPTS):
            try:
                await self._transactions.run(work)
                return
            except ChainRace:
                continue  # another writer took the audit chain's next link: run it again
        raise Conflict("the command audit chain's head kept moving")

    async def _write_ordered(self, command: CommandRecord, requested: AuditEntry) -> None:
        """Without transactions: each write on its own, in the order that fails safe."""
        key_doc = _key_doc(command)
        if key_doc is not None:
            await self._db.call(self._col(COMMAND_IDEMPOTENCY).insert_one(key_doc))
        await insert_chained(self._db, COMMAND_AUDIT, requested, _doc)
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

    async def by_idempotency_keys(
        self, fleet_id: str, keys: Collection[str]
    ) -> dict[str, CommandRecord]:
        found: dict[str, CommandRecord] = {}
        wanted = [f"{fleet_id}:{key}" for key in keys]
        for i in range(0, len(wanted), _KEYS_PER_QUERY):
            claims = await self._db.call(
                self._col(COMMAND_IDEMPOTENCY)
                .find({"_id": {"$in": wanted[i : i + _KEYS_PER_QUERY]}})
                .to_list()
            )
            ids = [claim["command_id"] for claim in claims]
            docs = await self._db.call(
                self._col().find({"_id": {"$in": ids}, "fleet_id": fleet_id}).to_list()
            )
            for doc in docs:
                command = to_command(doc)
                assert command.idempotency_key is not None  # claimed under it
                found[command.idempotency_key] = command
        return found

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
        newest_first: bool = False,
    ) -> Page[CommandRecord]:
        limit = page_limit(limit)
        query: Doc = {"fleet_id": fleet_id, "created_ms": {"$gte": from_ms, "$lt": to_ms}}
        if vehicle_id is not None:
            query["vehicle_id"] = vehicle_id
        if status is not None:
            query["status"] = status.value
        if kind is not None:
            query["kind"] = kind.value
        tag = order_kind("command", newest_first)
        key = None if cursor is None else decode_cursor(cursor, tag, (int, str))
        seek, sort = keyset(["created_ms", "_id"], key, newest_first=newest_first)
        found = await self._db.find(COMMANDS, {**query, **seek}, sort, limit + 1)
        return make_page([to_command(d) for d in found], limit, tag, lambda c: (c.created_ms, c.id))

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

    async def _step(self, command_id: str, step: CommandStep) -> CommandRecord | None:
        """One step of `transitions`: the compare-and-set, then its audit line."""
        if not step.expected:
            return None
        fields = dict(step.changes)
        unknown = set(fields) - _CHANGEABLE
        if unknown:
            raise ValueError(f"not changeable by a transition: {sorted(unknown)}")
        if step.vehicle_state is not None:
            # Before the status: whoever sees the command acknowledged sees its effect.
            await self.set_vehicle_state(step.vehicle_state)
        update: Doc = {"$set": {"status": step.status.value, "updated_ms": step.at_ms, **fields}}
        if step.attempts_delta:
            update["$inc"] = {"attempts": step.attempts_delta}
        doc = await self._db.call(
            self._col().find_one_and_update(
                {"_id": command_id, "status": {"$in": [s.value for s in step.expected]}},
                update,
                return_document=ReturnDocument.AFTER,
            )
        )
        if doc is None:
            return None
        if step.audit is not None:
            await insert_chained(self._db, COMMAND_AUDIT, step.audit, _doc)
        changed = to_command(doc)
        if self._stream is not None:
            await self._stream.append((changed,))
        return changed

    async def transitions(
        self, command_id: str, steps: Sequence[CommandStep]
    ) -> builtins.list[CommandRecord]:
        # Each step alone (`_step`: the compare-and-set, then its audit line), without a
        # transaction: the guarantees of an engine without one (`CommandRepo.transitions`).
        changed: builtins.list[CommandRecord] = []
        for step in steps:
            if step.overtakes is not None and await self._waiting_before(command_id, step):
                break
            done = await self._step(command_id, step)
            if done is None:
                break
            changed.append(done)
        return changed

    async def _waiting_before(self, command_id: str, step: CommandStep) -> bool:
        """Another live command of the box that ``step`` may not overtake (without a
        transaction: those stored by the time of this read)."""
        assert step.overtakes is not None
        this = await self._db.call(self._col().find_one({"_id": command_id}, {"imei": 1}))
        if this is None:
            return False  # the step's compare-and-set finds nothing either
        query = {
            "imei": this["imei"],
            "status": {"$in": [CommandState.QUEUED.value, CommandState.SENT.value]},
            "expires_ms": {"$gt": step.at_ms},
            "_id": {"$ne": command_id},
        }
        others = await self._db.call(self._col().find(query, {"seq": 1}).to_list())
        return any(doc["seq"] not in step.overtakes for doc in others)

    async def create_then(
        self, command: CommandRecord, requested: AuditEntry, steps: Sequence[CommandStep]
    ) -> tuple[builtins.list[CommandRecord], bool]:
        stored, created = await self.create(command, requested)
        if not created:
            return [stored], False
        numbered = [step.numbered(stored.seq) for step in steps]
        return [stored, *await self.transitions(stored.id, numbered)], True

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
        await insert_chained(self._db, COMMAND_AUDIT, entry, _doc)

    async def chain(
        self, fleet_id: str | None, *, after_seq: int = 0, limit: int = 1000
    ) -> list[AuditEntry]:
        return await read_chain(self._db, COMMAND_AUDIT, to_audit, fleet_id, after_seq, limit)

    async def chain_fleets(self) -> list[str | None]:
        return await chain_fleets(self._db, COMMAND_AUDIT)

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
        newest_first: bool = False,
    ) -> Page[AuditEntry]:
        limit = page_limit(limit)
        # fleet_id None matches the null of the platform's entries, never a fleet's.
        query: Doc = {"fleet_id": fleet_id, "time_ms": {"$gte": from_ms, "$lt": to_ms}}
        if vehicle_id is not None:
            query["vehicle_id"] = vehicle_id
        if command_id is not None:
            query["command_id"] = command_id
        tag = order_kind("audit", newest_first)
        key = None if cursor is None else decode_cursor(cursor, tag, (int, str))
        seek, sort = keyset(["time_ms", "_id"], key, newest_first=newest_first)
        found = await self._db.find(COMMAND_AUDIT, {**query, **seek}, sort, limit + 1)
        return make_page([to_audit(d) for d in found], limit, tag, lambda e: (e.time_ms, e.id))


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
