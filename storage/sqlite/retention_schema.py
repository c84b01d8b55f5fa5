"""SQLite tables of retention, exports and offboarding (storage/sqlite/retention.py)."""

from __future__ import annotations

# Erased with their fleet (FLEET_TABLES). ``offboardings`` is not: it is the deletion report
# that outlives the fleet (counts per table, no personal data).
RETENTION_FLEET_TABLES = ("retention", "exports")
# Tables with a fleet_id that erasure leaves on purpose (tests/storage/test_sqlite.py knows them).
KEPT_AFTER_ERASURE = ("offboardings",)

RETENTION_DDL = """
-- A fleet's periods and last purge as JSON (storage/retention.py retention_data); no row: the
-- defaults, never purged.
CREATE TABLE IF NOT EXISTS retention (
    fleet_id TEXT PRIMARY KEY,
    data TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS exports (
    id TEXT PRIMARY KEY,
    fleet_id TEXT NOT NULL,
    status TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    lease_ms INTEGER,
    data TEXT NOT NULL  -- the whole job as JSON (storage/retention.py job_data)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS exports_by_status ON exports (status, created_ms);
CREATE INDEX IF NOT EXISTS exports_by_fleet ON exports (fleet_id, created_ms);

CREATE TABLE IF NOT EXISTS offboardings (
    fleet_id TEXT PRIMARY KEY,
    ends_ms INTEGER NOT NULL,
    erased_ms INTEGER,
    data TEXT NOT NULL  -- storage/retention.py offboarding_data
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS offboardings_due ON offboardings (ends_ms) WHERE erased_ms IS NULL;
"""
