"""SQLite tables of alert rules, parked guards, theft cases and legal holds, and the columns
the alert incidents added to ``alerts`` (storage/sqlite/tracking.py).

There is no migration framework: `create` runs on every start (from storage/sqlite/schema.py,
after the command tables), creates what is missing and adds the incident columns to an
``alerts`` table made by an older gp8, found missing with PRAGMA table_info. Every added
column is nullable or has a default, so the rows stored before read as the command alerts they
were (storage.models.Alert's defaults).
"""

from __future__ import annotations

import sqlite3

# Erased with their fleet (FLEET_TABLES).
TRACKING_FLEET_TABLES = (
    "alert_rules",
    "tracking_policies",
    "guard_states",
    "theft_cases",
    "legal_holds",
)

# Columns of storage.models.Alert added after the table existed, with their declarations.
# ``open_key`` is the storage's own: "<fleet>:<subject>:<kind>:<ref>" while an incident is
# open, NULL once closed (and for the command alerts), unique: one open alert per incident.
ALERT_COLUMNS_ADDED: tuple[tuple[str, str], ...] = (
    ("severity", "TEXT NOT NULL DEFAULT 'warning'"),
    ("rule_id", "TEXT"),
    ("ref", "TEXT"),
    ("count", "INTEGER NOT NULL DEFAULT 1"),
    ("first_ms", "INTEGER"),
    ("last_ms", "INTEGER"),
    ("lat", "REAL"),
    ("lon", "REAL"),
    ("speed_kmh", "REAL"),
    ("updated_ms", "INTEGER"),
    ("acked_ms", "INTEGER"),
    ("acked_by", "TEXT"),
    ("ack_note", "TEXT NOT NULL DEFAULT ''"),
    ("close_reason", "TEXT NOT NULL DEFAULT ''"),
    ("theft_case_id", "TEXT"),
    ("open_key", "TEXT"),
)

TRACKING_DDL = """
-- Rules, policies, guards and cases are stored whole as JSON (storage/tracking_codec.py) next
-- to the columns the queries use: they are read whole, and new rule parameters need no column.
CREATE TABLE IF NOT EXISTS alert_rules (
    id TEXT PRIMARY KEY,
    fleet_id TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    data TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS alert_rules_by_fleet ON alert_rules (fleet_id, created_ms, id);

CREATE TABLE IF NOT EXISTS tracking_policies (
    fleet_id TEXT PRIMARY KEY,
    defaults_ms INTEGER,
    data TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS guard_states (
    vehicle_id TEXT PRIMARY KEY,
    fleet_id TEXT NOT NULL,
    revision INTEGER NOT NULL,
    data TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS guard_states_by_fleet ON guard_states (fleet_id, vehicle_id);

CREATE TABLE IF NOT EXISTS theft_cases (
    id TEXT PRIMARY KEY,
    fleet_id TEXT NOT NULL,
    vehicle_id TEXT NOT NULL,
    status TEXT NOT NULL,
    opened_ms INTEGER NOT NULL,
    data TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS theft_cases_by_fleet ON theft_cases (fleet_id, opened_ms, id);
-- A vehicle has one open case at most.
CREATE UNIQUE INDEX IF NOT EXISTS theft_cases_open ON theft_cases (vehicle_id)
    WHERE status = 'open';

-- Read by retention (telemetry purge) to skip held vehicles.
CREATE TABLE IF NOT EXISTS legal_holds (
    case_id TEXT PRIMARY KEY,
    fleet_id TEXT NOT NULL,
    vehicle_id TEXT NOT NULL,
    from_ms INTEGER NOT NULL,
    until_ms INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS legal_holds_by_fleet ON legal_holds (fleet_id, vehicle_id);
"""

# The vehicles retention keeps whole (telemetry purge): held by a theft case that is open, or
# closed less than its hold period ago. Parameters: fleet_id, now (ms).
HELD_VEHICLES_SQL = (
    "SELECT vehicle_id FROM legal_holds WHERE fleet_id = ? AND (until_ms IS NULL OR until_ms > ?)"
)

_ALERT_INDEXES = """
CREATE UNIQUE INDEX IF NOT EXISTS alerts_open_incident ON alerts (open_key)
    WHERE open_key IS NOT NULL;
"""


def create(conn: sqlite3.Connection) -> None:
    """Create the tables and add the alert columns that are missing; safe on every start.
    Runs after the command tables exist."""
    conn.executescript(TRACKING_DDL)
    present = {row[1] for row in conn.execute("PRAGMA table_info(alerts)")}
    for name, declaration in ALERT_COLUMNS_ADDED:
        if name not in present:
            conn.execute(f"ALTER TABLE alerts ADD COLUMN {name} {declaration}")
    conn.executescript(_ALERT_INDEXES)
