"""Numbered schema migrations of the MongoDB engine, stamped in a version document.

The version lives in ``schema_version`` (``{_id: "gp8", version: N}``). Version 1 is the
first release (git 8ff05ce), which wrote no version document: a database with gp8's
collections and no document is at version 1 (its indexes are frozen as
tests/storage/fixtures/mongo_v1_indexes.json). Collections need no creation (they come with
their indexes); a field a newer gp8 added is optional in the documents, read with a default
(positions' ``io``), so it needs no step either. What does: data rewritten (secrets sealed,
badges pseudonymised), indexes dropped or changed, collections renamed.

A standalone server and the test fake have no multi-document transactions, so every step is
safe to run again after a crash half way (each document is compare-and-set, or marked as done
where the new value cannot tell itself from the old: badges), and the version is stamped
after the step. The indexes of `schema.INDEXES` are made at every start
(createIndexes with an existing spec is a no-op): an index new in this gp8 appears at once.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from storage.migrations import SchemaState, check_version
from storage.mongo.audit_chain import chain_existing
from storage.mongo.command_schema import COMMAND_AUDIT
from storage.mongo.db import Doc, MongoDb
from storage.mongo.documents import access_doc, to_access
from storage.mongo.schema import (
    ACCESS_LOG,
    DEVICES,
    EVENTS,
    FLEETS,
    INDEXES,
    LAST_POSITIONS,
    POSITIONS,
)
from storage.mongo.tracking_schema import TRACKING_POLICIES
from storage.mongo.webhook_schema import WEBHOOKS
from storage.pseudonyms import BadgePseudonyms
from storage.secrets import SecretBox, SecretsError, device_context, webhook_context

SCHEMA_COLLECTION = "schema_version"
_VERSION_ID = "gp8"

# A step gets the store's keys: secrets (storage/secrets.py) and badges (storage/pseudonyms.py).
Step = Callable[[MongoDb, SecretBox, BadgePseudonyms], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Migration:
    version: int  # the version a database is at once this step ran
    what: str
    apply: Step


# (collection, context of a document's secret): every secret gp8 must be able to read back.
SEALED_FIELDS: tuple[tuple[str, Callable[[str], str]], ...] = (
    (DEVICES, device_context),
    (WEBHOOKS, webhook_context),
)


def _opens(secrets: SecretBox, stored: str, context: str) -> bool:
    try:
        secrets.open(stored, context)
    except SecretsError:
        return False
    return True


async def _secrets_of(db: MongoDb, collection: str) -> list[Doc]:
    cursor = db.collection(collection).find({}, {"_id": 1, "secret": 1})
    docs: list[Doc] = await db.call_unchecked(cursor.to_list())
    return docs


# (document id, stored value, new value)
Update = tuple[str, str, str]


async def _replace_secrets(db: MongoDb, collection: str, updates: list[Update]) -> None:
    for doc_id, old, new in updates:
        # Compare-and-set: a document changed meanwhile keeps its newer value.
        await db.call_unchecked(
            db.collection(collection).update_one(
                {"_id": doc_id, "secret": old}, {"$set": {"secret": new}}
            )
        )


async def _seal_clear_secrets(db: MongoDb, secrets: SecretBox, badges: BadgePseudonyms) -> None:
    # Up to version 1 every secret was in clear. One that already opens was sealed by an
    # earlier run of this step that stopped half way.
    for collection, context in SEALED_FIELDS:
        updates = [
            (d["_id"], d["secret"], secrets.seal(d["secret"], context(d["_id"])))
            for d in await _secrets_of(db, collection)
            if not _opens(secrets, d["secret"], context(d["_id"]))
        ]
        await _replace_secrets(db, collection, updates)


async def reseal_secrets(db: MongoDb, secrets: SecretBox) -> dict[str, int]:
    """Seal again with the current key every secret sealed with an older one. Every value is
    opened before the first write, so an unknown key id changes nothing. Counts by collection.
    """
    planned: dict[str, list[Update]] = {}
    for collection, context in SEALED_FIELDS:
        planned[collection] = []
        for doc in await _secrets_of(db, collection):
            sealed = secrets.reseal(doc["secret"], context(doc["_id"]))
            if sealed is not None:
                planned[collection].append((doc["_id"], doc["secret"], sealed))
    for collection, updates in planned.items():
        await _replace_secrets(db, collection, updates)
    return {collection: len(updates) for collection, updates in planned.items()}


async def _chain_audit(db: MongoDb, secrets: SecretBox, badges: BadgePseudonyms) -> None:
    # The audit logs' entries stored before the hash chains get their links (API keys' owner
    # email and last use need no step: read with defaults, storage/mongo/documents.py).
    from storage.mongo.commands import _doc, to_audit

    await chain_existing(db, ACCESS_LOG, to_access, access_doc)
    await chain_existing(db, COMMAND_AUDIT, to_audit, _doc)


# The fields holding a badge number before version 4, by collection (last positions are
# copies of positions; events carry theirs).
BADGE_FIELDS: tuple[tuple[str, str], ...] = (
    (POSITIONS, "driver_badge"),
    (EVENTS, "position.driver_badge"),
    (LAST_POSITIONS, "driver_badge"),
)
# Set on each document whose badge this step hashed, and removed once every one is done: on a
# run after a crash half way, what carries it is a pseudonym already (never hashed twice).
_HASHED = "_gp8_badge_pseudonym"
# In the version document once every badge is a pseudonym, before the marks are removed.
_BADGES_DONE = "badges_pseudonymised"


async def _pseudonymise_badges(db: MongoDb, secrets: SecretBox, badges: BadgePseudonyms) -> None:
    # Up to version 3 badges were badge numbers. One update per distinct badge (a fleet's
    # drivers: few) rather than per document, each only on documents not yet marked.
    version = db.collection(SCHEMA_COLLECTION)
    done = await db.call_unchecked(version.find_one({"_id": _VERSION_ID, _BADGES_DONE: True}))
    if done is None:
        for collection, field in BADGE_FIELDS:
            todo = {field: {"$ne": None}, _HASHED: {"$exists": False}}
            raw_badges = await db.call_unchecked(db.collection(collection).distinct(field, todo))
            for raw in raw_badges:
                await db.call_unchecked(
                    db.collection(collection).update_many(
                        {**todo, field: raw}, {"$set": {field: badges.of(raw), _HASHED: True}}
                    )
                )
        policies = db.collection(TRACKING_POLICIES)
        todo = {"badges.0": {"$exists": True}, _HASHED: {"$exists": False}}
        for policy in await db.call_unchecked(policies.find(todo, {"badges": 1}).to_list()):
            hashed = sorted(badges.of(b) for b in policy["badges"])
            await db.call_unchecked(
                policies.update_one(
                    {"_id": policy["_id"], **todo}, {"$set": {"badges": hashed, _HASHED: True}}
                )
            )
        await db.call_unchecked(
            version.update_one({"_id": _VERSION_ID}, {"$set": {_BADGES_DONE: True}})
        )
    for collection in (*(c for c, _ in BADGE_FIELDS), TRACKING_POLICIES):
        await db.call_unchecked(
            db.collection(collection).update_many(
                {_HASHED: {"$exists": True}}, {"$unset": {_HASHED: ""}}
            )
        )


MIGRATIONS: tuple[Migration, ...] = (
    Migration(2, "seal the device and webhook secrets (storage/secrets.py)", _seal_clear_secrets),
    Migration(3, "audit hash chains", _chain_audit),
    Migration(
        4, "driver badges stored as pseudonyms (storage/pseudonyms.py)", _pseudonymise_badges
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1].version

# Any of these present without a version document: a database of the first release.
_GP8_COLLECTIONS = frozenset({FLEETS, *INDEXES})


async def stored_version(db: MongoDb) -> int:
    """The database's version: 0 when it holds nothing of gp8 (fresh)."""
    doc = await db.call_unchecked(db.collection(SCHEMA_COLLECTION).find_one({"_id": _VERSION_ID}))
    if doc is not None:
        return int(doc["version"])
    names = await db.call_unchecked(db.database.list_collection_names())
    return 1 if _GP8_COLLECTIONS.intersection(names) else 0


async def _stamp(db: MongoDb, version: int) -> None:
    await db.call_unchecked(
        db.collection(SCHEMA_COLLECTION).update_one(
            {"_id": _VERSION_ID},
            {"$set": {"version": version, "updated_ms": int(time.time() * 1000)}},
            upsert=True,
        )
    )


async def open_schema(
    db: MongoDb, secrets: SecretBox, *, migrate: bool, badges: BadgePseudonyms | None = None
) -> SchemaState:
    """Make the database servable (before the store is open), or refuse it.

    Fresh: indexes made, stamped `SCHEMA_VERSION`. Current: indexes made. Older: migrated when
    ``migrate``, else SchemaTooOld. Newer: SchemaTooNew, always. ``badges``: the driver key,
    for the step that pseudonymises stored badges (default: the development key).
    """
    found = await stored_version(db)
    check_version(found, SCHEMA_VERSION, migrate=migrate)
    applied: list[str] = []
    if 0 < found < SCHEMA_VERSION:
        for migration in MIGRATIONS:
            if migration.version <= found:
                continue
            await migration.apply(db, secrets, badges or BadgePseudonyms.development())
            await _stamp(db, migration.version)
            applied.append(f"{migration.version}: {migration.what}")
    for name, indexes in INDEXES.items():
        # createIndexes with an index that already exists with the same spec is a no-op.
        await db.call_unchecked(db.collection(name).create_indexes(indexes))
    if found == 0:
        await _stamp(db, SCHEMA_VERSION)
    return SchemaState("mongo", found, SCHEMA_VERSION, tuple(applied))
