"""SQLite tables of privacy mode and pseudonymised drivers (storage/sqlite/privacy.py)."""

from __future__ import annotations

PRIVACY_FLEET_TABLES = ("privacy_schedules", "privacy_toggles", "privacy_badges", "drivers")

PRIVACY_DDL = """
-- A vehicle's schedule history: each change applies from effective_ms (storage/privacy.py).
CREATE TABLE IF NOT EXISTS privacy_schedules (
    fleet_id TEXT NOT NULL,
    vehicle_id TEXT NOT NULL,
    effective_ms INTEGER NOT NULL,
    schedule TEXT,  -- JSON (storage/privacy.py schedule_data); NULL: none from then on
    set_by TEXT,
    PRIMARY KEY (fleet_id, vehicle_id, effective_ms)
) WITHOUT ROWID;

-- Presentations of the fleet's privacy badge (each flips the vehicle's private state).
CREATE TABLE IF NOT EXISTS privacy_toggles (
    fleet_id TEXT NOT NULL,
    vehicle_id TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    PRIMARY KEY (fleet_id, vehicle_id, time_ms)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS privacy_badges (
    fleet_id TEXT PRIMARY KEY,
    badge INTEGER NOT NULL  -- a pseudonym (storage/pseudonyms.py)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS drivers (
    id TEXT PRIMARY KEY,
    fleet_id TEXT NOT NULL,
    badge INTEGER NOT NULL,  -- a pseudonym (storage/pseudonyms.py)
    name TEXT NOT NULL,
    created_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS drivers_by_badge ON drivers (fleet_id, badge);
"""
