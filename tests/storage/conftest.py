"""One `store` fixture over every engine: each contract test runs against each of them.

* ``sqlite``: a fresh file, on tmpfs when there is one (these tests check semantics, and an
  fsync per commit on a shared disk would make them several times slower for nothing;
  tests/storage/test_sqlite.py checks durability settings on a real disk);
* ``sqlite-process``: the same with its writes in a process of their own
  (storage/sqlite/writer_process.py): every write's arguments, result and error cross pickled;
* ``mongo-fake``: `pymongo_async_mock.AsyncMongoMockClient`, in memory (slow per document:
  keep these tests to dozens of documents);
* ``mongo-real``: a throwaway database on GP8_TEST_MONGO_URL, dropped afterwards; skipped when
  the variable is not set;
* ``mongo-txn``: the fake as a replica set would run it, with transactions (tests.storage.fakes),
  for the code paths that use them; opted into by the modules that test those paths
  (`ENGINES_WITH_TRANSACTIONS`).
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from pymongo import AsyncMongoClient
from pymongo_async_mock import AsyncMongoMockClient

from storage.models import DeviceModel, Fleet, Vehicle
from storage.mongo import MongoStore
from storage.mongo.commands import MongoCommands
from storage.mongo.resources import MongoVehicles
from storage.mongo.stream import MongoStream
from storage.mongo.telemetry import MongoTelemetry
from storage.repository import Store
from storage.sqlite import SqliteStore
from tests.storage.fakes import FakeTransactions

MONGO_URL = os.environ.get("GP8_TEST_MONGO_URL")
# A port nothing listens on ("the server is down"), and a short bound to find out.
UNREACHABLE_MONGO_URL = "mongodb://127.0.0.1:9/?connectTimeoutMS=200"
UNREACHABLE_TIMEOUT_S = 0.3

ENGINES = [
    "sqlite",
    "sqlite-process",
    "mongo-fake",
    pytest.param(
        "mongo-real",
        marks=[
            pytest.mark.mongo,
            pytest.mark.skipif(
                MONGO_URL is None,
                reason="mongo-real: set GP8_TEST_MONGO_URL=mongodb://host:27017 to run the "
                "storage contract against a real MongoDB",
            ),
        ],
    ),
]


ENGINES_WITH_TRANSACTIONS = [*ENGINES, "mongo-txn"]


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


_TMPFS = Path("/dev/shm")


@pytest.fixture
def db_dir(tmp_path: Path) -> Iterator[Path]:
    if not _TMPFS.is_dir():
        yield tmp_path
        return
    path = Path(tempfile.mkdtemp(prefix="gp8-storage-test-", dir=_TMPFS))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def store(engine: str, db_dir: Path) -> AsyncIterator[Store]:
    if engine.startswith("sqlite"):
        sqlite_store = SqliteStore(
            db_dir / "gp8.sqlite3", writer_process=engine == "sqlite-process"
        )
        await sqlite_store.start()
        yield sqlite_store
        await sqlite_store.close()
    elif engine == "mongo-fake":
        fake_store = MongoStore(AsyncMongoMockClient(), "gp8_test")
        await fake_store.start()
        yield fake_store
        await fake_store.close()
    elif engine == "mongo-txn":
        txn_store = MongoStore(AsyncMongoMockClient(), "gp8_test")
        transactions = FakeTransactions()
        stream = txn_store.stream
        assert isinstance(stream, MongoStream)
        txn_store.telemetry = MongoTelemetry(txn_store._db, stream, transactions)
        txn_store.commands = MongoCommands(txn_store._db, transactions, stream=stream)
        txn_store.vehicles = MongoVehicles(txn_store._db, transactions)
        await txn_store.start()
        yield txn_store
        await txn_store.close()
    else:
        assert MONGO_URL is not None
        client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(MONGO_URL)
        db_name = f"gp8_test_{secrets.token_hex(4)}"
        real_store = MongoStore(client, db_name)
        await real_store.start()
        yield real_store
        await real_store.close()
        await client.drop_database(db_name)
        await client.close()


@pytest.fixture
async def unreachable_store(engine: str, tmp_path: Path) -> AsyncIterator[Store]:
    """A store of this engine whose database cannot be reached (not started)."""
    if engine.startswith("sqlite"):
        # A directory that does not exist: SQLite cannot open (SQLITE_CANTOPEN).
        yield SqliteStore(tmp_path / "missing" / "gp8.sqlite3")
    else:
        client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(UNREACHABLE_MONGO_URL)
        yield MongoStore(client, "gp8_test", operation_timeout_s=UNREACHABLE_TIMEOUT_S)
        await client.close()


@pytest.fixture
async def fleet(store: Store) -> Fleet:
    return await store.fleets.create("Fleet A")


@pytest.fixture
async def other_fleet(store: Store) -> Fleet:
    return await store.fleets.create("Fleet B")


@pytest.fixture
async def vehicle(store: Store, fleet: Fleet) -> Vehicle:
    return await store.vehicles.create(
        fleet.id, vin="VF1AAAAA000000001", plate="AB-123-CD", label="Van 1"
    )


async def make_device(
    store: Store, fleet_id: str, imei: str, model: DeviceModel = DeviceModel.GP8000
) -> str:
    device = await store.devices.create(fleet_id, imei=imei, model=model, secret="s3cret")
    return device.id
