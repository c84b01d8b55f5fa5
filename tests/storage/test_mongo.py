"""MongoDB engine specifics, on the fake: round trips, write concern, error mapping,
last-position update semantics, collection coverage of the erasure."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient, UpdateOne, WriteConcern
from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    ConnectionFailure,
    DuplicateKeyError,
    ExecutionTimeout,
    NetworkTimeout,
    NotPrimaryError,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
    WTimeoutError,
)
from pymongo_async_mock import AsyncMongoMockClient

from storage.errors import Conflict, StorageError, StorageUnavailable
from storage.latest import newest_valid_fixes
from storage.mongo import MongoStore
from storage.mongo.db import insert_new
from storage.mongo.errors import storage_error
from storage.mongo.migrations import SCHEMA_COLLECTION
from storage.mongo.retention_schema import KEPT_AFTER_ERASURE
from storage.mongo.schema import FLEET_COLLECTIONS, FLEETS, INDEXES
from storage.mongo.telemetry import _last_position_ops
from tests.storage.factories import event, position
from tests.storage.test_erasure import fill


@pytest.fixture
async def mongo_store() -> AsyncIterator[MongoStore]:
    store = MongoStore(AsyncMongoMockClient(), "gp8_test")
    await store.start()
    yield store
    await store.close()


@pytest.mark.parametrize("size", [5, 60])
async def test_store_takes_constant_round_trips(mongo_store: MongoStore, size: int) -> None:
    fleet = await mongo_store.fleets.create("a")
    positions = [position(fleet.id, f"dev_{i % 7}", f"veh_{i % 7}", 1_000 + i) for i in range(size)]
    events = [event(fleet.id, "dev_0", "veh_0", 1_000 + i) for i in range(size // 5)]
    # Once per store, not per batch: does the deployment run transactions (no, on the fake).
    assert await mongo_store.telemetry._transactions.available() is False  # type: ignore[attr-defined]
    before = mongo_store.round_trips
    await mongo_store.telemetry.store(positions, events)
    # positions, events, the stream's counter and entries (one fleet), last positions
    assert mongo_store.round_trips - before == 5
    before = mongo_store.round_trips
    await mongo_store.telemetry.store(positions, events)  # all duplicates: nothing to announce
    assert mongo_store.round_trips - before == 3
    before = mongo_store.round_trips
    await mongo_store.telemetry.store([position(fleet.id, "dev_0", None, 1, fix_valid=False)], [])
    assert mongo_store.round_trips - before == 3  # no event, no valid fix: the stream only


def test_round_trips_can_be_reset() -> None:
    store = MongoStore(AsyncMongoMockClient(), "gp8_test")
    store.round_trips = 0
    assert store.round_trips == 0


def test_database_handle_writes_with_majority() -> None:
    # A real client connects lazily: nothing is sent to this address.
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        "mongodb://127.0.0.1:9", connect=False
    )
    store = MongoStore(client, "gp8")
    assert store._db.database.write_concern == WriteConcern("majority")


async def test_from_url_keeps_url_options_and_closes_its_client() -> None:
    store = MongoStore.from_url("mongodb://127.0.0.1:9/?connectTimeoutMS=1234&appname=x", "gp8")
    options = store._client.options
    assert options.pool_options.connect_timeout == 1.234
    default = MongoStore.from_url("mongodb://127.0.0.1:9", "gp8")
    assert default._client.options.pool_options.connect_timeout == 5.0
    for s in (store, default):
        await s.close()
    with pytest.raises(StorageUnavailable):
        await store.health()


async def test_close_leaves_a_passed_in_client_open() -> None:
    client = AsyncMongoMockClient()
    store = MongoStore(client, "gp8_test")
    await store.start()
    await store.close()
    other = MongoStore(client, "gp8_test")
    await other.start()
    assert (await other.health())["engine"] == "mongo"


async def test_start_creates_the_indexes(mongo_store: MongoStore) -> None:
    for name, indexes in INDEXES.items():
        info = await mongo_store._db.collection(name).index_information()
        for index in indexes:
            assert index.document["name"] in info, (name, index.document["name"])


async def test_erasure_leaves_no_document_in_any_collection(mongo_store: MongoStore) -> None:
    fleet = await mongo_store.fleets.create("a")
    await fill(mongo_store, fleet.id, "356938035643809")
    await mongo_store.fleets.delete(fleet.id)
    names = set(await mongo_store._db.database.list_collection_names())
    # Erasure knows every collection holding fleet data (the version document holds none).
    kept = {FLEETS, SCHEMA_COLLECTION, *KEPT_AFTER_ERASURE}  # the deletion report: counts only
    assert names - kept <= set(FLEET_COLLECTIONS)
    for name in names:
        count = await mongo_store._db.collection(name).count_documents({"fleet_id": fleet.id})
        assert count == 0, name
    assert await mongo_store._db.collection(FLEETS).count_documents({}) == 0


# --- last-position update semantics, checked on the fake ---------------------------------


async def test_single_conditional_upsert_fails_when_newer_exists() -> None:
    """Why `_last_position_ops` does not use ``{_id, time_ms: {$lt: t}}`` + upsert: when a
    newer document exists the upsert tries to insert a second one with that _id."""
    collection = AsyncMongoMockClient().get_database("t").get_collection("last")
    await collection.insert_one({"_id": "v:veh_1", "time_ms": 10})
    with pytest.raises(DuplicateKeyError):
        await collection.update_one(
            {"_id": "v:veh_1", "time_ms": {"$lt": 5}}, {"$set": {"time_ms": 5}}, upsert=True
        )


async def test_last_position_ops_keep_the_newest() -> None:
    collection = AsyncMongoMockClient().get_database("t").get_collection("last")

    async def offer(*times: int) -> dict[str, int]:
        positions = [position("flt", f"dev_{t}", f"veh_{t % 2}", t) for t in times]
        ops: list[UpdateOne] = _last_position_ops(newest_valid_fixes(positions))
        await collection.bulk_write(ops, ordered=True)
        return {d["_id"]: d["time_ms"] for d in await collection.find({}).to_list()}

    assert await offer(10, 11) == {"v:veh_0": 10, "v:veh_1": 11}  # created
    assert await offer(4, 5) == {"v:veh_0": 10, "v:veh_1": 11}  # older: kept, no error
    assert await offer(20, 11) == {"v:veh_0": 20, "v:veh_1": 11}  # newer moves, equal stays


# --- error mapping -----------------------------------------------------------------------


class _Raising:
    """A collection whose insert_many fails as a server would."""

    def __init__(self, error: PyMongoError) -> None:
        self.error = error

    async def insert_many(self, documents: list[dict[str, Any]], ordered: bool) -> None:
        raise self.error


def _bulk(
    write_errors: list[dict[str, Any]], write_concern_errors: list[dict[str, Any]] | None = None
) -> BulkWriteError:
    return BulkWriteError(
        {
            "writeErrors": write_errors,
            "writeConcernErrors": write_concern_errors or [],
            "nInserted": 0,
        }
    )


async def test_insert_counts_only_duplicate_key_errors_as_resends() -> None:
    duplicates = _bulk([{"index": 0, "code": 11000, "errmsg": "dup"}])
    assert await insert_new(_Raising(duplicates), [{"_id": 1}, {"_id": 2}]) == [0]  # type: ignore[arg-type]
    for error in (
        _bulk([{"index": 0, "code": 11000}, {"index": 1, "code": 121, "errmsg": "validation"}]),
        _bulk([{"index": 0, "code": 11000}], [{"code": 64, "errmsg": "waiting for replication"}]),
    ):
        with pytest.raises(BulkWriteError):
            await insert_new(_Raising(error), [{"_id": 1}, {"_id": 2}])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (DuplicateKeyError("E11000", 11000), Conflict),
        (ServerSelectionTimeoutError("no primary"), StorageUnavailable),
        (AutoReconnect("reconnecting"), StorageUnavailable),
        (NetworkTimeout("timed out"), StorageUnavailable),
        (ConnectionFailure("refused"), StorageUnavailable),
        (NotPrimaryError("not primary", {"code": 10107}), StorageUnavailable),
        (WTimeoutError("majority not reached", 64, {}), StorageUnavailable),
        (ExecutionTimeout("maxTimeMS", 50), StorageUnavailable),
        (_bulk([{"index": 0, "code": 11000}]), Conflict),
        (_bulk([{"index": 0, "code": 121}]), StorageError),
        (_bulk([], [{"code": 64}]), StorageUnavailable),
        (OperationFailure("unauthorized", 13), StorageError),
    ],
)
def test_error_mapping(error: PyMongoError, expected: type[StorageError]) -> None:
    assert type(storage_error(error)) is expected


async def test_driver_error_in_store_is_translated(
    mongo_store: MongoStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet = await mongo_store.fleets.create("a")

    async def failing(*args: object, **kwargs: object) -> None:
        raise _bulk([{"index": 0, "code": 121, "errmsg": "Document failed validation"}])

    collection = mongo_store._db.collection("positions")
    monkeypatch.setattr(type(collection), "insert_many", failing)
    with pytest.raises(StorageError) as info:
        await mongo_store.telemetry.store([position(fleet.id, "dev_a", "veh_a", 1)], [])
    assert isinstance(info.value.__cause__, BulkWriteError)
