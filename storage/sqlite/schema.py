"""The SQLite schema: tables, indexes and connection pragmas.

Positions and events are WITHOUT ROWID tables clustered on their idempotency key, so a resend
is rejected by the primary key itself (INSERT OR IGNORE) and no second unique index has to be
maintained on the hot path. Every other index exists for a query in this package; each costs
insert throughput, so none is speculative.
"""

from __future__ import annotations

import sqlite3

from storage.fields import POSITION_FIELDS
from storage.sqlite import tracking_schema
from storage.sqlite.audit_chain import CHAIN_DDL
from storage.sqlite.command_schema import COMMAND_DDL, COMMAND_FLEET_TABLES
from storage.sqlite.privacy_schema import PRIVACY_DDL, PRIVACY_FLEET_TABLES
from storage.sqlite.retention_schema import RETENTION_DDL, RETENTION_FLEET_TABLES
from storage.sqlite.stream_schema import STREAM_DDL, STREAM_FLEET_TABLES
from storage.sqlite.tracking_schema import TRACKING_FLEET_TABLES
from storage.sqlite.webhook_schema import WEBHOOK_DDL, WEBHOOK_FLEET_TABLES

# How long a statement waits for a lock held by another process (a backup, the sqlite3 shell)
# before failing with "database is locked", which we report as StorageUnavailable.
BUSY_TIMEOUT_MS = 5_000
# WAL files are truncated back to this after a checkpoint, so a burst does not leave a huge
# file behind.
JOURNAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024
# The writer checkpoints once the WAL holds this many pages (SQLite's default: 1,000), i.e. at
# about JOURNAL_SIZE_LIMIT_BYTES of 4 KiB pages. An ingest commit of 1,000 vehicles rewrites
# some 2,500 pages, most of them the same leaves of positions_by_vehicle as the commit before
# (each vehicle's newest entries): at the default every commit was checkpointed, copying all of
# them into the database file and fsyncing it; this way a page rewritten by several commits is
# copied once. Commits stay as durable (each still fsyncs the WAL).
WAL_AUTOCHECKPOINT_PAGES = 16_384
# The writer's page cache, KiB (SQLite's default: 2,000). An ingest commit touches a leaf of
# positions_by_vehicle per vehicle (4 MB for 1,000 vehicles, 40 MB for 10,000), and with the
# default those were read back from the file every commit. The reader keeps the default.
# With both settings bench/bench_ingest.py's direct-SQLite floor went from ~58k to ~105k rows/s
# (3,800-row commits, 3 alternating runs), the gateway's writer from 11 to 10 us per position.
WRITER_CACHE_KIB = 64 * 1024

# Position columns, from storage.fields: their names are those of existing files (a field's
# `sqlite`), their order is the model's, so a row maps to Position(*row).
POSITION_COLUMN_NAMES: tuple[str, ...] = tuple(f.sqlite_column for f in POSITION_FIELDS)
# The map's covering index (its why is beside last_positions in DDL); migration step 9 creates it
# in existing files from this same text.
LAST_POSITIONS_AREA_INDEX = (
    "CREATE INDEX IF NOT EXISTS last_positions_by_area"
    " ON last_positions (fleet_id, lat, lon, vehicle_id, time_ms, device_id)"
)
# The map's names: the plate and label of each vehicle shown read from this index, found by id,
# not from the table behind the primary key's (a second lookup each): the map query's reader
# CPU for a city's 238 vehicles 1.8 -> 1.3 ms, with the ORDER BY left to Python (telemetry.py
# `_fetch_map`). Migration step 10 creates it in existing files from this same text.
VEHICLE_NAMES_INDEX = (
    "CREATE INDEX IF NOT EXISTS vehicles_names ON vehicles (id, fleet_id, plate, label)"
)
# A dict is a JSON object, kept as its text (storage.sqlite.rows converts it).
_SQL_TYPES: dict[type, str] = {
    str: "TEXT",
    int: "INTEGER",
    float: "REAL",
    bool: "INTEGER",
    dict: "TEXT",
}

# Every table holding records of a fleet, by fleet_id: what a GDPR erasure deletes
# (tests check that nothing of an erased fleet is left in any of them).
FLEET_TABLES = (
    "api_keys",
    "vehicles",
    "devices",
    "fittings",
    "connections",
    "counters",
    "positions",
    "events",
    "last_positions",
    "access_log",
    *COMMAND_FLEET_TABLES,
    *STREAM_FLEET_TABLES,
    *WEBHOOK_FLEET_TABLES,
    # geofences (GEOFENCE_DDL below)
    "geofences",
    "geofence_states",
    "geofence_events",
    *TRACKING_FLEET_TABLES,
    *PRIVACY_FLEET_TABLES,
    *RETENTION_FLEET_TABLES,
)

_POSITION_COLUMNS_DDL = ",".join(
    f"\n    {f.sqlite_column} {_SQL_TYPES[f.py_type]}{'' if f.nullable else ' NOT NULL'}"
    for f in POSITION_FIELDS
)

DDL = f"""
CREATE TABLE IF NOT EXISTS fleets (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_ms INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    fleet_id TEXT,
    role TEXT NOT NULL,
    name TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER,
    revoked_ms INTEGER,
    email TEXT NOT NULL DEFAULT '',  -- the owner's; '' for keys older than owners (unknown)
    last_used_ms INTEGER
);
CREATE INDEX IF NOT EXISTS api_keys_by_fleet ON api_keys (fleet_id, id);

CREATE TABLE IF NOT EXISTS vehicles (
    id TEXT PRIMARY KEY,
    fleet_id TEXT NOT NULL,
    vin TEXT NOT NULL,
    plate TEXT NOT NULL,
    label TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    device_id TEXT,
    UNIQUE (fleet_id, vin)
);
CREATE INDEX IF NOT EXISTS vehicles_by_fleet ON vehicles (fleet_id, id);
{VEHICLE_NAMES_INDEX};

CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY,
    fleet_id TEXT NOT NULL,
    imei TEXT NOT NULL UNIQUE,
    model TEXT NOT NULL,
    secret TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    status TEXT NOT NULL,
    vehicle_id TEXT,
    protocol TEXT NOT NULL DEFAULT 'gp8'  -- storage.models.DeviceProtocol (a v1 late column)
);
CREATE INDEX IF NOT EXISTS devices_by_fleet ON devices (fleet_id, id);

-- rowid (seq) keeps insertion order for fittings that start in the same millisecond.
CREATE TABLE IF NOT EXISTS fittings (
    seq INTEGER PRIMARY KEY,
    fleet_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    vehicle_id TEXT NOT NULL,
    from_ms INTEGER NOT NULL,
    to_ms INTEGER
);
CREATE INDEX IF NOT EXISTS fittings_by_device ON fittings (device_id, from_ms);
CREATE INDEX IF NOT EXISTS fittings_by_vehicle ON fittings (vehicle_id) WHERE to_ms IS NULL;
CREATE INDEX IF NOT EXISTS fittings_by_fleet ON fittings (fleet_id);

CREATE TABLE IF NOT EXISTS connections (
    device_id TEXT PRIMARY KEY,
    fleet_id TEXT NOT NULL,
    online INTEGER NOT NULL,
    transport TEXT,
    gateway_id TEXT,
    since_ms INTEGER NOT NULL,
    remote TEXT,
    version INTEGER NOT NULL DEFAULT 0,
    seen_ms INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS connections_by_fleet ON connections (fleet_id);

-- Shared counters (storage/sqlite/counters.py): per name, one row per time bucket; the
-- per-key API rate limit and the hourly engine-start cap count here across processes.
CREATE TABLE IF NOT EXISTS counters (
    name TEXT NOT NULL,
    bucket_ms INTEGER NOT NULL,
    fleet_id TEXT,
    n INTEGER NOT NULL,
    PRIMARY KEY (name, bucket_ms)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS counters_by_fleet ON counters (fleet_id);

-- The key is the idempotency key (device_id, time_ms), time first: live records then land at
-- the right edge of the table's B-tree, a few pages per batch, instead of one page per box.
-- Measured with 1,000 boxes, 1,000-position batches and 100k+ rows stored: 1,700 pages written
-- per commit instead of 3,700 with (device_id, time_ms).
CREATE TABLE IF NOT EXISTS positions ({_POSITION_COLUMNS_DDL},
    PRIMARY KEY (time_ms, device_id)
) WITHOUT ROWID;
-- The vehicle track query; its fleet_id prefix also serves retention purges and fleet erasure.
CREATE INDEX IF NOT EXISTS positions_by_vehicle
    ON positions (fleet_id, vehicle_id, time_ms, device_id);

CREATE TABLE IF NOT EXISTS events (
    fleet_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    vehicle_id TEXT,
    time_ms INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    code TEXT NOT NULL,
    detail INTEGER NOT NULL,
    position BLOB NOT NULL,  -- the Position as JSON: events are rare and read whole
    PRIMARY KEY (device_id, time_ms, code)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS events_by_fleet ON events (fleet_id, time_ms, device_id, code);

-- subject: "v:<vehicle_id>" or "d:<device_id>" (storage.latest.subject_key).
-- The newest valid fix of each subject, by reference: (time_ms, device_id) is its row in
-- positions (which retention never deletes), lat/lon are copied for the bbox filter. Narrow on
-- purpose: it is rewritten once per vehicle per batch, and with a full copy of the row that
-- rewrite cost as much CPU as inserting the positions (16 ms vs 5 ms per 1,000 vehicles).
CREATE TABLE IF NOT EXISTS last_positions (
    subject TEXT PRIMARY KEY,
    fleet_id TEXT NOT NULL,
    vehicle_id TEXT,
    device_id TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    lat REAL NOT NULL,
    lon REAL NOT NULL
) WITHOUT ROWID;
-- The map's bbox query reads only this index: a range of latitudes within the fleet, the
-- longitude tested in the entry, the stored row found by (time_ms, device_id), never the table
-- (~5x faster with 10,000 vehicles than the fleet's every entry and its row). Its fleet_id prefix
-- serves the fleet's listing, purges and erasure. An update rewrites the entry: about 2 ms more
-- writer CPU per 1,000 moving vehicles (storage/sqlite/migrations.py, step 9).
{LAST_POSITIONS_AREA_INDEX};

CREATE TABLE IF NOT EXISTS access_log (
    id TEXT PRIMARY KEY,
    time_ms INTEGER NOT NULL,
    key_id TEXT,
    fleet_id TEXT,
    action TEXT NOT NULL,
    resource TEXT NOT NULL,
    resource_id TEXT,
    detail TEXT NOT NULL,
    -- its link in the fleet's hash chain (storage/audit_chain.py; index in CHAIN_DDL)
    seq INTEGER NOT NULL DEFAULT 0,
    prev_hash TEXT NOT NULL DEFAULT '',
    hash TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS access_log_by_fleet ON access_log (fleet_id, time_ms, id);
"""

# Geofences (storage/sqlite/geofences.py). Every index serves a query there.
GEOFENCE_DDL = """
-- A rowid table: a fence's GeoJSON may be hundreds of kB, too big a row to cluster on its key.
CREATE TABLE IF NOT EXISTS geofences (
    id TEXT PRIMARY KEY,
    fleet_id TEXT NOT NULL,
    name TEXT NOT NULL,
    geometry TEXT NOT NULL,  -- GeoJSON, [lon, lat]
    radius_m REAL,
    vehicle_ids TEXT,  -- a JSON array; NULL: every vehicle of the fleet
    schedule TEXT,  -- JSON {timezone, days, from, to}; NULL: none
    margin_m REAL NOT NULL,
    dwell_s INTEGER NOT NULL,
    speed_limit_kmh REAL,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS geofences_by_fleet ON geofences (fleet_id, id);

-- Clustered on (vehicle, fence): the handler loads one vehicle's states at a time.
CREATE TABLE IF NOT EXISTS geofence_states (
    vehicle_id TEXT NOT NULL,
    geofence_id TEXT NOT NULL,
    fleet_id TEXT NOT NULL,
    side TEXT NOT NULL,
    since_ms INTEGER NOT NULL,
    candidate TEXT,
    candidate_ms INTEGER,
    checked_ms INTEGER NOT NULL,
    PRIMARY KEY (vehicle_id, geofence_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS geofence_states_by_fence ON geofence_states (geofence_id);
CREATE INDEX IF NOT EXISTS geofence_states_by_fleet ON geofence_states (fleet_id);

-- UNIQUE on the crossing itself: a batch processed again after a restart stores it once.
CREATE TABLE IF NOT EXISTS geofence_events (
    id TEXT PRIMARY KEY,
    fleet_id TEXT NOT NULL,
    vehicle_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    geofence_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    lat REAL NOT NULL,
    lon REAL NOT NULL,
    UNIQUE (geofence_id, vehicle_id, time_ms, kind)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS geofence_events_by_fleet ON geofence_events (fleet_id, time_ms, id);
CREATE INDEX IF NOT EXISTS geofence_events_by_vehicle
    ON geofence_events (fleet_id, vehicle_id, time_ms, id);
CREATE INDEX IF NOT EXISTS geofence_events_by_fence
    ON geofence_events (fleet_id, geofence_id, time_ms, id);
"""


def configure(conn: sqlite3.Connection, *, writer: bool, busy_timeout_ms: int) -> None:
    """Per-connection pragmas."""
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    if writer:
        # WAL: readers never block the writer, and a commit is one sequential append.
        conn.execute("PRAGMA journal_mode = WAL")
        # FULL: fsync the WAL at every commit. The gateway acknowledges a batch to the box only
        # after store() returns, so a committed batch must survive a power cut (NORMAL could
        # lose the last transactions, which the box would then never resend).
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT_BYTES}")
        conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}")
        conn.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KIB}")  # negative: KiB, not pages
    else:
        # The reader connection can never write, whatever a bug asks of it.
        conn.execute("PRAGMA query_only = 1")


def create_current(conn: sqlite3.Connection) -> None:
    """Create every table and index of the current schema that is missing (CREATE ... IF NOT
    EXISTS: idempotent). A fresh file gets the whole schema this way; an existing one is
    changed only by the numbered steps of storage/sqlite/migrations.py, which also stamp the
    version (nothing here does)."""
    conn.executescript(DDL)
    conn.executescript(COMMAND_DDL)
    conn.executescript(STREAM_DDL)
    conn.executescript(WEBHOOK_DDL)
    conn.executescript(GEOFENCE_DDL)
    tracking_schema.create(conn)  # after COMMAND_DDL: it adds columns to alerts
    conn.executescript(RETENTION_DDL)
    conn.executescript(PRIVACY_DDL)
    conn.executescript(CHAIN_DDL)  # after the audit tables it indexes
