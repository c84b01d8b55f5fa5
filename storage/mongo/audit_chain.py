"""The audit logs' hash chains on MongoDB (storage/audit_chain.py): append, read, migrate.

An append reads its chain's head (the entry with the highest ``seq``) and inserts the next
link; the unique (fleet_id, seq) index makes the insert a compare-and-set on the head: of two
processes appending after the same head, one insert fails on the index (Conflict), and that
process reads the new head and links again. The chain cannot fork, and it needs no head
document to keep in step with the entries. Inside a transaction a failed insert aborts the
transaction, so there the race surfaces as `ChainRace` and the caller runs it again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pymongo.asynchronous.client_session import AsyncClientSession

from storage.audit_chain import Chained, link
from storage.errors import Conflict
from storage.mongo.db import Doc, MongoDb

E = TypeVar("E", bound=Chained)

# Appends racing for one chain's head: past this many lost races something is wrong (a
# runaway writer), and the caller gets the Conflict.
MAX_ATTEMPTS = 20


class ChainRace(Exception):
    """Another writer took the chain's next seq inside a transaction: run it again."""


async def _head(
    db: MongoDb, collection: str, fleet_id: str | None, session: AsyncClientSession | None
) -> tuple[int, str | None]:
    doc = await db.call(
        db.collection(collection).find_one(
            {"fleet_id": fleet_id},
            {"seq": 1, "hash": 1},
            sort=[("seq", -1)],
            session=session,
        )
    )
    if doc is None or not doc.get("seq"):
        return 0, None
    return int(doc["seq"]), str(doc["hash"])


async def insert_chained(
    db: MongoDb,
    collection: str,
    entry: E,
    to_doc: Callable[[E], Doc],
    *,
    session: AsyncClientSession | None = None,
) -> E:
    """Insert ``entry`` as the next link of its fleet's chain. With a ``session`` (inside a
    transaction) a lost race raises `ChainRace`; without, it is retried here."""
    head = await _head(db, collection, entry.fleet_id, session)
    for _ in range(MAX_ATTEMPTS):
        linked = link(entry, *head)
        try:
            await db.call(db.collection(collection).insert_one(to_doc(linked), session=session))
        except Conflict:
            if session is not None:
                raise ChainRace(collection) from None
            moved = await _head(db, collection, entry.fleet_id, session)
            if moved == head:
                raise  # not the chain: the entry's own id exists already
            head = moved
            continue
        return linked
    raise Conflict(f"{collection}: {MAX_ATTEMPTS} appends lost the race for the chain's head")


async def read_chain(
    db: MongoDb,
    collection: str,
    to_entry: Callable[[Doc], E],
    fleet_id: str | None,
    after_seq: int,
    limit: int,
) -> list[E]:
    query = {"fleet_id": fleet_id, "seq": {"$gt": after_seq}}
    found = await db.find(collection, query, [("seq", 1)], limit)
    return [to_entry(d) for d in found]


async def chain_fleets(db: MongoDb, collection: str) -> list[str | None]:
    found: list[Any] = await db.call(db.collection(collection).distinct("fleet_id"))
    return sorted(found, key=lambda f: (f is not None, f or ""))


async def chain_existing(
    db: MongoDb, collection: str, to_entry: Callable[[Doc], E], to_doc: Callable[[E], Doc]
) -> None:
    """Migration: link the entries stored before the chains, per fleet in (time_ms, _id)
    order. Deterministic, so a run stopped half way and run again writes the same links."""
    cursor = db.collection(collection).find({}).sort([("time_ms", 1), ("_id", 1)])
    heads: dict[str | None, tuple[int, str | None]] = {}
    for doc in await db.call_unchecked(cursor.to_list()):
        doc.setdefault("seq", 0)
        doc.setdefault("prev_hash", "")
        doc.setdefault("hash", "")
        entry = to_entry(doc)
        seq, prev = heads.get(entry.fleet_id, (0, None))
        linked = link(entry, seq, prev)
        heads[entry.fleet_id] = (linked.seq, linked.hash)
        fields = to_doc(linked)
        await db.call_unchecked(
            db.collection(collection).update_one(
                {"_id": doc["_id"]},
                {"$set": {k: fields[k] for k in ("seq", "prev_hash", "hash")}},
            )
        )
