"""SQLite engine specifics: durability settings, locking, error mapping, schema coverage."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage.errors import Conflict, StorageError, StorageUnavailable
from storage.models import DeviceModel
from storage.sqlite import SqliteStore, schema, telemetry
from storage.sqlite.errors import storage_error
from storage.sqlite.migrations import SCHEMA_VERSION
from storage.sqlite.retention_schema import KEPT_AFTER_ERASURE
from storage.sqlite.schema import FLEET_TABLES
from tests.storage.factories import position
from tests.storage.test_erasure import fill


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "gp8.sqlite3", busy_timeout_ms=50)
    await store.start()
    yield store
    await store.close()


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None, timeout=0)


async def test_wal_and_full_fsync_on_the_write_path(sqlite_store: SqliteStore) -> None:
    with raw(sqlite_store.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    # synchronous is per connection: ask the writer itself. 2 = FULL.
    synchronous = await sqlite_store._db.write(
        lambda conn: conn.execute("PRAGMA synchronous").fetchone()[0]
    )
    assert synchronous == 2


async def test_writer_checkpoints_and_caches_for_ingest(sqlite_store: SqliteStore) -> None:
    # Per connection too: the writer's, not SQLite's defaults (1,000 pages, 2,000 KiB).
    settings = await sqlite_store._db.write(
        lambda conn: (
            conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0],
            conn.execute("PRAGMA cache_size").fetchone()[0],
        )
    )
    assert settings == (schema.WAL_AUTOCHECKPOINT_PAGES, -schema.WRITER_CACHE_KIB)
    assert schema.WAL_AUTOCHECKPOINT_PAGES > 1_000 and schema.WRITER_CACHE_KIB > 2_000


async def test_flags_are_stored_as_the_integers_1_and_0(sqlite_store: SqliteStore) -> None:
    # storage/sqlite/db.py adapts bools to int for speed: the stored values must stay what
    # sqlite3 stored without the adapter (and what other engines' readers expect).
    fleet = await sqlite_store.fleets.create("a")
    await sqlite_store.telemetry.store(
        [position(fleet.id, "dev_a", "veh_a", 1_000, fix_valid=True, ignition=False)], []
    )
    with raw(sqlite_store.path) as conn:
        row = conn.execute(
            "SELECT typeof(fix_valid), fix_valid, typeof(ignition), ignition FROM positions"
        ).fetchone()
    assert row == ("integer", 1, "integer", 0)
    (stored,) = (
        await sqlite_store.telemetry.positions(fleet.id, "veh_a", from_ms=0, to_ms=2_000)
    ).items
    assert stored.fix_valid is True and stored.ignition is False


async def test_committed_batch_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "gp8.sqlite3"
    store = SqliteStore(path)
    await store.start()
    fleet = await store.fleets.create("a")
    await store.telemetry.store([position(fleet.id, "dev_a", "veh_a", 1_000)], [])
    await store.close()

    reopened = SqliteStore(path)
    await reopened.start()
    try:
        assert await reopened.fleets.get(fleet.id) == fleet
        assert (await reopened.telemetry.last_position(fleet.id, "veh_a")) is not None
        assert (
            await reopened.telemetry.store([position(fleet.id, "dev_a", "veh_a", 1_000)], [])
        ).positions_duplicate == 1
    finally:
        await reopened.close()


async def test_locked_database_is_unavailable_and_recovers(sqlite_store: SqliteStore) -> None:
    with raw(sqlite_store.path) as other:
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock (a backup)
        with pytest.raises(StorageUnavailable, match="locked"):
            await sqlite_store.fleets.create("a")
        # Reads go on under WAL while the writer is blocked.
        assert (await sqlite_store.fleets.list()).items == []
        other.execute("ROLLBACK")
    assert (await sqlite_store.fleets.create("a")).name == "a"


async def test_failed_batch_leaves_nothing(sqlite_store: SqliteStore) -> None:
    fleet = await sqlite_store.fleets.create("a")
    good = position(fleet.id, "dev_a", "veh_a", 1_000)
    bad = position(fleet.id, "dev_a", "veh_a", 2_000, lat=None)  # NOT NULL violated
    with pytest.raises(StorageError):
        await sqlite_store.telemetry.store([good, bad], [])
    page = await sqlite_store.telemetry.positions(fleet.id, "veh_a", from_ms=0, to_ms=10_000)
    assert page.items == []  # all or nothing: the good record went with the bad one
    assert await sqlite_store.telemetry.last_position(fleet.id, "veh_a") is None


async def test_concurrent_batches_are_serialised(sqlite_store: SqliteStore) -> None:
    fleet = await sqlite_store.fleets.create("a")
    batches = [
        [position(fleet.id, "dev_a", "veh_a", t) for t in range(i, i + 50)]
        for i in range(0, 500, 25)
    ]
    results = await asyncio.gather(*(sqlite_store.telemetry.store(b, []) for b in batches))
    assert sum(r.positions_inserted for r in results) == 525  # times 0..524, each once
    assert sum(r.positions_duplicate for r in results) == 20 * 50 - 525
    last = await sqlite_store.telemetry.last_position(fleet.id, "veh_a")
    assert last is not None and last.time_ms == 524


async def test_erasure_leaves_no_row_in_any_table(sqlite_store: SqliteStore) -> None:
    fleet = await sqlite_store.fleets.create("a")
    await fill(sqlite_store, fleet.id, "356938035643809")
    await sqlite_store.fleets.delete(fleet.id)
    with raw(sqlite_store.path) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        with_fleet = {
            t
            for t in tables
            if any(c[1] == "fleet_id" for c in conn.execute(f"PRAGMA table_info({t})"))
        }
        # Every table that holds fleet data is known to the erasure (or kept on purpose: the
        # offboarding's deletion report, counts only).
        assert with_fleet == set(FLEET_TABLES) | set(KEPT_AFTER_ERASURE)
        for table in FLEET_TABLES:
            count = conn.execute(
                f"SELECT count(*) FROM {table} WHERE fleet_id = ?", (fleet.id,)
            ).fetchone()[0]
            assert count == 0, table
        assert conn.execute("SELECT count(*) FROM fleets").fetchone() == (0,)


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "gp8.sqlite3"
    with raw(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    store = SqliteStore(path)
    with pytest.raises(StorageError, match="newer"):
        await store.start()
    await store.close()


async def test_start_after_failed_start_works(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "later" / "gp8.sqlite3")
    with pytest.raises(StorageUnavailable):
        await store.start()
    (tmp_path / "later").mkdir()
    await store.start()
    try:
        await store.devices.create(
            (await store.fleets.create("a")).id, imei="1", model=DeviceModel.GP8000, secret="k"
        )
    finally:
        await store.close()


def _locked_error(tmp_path: Path) -> sqlite3.OperationalError:
    path = tmp_path / "locked.sqlite3"
    with raw(path) as holder, raw(path) as waiter:
        holder.execute("CREATE TABLE t (x)")
        holder.execute("BEGIN EXCLUSIVE")
        with pytest.raises(sqlite3.OperationalError) as info:
            waiter.execute("INSERT INTO t VALUES (1)")
        holder.execute("ROLLBACK")
    return info.value


def test_error_mapping(tmp_path: Path) -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (x PRIMARY KEY)")
    conn.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(sqlite3.IntegrityError) as integrity:
        conn.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(sqlite3.OperationalError) as syntax:
        conn.execute("SELEC nonsense")
    conn.close()
    with pytest.raises(sqlite3.ProgrammingError) as closed:
        conn.execute("SELECT 1")

    assert type(storage_error(integrity.value)) is Conflict
    assert type(storage_error(_locked_error(tmp_path))) is StorageUnavailable
    assert type(storage_error(closed.value)) is StorageUnavailable
    # A bug in our SQL is not "try again later".
    assert type(storage_error(syntax.value)) is StorageError


async def test_the_map_reads_its_area_and_each_vehicle_by_its_key(
    sqlite_store: SqliteStore, tmp_path: Path
) -> None:
    """fleet_map finds each vehicle of the area by its id in the vehicles' names index; a plan
    that walked the fleet's vehicles instead would cost the map its whole fleet (10,000 rows)."""
    fleet = await sqlite_store.fleets.create("plan")
    sql, params = telemetry._in_fleet_area(
        telemetry._SELECT_MAP, fleet.id, (2.3, 48.8, 2.4, 48.9), ordered=False
    )
    conn = raw(tmp_path / "gp8.sqlite3")
    try:
        plan = [row[-1] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
    finally:
        conn.close()
    assert any("COVERING INDEX last_positions_by_area" in step for step in plan), plan
    assert any(
        step.startswith("SEARCH v USING COVERING INDEX vehicles_names") and "id=?" in step
        for step in plan
    ), plan
    assert not any(step.startswith("SCAN") for step in plan), plan
    assert not any("TEMP B-TREE" in step for step in plan), plan  # sorted in Python
