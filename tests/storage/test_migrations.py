"""Versioned migrations: a database of the first release (schema version 1, frozen in
tests/storage/fixtures/) migrated to the current version with every record intact and its
secrets sealed; an older database refused without `migrate`, a newer one always."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from pymongo import IndexModel
from pymongo_async_mock import AsyncMongoMockClient

from storage.migrations import SchemaTooNew, SchemaTooOld
from storage.models import (
    Device,
    DeviceModel,
    DeviceProtocol,
    DeviceStatus,
    Event,
    Fleet,
    Position,
    TrackingPolicy,
)
from storage.mongo import MongoStore
from storage.mongo import documents as docs
from storage.mongo import migrations as mongo_migrations
from storage.mongo.schema import INDEXES
from storage.mongo.webhooks import endpoint_doc
from storage.pseudonyms import BadgePseudonyms
from storage.repository import Store
from storage.secrets import PREFIX, SecretBox
from storage.sqlite import SqliteStore
from storage.sqlite import migrations as sqlite_migrations
from storage.sqlite.telemetry import _SELECT_MAP, _in_fleet_area
from storage.sqlite.webhooks import _endpoint_values
from tests.storage.factories import position
from tests.storage.test_webhooks import endpoint

FIXTURES = Path(__file__).parent / "fixtures"
BOX = SecretBox(bytes(range(32)))
FLEET = Fleet("flt_v1", "Fleet of release 1", 1_000)
DEVICE = Device(
    id="dev_v1",
    fleet_id=FLEET.id,
    imei="356938035643809",
    model=DeviceModel.GP8500,
    secret="clear-box-secret-v1",
    created_ms=1_000,
    status=DeviceStatus.ACTIVE,
    protocol=DeviceProtocol.GP8,
)
HOOK = endpoint(FLEET.id, id="whk_v1", secret="whsec_Y2xlYXItd2ViaG9vay1zZWNyZXQtdjE=")
# The driver key of these tests; release 1 stored the badge number itself.
KEY = BadgePseudonyms(bytes(range(64, 96)))
RAW_BADGE = 4242
POSITION = position(FLEET.id, DEVICE.id, "veh_v1", 5_000, driver_badge=RAW_BADGE)
# What gp8 reads once migrated: no io column yet, the badge as its pseudonym.
MIGRATED = POSITION._replace(io=None, driver_badge=KEY.of(RAW_BADGE))


# --- SQLite ----------------------------------------------------------------------------------


def _filler(table: str, column: tuple[Any, ...]) -> object:
    _, name, sql_type, _notnull, _default, _pk = column
    if sql_type == "INTEGER":
        return 7
    if sql_type == "REAL":
        return 1.5
    if sql_type == "BLOB":
        return b"{}"
    return f"{table}.{name}"


def _v1_file(path: Path) -> dict[str, tuple[list[str], list[tuple[Any, ...]]]]:
    """A version-1 file with one row in every table; by table, its columns and rows."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript((FIXTURES / "sqlite_v1.sql").read_text())
    tables = [
        r[0]
        for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
    ]
    written = {
        "fleets": (FLEET.id, FLEET.name, FLEET.created_ms),
        "devices": (
            *(DEVICE.id, DEVICE.fleet_id, DEVICE.imei, DEVICE.model.value, DEVICE.secret),
            *(DEVICE.created_ms, DEVICE.status.value, None, DEVICE.protocol.value),
        ),
        "webhooks": _endpoint_values(HOOK),
        # A position row of release 1: every column but io, which came later.
        "positions": tuple(v for k, v in POSITION._asdict().items() if k != "io"),
    }
    for table in tables:
        columns = conn.execute(f"PRAGMA table_info({table})").fetchall()
        values = written.get(table) or tuple(_filler(table, c) for c in columns)
        conn.execute(f"INSERT INTO {table} VALUES ({', '.join('?' * len(columns))})", values)
    rows = {
        t: (
            [c[1] for c in conn.execute(f"PRAGMA table_info({t})")],
            conn.execute(f"SELECT * FROM {t}").fetchall(),
        )
        for t in tables
    }
    conn.close()
    return rows


async def test_a_version_1_sqlite_file_is_migrated_with_every_record_intact(
    db_dir: Path,
) -> None:
    path = db_dir / "gp8.sqlite3"
    before = _v1_file(path)
    refused = SqliteStore(path, secrets=BOX)
    with pytest.raises(SchemaTooOld, match=r"version 1 is older .*gp8 migrate"):
        await refused.start()
    await refused.close()

    store = SqliteStore(path, secrets=BOX, pseudonyms=KEY, migrate=True)
    await store.start()
    try:
        assert store.schema is not None
        assert (store.schema.found, store.schema.version) == (1, sqlite_migrations.SCHEMA_VERSION)
        # Every step since the first release, in order (each a str "N: what").
        assert [s.split(":")[0] for s in store.schema.applied] == [
            str(m.version) for m in sqlite_migrations.MIGRATIONS
        ]
        # Through the repositories: the secrets read back clear, the old position reads.
        assert await store.devices.get_by_imei(DEVICE.imei) == DEVICE
        assert await store.webhooks.get(FLEET.id, HOOK.id) == HOOK
        page = await store.telemetry.positions(FLEET.id, "veh_v1", from_ms=0, to_ms=10_000)
        assert page.items == [MIGRATED]
    finally:
        await store.close()

    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (sqlite_migrations.SCHEMA_VERSION,)
        for table, (columns, rows) in before.items():
            # The columns of release 1, as they were: later steps only add columns and rows.
            after = conn.execute(f"SELECT {', '.join(columns)} FROM {table}").fetchall()
            if table in ("devices", "webhooks"):
                secret = 4
                assert after[0][secret].startswith(PREFIX)
                after = [(*r[:secret], rows[0][secret], *r[secret + 1 :]) for r in after]
            if table == "positions":  # the badge number became its pseudonym (step 8)
                badge = columns.index("driver_badge")
                assert after[0][badge] == KEY.of(RAW_BADGE)
                after = [(*r[:badge], RAW_BADGE, *r[badge + 1 :]) for r in after]
            assert after == rows, table

    # Migrated once: a plain start serves it, a second migrate does nothing (hashes nothing
    # again).
    again = SqliteStore(path, secrets=BOX, pseudonyms=KEY, migrate=True)
    await again.start()
    assert again.schema is not None and again.schema.applied == ()
    page = await again.telemetry.positions(FLEET.id, "veh_v1", from_ms=0, to_ms=10_000)
    assert page.items == [MIGRATED]
    await again.close()


async def test_a_fresh_sqlite_file_is_created_at_the_current_version(db_dir: Path) -> None:
    store = SqliteStore(db_dir / "gp8.sqlite3")
    await store.start()
    await store.close()
    assert store.schema is not None
    assert (store.schema.found, store.schema.version) == (0, sqlite_migrations.SCHEMA_VERSION)


def _schema_objects(path: Path) -> set[tuple[str, str, str]]:
    with sqlite3.connect(path) as conn:
        found = conn.execute(
            "SELECT type, name, tbl_name FROM sqlite_master WHERE type IN ('table', 'index')"
        ).fetchall()
    return set(found)


async def test_a_migrated_sqlite_file_has_the_tables_and_indexes_of_a_fresh_one(
    db_dir: Path,
) -> None:
    """What the steps do to an old file is what a fresh file gets (step 9: the fleet index of
    last_positions gives way to the map's covering index)."""
    fresh, old = db_dir / "fresh.sqlite3", db_dir / "v1.sqlite3"
    store = SqliteStore(fresh)
    await store.start()
    await store.close()
    _v1_file(old)
    assert ("index", "last_positions_by_fleet", "last_positions") in _schema_objects(old)
    store = SqliteStore(old, secrets=BOX, pseudonyms=KEY, migrate=True)
    await store.start()
    await store.close()
    assert _schema_objects(old) == _schema_objects(fresh)


async def test_sqlite_step_9_serves_the_map_from_the_covering_index(db_dir: Path) -> None:
    path = db_dir / "gp8.sqlite3"
    before = SqliteStore(path)
    await before.start()
    fleet = await before.fleets.create(FLEET.name)
    fixes = [
        position(fleet.id, f"dev_{i}", f"veh_{i}", 5_000, lat=48.85 + i / 100, lon=2.35)
        for i in range(3)
    ]
    await before.telemetry.store(fixes, [])
    await before.close()
    with sqlite3.connect(path) as conn:  # the file as version 8 left it
        conn.execute("DROP INDEX last_positions_by_area")
        conn.execute("CREATE INDEX last_positions_by_fleet ON last_positions (fleet_id)")
        conn.execute("PRAGMA user_version = 8")

    store = SqliteStore(path, migrate=True)
    await store.start()
    try:
        assert store.schema is not None
        assert [s.split(":")[0] for s in store.schema.applied] == ["9", "10"]
        inside = await store.telemetry.last_positions(fleet.id, bbox=(2.3, 48.84, 2.4, 48.865))
        assert inside == fixes[:2]
    finally:
        await store.close()
    with sqlite3.connect(path) as conn:
        plan = conn.execute(
            "EXPLAIN QUERY PLAN SELECT time_ms, device_id FROM last_positions"
            " WHERE fleet_id = ? AND lat BETWEEN ? AND ? AND lon BETWEEN ? AND ?",
            (fleet.id, 48.84, 48.865, 2.3, 2.4),
        ).fetchall()
    assert any("COVERING INDEX last_positions_by_area" in row[-1] for row in plan), plan
    assert ("index", "last_positions_by_fleet", "last_positions") not in _schema_objects(path)


async def test_sqlite_step_10_reads_the_map_names_from_the_vehicles_index(db_dir: Path) -> None:
    path = db_dir / "gp8.sqlite3"
    before = SqliteStore(path)
    await before.start()
    fleet = await before.fleets.create(FLEET.name)
    vehicle = await before.vehicles.create(fleet.id, vin="VIN1", plate="AB-1", label="van")
    fix = position(fleet.id, "dev_1", vehicle.id, 5_000, lat=48.85, lon=2.35)
    await before.telemetry.store([fix], [])
    await before.close()
    with sqlite3.connect(path) as conn:  # the file as version 9 left it
        conn.execute("DROP INDEX vehicles_names")
        conn.execute("PRAGMA user_version = 9")

    store = SqliteStore(path, migrate=True)
    await store.start()
    try:
        assert store.schema is not None
        assert [s.split(":")[0] for s in store.schema.applied] == ["10"]
        (entry,) = await store.telemetry.fleet_map(fleet.id, bbox=(2.3, 48.8, 2.4, 48.9))
        assert (entry.vehicle_id, entry.plate, entry.label, entry.position) == (
            vehicle.id,
            "AB-1",
            "van",
            fix,
        )
    finally:
        await store.close()
    with sqlite3.connect(path) as conn:
        sql, params = _in_fleet_area(_SELECT_MAP, fleet.id, (2.3, 48.8, 2.4, 48.9), ordered=False)
        plan = conn.execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()
    assert any("COVERING INDEX vehicles_names" in row[-1] for row in plan), plan


async def test_a_newer_sqlite_file_is_refused_even_to_migrate(db_dir: Path) -> None:
    path = db_dir / "gp8.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {sqlite_migrations.SCHEMA_VERSION + 1}")
    store = SqliteStore(path, migrate=True)
    with pytest.raises(SchemaTooNew, match=f"version {sqlite_migrations.SCHEMA_VERSION + 1} "):
        await store.start()
    await store.close()


# --- MongoDB (the fake) ----------------------------------------------------------------------


def _v1_indexes() -> dict[str, list[IndexModel]]:
    spec = json.loads((FIXTURES / "mongo_v1_indexes.json").read_text())
    return {
        name: [
            IndexModel([tuple(k) for k in index.pop("key")], name=index.pop("name"), **index)
            for index in indexes
        ]
        for name, indexes in spec.items()
    }


async def test_a_version_1_mongo_database_is_migrated_with_every_record_intact() -> None:
    client = AsyncMongoMockClient()
    database = client.get_database("gp8_v1")
    for name, indexes in _v1_indexes().items():
        await database.get_collection(name).create_indexes(indexes)
    position_doc = {k: v for k, v in docs.position_doc(POSITION).items() if k != "io"}
    originals = {
        "fleets": docs.fleet_doc(FLEET),
        "devices": docs.device_doc(DEVICE),
        "webhooks": endpoint_doc(HOOK),
        "positions": position_doc,
    }
    for name, doc in originals.items():
        await database.get_collection(name).insert_one(dict(doc))

    with pytest.raises(SchemaTooOld):
        await MongoStore(client, "gp8_v1", secrets=BOX).start()
    store = MongoStore(client, "gp8_v1", secrets=BOX, pseudonyms=KEY, migrate=True)
    await store.start()
    try:
        assert store.schema is not None
        assert (store.schema.found, store.schema.version) == (1, mongo_migrations.SCHEMA_VERSION)
        assert await store.devices.get_by_imei(DEVICE.imei) == DEVICE
        assert await store.webhooks.get(FLEET.id, HOOK.id) == HOOK
        page = await store.telemetry.positions(FLEET.id, "veh_v1", from_ms=0, to_ms=10_000)
        assert page.items == [MIGRATED]
    finally:
        await store.close()

    version = await database.get_collection(mongo_migrations.SCHEMA_COLLECTION).find_one({})
    assert version is not None and version["version"] == mongo_migrations.SCHEMA_VERSION
    for name, original in originals.items():
        (stored,) = await database.get_collection(name).find({}).to_list()
        if "secret" in original:
            assert stored["secret"].startswith(PREFIX)
            stored["secret"] = original["secret"]
        if name == "positions":  # the badge number became its pseudonym (step 4), no mark left
            assert stored["driver_badge"] == KEY.of(RAW_BADGE)
            stored["driver_badge"] = RAW_BADGE
        assert stored == original, name
    for name, indexes in INDEXES.items():
        info = await database.get_collection(name).index_information()
        assert {i.document["name"] for i in indexes} <= set(info), name

    # A database stamped newer than this gp8 is refused, migrate or not.
    await database.get_collection(mongo_migrations.SCHEMA_COLLECTION).update_one(
        {}, {"$set": {"version": mongo_migrations.SCHEMA_VERSION + 1}}
    )
    with pytest.raises(SchemaTooNew):
        await MongoStore(client, "gp8_v1", secrets=BOX, migrate=True).start()


# --- badges become pseudonyms (SQLite step 8, MongoDB step 4) ---------------------------------

BADGE_POLICY = TrackingPolicy(FLEET.id, require_badge=True, badges=(42, 4242))


async def _badges_as_a_version_before(store: Store, track: str) -> None:
    """What a gp8 before pseudonyms stored: badge numbers in positions, events and policy."""
    fleet = await store.fleets.create(FLEET.name)
    fix = position(fleet.id, DEVICE.id, track, 5_000, driver_badge=RAW_BADGE)
    other = position(fleet.id, DEVICE.id, track, 6_000, driver_badge=42)
    plain = position(fleet.id, DEVICE.id, track, 7_000)
    await store.telemetry.store([fix, other, plain], [factory_event_of(fix, "driver_badge")])
    await store.alert_rules.put_policy(dataclasses.replace(BADGE_POLICY, fleet_id=fleet.id))


def factory_event_of(fix: Position, code: str) -> Event:
    return Event(fix.fleet_id, fix.device_id, fix.vehicle_id, fix.time_ms, fix.received_ms, code,
                 0, fix)  # fmt: skip


async def _assert_pseudonymised(store: Store, track: str) -> None:
    (fleet,) = (await store.fleets.list()).items
    page = await store.telemetry.positions(fleet.id, track, from_ms=0, to_ms=10_000)
    assert [p.driver_badge for p in page.items] == [KEY.of(RAW_BADGE), KEY.of(42), None]
    events = await store.telemetry.events(fleet.id, from_ms=0, to_ms=10_000)
    assert [e.position.driver_badge for e in events.items] == [KEY.of(RAW_BADGE)]
    policy = await store.alert_rules.policy(fleet.id)
    assert policy.badges == tuple(sorted((KEY.of(42), KEY.of(RAW_BADGE))))


async def test_sqlite_badges_of_version_7_are_hashed_once(db_dir: Path) -> None:
    path = db_dir / "gp8.sqlite3"
    before = SqliteStore(path)
    await before.start()
    await _badges_as_a_version_before(before, "veh_1")
    await before.close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 7")

    for run in range(2):  # the second migrate finds version 8: nothing hashed twice
        store = SqliteStore(path, pseudonyms=KEY, migrate=True)
        await store.start()
        try:
            assert store.schema is not None
            assert [s.split(":")[0] for s in store.schema.applied] == (
                ["8", "9", "10"] if run == 0 else []
            )
            await _assert_pseudonymised(store, "veh_1")
        finally:
            await store.close()


async def test_mongo_badges_of_version_3_are_hashed_once_even_after_a_crash() -> None:
    client = AsyncMongoMockClient()
    database = client.get_database("gp8_v3")
    before = MongoStore(client, "gp8_v3")
    await before.start()
    await _badges_as_a_version_before(before, "veh_1")
    versions = database.get_collection(mongo_migrations.SCHEMA_COLLECTION)
    await versions.update_one({}, {"$set": {"version": 3}})
    # A first migrate stopped half way: one position hashed and marked, the rest not.
    positions = database.get_collection("positions")
    await positions.update_one(
        {"driver_badge": 42},
        {"$set": {"driver_badge": KEY.of(42), mongo_migrations._HASHED: True}},
    )

    for run in range(2):
        store = MongoStore(client, "gp8_v3", pseudonyms=KEY, migrate=True)
        await store.start()
        try:
            assert store.schema is not None
            assert [s.split(":")[0] for s in store.schema.applied] == (["4"] if run == 0 else [])
            await _assert_pseudonymised(store, "veh_1")
        finally:
            await store.close()
    for name in ("positions", "events", "last_positions", "tracking_policies"):
        marked = database.get_collection(name).find({mongo_migrations._HASHED: {"$exists": 1}})
        assert await marked.to_list() == [], name
    (last,) = await database.get_collection("last_positions").find({}).to_list()
    assert last["driver_badge"] is None  # the newest fix (7 s) has none
